"""Delayed messages from Kafka clients (node.delay_intake): due times from the headers,
which batches hold delayed records, the intake's numbering, the records a relay writes;
and a librdkafka producer's delayed messages through real node processes: none early,
none lost, none twice, their headers and keys kept."""

from __future__ import annotations

import time

import pytest
import trio

import segments
from client import Admin, Consumer
from client.conventions import H_DELAY_DUE, H_DELAY_PARTITION, H_DELAY_TARGET, H_DELAY_VIA
from node.delay_intake import (
    DELAY_MS,
    DELIVER_AT,
    DelayHeaderError,
    IntakeState,
    delayed_records,
    due_of,
    relayed_records,
)
from tests.cluster import process_cluster


def test_due_times_from_the_headers():
    assert due_of({}, 5, 10) is None
    assert due_of({DELIVER_AT: b"5000"}, 1, 10) == 5000
    assert due_of({DELAY_MS: b"250"}, 1000, 10) == 1250  # from the record's own time
    assert due_of({DELAY_MS: b"250"}, -1, 10) == 260  # or the intake's
    assert due_of({DELIVER_AT: b"7", DELAY_MS: b"1"}, 0, 0) == 7  # an absolute time wins
    for bad in ({DELAY_MS: b"-1"}, {DELAY_MS: b"soon"}, {DELIVER_AT: None}, {DELIVER_AT: b"%d" % (1 << 62)}):
        with pytest.raises(DelayHeaderError):
            due_of(bad, 0, 0)


def test_which_batches_hold_delayed_records():
    plain = segments.build_batch([(b"k", b"v", (("trace", b"1"),), 1000)])
    delayed = segments.build_batch([(b"k", b"v", (), None), (b"k", b"w", ((DELAY_MS, b"100"),), None)])
    zipped = segments.build_batch([(b"k", b"v", ((DELAY_MS, b"100"),), None)], compression=segments.Compression.GZIP)
    now = int(time.time() * 1000)
    assert not delayed_records(plain, now)
    assert delayed_records(delayed, now) and delayed_records(zipped, now)
    with pytest.raises(DelayHeaderError):
        delayed_records(segments.build_batch([(None, b"v", ((DELAY_MS, b"x"),), None)]), now)


def test_intakes_are_numbered_in_log_order():
    state = IntakeState()
    state.taken(10, 3)
    state.taken(20, 2)
    assert state.pending == {10: 0, 20: 3} and state.next_seq == 5
    state.done(10)
    state.done(99)
    assert state.pending == {20: 3}


def test_what_a_relay_writes_is_decided_by_the_log_alone():
    inner = segments.build_batch(
        [(b"k1", b"a", ((DELAY_MS, b"500"), ("trace", b"t")), 1000), (b"k2", b"b", (), 1000)],
        producer_id=7,
        producer_epoch=0,
        base_sequence=0,
    )
    carrier = segments.build_carrier(
        segments.ControlType.DELAY_INTAKE,
        inner,
        producer_id=7,
        producer_epoch=0,
        base_sequence=0,
        span=2,
        timestamp=2000,
    )
    assert segments.verify(carrier).last_offset_delta == 1  # it takes the batch's offsets
    first, second = relayed_records(carrier, "orders", 4)
    assert first == (
        b"k1",
        b"a",
        (("trace", b"t"), (H_DELAY_TARGET, b"orders"), (H_DELAY_DUE, b"1500"), (H_DELAY_PARTITION, b"4")),
        2000,
    )
    assert second[3] == 2000 and dict(second[2])[H_DELAY_DUE] == b"2000"  # no header: due at once
    assert relayed_records(carrier, "orders", 4) == [first, second]  # again, the same


def kafka_send_delayed(bootstrap: str, now_ms: int) -> list:
    from confluent_kafka import Producer as RdProducer

    outcomes: list = []
    producer = RdProducer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 0})

    def send(value: bytes, headers: list) -> None:
        producer.produce(
            "orders",
            value=value,
            key=b"key-" + value,
            headers=headers,
            partition=0,
            on_delivery=lambda e, m: outcomes.append((e, m.value())),
        )
        producer.flush(10)

    send(b"now", [("trace", b"1")])
    send(b"in-1.5s", [(DELAY_MS, b"1500"), ("trace", b"2")])
    send(b"at+1s", [(DELIVER_AT, b"%d" % (now_ms + 1000))])
    send(b"bad", [(DELAY_MS, b"soon")])
    return outcomes


async def test_a_kafka_producers_delayed_messages_arrive_when_due(tmp_path):
    settings = {"delay_tiers_ms": [500, 1000, 2000]}
    async with process_cluster(tmp_path, 3, kafka=True, settings=settings) as c:
        await c.wait_ready()
        async with Admin(c.bootstrap) as admin:
            await admin.create_topic("orders", 1, 3)
            with trio.fail_after(30):  # the tiers exist
                while "__delay_500ms" not in await admin.list_topics(internal=True):
                    await trio.sleep(0.1)
        start = int(time.time() * 1000)
        outcomes = await trio.to_thread.run_sync(kafka_send_delayed, ",".join(c.kafka.values()), start)
        sent = {v: e for e, v in outcomes}
        assert sent[b"now"] is None and sent[b"in-1.5s"] is None and sent[b"at+1s"] is None
        assert sent[b"bad"] is not None and "INVALID_REQUEST" in sent[b"bad"].name()
        got: dict[bytes, tuple[float, object]] = {}
        async with Consumer(c.bootstrap, topics=["orders"], offset_reset="earliest", max_wait=0.05) as consumer:
            with trio.fail_after(30):
                async for msg in consumer:
                    assert msg.value not in got, "delivered twice"
                    got[msg.value] = (time.time() * 1000, msg)
                    if len(got) == 3:
                        break
            with trio.move_on_after(2):  # and nothing more comes
                extra = await consumer.__anext__()
                pytest.fail(f"unexpected {extra}")
        # Written at once, before the delayed ones came back from the tier to the partition:
        assert got[b"now"][1].offset < min(got[b"in-1.5s"][1].offset, got[b"at+1s"][1].offset)
        assert got[b"in-1.5s"][0] >= start + 1500 and got[b"at+1s"][0] >= start + 1000
        msg = got[b"in-1.5s"][1]
        assert msg.key == b"key-in-1.5s" and dict(msg.headers)["trace"] == b"2"  # theirs kept, ours gone:
        assert set(dict(msg.headers)) == {"trace", H_DELAY_VIA}  # but the way it came


async def test_an_intake_relayed_again_arrives_once(tmp_path):
    # A new leader relays what its predecessor may already have relayed: the same
    # records under the same numbers, which the tier's idempotence drops.
    from client.protocol import ACKS_ALL
    from tests.cluster import local_cluster

    async with local_cluster(tmp_path, delay_tiers_ms=[500, 1000]) as c:
        async with Admin(c.bootstrap) as admin:
            await admin.create_topic("orders", 1, 3)
            with trio.fail_after(30):
                while "__delay_500ms" not in await admin.list_topics(internal=True):
                    await trio.sleep(0.1)
                await admin.wait_for_leaders("__delay_500ms")
        leader = (await c.wait_leaders("orders"))[0]
        broker = c.brokers[leader]
        part = broker.partitions[("orders", 0)]
        batch = segments.build_batch(
            [(b"k", b"v%d" % i, ((DELAY_MS, b"200"),), None) for i in range(3)],
            producer_id=4242,  # (any id the controller has not handed out: the test's own)
            producer_epoch=0,
            base_sequence=0,
        )
        with trio.fail_after(10):
            answer = await part.produce(batch, ACKS_ALL, 5.0, delay_headers=True)
        offset = answer.base_offset
        for _ in range(2):  # twice more, as replays would
            await broker.delay.relay_intake(part, offset, 0)
        with trio.fail_after(10):
            while part.intake.pending:
                await trio.sleep(0.05)
        got = []
        async with Consumer(c.bootstrap, topics=["orders"], offset_reset="earliest", max_wait=0.05) as consumer:
            with trio.move_on_after(4):
                async for msg in consumer:
                    got.append(msg.value)
        assert sorted(got) == [b"v0", b"v1", b"v2"]
