"""A consumer group's whole life with each Kafka client, on node processes: two members
share the partitions and commit, one leaves and the other takes its partitions over, and
a member started after both left resumes from the commits. Each client runs its own
assignor: kafka-python range, aiokafka roundrobin, librdkafka cooperative-sticky
(incremental rebalances). What they read a native producer wrote, and the native side sees their commits."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import trio

from client import Admin, Producer
from client.protocol import OffsetFetch
from tests.node.test_kafka_process import PARTITIONS, kafka_cluster

CLIENTS = ("kafka-python", "aiokafka", "librdkafka")
EVERY_PARTITION = frozenset(range(PARTITIONS))


@dataclass
class Member:
    """One group member in a thread of its own: what it read, what it holds now."""

    client: str
    topic: str
    group: str
    stop: threading.Event = field(default_factory=threading.Event)
    got: list[tuple[int, int, bytes]] = field(default_factory=list)
    assigned: frozenset[int] = frozenset()


def kafka_python_member(m: Member, bootstrap: str) -> None:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        m.topic,
        bootstrap_servers=bootstrap.split(","),
        group_id=m.group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=300,
    )
    try:
        while not m.stop.is_set():
            records = [r for rs in consumer.poll(timeout_ms=200).values() for r in rs]
            m.got.extend((r.partition, r.offset, r.value) for r in records)
            if records:
                consumer.commit()
            m.assigned = frozenset(tp.partition for tp in consumer.assignment())
    finally:
        consumer.close()  # leaves the group


def aiokafka_member(m: Member, bootstrap: str) -> None:
    import asyncio

    from aiokafka import AIOKafkaConsumer

    async def run() -> None:
        consumer = AIOKafkaConsumer(
            m.topic,
            bootstrap_servers=bootstrap,
            group_id=m.group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=300,
        )
        await consumer.start()
        try:
            while not m.stop.is_set():
                records = [r for rs in (await consumer.getmany(timeout_ms=200)).values() for r in rs]
                m.got.extend((r.partition, r.offset, r.value) for r in records)
                if records:
                    await consumer.commit()
                m.assigned = frozenset(tp.partition for tp in consumer.assignment())
        finally:
            await consumer.stop()  # leaves the group

    asyncio.run(run())


def librdkafka_member(m: Member, bootstrap: str) -> None:
    from confluent_kafka import Consumer as RdConsumer

    consumer = RdConsumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": m.group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 300,
            "partition.assignment.strategy": "cooperative-sticky",
        }
    )
    try:
        consumer.subscribe([m.topic])
        while not m.stop.is_set():
            msgs = [msg for msg in consumer.consume(100, 0.2) if msg.error() is None]
            m.got.extend((msg.partition(), msg.offset(), msg.value()) for msg in msgs)
            if msgs:
                consumer.commit(asynchronous=False)
            m.assigned = frozenset(tp.partition for tp in consumer.assignment())
    finally:
        consumer.close()  # leaves the group


RUN = {"kafka-python": kafka_python_member, "aiokafka": aiokafka_member, "librdkafka": librdkafka_member}


@contextmanager
def stopping(members: list[Member]) -> Iterator[None]:
    """Tell the members' threads to stop when the block ends, however it ends: a thread
    cannot be cancelled, so a failed check inside must not leave its nursery waiting on
    threads that poll forever (until pytest's timeout, which then fails the next test)."""
    try:
        yield
    finally:
        for m in members:
            m.stop.set()


async def until(condition, what: str, timeout: float = 30) -> None:
    with trio.move_on_after(timeout):
        while not condition():
            await trio.sleep(0.1)
        return
    raise AssertionError(f"not within {timeout}s: {what}")


async def group_life(bootstrap: str, kafka_bootstrap: str, client: str) -> None:
    topic, group = f"life-{client}", f"group-{client}"
    members = [Member(client, topic, group) for _ in range(3)]
    a, b, c = members
    sent: list[tuple[int, int, bytes]] = []

    async def produce(n: int) -> set:
        batch = []
        async with Producer(bootstrap) as producer:
            for i in range(n):
                value = b"%s-%d" % (client.encode(), len(sent) + i)
                m = await producer.send(topic, value, key=b"k%d" % (i % 7))
                batch.append((m.partition, m.offset, value))
        sent.extend(batch)
        return set(batch)

    def got(*ms: Member) -> list:
        return [r for m in ms for r in m.got]

    async with trio.open_nursery() as nursery:
        with stopping([a, b]):
            nursery.start_soon(trio.to_thread.run_sync, RUN[client], a, kafka_bootstrap)
            await until(lambda: a.assigned == EVERY_PARTITION, f"{client}: the first member holds every partition")
            nursery.start_soon(trio.to_thread.run_sync, RUN[client], b, kafka_bootstrap)
            await until(
                lambda: (
                    a.assigned
                    and b.assigned
                    and a.assigned | b.assigned == EVERY_PARTITION
                    and not a.assigned & b.assigned
                ),
                f"{client}: two members share the partitions",
            )
            first = await produce(30)
            await until(lambda: set(got(a, b)) == first, f"{client}: the two members read what was sent")
            assert len(got(a, b)) == len(first)  # each record once, by one member
            assert {p for p, _, _ in a.got} <= a.assigned and {p for p, _, _ in b.got} <= b.assigned

            a.stop.set()  # a leaves; b takes its partitions over
            await until(lambda: b.assigned == EVERY_PARTITION, f"{client}: the remaining member takes over")
            second = await produce(15)
            await until(lambda: set(got(a, b)) == first | second, f"{client}: the remaining member reads on")
            assert len(got(a, b)) == len(first) + len(second)
            b.stop.set()

    # What they committed is the group's, as the native side sees it too: past each
    # partition's last record (a Raft no-op after it may be passed too).
    async with Admin(bootstrap) as admin:
        fetched = await admin.cluster.coordinator_request(group, OffsetFetch(group))
    committed = {p: o for _, p, o in fetched.offsets}
    assert committed.keys() == {p for p, _, _ in sent}, (client, committed)
    assert all(committed[p] > o for p, o, _ in sent), (client, committed)

    # Both left; a member started now resumes from what they committed.
    third = await produce(9)
    async with trio.open_nursery() as nursery:
        with stopping([c]):
            nursery.start_soon(trio.to_thread.run_sync, RUN[client], c, kafka_bootstrap)
            await until(lambda: len(c.got) >= len(third), f"{client}: a new member reads what came after")
            await trio.sleep(0.5)  # anything before the commits would have come first
            c.stop.set()
    assert set(c.got) == third and len(c.got) == len(third), (client, sorted(c.got))


async def test_each_kafka_client_shares_a_group_rebalances_as_members_leave_and_resumes(tmp_path):
    async with kafka_cluster(tmp_path, *(f"life-{client}" for client in CLIENTS)) as (cluster, kafka_bootstrap):
        async with trio.open_nursery() as nursery:
            for client in CLIENTS:
                nursery.start_soon(group_life, cluster.bootstrap, kafka_bootstrap, client)
