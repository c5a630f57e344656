"""Failure retry with backoff (in place for serial, through the delay tier for
concurrent), dead letters with their headers, and replay."""

import time
from collections import defaultdict
from functools import partial

import trio

from client import Admin, Consumer, Producer
from client.cluster import ClusterClient
from client.conventions import (
    H_ATTEMPT,
    H_DLQ_ERROR,
    H_DLQ_TIME,
    H_ORIGIN_OFFSET,
    H_ORIGIN_TOPIC,
    H_REPLAYED_FROM,
)
from client.dlq import list_dead_letters, replay_dead_letters
from client.trace import NO_GROUP, find_by_key, trace_message
from tests.cluster import local_cluster

LADDER = [100, 500, 1000]


async def run_until(consumer, handler, cond, timeout=30, **kw):
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(consumer.run, handler, **kw))
        with trio.fail_after(timeout):
            while not cond():
                await trio.sleep(0.02)
        nursery.cancel_scope.cancel()


async def test_concurrent_retries_through_the_delay_tier_then_dead_letter_and_replay(tmp_path):
    async with local_cluster(tmp_path, delay_tiers_ms=LADDER) as c:
        async with Admin(c.bootstrap) as admin:
            await admin.create_topic("jobs", partitions=1, replication=3)
        async with Producer(c.bootstrap) as producer:
            for v in (b"flaky", b"bad", b"good"):
                await producer.send("jobs", v, key=v, headers={"user": v})
        calls = defaultdict(list)
        stamps = defaultdict(list)

        async def handler(msg):
            calls[msg.value].append(dict(msg.headers).get(H_ATTEMPT, b"0"))
            stamps[msg.value].append(time.monotonic())
            if msg.value == b"bad" or (msg.value == b"flaky" and len(calls[b"flaky"]) < 3):
                raise RuntimeError(f"cannot handle {msg.value!r}")

        letters = []

        async def dead_lettered():
            letters.extend(await list_dead_letters(c.bootstrap, "workers", idle=0.3))
            return bool(letters)

        async with Consumer(c.bootstrap, group="workers", topics=["jobs"], offset_reset="earliest") as consumer:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(consumer.run, handler, mode="concurrent", retries=2, backoff=0.2))
                with trio.fail_after(30):
                    while not (len(calls[b"flaky"]) == 3 and len(calls[b"bad"]) == 3 and await dead_lettered()):
                        await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
        assert calls[b"good"] == [b"0"]  # the partition kept flowing
        assert calls[b"flaky"] == [b"0", b"1", b"2"]  # the attempt count travels with it
        gaps = [b - a for a, b in zip(stamps[b"flaky"], stamps[b"flaky"][1:])]
        assert gaps[0] >= 0.1 - 0.01 and gaps[1] >= 0.2 - 0.01  # backoff 0.2*2**n with jitter 0.5..1.5
        (letter,) = letters
        h = dict(letter.message.headers)
        assert (letter.topic, letter.partition, letter.attempts) == ("jobs", 0, 3)
        assert h[H_ORIGIN_TOPIC] == b"jobs" and int(h[H_ORIGIN_OFFSET]) == letter.offset
        assert b"RuntimeError" in h[H_DLQ_ERROR] and "cannot handle" in letter.error
        assert abs(int(h[H_DLQ_TIME]) / 1000 - time.time()) < 30
        assert h["user"] == b"bad"

        # Another group of the same topic never saw the retries.
        async with Consumer(c.bootstrap, group="others", topics=["jobs"], offset_reset="earliest") as other:
            seen = []
            with trio.fail_after(15):
                async for msg in other:
                    seen.append(msg.value)
                    if len(seen) == 3:
                        break
            with trio.move_on_after(1.0):
                seen.append((await other.__anext__()).value)  # a retry copy here would be a bug
        assert sorted(seen) == [b"bad", b"flaky", b"good"]

        # The traces say so (client/trace.py): per group, from offsets, retries and dead letters.
        async with ClusterClient(c.bootstrap) as cluster:
            (bad,) = await find_by_key(cluster, "jobs", b"bad")
            t = await trace_message(cluster, "jobs", 0, bad.offset)
            assert t is not None and [s.what for s in t.steps] == ["produced", "retry", "retry", "dead letter"]
            assert [(g.group, g.status) for g in t.groups] == [("others", "done"), ("workers", "dead letter")]
            assert "RuntimeError: cannot handle" in t.groups[1].detail
            (flaky,) = await find_by_key(cluster, "jobs", b"flaky")
            t = await trace_message(cluster, "jobs", 0, flaky.offset)
            assert t is not None and [s.what for s in t.steps].count("retry") == 2
            # (done once the retry reader commits past its last retry: it may not have yet when the consumer stopped)
            workers = next(g for g in t.groups if g.group == "workers")
            assert workers in (("workers", "done", "handled on attempt 3"), ("workers", "retrying", workers.detail))

        replayed = await replay_dead_letters(c.bootstrap, "workers", idle=0.5)
        assert [r.message.value for r in replayed] == [b"bad"]
        assert await replay_dead_letters(c.bootstrap, "workers", idle=0.5) == []  # never twice
        async with Consumer(c.bootstrap, topics=["jobs"], offset_reset="earliest") as reader:
            values = []
            with trio.fail_after(10):
                async for msg in reader:
                    values.append((msg.value, msg.headers, msg.offset))
                    if len(values) == 4:
                        break
        assert values[-1][0] == b"bad"  # back in its topic, a fresh start: its own headers, and where it was
        where = b"workers.dlq/%d/%d" % (letter.message.partition, letter.message.offset)
        assert values[-1][1] == (("user", b"bad"), (H_REPLAYED_FROM, where))
        async with ClusterClient(c.bootstrap) as cluster:
            t = await trace_message(cluster, "jobs", 0, bad.offset)
            assert (
                t is not None and ("workers", "replayed", f"sent back to jobs-0 at offset {values[-1][2]}") in t.groups
            )
            assert t.steps[-1].what == "replayed"


async def test_serial_retries_in_place_keep_key_order_while_other_keys_flow(tmp_path):
    async with local_cluster(tmp_path, n=1, delay_tiers_ms=LADDER) as c:
        async with Admin(c.bootstrap) as admin:
            await admin.create_topic("s", partitions=1, replication=1)
        async with Producer(c.bootstrap) as producer:
            for i in range(3):
                await producer.submit("s", b"a%d" % i, key=b"a")
                await producer.submit("s", b"b%d" % i, key=b"b")
            await producer.flush()
        order = []
        failures = 0

        async def handler(msg):
            nonlocal failures
            if msg.value == b"a0" and failures < 2:
                failures += 1
                raise ValueError("not yet")
            order.append(msg.value)

        async with Consumer(c.bootstrap, group="ser", topics=["s"], offset_reset="earliest") as consumer:
            await run_until(consumer, handler, lambda: len(order) == 6, mode="serial", retries=3, backoff=0.3)
        assert [v for v in order if v.startswith(b"a")] == [b"a0", b"a1", b"a2"]
        assert order.index(b"b2") < order.index(b"a0")  # b did not wait for a's retries


async def test_handler_runs_recorded_with_trace_true(tmp_path):
    async with local_cluster(tmp_path, delay_tiers_ms=LADDER) as c:
        async with Admin(c.bootstrap) as admin:
            await admin.create_topic("traced", partitions=1, replication=3)
        async with Producer(c.bootstrap) as producer:
            sent = await producer.send("traced", b"job", key=b"j")
        calls, done = [], []

        async def handler(msg):
            calls.append(msg.offset)
            if len(calls) == 1:
                raise RuntimeError("first time unlucky")
            done.append(msg.offset)

        # The consumer runs on while the trace is read (the member's commit comes later).
        async with (
            Consumer(c.bootstrap, group="tracers", topics=["traced"], offset_reset="earliest") as consumer,
            ClusterClient(c.bootstrap) as cluster,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(partial(consumer.run, handler, backoff=0.05, trace=True))
            with trio.move_on_after(30):
                while True:  # (the member's commit and the run records land shortly after)
                    t = await trace_message(cluster, "traced", 0, sent.offset)
                    assert t is not None
                    handled = [s.detail for s in t.steps if s.what == "handled"]
                    if len(handled) == 2 and t.groups and t.groups[0].status == "done":
                        break
                    await trio.sleep(0.2)
            nursery.cancel_scope.cancel()
        assert done, "the handler never succeeded"
        assert len(handled) == 2 and t.groups[0].status == "done", t
        assert "failed: RuntimeError: first time unlucky" in handled[0] and handled[1].endswith(", ok")
        assert handled[0].startswith("tracers: ")


async def test_a_run_cancelled_as_its_handler_returns_is_still_recorded(tmp_path):
    """The handler cancels its own run() as it returns: the run's record is queued
    after that, and still goes out (the consumer owns the producer of run records, so
    a cancelled run does not take it down)."""
    async with local_cluster(tmp_path, delay_tiers_ms=LADDER) as c:
        async with Admin(c.bootstrap) as admin:
            await admin.create_topic("last-words", partitions=1, replication=3)
        async with Producer(c.bootstrap) as producer:
            sent = await producer.send("last-words", b"job", key=b"j")
        async with Consumer(c.bootstrap, topics=["last-words"], offset_reset="earliest") as consumer:
            async with trio.open_nursery() as nursery:

                async def handler(msg):
                    nursery.cancel_scope.cancel()  # the run ends as this handler returns

                nursery.start_soon(partial(consumer.run, handler, trace=True))
        async with ClusterClient(c.bootstrap) as cluster:
            with trio.fail_after(30):
                while True:
                    t = await trace_message(cluster, "last-words", 0, sent.offset)
                    assert t is not None
                    handled = [s.detail for s in t.steps if s.what == "handled"]
                    if handled:
                        break
                    await trio.sleep(0.2)
        assert len(handled) == 1 and handled[0].startswith(f"{NO_GROUP}: a consumer, "), handled
        assert handled[0].endswith(", ok"), handled
        assert [(g.group, g.status) for g in t.groups] == [(NO_GROUP, "delivered")], t.groups
