"""Kafka's consumer group protocol (KIP-848) against real node processes: librdkafka
consumers with `group.protocol=consumer` share a group's partitions through the native
coordinator's assignment, commit, and hand over to the next member; the group is
refused to native members while they are in it; admin clients describe it."""

from __future__ import annotations

import threading

import trio

from client import Consumer, Producer
from client.errors import InvalidRequestError
from client.protocol import OffsetFetch
from tests.node.test_kafka_process import PARTITIONS, TOPIC, kafka_cluster, leaves


def kip848_member(bootstrap: str, group: str, stop: threading.Event, out: dict, name: str) -> None:
    """A member that polls until `stop`, committing what it reads; records (partition,
    offset, value) and its assignment into `out[name]`."""
    from confluent_kafka import Consumer as RdConsumer

    consumer = RdConsumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "group.protocol": "consumer",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    got: list = []
    assigned: set = set()
    out[name] = (got, assigned)
    try:
        consumer.subscribe([TOPIC])
        while not stop.is_set():
            msg = consumer.poll(0.1)
            assigned.update((tp.topic, tp.partition) for tp in consumer.assignment())
            if msg is not None and msg.error() is None:
                got.append((msg.partition(), msg.offset(), msg.value()))
                consumer.commit(msg, asynchronous=False)
    finally:
        consumer.close()


def rd_describe(bootstrap: str, group: str):
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    (future,) = admin.describe_consumer_groups([group]).values()
    return future.result(30)


async def check_while_members(c, kafka_bootstrap: str) -> None:
    """An admin client describes the group; a native consumer may not join it."""
    description = await trio.to_thread.run_sync(rd_describe, kafka_bootstrap, "kip848")
    assert len(description.members) == 2
    assert sorted(tp.partition for m in description.members for tp in m.assignment.topic_partitions) == list(
        range(PARTITIONS)
    )
    refused: list[InvalidRequestError] = []
    try:
        with trio.fail_after(20):
            async with Consumer(c.bootstrap, topics=[TOPIC], group="kip848") as native:
                await native.getmany(timeout=5)
    except* InvalidRequestError as group:
        refused.extend(leaves(group))
    assert refused and "Kafka's group protocol" in refused[0].message


async def test_kip848_consumers_share_a_group_on_the_native_coordinator(tmp_path):
    async with kafka_cluster(tmp_path, TOPIC) as (c, kafka_bootstrap):
        n = 60
        async with Producer(c.bootstrap) as producer:
            for i in range(n):
                await producer.submit(TOPIC, b"v%d" % i, key=b"k%d" % (i % 11))
            await producer.flush()

        out: dict = {}
        stop = threading.Event()
        async with trio.open_nursery() as nursery:
            for name in ("a", "b"):
                nursery.start_soon(trio.to_thread.run_sync, kip848_member, kafka_bootstrap, "kip848", stop, out, name)
            try:
                with trio.fail_after(40):  # both hold partitions, and everything was read
                    while not (
                        all(out.get(k) and out[k][1] for k in ("a", "b")) and sum(len(g) for g, _ in out.values()) >= n
                    ):
                        await trio.sleep(0.1)
                await check_while_members(c, kafka_bootstrap)
            finally:
                stop.set()
        (got_a, parts_a), (got_b, parts_b) = out["a"], out["b"]
        everything = sorted(got_a + got_b)
        assert sorted(v for _, _, v in everything) == sorted(b"v%d" % i for i in range(n))
        assert len({(p, o) for p, o, _ in everything}) == n  # each record once
        assert parts_a and parts_b  # both held partitions at some point

        # Their commits are the group's: a native member, once they left, starts after them.
        async with Consumer(c.bootstrap, topics=[TOPIC], group="kip848") as native:
            offsets = await native.cluster.coordinator_request("kip848", OffsetFetch("kip848"))
            ends: dict[int, int] = {}
            for p, o, _ in everything:
                ends[p] = max(ends.get(p, 0), o + 1)
            assert {p: o for _, p, o in offsets.offsets} == ends
            async with Producer(c.bootstrap) as producer:
                await producer.send(TOPIC, b"after", key=b"k0")
            with trio.fail_after(20):
                msg = await native.__anext__()
            assert msg.value == b"after"
