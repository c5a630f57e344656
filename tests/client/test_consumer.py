"""Consumer modes against in-process brokers: iterator, serial and concurrent run(),
handler timeouts and retries, broadcast."""

import pytest
import trio

from client import Admin, Consumer, Producer
from client.errors import InvalidConfigError
from tests.cluster import local_cluster


async def setup(c, topic="t", partitions=1):
    async with Admin(c.bootstrap) as admin:
        await admin.create_topic(topic, partitions=partitions, replication=min(3, len(c.peers)))


async def test_serial_mode_keeps_key_order_and_slow_keys_block_only_themselves(tmp_path):
    async with local_cluster(tmp_path, n=1) as c:
        await setup(c)
        async with Producer(c.bootstrap) as producer:
            for i in range(10):
                await producer.submit("t", b"slow-%d" % i, key=b"slow")
                await producer.submit("t", b"fast-%d" % i, key=b"fast")
            await producer.flush()
        seen = {b"slow": [], b"fast": []}
        fast_done_at = slow_done_at = None
        running = {b"slow": 0, b"fast": 0}

        async def handler(msg):
            nonlocal fast_done_at, slow_done_at
            running[msg.key] += 1
            assert running[msg.key] == 1, "one message of a key at a time"
            await trio.sleep(0.05 if msg.key == b"slow" else 0)
            running[msg.key] -= 1
            seen[msg.key].append(int(msg.value.split(b"-")[1]))
            if len(seen[b"fast"]) == 10 and fast_done_at is None:
                fast_done_at = trio.current_time()
            if len(seen[b"slow"]) == 10:
                slow_done_at = trio.current_time()

        async with Consumer(c.bootstrap, topics=["t"], offset_reset="earliest") as consumer:
            with trio.fail_after(10):
                await consumer.run(handler, mode="serial", concurrency=4, max_messages=20)
        assert seen[b"slow"] == list(range(10)) and seen[b"fast"] == list(range(10))
        assert fast_done_at < slow_done_at - 0.2, "the fast key finished long before the slow one"


async def test_partition_order_is_one_at_a_time(tmp_path):
    async with local_cluster(tmp_path, n=1) as c:
        await setup(c)
        async with Producer(c.bootstrap) as producer:
            for i in range(20):
                await producer.submit("t", b"%d" % i, key=b"k%d" % (i % 5))
            await producer.flush()
        order, active = [], 0

        async def handler(msg):
            nonlocal active
            active += 1
            assert active == 1
            await trio.sleep(0.001)
            order.append(int(msg.value))
            active -= 1

        async with Consumer(c.bootstrap, topics=["t"], offset_reset="earliest") as consumer:
            with trio.fail_after(10):
                await consumer.run(handler, mode="serial", order="partition", concurrency=8, max_messages=20)
        assert order == list(range(20))


async def test_concurrent_mode_runs_handlers_in_parallel(tmp_path):
    async with local_cluster(tmp_path, n=1) as c:
        await setup(c, partitions=2)
        async with Producer(c.bootstrap) as producer:
            for i in range(40):
                await producer.submit("t", b"%d" % i)
            await producer.flush()
        peak, active, done = 0, 0, []

        async def handler(msg):
            nonlocal peak, active
            active += 1
            peak = max(peak, active)
            await trio.sleep(0.02)
            active -= 1
            done.append(int(msg.value))

        async with Consumer(c.bootstrap, topics=["t"], offset_reset="earliest") as consumer:
            with trio.fail_after(10):
                await consumer.run(handler, mode="concurrent", concurrency=8, max_messages=40)
        assert sorted(done) == list(range(40))
        assert 2 < peak <= 8


async def test_handler_timeout_cancels_and_retries(tmp_path):
    async with local_cluster(tmp_path, n=1) as c:
        await setup(c)
        async with Producer(c.bootstrap) as producer:
            await producer.send("t", b"stuck")
            await producer.send("t", b"fine")
        attempts = {b"stuck": 0, b"fine": 0}
        cancelled = 0

        async def handler(msg):
            nonlocal cancelled
            attempts[msg.value] += 1
            if msg.value == b"stuck":
                try:
                    await trio.sleep(10)
                except trio.Cancelled:
                    cancelled += 1
                    raise

        async with Consumer(c.bootstrap, topics=["t"], offset_reset="earliest") as consumer:
            with trio.fail_after(10):
                await consumer.run(handler, mode="concurrent", timeout=0.1, retries=2, backoff=0.01, max_messages=2)
        assert attempts == {b"stuck": 3, b"fine": 1}
        assert cancelled == 3


async def test_an_ephemeral_broadcast_listener_sees_every_new_message(tmp_path):
    async with local_cluster(tmp_path, n=1) as c:
        await setup(c, partitions=3)
        async with Producer(c.bootstrap) as producer:
            await producer.send("t", b"old")
            async with (
                Consumer(c.bootstrap, topics=["t"], broadcast=True) as a,
                Consumer(c.bootstrap, topics=["t"], broadcast=True, offset_reset="earliest") as b,
            ):
                for i in range(30):
                    await producer.submit("t", b"%d" % i)
                await producer.flush()
                for consumer in (a, b):
                    got = []
                    with trio.fail_after(10):
                        async for msg in consumer:
                            got.append(int(msg.value))  # "old" predates them: never seen
                            if len(got) == 30:
                                break
                    assert sorted(got) == list(range(30))
                    await consumer.commit()  # an ephemeral listener (no group) keeps no position: a no-op


async def test_consumer_argument_errors():
    with pytest.raises(InvalidConfigError):
        Consumer("127.0.0.1:1", topics="t")
    with pytest.raises(InvalidConfigError):
        Consumer("127.0.0.1:1", topics=["t"], offset_reset="middle")


async def test_consumption_continues_across_leader_failover(tmp_path):
    async with local_cluster(tmp_path) as c:
        async with Admin(c.bootstrap) as admin:
            info = await admin.create_topic("fo", partitions=1, replication=3)
        leader = info.partitions[0].leader
        got = []
        async with (
            Producer(c.bootstrap) as producer,
            Consumer(c.bootstrap, topics=["fo"], offset_reset="earliest") as consumer,
        ):
            for i in range(100):
                await producer.submit("fo", b"%d" % i)
            await producer.flush()
            with trio.fail_after(20):
                async for msg in consumer:
                    got.append(int(msg.value))
                    if len(got) == 50:
                        await c.stop(leader, graceful=False)
                        for i in range(100, 150):
                            await producer.submit("fo", b"%d" % i)
                    if len(got) == 150:
                        break
        assert got == list(range(150))


async def test_an_undecodable_batch_in_the_log_is_a_typed_error_and_other_partitions_go_on(tmp_path):
    """Bit rot (or data from before batches were validated): the consumer says which
    topic, partition and offset, stops that partition, and reads the others."""
    from client.errors import CorruptBatchError
    from segments import build_batch
    from segments.batch import HEADER_SIZE
    from tests.segments.helpers import recrc

    async with local_cluster(tmp_path) as c:
        async with Admin(c.bootstrap) as admin:
            await admin.create_topic("rot", partitions=2, replication=3)
        leaders = await c.wait_leaders("rot")
        async with Producer(c.bootstrap) as producer:
            await producer.send("rot", b"good-0", partition=0)
            await producer.send("rot", b"good-1", partition=1)
        bad = bytearray(build_batch([(None, b"x" * 20, (), None)]))
        bad[HEADER_SIZE] = 0x7F  # CRC-valid, records that do not decode
        part = c.brokers[leaders[0]].partitions[("rot", 0)]
        await part.wait(part.propose(recrc(bad), 1), 10)  # straight into the log, past validation
        async with Producer(c.bootstrap) as producer:
            await producer.send("rot", b"later-1", partition=1)
        seen, error = [], None
        with trio.fail_after(30):
            async with Consumer(c.bootstrap, topics=["rot"], offset_reset="earliest") as consumer:
                while len(seen) < 3 or error is None:
                    try:
                        seen.append((await consumer.__anext__()).value)
                    except CorruptBatchError as exc:
                        error = exc
        assert sorted(seen) == [b"good-0", b"good-1", b"later-1"]
        assert error.details["topic"] == "rot" and error.details["partition"] == 0 and "offset" in error.message


async def test_getmany_and_batches_hand_out_whole_fetches_and_commit_after_them(tmp_path):
    async with local_cluster(tmp_path, n=1) as c:
        await setup(c, partitions=2)
        async with Producer(c.bootstrap) as producer:
            await producer.send_batch("t", [b"%d" % i for i in range(400)], keys=[b"%d" % (i % 5) for i in range(400)])
        got: dict = {}
        with trio.fail_after(20):
            async with Consumer(c.bootstrap, group="g", topics=["t"], offset_reset="earliest") as consumer:
                while sum(map(len, got.values())) < 400:
                    chunk = await consumer.getmany(max_records=64, timeout=5)
                    assert 0 < sum(map(len, chunk.values())) <= 64
                    for tp, msgs in chunk.items():
                        assert all((m.topic, m.partition) == tp for m in msgs)
                        got.setdefault(tp, []).extend(msgs)
                assert await consumer.getmany(timeout=0.3) == {}
                await consumer.commit()
        for msgs in got.values():
            offsets = [m.offset for m in msgs]
            assert offsets == sorted(set(offsets))
        assert sorted(int(m.value) for msgs in got.values() for m in msgs) == list(range(400))
        # The group's next member starts after what getmany handed out; batches() reads on.
        async with Producer(c.bootstrap) as producer:
            await producer.send_batch("t", [b"late-%d" % i for i in range(30)], partition=0)
        seen = []
        with trio.fail_after(20):
            async with Consumer(c.bootstrap, group="g", topics=["t"], offset_reset="earliest") as consumer:
                async for batch in consumer.batches(max_records=7):
                    assert 0 < len(batch) <= 7 and len({(m.topic, m.partition) for m in batch}) == 1
                    seen.extend(m.value for m in batch)
                    if len(seen) == 30:
                        break
        assert seen == [b"late-%d" % i for i in range(30)]


async def test_getmany_returns_what_came_before_a_broken_partition_then_raises():
    from client.consumer import _Assigned
    from client.errors import CorruptBatchError
    from client.records import Message

    consumer = Consumer("127.0.0.1:1", topics=["t"])
    good, bad = _Assigned(0), _Assigned(0)
    error = CorruptBatchError("t-1: damaged", topic="t", partition=1, offset=2)
    msgs = [Message("t", 1, i, None, b"%d" % i, (), 0) for i in range(2)]
    await consumer._send.send((bad, [*msgs, error]))
    await consumer._send.send((good, [Message("t", 0, 0, None, b"x", (), 0)]))
    assert await consumer.getmany() == {("t", 1): msgs}
    assert bad.handed == 2
    with pytest.raises(CorruptBatchError):
        await consumer.getmany()
    assert await consumer.getmany(timeout=0) == {("t", 0): [Message("t", 0, 0, None, b"x", (), 0)]}
    with pytest.raises(InvalidConfigError):
        await consumer.getmany(max_records=0)
