"""Producer against in-process brokers: keys, order, timeouts, failover, asyncio."""

import asyncio
from collections import defaultdict

import pytest
import trio

from client import Admin, Consumer, Producer
from client.conventions import LADDER_CONFIG, TIER_CONFIG, tier_name
from client.errors import InvalidConfigError, RequestTimeoutError, UnknownTopicError
from client.partitioner import partition_for_key
from client.protocol import MetadataResponse, Produce, TopicInfo
from segments.batch import parse_header
from tests.cluster import local_cluster, process_cluster, running_cluster


async def read_all(bootstrap, topic, count, timeout=20):
    out = []
    with trio.fail_after(timeout):
        async with Consumer(bootstrap, topics=[topic], offset_reset="earliest") as consumer:
            async for msg in consumer:
                out.append(msg)
                if len(out) == count:
                    break
    return out


async def test_keys_land_where_kafka_puts_them_in_order(tmp_path):
    async with local_cluster(tmp_path) as c:
        async with Admin(c.bootstrap) as admin:
            await admin.create_topic("orders", partitions=4, replication=3)
        async with Producer(c.bootstrap) as producer:
            deliveries = [
                await producer.submit("orders", b"%d" % i, key=b"user-%d" % (i % 7), headers={"n": b"%d" % i})
                for i in range(300)
            ]
            mds = [await d for d in deliveries]
        assert all(md.partition == partition_for_key(b"user-%d" % (i % 7), 4) for i, md in enumerate(mds))
        msgs = await read_all(c.bootstrap, "orders", 300)
        per_key = defaultdict(list)
        for m in msgs:
            assert m.partition == partition_for_key(m.key, 4)
            assert m.headers == (("n", m.value),)
            per_key[m.key].append(int(m.value))
        assert all(v == sorted(v) for v in per_key.values())
        assert sorted(int(m.value) for m in msgs) == list(range(300))


class ProduceLog:
    """Every produce request a producer hands to its cluster client: (base sequence,
    record count) in the order they go out, and the most outstanding at once."""

    def __init__(self, producer: Producer) -> None:
        self.sent: list[tuple[int, int]] = []
        self.outstanding = self.most_outstanding = 0
        real = producer.cluster.request  # (what a lone send's first try and the retrying path both call)

        async def counting(addr, body, *args):
            if not isinstance(body, Produce):
                return await real(addr, body, *args)
            header = parse_header(body.records)
            self.sent.append((header.base_sequence, header.record_count))
            self.outstanding += 1
            self.most_outstanding = max(self.most_outstanding, self.outstanding)
            try:
                return await real(addr, body, *args)
            finally:
                self.outstanding -= 1

        producer.cluster.request = counting  # type: ignore[method-assign]

    def numbered_in_order(self, first: int) -> bool:
        """One sequence line without gaps, in the order the requests went out."""
        expected = first
        for seq, count in self.sent:
            if seq != expected:
                return False
            expected += count
        return True


async def test_a_lone_send_does_not_pay_the_linger(tmp_path):
    """Linger is paid only while a request to the partition is outstanding: a caller
    awaiting one send at a time to an idle partition is answered in a round trip, with
    any acks, not after the linger (2 s here; it used to be paid by every such send)."""
    async with local_cluster(tmp_path) as c:
        async with Admin(c.bootstrap) as admin:
            await admin.create_topic("lone", partitions=1, replication=3)
        settings: list[dict] = [{}, {"acks": 1, "idempotent": False}, {"acks": 0, "idempotent": False}]
        for k, setting in enumerate(settings):
            async with Producer(c.bootstrap, linger=2.0, **setting) as producer:
                await producer.send("lone", b"warm-up")  # metadata and connections
                for i in range(5):
                    start = trio.current_time()
                    await producer.send("lone", b"%d" % i)
                    assert trio.current_time() - start < 1.0, f"{setting}: a lone send waited for the linger"
                # (read while the acks=0 producer's connection is still open)
                values = [m.value for m in await read_all(c.bootstrap, "lone", 6 * (k + 1))]
                assert values == [b"warm-up", b"0", b"1", b"2", b"3", b"4"] * (k + 1)


async def test_a_lone_send_goes_from_its_callers_task(tmp_path):
    """With nothing of its partition unsettled, `send()` delivers from the caller's own
    task: no sender task, no delivery task. A caller who gives up waiting (cancelled
    with the request on the wire) leaves the message to a delivery task: it is written
    once, and the partition's sequence line goes on (no new producer id)."""
    async with local_cluster(tmp_path) as c:
        async with Admin(c.bootstrap) as admin:
            await admin.create_topic("own", partitions=1, replication=3)
        async with Producer(c.bootstrap) as producer:
            produced = ProduceLog(producer)
            await producer.send("own", b"0")  # (the topic's metadata: the usual path)
            at_once = []
            real_at_once = producer._send_at_once
            producer._send_at_once = lambda *a: at_once.append(real_at_once(*a)) or at_once[-1]  # type: ignore[method-assign]
            offsets = [(await producer.send("own", b"%d" % i)).offset for i in (1, 2)]
            assert offsets[1] == offsets[0] + 1 and len(at_once) == 2 and None not in at_once
            q = producer._queues[("own", 0)]
            line = q.producer_id

            real = producer.cluster.request
            on_the_wire = trio.Event()

            async def cut_short(addr, body, sent=None):
                async def written():
                    await sent.wait()
                    on_the_wire.set()

                async with trio.open_nursery() as n:
                    n.start_soon(written)
                    try:
                        return await real(addr, body, sent)
                    finally:
                        n.cancel_scope.cancel()

            producer.cluster.request = cut_short  # type: ignore[method-assign]
            with trio.CancelScope() as scope:

                async def cancel_once_written():
                    await on_the_wire.wait()
                    scope.cancel()

                async with trio.open_nursery() as n:
                    n.start_soon(cancel_once_written)
                    await producer.send("own", b"given up")
            assert scope.cancelled_caught
            producer.cluster.request = real  # type: ignore[method-assign]
            await producer.flush()
            assert (await producer.send("own", b"after")).offset == offsets[0] + 3
            assert None not in at_once, [a is None for a in at_once]
            assert q.producer_id == line and not q.line_broken
        # The given-up batch went twice (its caller's request, the delivery task's
        # resend), and was written once.
        assert [seq for seq, _ in produced.sent] == [0, 1, 2, 3, 3, 4]
        values = [m.value for m in await read_all(c.bootstrap, "own", 5)]
        assert values == [b"0", b"1", b"2", b"given up", b"after"]
        async with Producer(c.bootstrap, idempotent=False, acks=1) as plain:
            await plain.send("own", b"plain")  # (metadata)
            # Without sequence numbers a given-up batch sent again could be written twice.
            assert plain._send_at_once("own", b"plain", None, None, 0, None) is None


async def test_a_lone_sends_first_try_needs_no_cancel_scope_and_a_failed_one_is_retried(tmp_path, monkeypatch):
    """On an open connection to the leader, a lone send's request is bounded by that
    connection's watchdog alone (no `fail_after` of its own, the client's largest cost
    per send); a first try that fails (a leader that moved) is rerouted as any failed
    try and goes the usual retrying way, with its sequence numbers: written once. One that the retrying way would not
    retry (the request is wrong) is the send's outcome, and is not sent again."""
    import client.producer
    from client.errors import CorruptBatchError, NotLeaderError

    async with local_cluster(tmp_path) as c:
        async with Admin(c.bootstrap) as admin:
            await admin.create_topic("scope", partitions=1, replication=3)
        async with Producer(c.bootstrap) as producer:
            produced = ProduceLog(producer)
            await producer.send("scope", b"0")  # (metadata and the connection)
            scopes = []
            fail_after = client.producer.anyio.fail_after
            monkeypatch.setattr(client.producer.anyio, "fail_after", lambda s: scopes.append(s) or fail_after(s))
            assert (await producer.send("scope", b"1")).offset == 2 and scopes == []
            real = producer.cluster.request
            refused = []

            async def moved_once(addr, body, sent=None):
                if not refused:
                    refused.append(addr)
                    raise NotLeaderError("the leader moved (as if)")
                return await real(addr, body, sent)

            producer.cluster.request = moved_once  # type: ignore[method-assign]
            routed = producer.cluster.metadata_version
            assert (await producer.send("scope", b"2")).offset == 3
            # Rerouted as any failed try (no hint: fresh metadata, under its own scopes),
            # then the retrying way under what is left of the delivery timeout.
            assert refused and producer.cluster.metadata_version > routed
            assert len([s for s in scopes if producer.delivery_timeout - 5 < s <= producer.delivery_timeout]) == 1
            before = len(scopes)

            async def corrupt(addr, body, sent=None):
                raise CorruptBatchError("refused as corrupt (as if)")

            producer.cluster.request = corrupt  # type: ignore[method-assign]
            with pytest.raises(CorruptBatchError):
                await producer.send("scope", b"never")  # not the moment but the request: not retried
            assert len(scopes) == before
            producer.cluster.request = real  # type: ignore[method-assign]
        assert [seq for seq, _ in produced.sent] == [0, 1, 2]
        assert [m.value for m in await read_all(c.bootstrap, "scope", 3)] == [b"0", b"1", b"2"]


async def test_concurrent_sends_gather_behind_the_one_in_flight(tmp_path):
    """Many tasks awaiting sends to one partition: the first goes at once, the rest
    gather into one batch behind it, which goes as soon as the request ahead returns,
    not when the linger (5 s here) ends, and not before. Fewer requests than messages,
    each task's messages in its order, none twice."""
    async with local_cluster(tmp_path) as c:
        async with Admin(c.bootstrap) as admin:
            await admin.create_topic("crowd", partitions=1, replication=3)
        tasks, each = 20, 5
        async with Producer(c.bootstrap, linger=5.0) as producer:
            await producer.send("crowd", b"warm-up")
            produced = ProduceLog(producer)
            offsets: dict[int, list[int]] = defaultdict(list)

            async def sender(t: int) -> None:
                for j in range(each):
                    md = await producer.send("crowd", b"%d.%d" % (t, j))
                    offsets[t].append(md.offset)

            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                for t in range(tasks):
                    nursery.start_soon(sender, t)
            elapsed = trio.current_time() - start
        assert elapsed < 4.0, f"{elapsed:.1f}s: a batch waited for the linger instead of the request ahead"
        assert len(produced.sent) < tasks * each / 2, produced.sent
        assert sum(count for _, count in produced.sent) == tasks * each  # no retries, nothing lost
        assert produced.most_outstanding == 1  # nothing sealed by linger or size: one request at a time
        assert produced.numbered_in_order(first=1)
        assert all(v == sorted(v) for v in offsets.values())
        msgs = await read_all(c.bootstrap, "crowd", 1 + tasks * each)
        assert len({m.offset for m in msgs}) == len(msgs)
        per_task = defaultdict(list)
        for m in msgs[1:]:
            t, j = m.value.split(b".")
            per_task[int(t)].append(int(j))
        assert dict(per_task) == {t: list(range(each)) for t in range(tasks)}


@pytest.mark.parametrize("max_in_flight", [1, 5])
async def test_pipelined_submits_keep_their_order_with_batches_in_flight(tmp_path, max_in_flight):
    """One task submitting without waiting: batches sealed by size go while others are
    in flight, up to max_in_flight; the partition's order and numbering hold."""
    async with local_cluster(tmp_path) as c:
        async with Admin(c.bootstrap) as admin:
            await admin.create_topic("pipe", partitions=1, replication=3)
        async with Producer(c.bootstrap, linger=0.02, batch_bytes=2000, max_in_flight=max_in_flight) as producer:
            produced = ProduceLog(producer)
            deliveries = []
            for i in range(600):
                deliveries.append(await producer.submit("pipe", b"%d" % i + b"." * 40))
                if i % 7 == 0:
                    await trio.sleep(0)
            mds = [await d for d in deliveries]
        assert [md.offset for md in mds] == list(range(mds[0].offset, mds[0].offset + 600))
        assert len(produced.sent) < 600 / 4, len(produced.sent)  # about 28 records fill 2000 B
        assert produced.numbered_in_order(first=0)
        assert produced.most_outstanding <= max_in_flight
        if max_in_flight > 1:
            assert produced.most_outstanding > 1, "submits far faster than round trips, yet no pipelining"
        msgs = await read_all(c.bootstrap, "pipe", 600)
        assert [int(m.value.rstrip(b".")) for m in msgs] == list(range(600))


async def test_keyless_messages_spread_over_partitions(tmp_path):
    async with local_cluster(tmp_path, n=1) as c:
        async with Admin(c.bootstrap) as admin:
            await admin.create_topic("spread", partitions=3)
        async with Producer(c.bootstrap, batch_bytes=2000) as producer:
            mds = [await producer.send("spread", b"x" * 100) for _ in range(200)]
        assert len({md.partition for md in mds}) == 3


async def test_bad_arguments_fail_clearly(tmp_path):
    async with local_cluster(tmp_path, n=1) as c:
        async with Producer(c.bootstrap) as producer:
            with pytest.raises(UnknownTopicError, match="create it first"):
                await producer.send("nope", b"x")
            with pytest.raises(TypeError, match="bytes"):
                await producer.send("nope", "text")
    with pytest.raises(InvalidConfigError):
        Producer("127.0.0.1:1", acks=1)  # idempotence needs acks=all
    with pytest.raises(InvalidConfigError):
        Producer("127.0.0.1:1", compression="brotli")
    with pytest.raises(InvalidConfigError):
        Producer("127.0.0.1:1", idempotent=False, acks=1, max_in_flight=0)  # would never send
    with pytest.raises(InvalidConfigError):
        Producer("127.0.0.1:1", linger=-1)


async def test_delivery_timeout_fires(tmp_path):
    async with local_cluster(tmp_path) as c:
        async with Admin(c.bootstrap) as admin:
            info = await admin.create_topic("lonely", partitions=1, replication=1)
        owner = info.partitions[0].leader
        async with Producer(c.bootstrap, delivery_timeout=3.0, request_timeout=1.0) as producer:
            await producer.send("lonely", b"before")
            await c.stop(owner, graceful=False)
            start = trio.current_time()
            with pytest.raises(RequestTimeoutError, match="delivery_timeout"):
                await producer.send("lonely", b"lost")
            assert trio.current_time() - start >= 3.0, "not before its delivery timeout"


async def test_sends_survive_leader_failover_exactly_once(tmp_path):
    async with local_cluster(tmp_path) as c:
        async with Admin(c.bootstrap) as admin:
            info = await admin.create_topic("fo", partitions=1, replication=3)
        leader = info.partitions[0].leader
        async with Producer(c.bootstrap, delivery_timeout=30) as producer:
            first = [await producer.submit("fo", b"%d" % i) for i in range(200)]
            await c.stop(leader, graceful=False)
            second = [await producer.submit("fo", b"%d" % i) for i in range(200, 400)]
            for d in first + second:
                await d
        msgs = await read_all(c.bootstrap, "fo", 400)
        assert [int(m.value) for m in msgs] == list(range(400))


def test_producer_and_consumer_under_asyncio(tmp_path):
    async def main(bootstrap):
        async with Admin(bootstrap) as admin:
            await admin.create_topic("aio", partitions=2, replication=3)
        async with Producer(bootstrap) as producer:
            await asyncio.gather(*(producer.send("aio", b"%d" % i, key=b"k%d" % (i % 3)) for i in range(50)))
        got = []
        async with Consumer(bootstrap, topics=["aio"], offset_reset="earliest") as consumer:
            async for msg in consumer:
                got.append(int(msg.value))
                if len(got) == 50:
                    break
        return sorted(got)

    with running_cluster(tmp_path) as c:
        assert asyncio.run(asyncio.wait_for(main(c.bootstrap), 60)) == list(range(50))


async def test_submit_many_and_send_batch_on_node_processes(tmp_path):
    """The bulk face against real nodes: keys where Kafka puts them, order kept,
    headers and timestamps carried, one RecordMetadata per message in order."""
    async with process_cluster(tmp_path, n=3) as c:
        await c.wait_ready()
        async with Admin(c.bootstrap) as admin:
            await admin.create_topic("bulk", partitions=3, replication=3)
        keys = [b"k%d" % (i % 7) for i in range(3000)]
        values = [b"v%d" % i for i in range(3000)]
        headers = [{"n": b"%d" % i} if i % 2 else None for i in range(3000)]
        async with Producer(c.bootstrap, batch_bytes=16 * 1024) as producer:
            deliveries = await producer.submit_many("bulk", values, keys=keys, headers=headers, timestamp=1234)
            assert len(deliveries) == 3000
            metas = await deliveries
            assert deliveries.done
            assert [m.partition for m in metas] == [partition_for_key(k, 3) for k in keys]
            assert deliveries[-1].result() == metas[-1] and deliveries[1500].result() == metas[1500]
            assert [d.result() for d in deliveries[10:13]] == metas[10:13]
            by_part = defaultdict(list)
            for m in metas:
                by_part[m.partition].append(m.offset)
            assert all(offs == sorted(set(offs)) for offs in by_part.values()), "offsets rise in submit order"
            plain = await producer.send_batch("bulk", [b"p%d" % i for i in range(2000)])  # unkeyed: sticky runs
            assert len({m.partition for m in plain}) > 1, "full batches move the sticky partition on"
            assert all(a.offset + 1 == b.offset for a, b in zip(plain, plain[1:]) if a.partition == b.partition)
            more = await producer.send_batch("bulk", [b"tail-%d" % i for i in range(10)], partition=2)
            assert [m.partition for m in more] == [2] * 10
            assert [m.offset for m in more] == list(range(more[0].offset, more[0].offset + 10))
        got = await read_all(c.bootstrap, "bulk", 5010, timeout=60)
        plain_order = defaultdict(list)
        for m in got:
            if m.value.startswith(b"p"):
                plain_order[m.partition].append(int(m.value[1:]))
        assert sorted(sum(plain_order.values(), [])) == list(range(2000))
        assert all(v == sorted(v) for v in plain_order.values())
        mine = [m for m in got if m.value.startswith(b"v")]
        per_key = defaultdict(list)
        for m in mine:
            per_key[m.key].append(int(m.value[1:]))
            i = int(m.value[1:])
            assert m.timestamp == 1234
            assert m.headers == ((("n", b"%d" % i),) if i % 2 else ())
        assert sum(len(v) for v in per_key.values()) == 3000
        assert all(v == sorted(v) for v in per_key.values()), "each key's messages in order"


async def test_submit_many_refuses_mismatched_or_bad_input_and_keeps_what_came_before(tmp_path):
    async with local_cluster(tmp_path, n=1) as c:
        async with Admin(c.bootstrap) as admin:
            await admin.create_topic("t", partitions=1, replication=1)
        async with Producer(c.bootstrap) as producer:
            with pytest.raises(ValueError, match="keys has 1 entries for 2 values"):
                await producer.submit_many("t", [b"a", b"b"], keys=[b"k"])
            with pytest.raises(TypeError, match="bytes"):
                await producer.submit_many("t", [b"first", "second"])
            await producer.flush()
            assert await producer.send_batch("t", []) == []
        assert [m.value for m in await read_all(c.bootstrap, "t", 1)] == [b"first"]


async def test_the_delay_ladder_is_taken_once_every_tier_it_names_exists():
    """Read while the controller creates the tiers, the small ones may be missing; a
    message put in the smallest tier found would wait that whole tier."""
    ladder = {LADDER_CONFIG: "100,500,120000"}

    def tier(ms: int, **configs: str) -> TopicInfo:
        return TopicInfo(tier_name(ms), [], {TIER_CONFIG: str(ms), **configs}, internal=True)

    answers = [
        MetadataResponse([], [tier(120_000, **ladder)]),
        MetadataResponse([], [tier(120_000, **ladder), tier(500, **ladder)]),
        MetadataResponse([], [tier(120_000, **ladder), tier(500, **ladder), tier(100, **ladder)]),
    ]
    producer = Producer("127.0.0.1:1")

    async def refresh_metadata() -> MetadataResponse:
        return answers.pop(0)

    producer.cluster.refresh_metadata = refresh_metadata  # type: ignore[method-assign]
    assert await producer._tiers() == [100, 500, 120_000]
    assert not answers
    # A cluster whose tiers do not name the ladder: the tiers found.
    producer._tier_list = []
    answers.append(MetadataResponse([], [tier(1_000)]))
    assert await producer._tiers() == [1_000]
    # A ladder still incomplete after the request timeout: the tiers there are.
    producer._tier_list, producer.request_timeout = [], 0.3

    async def always_partial() -> MetadataResponse:
        return MetadataResponse([], [tier(120_000, **ladder)])

    producer.cluster.refresh_metadata = always_partial  # type: ignore[method-assign]
    assert await producer._tiers() == [120_000]


async def test_send_batch_with_a_delay_goes_through_the_ladder(tmp_path):
    async with local_cluster(tmp_path, n=1) as c:
        async with Admin(c.bootstrap) as admin:
            await admin.create_topic("later", partitions=1, replication=1)
        async with Producer(c.bootstrap) as producer:
            start = trio.current_time()
            metas = await producer.send_batch("later", [b"a", b"b"], delay=1.0)
            assert all(m.topic != "later" for m in metas), "acknowledged by a delay tier"
        got = await read_all(c.bootstrap, "later", 2)
        assert trio.current_time() - start >= 1.0
        assert sorted(m.value for m in got) == [b"a", b"b"]
