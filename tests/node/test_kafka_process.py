"""Kafka clients against real node processes: kafka-python, librdkafka, aiokafka and kcat
produce (idempotent, keyed, with headers) and consume through the nodes' Kafka listeners,
what crosses between the two protocols arrives whole, and a leader killed mid-stream
loses and duplicates nothing."""

from __future__ import annotations

import shutil
import socket
import struct
import threading
from contextlib import asynccontextmanager

import pytest
import trio
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from client import Admin, Consumer, Producer
from client.errors import InvalidRequestError
from client.partitioner import partition_for_key
from node.kafka_wire import SUPPORTED
from tests.cluster import process_cluster, read_all

TOPIC, PARTITIONS = "orders", 3


def kafka_produce(bootstrap: str, n: int) -> list[tuple[int, int]]:
    producer = KafkaProducer(
        bootstrap_servers=bootstrap.split(","), enable_idempotence=True, acks="all", request_timeout_ms=10_000
    )
    try:
        futures = [
            producer.send(TOPIC, value=b"kafka-%d" % i, key=b"key-%d" % (i % 7), headers=[("origin", b"kafka")])
            for i in range(n)
        ]
        producer.flush(timeout=30)
        return [(f.get(timeout=10).partition, f.get(timeout=10).offset) for f in futures]
    finally:
        producer.close(timeout=5)


def kafka_consume(bootstrap: str, expected: int) -> list:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    try:
        consumer.assign([TopicPartition(TOPIC, p) for p in range(PARTITIONS)])
        got: list = []
        for _ in range(60):
            for records in consumer.poll(timeout_ms=500).values():
                got.extend(records)
            if len(got) >= expected:
                break
        return got
    finally:
        consumer.close()


async def wait_kafka_metadata(bootstrap: str, nodes: int) -> None:
    """Until a node names every node's Kafka address (its peers' come by gossip)."""

    def brokers() -> int:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), request_timeout_ms=5000)
        try:
            return len(consumer._client.cluster.brokers()) if consumer.topics() is not None else 0
        finally:
            consumer.close()

    with trio.fail_after(30):
        while await trio.to_thread.run_sync(brokers) < nodes:
            await trio.sleep(0.2)


async def wait_preferred_leaders(admin: Admin, topics: tuple[str, ...]) -> None:
    """Until each partition of `topics` is led by its preferred replica. On a loaded
    machine another replica may win a new topic's first election and the balancer hand
    leadership back a moment later; aiokafka's consumer, resetting a position, retries
    NOT_LEADER_OR_FOLLOWER at the leader it cached without refreshing its metadata
    (until `metadata_max_age_ms`, 5 min: docs/kafka.md), so a test must not start one
    on metadata read in between."""
    with trio.fail_after(30):
        while True:
            md = await admin.cluster.refresh_metadata(list(topics))
            if all(p.leader == p.replicas[0] for t in md.topics for p in t.partitions):
                return
            await trio.sleep(0.1)


@asynccontextmanager
async def kafka_cluster(tmp_path, *topics: str, nodes: int = 3):
    """Node processes with Kafka listeners, `topics` created (PARTITIONS each); yields the
    cluster and its Kafka bootstrap once a node names every node's Kafka address."""
    async with process_cluster(tmp_path, nodes, kafka=True) as c:
        await c.wait_ready()
        kafka_bootstrap = ",".join(c.kafka.values())
        async with Admin(c.bootstrap) as admin:
            for topic in topics:
                await admin.create_topic(topic, PARTITIONS, nodes)
            await wait_preferred_leaders(admin, topics)
        await wait_kafka_metadata(kafka_bootstrap, nodes)
        yield c, kafka_bootstrap


async def test_kafka_python_and_native_clients_share_one_cluster(tmp_path):
    async with kafka_cluster(tmp_path, TOPIC) as (c, kafka_bootstrap):
        placed = await trio.to_thread.run_sync(kafka_produce, kafka_bootstrap, 30)
        # Keys land where our partitioner puts them: both are Kafka's murmur2.
        for i, (p, _) in enumerate(placed):
            assert p == partition_for_key(b"key-%d" % (i % 7), PARTITIONS)

        async with Producer(c.bootstrap) as producer:
            for i in range(10):
                await producer.send(TOPIC, b"native-%d" % i, key=b"n", headers={"origin": b"native"})

        # A native consumer reads what the Kafka producer wrote, and its own.
        async with Consumer(c.bootstrap, topics=[TOPIC], offset_reset="earliest") as consumer:
            seen = []
            with trio.fail_after(30):
                while len(seen) < 40:
                    for messages in (await consumer.getmany(max_records=100, timeout=1)).values():
                        seen.extend(messages)
        by_value = {m.value: m for m in seen}
        k0 = by_value[b"kafka-0"]
        assert (k0.key, dict(k0.headers)) == (b"key-0", {"origin": b"kafka"})
        assert (k0.partition, k0.offset) == placed[0]
        assert sorted(v for v in by_value if v.startswith(b"kafka-")) == sorted(b"kafka-%d" % i for i in range(30))

        # And a Kafka consumer reads both, with the native messages' keys and headers.
        records = await trio.to_thread.run_sync(kafka_consume, kafka_bootstrap, 40)
        values = {r.value: r for r in records}
        assert set(values) == {b"kafka-%d" % i for i in range(30)} | {b"native-%d" % i for i in range(10)}
        n0 = values[b"native-0"]
        assert n0.key == b"n" and dict(n0.headers) == {"origin": b"native"}
        assert (n0.partition, n0.offset) == (by_value[b"native-0"].partition, by_value[b"native-0"].offset)
        # Offsets are the partition's: each record sits at the offset the native side saw.
        assert all((r.partition, r.offset) == (by_value[r.value].partition, by_value[r.value].offset) for r in records)

        # acks=0: nothing comes back, and the records are written all the same.
        await trio.to_thread.run_sync(fire_and_forget, kafka_bootstrap, 5)
        with trio.fail_after(30):
            while len([m for m in await read_all(c.bootstrap, [TOPIC], quiet=0.5) if m.value.startswith(b"acks0")]) < 5:
                await trio.sleep(0.2)


def fire_and_forget(bootstrap: str, n: int) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap.split(","), acks=0, enable_idempotence=False)
    try:
        for i in range(n):
            producer.send(TOPIC, b"acks0-%d" % i)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=5)


async def test_a_newer_api_versions_gets_our_ranges_and_the_connection_goes_on(tmp_path):
    async with process_cluster(tmp_path, 1, kafka=True) as c:
        await c.wait_ready()
        host, port = c.kafka[1].rsplit(":", 1)

        def exchange() -> tuple[bytes, bytes]:
            with socket.create_connection((host, int(port)), timeout=10) as s:
                out = []
                for version in (99, 0):  # ApiVersions v99, then v0 on the same connection
                    body = struct.pack(">hhih", 18, version, 42 + version, -1)
                    s.sendall(struct.pack(">i", len(body)) + body)
                    size = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
                    out.append(s.recv(size, socket.MSG_WAITALL))
                return out[0], out[1]

        newer, v0 = await trio.to_thread.run_sync(exchange)
        # v0 layout: correlation id, error code, then [api key, min, max]...
        corr, error, count = struct.unpack_from(">ihi", newer)
        assert (corr, error, count) == (42 + 99, 35, len(SUPPORTED))  # 35: UNSUPPORTED_VERSION
        ranges = {
            struct.unpack_from(">hhh", newer, 10 + 6 * i)[0]: struct.unpack_from(">hhh", newer, 10 + 6 * i)[1:]
            for i in range(count)
        }
        assert ranges == SUPPORTED
        corr, error, _ = struct.unpack_from(">ihi", v0)
        assert (corr, error) == (42, 0)


def librdkafka_roundtrip(bootstrap: str, topic: str, n: int) -> tuple[list, list]:
    """confluent-kafka (librdkafka, the flexible versions): an idempotent producer, then a
    consumer of every partition by assignment."""
    from confluent_kafka import Consumer as RdConsumer
    from confluent_kafka import Producer as RdProducer
    from confluent_kafka import TopicPartition as RdTopicPartition

    acked: list = []
    # murmur2_random: the Java client's partitioner (and ours); librdkafka's default is CRC32.
    producer = RdProducer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5, "partitioner": "murmur2_random"}
    )
    for i in range(n):
        producer.produce(
            topic,
            value=b"rd-%d" % i,
            key=b"rk-%d" % (i % 5),
            headers=[("origin", b"librdkafka")],
            on_delivery=lambda err, msg: acked.append((err, msg.partition(), msg.offset())),
        )
    assert producer.flush(30) == 0
    assert topic in producer.list_topics(timeout=10).topics  # Metadata for every topic (v12, trailing bytes)
    consumer = RdConsumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "unused",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        consumer.assign([RdTopicPartition(topic, p, 0) for p in range(PARTITIONS)])  # 0: the first offset
        got: list = []
        for _ in range(60):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append((msg.partition(), msg.offset(), msg.key(), msg.value(), msg.headers()))
            if len(got) >= n:
                break
        return acked, got
    finally:
        consumer.close()


def aiokafka_roundtrip(bootstrap: str, topic: str, n: int) -> tuple[list, list]:
    """aiokafka (the legacy, non-flexible versions) on its own asyncio loop."""
    import asyncio

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition as AioTopicPartition

    async def run() -> tuple[list, list]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
        await producer.start()
        try:
            sent = [
                await producer.send_and_wait(topic, b"aio-%d" % i, key=b"ak", headers=[("origin", b"aiokafka")])
                for i in range(n)
            ]
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        try:
            consumer.assign([AioTopicPartition(topic, p) for p in range(PARTITIONS)])
            got: list = []
            for _ in range(60):
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got.extend((r.partition, r.offset, r.key, r.value, r.headers) for r in records)
                if len(got) >= n:
                    break
            return [(s.partition, s.offset) for s in sent], got
        finally:
            await consumer.stop()

    return asyncio.run(run())


async def test_librdkafka_and_aiokafka_produce_and_consume(tmp_path):
    async with kafka_cluster(tmp_path, "rd", "aio") as (c, kafka_bootstrap):
        acked, got = await trio.to_thread.run_sync(librdkafka_roundtrip, kafka_bootstrap, "rd", 20)
        assert all(err is None for err, _, _ in acked) and len(acked) == 20
        assert sorted((p, o) for _, p, o in acked) == sorted((p, o) for p, o, *_ in got)
        assert {v for *_, v, _ in got} == {b"rd-%d" % i for i in range(20)}
        assert all(h == [("origin", b"librdkafka")] for *_, h in got)
        for p, _, key, _, _ in got:
            assert p == partition_for_key(key, PARTITIONS)

        sent, got = await trio.to_thread.run_sync(aiokafka_roundtrip, kafka_bootstrap, "aio", 10)
        assert sorted(sent) == sorted((p, o) for p, o, *_ in got)
        assert [v for *_, v, _ in sorted(got)] == [b"aio-%d" % i for i in range(10)]  # one key: one partition, in order
        assert all(k == b"ak" and h == (("origin", b"aiokafka"),) for _, _, k, _, h in got)

        # The native consumer sees the same records at the same offsets.
        native = await read_all(c.bootstrap, ["rd", "aio"])
        assert {(m.topic, m.partition, m.offset) for m in native} == {("rd", p, o) for _, p, o in acked} | {
            ("aio", p, o) for p, o in sent
        }


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed (.ci/run installs Debian's kcat)")
async def test_kcat_lists_produces_and_consumes(tmp_path):
    async with kafka_cluster(tmp_path, "kc") as (c, kafka_bootstrap):
        with trio.fail_after(60):
            listing = await trio.run_process(["kcat", "-L", "-b", kafka_bootstrap, "-t", "kc"], capture_stdout=True)
            assert b"3 brokers" in listing.stdout and b'topic "kc" with 3 partitions' in listing.stdout
            lines = b"".join(b"k%d:v%d\n" % (i, i) for i in range(12))
            await trio.run_process(["kcat", "-P", "-b", kafka_bootstrap, "-t", "kc", "-K:"], stdin=lines)
            out = await trio.run_process(
                ["kcat", "-C", "-b", kafka_bootstrap, "-t", "kc", "-o", "beginning", "-e", "-q", "-f", "%k=%s\\n"],
                capture_stdout=True,
            )
        assert sorted(out.stdout.split()) == sorted(b"k%d=v%d" % (i, i) for i in range(12))
        native = await read_all(c.bootstrap, ["kc"])
        assert sorted(m.value for m in native) == sorted(b"v%d" % i for i in range(12))


def kafka_python_admin(bootstrap: str) -> tuple[list[str], str, list[str]]:
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), request_timeout_ms=10_000)
    try:
        admin.create_topics([NewTopic("made-by-kafka", 2, 3, topic_configs={"retention.ms": "3600000"})])
        try:
            admin.create_topics([NewTopic("made-by-kafka", 2, 3)])
            again = "created twice"
        except TopicAlreadyExistsError:
            again = "already exists"
        listed = sorted(admin.list_topics())
        admin.delete_topics(["made-by-kafka"])
        return listed, again, sorted(admin.list_topics())
    finally:
        admin.close()


def librdkafka_admin(bootstrap: str) -> tuple[str | None, str | None]:
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.admin import NewTopic as RdNewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    [(_, created)] = admin.create_topics([RdNewTopic("made-by-rd", num_partitions=3, replication_factor=3)]).items()
    created.result(timeout=30)
    [(_, refused)] = admin.create_topics([RdNewTopic("bad name!", num_partitions=1, replication_factor=1)]).items()
    try:
        refused.result(timeout=30)
        refusal = None
    except Exception as exc:  # a KafkaException naming Kafka's error
        refusal = str(exc)
    [(_, deleted)] = admin.delete_topics(["made-by-rd"]).items()
    deleted.result(timeout=30)
    return "made-by-rd", refusal


def aiokafka_admin(bootstrap: str) -> tuple[list[str], list[str], list[str]]:
    """aiokafka's admin client (the legacy versions): create, describe, delete."""
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin import NewTopic as AioNewTopic

    async def run() -> tuple[list[str], list[str], list[str]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([AioNewTopic("made-by-aio", 2, 3)])
            listed = sorted(await admin.list_topics())
            described = [t["topic"] for t in await admin.describe_topics(["made-by-aio"]) if len(t["partitions"]) == 2]
            await admin.delete_topics(["made-by-aio"])
            return listed, described, sorted(await admin.list_topics())
        finally:
            await admin.close()

    return asyncio.run(run())


async def test_kafka_admin_clients_create_and_delete_topics(tmp_path):
    async with kafka_cluster(tmp_path) as (c, kafka_bootstrap):
        listed, again, after = await trio.to_thread.run_sync(kafka_python_admin, kafka_bootstrap)
        assert "made-by-kafka" in listed and again == "already exists" and "made-by-kafka" not in after
        created, refusal = await trio.to_thread.run_sync(librdkafka_admin, kafka_bootstrap)
        assert refusal is not None and "INVALID" in refusal.upper()
        listed, described, after = await trio.to_thread.run_sync(aiokafka_admin, kafka_bootstrap)
        assert "made-by-aio" in listed and described == ["made-by-aio"] and "made-by-aio" not in after
        async with Admin(c.bootstrap) as admin:
            with trio.fail_after(10):
                while created in await admin.list_topics() or "made-by-kafka" in await admin.list_topics():
                    await trio.sleep(0.1)  # both deleted, as the native side sees it


def librdkafka_group(bootstrap: str, topic: str, group: str, expected: int) -> list:
    from confluent_kafka import Consumer as RdConsumer

    consumer = RdConsumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([topic])
        got: list = []
        for _ in range(120):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append((msg.partition(), msg.offset()))
            if len(got) >= expected:
                break
        consumer.commit(asynchronous=False)
        return got
    finally:
        consumer.close()


def aiokafka_group(bootstrap: str, topic: str, group: str, expected: int) -> list:
    import asyncio

    from aiokafka import AIOKafkaConsumer

    async def run() -> list:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False
        )
        await consumer.start()
        try:
            got: list = []
            for _ in range(60):
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got.extend((r.partition, r.offset) for r in records)
                if len(got) >= expected:
                    break
            await consumer.commit()
            return got
        finally:
            await consumer.stop()

    return asyncio.run(run())


async def test_librdkafka_and_aiokafka_members_of_one_group_take_over_from_each_other(tmp_path):
    async with kafka_cluster(tmp_path, "shared") as (c, kafka_bootstrap):
        first = await trio.to_thread.run_sync(aiokafka_roundtrip, kafka_bootstrap, "shared", 12)
        got = await trio.to_thread.run_sync(librdkafka_group, kafka_bootstrap, "shared", "mixed", 12)
        assert sorted(got) == sorted(first[0])
        async with Producer(c.bootstrap) as producer:  # a native producer, for a change
            more = [await producer.send("shared", b"more-%d" % i, key=b"m") for i in range(5)]
        got = await trio.to_thread.run_sync(aiokafka_group, kafka_bootstrap, "shared", "mixed", 5)
        assert sorted(got) == sorted((m.partition, m.offset) for m in more)  # from the group's commit on
        # A native member may not join a group Kafka clients use while they are in it;
        # now that they left it is a group with offsets only, and a native consumer
        # of it starts from them.
        async with Consumer(c.bootstrap, group="mixed", topics=["shared"], offset_reset="earliest") as consumer:
            with trio.move_on_after(3):
                leftover = await consumer.getmany(max_records=100, timeout=2)
        assert not any(leftover.values())


def leaves(group: BaseExceptionGroup) -> list:
    return [leaf for e in group.exceptions for leaf in (leaves(e) if isinstance(e, BaseExceptionGroup) else [e])]


def hold_membership(bootstrap: str, group: str, joined: threading.Event, stop: threading.Event) -> None:
    consumer = KafkaConsumer(TOPIC, bootstrap_servers=bootstrap.split(","), group_id=group, session_timeout_ms=6000)
    try:
        while not stop.is_set():
            consumer.poll(timeout_ms=200)
            if consumer.assignment():
                joined.set()
    finally:
        consumer.close()


def kafka_admin_view(bootstrap: str, group: str) -> tuple[list, list, dict]:
    """kafka-python's admin client: the groups listed, `group` described, the cluster."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), request_timeout_ms=10_000)
    try:
        listed = sorted((g["group_id"], g["protocol_type"]) for g in admin.list_groups())
        described = [
            (name, d["group_state"], d["protocol_type"], len(d["members"]))
            for name, d in admin.describe_groups([group]).items()
        ]
        return listed, described, admin.describe_cluster()
    finally:
        admin.close()


def try_kafka_join(bootstrap: str, group: str) -> str:
    from kafka.errors import KafkaError as KafkaClientError

    consumer = KafkaConsumer(TOPIC, bootstrap_servers=bootstrap.split(","), group_id=group, session_timeout_ms=6000)
    try:
        for _ in range(20):
            consumer.poll(timeout_ms=200)
        return "joined" if consumer.assignment() else "not joined"
    except KafkaClientError as exc:
        return type(exc).__name__
    finally:
        consumer.close()


async def test_a_group_is_either_kafka_or_native_never_both(tmp_path):
    async with kafka_cluster(tmp_path, TOPIC) as (c, kafka_bootstrap):
        joined, stop = threading.Event(), threading.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, hold_membership, kafka_bootstrap, "kafka-kind", joined, stop)
            try:
                with trio.fail_after(20):
                    while not joined.is_set():
                        await trio.sleep(0.1)
                refused: list[InvalidRequestError] = []
                try:
                    with trio.fail_after(20):
                        async with Consumer(c.bootstrap, group="kafka-kind", topics=[TOPIC]) as consumer:
                            await consumer.getmany(timeout=5)
                except* InvalidRequestError as group:
                    refused.extend(leaves(group))
                assert refused and "Kafka's group protocol" in refused[0].message
                listed, described, cluster = await trio.to_thread.run_sync(
                    kafka_admin_view, kafka_bootstrap, "kafka-kind"
                )
                assert ("kafka-kind", "consumer") in listed
                assert described == [("kafka-kind", "Stable", "consumer", 1)]
                assert len(cluster["brokers"]) == 3 and cluster["controller_id"] in (1, 2, 3)
            finally:
                stop.set()

        async with Producer(c.bootstrap) as producer:
            await producer.send(TOPIC, b"something to read")
        async with Consumer(c.bootstrap, group="native-kind", topics=[TOPIC], offset_reset="earliest") as consumer:
            with trio.fail_after(20):  # a member, with partitions
                while not await consumer.getmany(max_records=1, timeout=1):
                    pass
            outcome = await trio.to_thread.run_sync(try_kafka_join, kafka_bootstrap, "native-kind")
            listed, described, _ = await trio.to_thread.run_sync(kafka_admin_view, kafka_bootstrap, "native-kind")
        assert outcome == "InconsistentGroupProtocolError"
        assert ("native-kind", "tidemq") in listed and described[0][1:3] == ("Stable", "tidemq")


def static_member(bootstrap: str, instance: str, events: list, stop: threading.Event, ready: threading.Event) -> set:
    """A librdkafka member with a group.instance.id: polls until `stop`, noting every
    assignment and revocation; closes without leaving (static members do not)."""
    from confluent_kafka import Consumer as RdConsumer

    consumer = RdConsumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "static",
            "group.instance.id": instance,
            "session.timeout.ms": 20_000,
            "auto.offset.reset": "earliest",
        }
    )
    held: set = set()

    def assigned(c, parts):
        events.append((instance, "assign", sorted(p.partition for p in parts)))
        held.update(p.partition for p in parts)
        ready.set()

    def revoked(c, parts):
        events.append((instance, "revoke", sorted(p.partition for p in parts)))

    try:
        consumer.subscribe([TOPIC], on_assign=assigned, on_revoke=revoked)
        while not stop.is_set():
            consumer.poll(0.1)
        return set(p.partition for p in consumer.assignment())
    finally:
        consumer.close()


async def test_a_static_member_restarting_within_its_session_causes_no_rebalance(tmp_path):
    async with kafka_cluster(tmp_path, TOPIC) as (c, kafka_bootstrap):
        events: list = []
        stop_a, stop_b = threading.Event(), threading.Event()
        ready_a, ready_b = threading.Event(), threading.Event()
        member = trio.to_thread.run_sync
        async with trio.open_nursery() as outer:
            outer.start_soon(member, static_member, kafka_bootstrap, "b", events, stop_b, ready_b)
            try:
                async with trio.open_nursery() as first:
                    first.start_soon(member, static_member, kafka_bootstrap, "a", events, stop_a, ready_a)
                    try:
                        with trio.fail_after(30):  # settled: both hold partitions
                            while not (ready_a.is_set() and ready_b.is_set()):
                                await trio.sleep(0.1)
                        await trio.sleep(1.0)
                    finally:
                        stop_a.set()
                before = list(events)
                held_a = next(p for i, kind, p in reversed(before) if i == "a" and kind == "assign")
                # `a` comes back under the same instance id, well within its 20 s session.
                stop_a, ready_a = threading.Event(), threading.Event()
                async with trio.open_nursery() as second:
                    second.start_soon(member, static_member, kafka_bootstrap, "a", events, stop_a, ready_a)
                    try:
                        with trio.fail_after(30):
                            while not ready_a.is_set():
                                await trio.sleep(0.1)
                        await trio.sleep(1.0)
                        after = events[len(before) :]  # (closing revokes: not counted)
                    finally:
                        stop_a.set()
            finally:
                stop_b.set()
        assert [e for e in after if e[0] == "b"] == [], after  # b was never asked to rebalance
        assert [e for e in after if e[0] == "a"][0] == ("a", "assign", held_a)  # a got its own partitions back


def steady_producer(bootstrap: str, client: str, n: int, killed: threading.Event) -> list:
    """`n` keyed records with unique values, paced so a leader dies mid-stream (the test
    kills it once a third is sent); the delivery outcome of each."""
    import time

    half = n // 3
    if client == "librdkafka":
        from confluent_kafka import Producer as RdProducer

        outcomes: list = []
        producer = RdProducer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "partitioner": "murmur2_random",
                "message.timeout.ms": 60_000,
            }
        )
        for i in range(n):
            value = b"rd-%d" % i
            producer.produce(
                TOPIC, value=value, key=b"k%d" % (i % 9), on_delivery=lambda e, m: outcomes.append((e, m.value()))
            )
            producer.poll(0)
            if i == half:
                killed.wait(30)
            time.sleep(0.01)
        producer.flush(60)
        return [(e is None, v) for e, v in outcomes]
    if client == "aiokafka":
        return aiokafka_steady(bootstrap, n, half, killed)
    producer = KafkaProducer(
        bootstrap_servers=bootstrap.split(","), enable_idempotence=True, acks="all", request_timeout_ms=10_000
    )
    futures = []
    try:
        for i in range(n):
            value = b"kp-%d" % i
            futures.append((value, producer.send(TOPIC, value=value, key=b"k%d" % (i % 9))))
            if i == half:
                killed.wait(30)
            time.sleep(0.01)
        producer.flush(timeout=60)
        results = []
        for value, f in futures:
            try:
                f.get(timeout=30)
                results.append((True, value))
            except Exception:  # noqa: BLE001 - a failed send is what the test counts
                results.append((False, value))
        return results
    finally:
        producer.close(timeout=5)


def aiokafka_steady(bootstrap: str, n: int, half: int, killed: threading.Event) -> list:
    import asyncio

    from aiokafka import AIOKafkaProducer

    async def run() -> list:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, request_timeout_ms=10_000)
        await producer.start()
        try:
            sent = []
            for i in range(n):
                value = b"aio-%d" % i
                sent.append((value, await producer.send(TOPIC, value=value, key=b"k%d" % (i % 9))))
                if i == half:
                    await asyncio.get_running_loop().run_in_executor(None, killed.wait, 30)
                await asyncio.sleep(0.01)
            await producer.flush()
            outcomes = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
            return [(not isinstance(o, BaseException), v) for (v, _), o in zip(sent, outcomes, strict=True)]
        finally:
            await producer.stop()

    return asyncio.run(run())


async def test_a_leader_killed_mid_stream_loses_and_duplicates_nothing(tmp_path):
    async with kafka_cluster(tmp_path, TOPIC) as (c, kafka_bootstrap):
        n = 300
        killed = threading.Event()
        results: dict = {}

        async def produce(client: str) -> None:
            results[client] = await trio.to_thread.run_sync(steady_producer, kafka_bootstrap, client, n, killed)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce, "librdkafka")
            nursery.start_soon(produce, "kafka-python")
            nursery.start_soon(produce, "aiokafka")
            await trio.sleep(1.5)  # a third of the way in
            victim = await c.leader_of(TOPIC, 0)
            c.kill(victim)
            await c.wait_exit(victim)
            killed.set()
            await trio.sleep(3)
            c.start(victim)
        acked = {v for client in results.values() for ok, v in client if ok}
        assert len(acked) == 3 * n, [v for client in results.values() for ok, v in client if not ok][:5]
        got = await read_all(c.bootstrap, [TOPIC])
        values = [m.value for m in got]
        assert len(values) == len(set(values))  # nothing twice
        assert set(values) == acked  # nothing lost


def kio_exchange(addr: str, requests: list) -> list:
    """Send kio request objects on one connection, in order; their decoded answers."""
    import io

    from kio.index import load_response_schema
    from kio.serial import entity_reader, entity_writer
    from kio.static.primitive import i16, i32

    host, port = addr.rsplit(":", 1)
    answers = []
    with socket.create_connection((host, int(port)), timeout=10) as s:
        for corr, body in enumerate(requests):
            header_cls = type(body).__header_schema__
            buf = io.BytesIO()
            header = header_cls(
                request_api_key=i16(body.__api_key__),
                request_api_version=i16(body.__version__),
                correlation_id=i32(corr),
                client_id="raw",
            )
            entity_writer(header_cls)(buf, header)
            entity_writer(type(body))(buf, body)
            s.sendall(struct.pack(">i", buf.tell()) + buf.getvalue())
            size = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
            frame = s.recv(size, socket.MSG_WAITALL)
            response_cls = load_response_schema(body.__api_key__, body.__version__)
            _, used = entity_reader(response_cls.__header_schema__)(frame, 0)
            answers.append(entity_reader(response_cls)(frame, used)[0])
    return answers


async def test_an_incremental_fetch_session_carries_only_what_changed(tmp_path):
    from datetime import timedelta

    from kio.schema.fetch.v12.request import FetchPartition, FetchRequest, FetchTopic
    from kio.static.primitive import i8, i32, i64

    def fetch(session_id: int, epoch: int, offsets: dict[int, int]) -> FetchRequest:
        parts = tuple(
            FetchPartition(
                partition=i32(p),
                current_leader_epoch=i32(-1),
                fetch_offset=i64(o),
                last_fetched_epoch=i32(-1),
                log_start_offset=i64(-1),
                partition_max_bytes=i32(1 << 20),
            )
            for p, o in offsets.items()
        )
        return FetchRequest(
            cluster_id=None,
            replica_id=i32(-1),
            max_wait=timedelta(milliseconds=100),
            min_bytes=i32(1),
            max_bytes=i32(1 << 20),
            isolation_level=i8(0),
            session_id=i32(session_id),
            session_epoch=i32(epoch),
            topics=(FetchTopic(topic=TOPIC, partitions=parts),) if parts else (),
            forgotten_topics_data=(),
            rack_id="",
        )

    async with kafka_cluster(tmp_path, TOPIC, nodes=1) as (c, kafka_bootstrap):
        (full,) = await trio.to_thread.run_sync(kio_exchange, kafka_bootstrap, [fetch(0, 0, {0: 0, 1: 0, 2: 0})])
        sid = full.session_id
        assert full.error_code == 0 and sid != 0
        ends = {p.partition_index: p.high_watermark for p in full.responses[0].partitions}
        assert sorted(ends) == [0, 1, 2]
        # As a client does after records: the new offsets (the ends), then nothing.
        caught_up, quiet = await trio.to_thread.run_sync(
            kio_exchange, kafka_bootstrap, [fetch(sid, 1, ends), fetch(sid, 2, {})]
        )
        assert len(caught_up.responses[0].partitions) == 3  # named: carried
        assert quiet.error_code == 0 and quiet.responses == ()  # nothing changed: nothing carried
        async with Producer(c.bootstrap) as producer:
            md = await producer.send(TOPIC, b"news", partition=1)
        moved, stale, lost = await trio.to_thread.run_sync(
            kio_exchange, kafka_bootstrap, [fetch(sid, 3, {}), fetch(sid, 3, {}), fetch(sid + 1, 1, {})]
        )
        ((topic,),) = [moved.responses]
        assert [p.partition_index for p in topic.partitions] == [1]  # only the one with news
        assert topic.partitions[0].high_watermark == md.offset + 1 and topic.partitions[0].records
        assert stale.error_code == 71  # INVALID_FETCH_SESSION_EPOCH
        assert lost.error_code == 70  # FETCH_SESSION_ID_NOT_FOUND
