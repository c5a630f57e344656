"""Kafka transactions against real node processes: librdkafka's, kafka-python's and
aiokafka's transactional producers commit and abort, read_committed consumers (Kafka's and ours)
see only what committed, each client's consume-transform-produce loop moves each record
exactly once with its offsets in the transaction, and a second producer fences the first."""

from __future__ import annotations

import trio

from client import Admin, Producer
from client.protocol import ListOffsets, OffsetFetch
from tests.cluster import read_all
from tests.node.test_kafka_process import PARTITIONS, kafka_cluster


def rd_producer(bootstrap: str, tid: str):
    from confluent_kafka import Producer as RdProducer

    producer = RdProducer({"bootstrap.servers": bootstrap, "transactional.id": tid, "transaction.timeout.ms": 30_000})
    producer.init_transactions(30)
    return producer


def rd_transactions(bootstrap: str, topic: str) -> None:
    """Three transactions of five keyed records: the first and last commit, the middle aborts."""
    producer = rd_producer(bootstrap, "rd-txn")
    for n, commit in ((0, True), (1, False), (2, True)):
        producer.begin_transaction()
        for i in range(5):
            producer.produce(topic, value=b"t%d-%d" % (n, i), key=b"k%d" % i, headers=[("txn", b"%d" % n)])
        producer.flush(30)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)


def rd_read(bootstrap: str, topic: str, isolation: str, expected: int) -> list[bytes]:
    from confluent_kafka import Consumer as RdConsumer
    from confluent_kafka import TopicPartition as RdTopicPartition

    consumer = RdConsumer(
        {"bootstrap.servers": bootstrap, "group.id": f"reader-{isolation}", "isolation.level": isolation}
    )
    try:
        consumer.assign([RdTopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        got: list[bytes] = []
        for _ in range(40):
            msg = consumer.poll(0.25)
            if msg is not None and msg.error() is None:
                got.append(msg.value())
            if len(got) >= expected:
                # Anything past `expected` would be a record that must not be seen: look a bit longer.
                for _ in range(4):
                    msg = consumer.poll(0.25)
                    if msg is not None and msg.error() is None:
                        got.append(msg.value())
                break
        return got
    finally:
        consumer.close()


def kafka_python_transactions(bootstrap: str, topic: str) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap.split(","), transactional_id="kp-txn")
    try:
        producer.init_transactions()
        for commit in (False, True):
            producer.begin_transaction()
            for i in range(4):
                producer.send(topic, value=b"kp-%s-%d" % (b"c" if commit else b"a", i), key=b"kp%d" % i)
            producer.flush(timeout=30)
            if commit:
                producer.commit_transaction()
            else:
                producer.abort_transaction()
    finally:
        producer.close(timeout=5)


def aiokafka_transactions(bootstrap: str, topic: str) -> None:
    import asyncio

    from aiokafka import AIOKafkaProducer

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id="aio-txn")
        await producer.start()
        try:
            for commit in (True, False):
                await producer.begin_transaction()
                for i in range(3):
                    await producer.send(topic, value=b"aio-%s-%d" % (b"c" if commit else b"a", i))
                if commit:
                    await producer.commit_transaction()
                else:
                    await producer.abort_transaction()
        finally:
            await producer.stop()

    asyncio.run(run())


def rd_transform(bootstrap: str, source: str, sink: str, group: str, expected: int) -> int:
    """Consume `source` in `group`, write each value upper-cased to `sink`, and commit the
    consumer's offsets in the same transaction; returns how many were moved."""
    from confluent_kafka import Consumer as RdConsumer

    consumer = RdConsumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    producer = rd_producer(bootstrap, "transformer")
    moved = 0
    try:
        consumer.subscribe([source])
        for _ in range(200):
            msgs = [m for m in consumer.consume(50, 0.25) if m.error() is None]
            if not msgs:
                if moved >= expected:
                    break
                continue
            producer.begin_transaction()
            for m in msgs:
                producer.produce(sink, value=m.value().upper(), key=m.key())
            producer.send_offsets_to_transaction(
                consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 30
            )
            producer.commit_transaction(30)
            moved += len(msgs)
        return moved
    finally:
        consumer.close()


def kp_transform(bootstrap: str, source: str, sink: str, group: str, expected: int) -> int:
    """`rd_transform` with kafka-python: the offsets go with the consumer's group metadata."""
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.structs import OffsetAndMetadata

    consumer = KafkaConsumer(
        source,
        bootstrap_servers=bootstrap.split(","),
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    producer = KafkaProducer(bootstrap_servers=bootstrap.split(","), transactional_id=f"{group}-kp")
    moved = 0
    try:
        producer.init_transactions()
        for _ in range(200):
            records = [r for rs in consumer.poll(timeout_ms=250).values() for r in rs]
            if not records:
                if moved >= expected:
                    break
                continue
            producer.begin_transaction()
            for r in records:
                producer.send(sink, value=r.value.upper(), key=r.key)
            offsets = {tp: OffsetAndMetadata(consumer.position(tp), "", -1) for tp in consumer.assignment()}
            producer.send_offsets_to_transaction(offsets, consumer.group_metadata())
            producer.commit_transaction()
            moved += len(records)
        return moved
    finally:
        consumer.close()
        producer.close(timeout=5)


def aio_transform(bootstrap: str, source: str, sink: str, group: str, expected: int) -> int:
    """`rd_transform` with aiokafka: the offsets go with the group's name."""
    import asyncio

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    async def run() -> int:
        consumer = AIOKafkaConsumer(
            source,
            bootstrap_servers=bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"{group}-aio")
        await consumer.start()
        await producer.start()
        moved = 0
        try:
            for _ in range(200):
                records = [r for rs in (await consumer.getmany(timeout_ms=250)).values() for r in rs]
                if not records:
                    if moved >= expected:
                        break
                    continue
                async with producer.transaction():
                    for r in records:
                        await producer.send(sink, value=r.value.upper(), key=r.key)
                    offsets = {tp: await consumer.position(tp) for tp in consumer.assignment()}
                    await producer.send_offsets_to_transaction(offsets, group)
                moved += len(records)
            return moved
        finally:
            await producer.stop()
            await consumer.stop()

    return asyncio.run(run())


TRANSFORMS = {"librdkafka": rd_transform, "kafka-python": kp_transform, "aiokafka": aio_transform}


def rd_fenced(bootstrap: str, topic: str) -> str:
    """A producer whose transactional id a newer producer took: its commit fails fatally."""
    from confluent_kafka import KafkaException

    old = rd_producer(bootstrap, "fenced")
    old.begin_transaction()
    old.produce(topic, value=b"from the old producer")
    old.flush(30)
    new = rd_producer(bootstrap, "fenced")  # bumps the epoch, aborting what `old` left open
    try:
        old.commit_transaction(30)
    except KafkaException as exc:
        err = exc.args[0]
        assert err.fatal() or not err.retriable(), err
        return err.name()
    finally:
        new.begin_transaction()
        new.produce(topic, value=b"from the new producer")
        new.commit_transaction(30)
    raise AssertionError("the fenced producer committed")


async def test_kafka_transactions_commit_abort_and_read_committed(tmp_path):
    async with kafka_cluster(tmp_path, "txn", "kp") as (c, kafka_bootstrap):
        await trio.to_thread.run_sync(rd_transactions, kafka_bootstrap, "txn")
        committed = {b"t%d-%d" % (n, i) for n in (0, 2) for i in range(5)}
        aborted = {b"t1-%d" % i for i in range(5)}

        got = await trio.to_thread.run_sync(rd_read, kafka_bootstrap, "txn", "read_committed", 10)
        assert sorted(got) == sorted(committed)
        got = await trio.to_thread.run_sync(rd_read, kafka_bootstrap, "txn", "read_uncommitted", 15)
        assert sorted(got) == sorted(committed | aborted)
        native = await read_all(c.bootstrap, ["txn"])  # read_committed
        assert sorted(m.value for m in native) == sorted(committed)
        assert all(dict(m.headers)["txn"] in (b"0", b"2") for m in native)

        await trio.to_thread.run_sync(kafka_python_transactions, kafka_bootstrap, "kp")
        await trio.to_thread.run_sync(aiokafka_transactions, kafka_bootstrap, "kp")
        native = await read_all(c.bootstrap, ["kp"])
        assert sorted(m.value for m in native) == [b"aio-c-%d" % i for i in range(3)] + [
            b"kp-c-%d" % i for i in range(4)
        ]

        name = await trio.to_thread.run_sync(rd_fenced, kafka_bootstrap, "txn")
        assert name in ("_FENCED", "PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH"), name
        native = await read_all(c.bootstrap, ["txn"])
        values = {m.value for m in native}
        assert b"from the new producer" in values and b"from the old producer" not in values


async def transform_twice(c, kafka_bootstrap: str, client: str) -> None:
    """`client`'s loop moves 60 records, then a second run of it the 10 sent after."""
    raw, cooked, group = f"raw-{client}", f"cooked-{client}", f"transform-{client}"
    transform = TRANSFORMS[client]
    n = 60
    async with Producer(c.bootstrap) as producer:
        for i in range(n):
            await producer.submit(raw, b"v%d" % i, key=b"k%d" % (i % 5))
        await producer.flush()
    moved = await trio.to_thread.run_sync(transform, kafka_bootstrap, raw, cooked, group, n)
    assert moved == n, client
    out = await read_all(c.bootstrap, [cooked])
    assert sorted(m.value for m in out) == sorted(b"V%d" % i for i in range(n)), client

    # The group's offsets committed with the transactions: past every record of each
    # partition, and no further than its end (a leader change under load may add a
    # Raft no-op after the last record, which a Kafka consumer's position passes).
    records = await read_all(c.bootstrap, [raw])
    past: dict[int, int] = {}
    for m in records:
        past[m.partition] = max(past.get(m.partition, 0), m.offset + 1)
    async with Admin(c.bootstrap) as admin:
        fetched = await admin.cluster.coordinator_request(group, OffsetFetch(group))
        ends = {p: (await admin.cluster.leader_request(raw, p, ListOffsets(raw, p))).offset for p in past}
    committed = {p: o for _, p, o in fetched.offsets}
    assert committed.keys() == past.keys(), client
    assert all(past[p] <= committed[p] <= ends[p] for p in past), (client, committed, past, ends)

    # A second run of the loop, after ten more: it resumes at the committed offsets.
    async with Producer(c.bootstrap) as producer:
        for i in range(n, n + 10):
            await producer.submit(raw, b"v%d" % i, key=b"k%d" % (i % 5))
        await producer.flush()
    again = await trio.to_thread.run_sync(transform, kafka_bootstrap, raw, cooked, group, 10)
    assert again == 10, client
    out = await read_all(c.bootstrap, [cooked])
    assert sorted(m.value for m in out) == sorted(b"V%d" % i for i in range(n + 10)), client


async def test_kafka_consume_transform_produce_moves_each_record_once(tmp_path):
    topics = [f"{kind}-{client}" for client in TRANSFORMS for kind in ("raw", "cooked")]
    async with kafka_cluster(tmp_path, *topics) as (c, kafka_bootstrap):
        async with trio.open_nursery() as nursery:
            for client in TRANSFORMS:
                nursery.start_soon(transform_twice, c, kafka_bootstrap, client)
