"""Transactional producers against an in-process three-node cluster: atomic commit over
topics, abort, read_committed versus read_uncommitted, fencing, timeout, offsets
committed with a transaction, and a coordinator killed between prepare and markers."""

import random

import pytest
import trio

from client import Admin, Consumer, Producer
from client.cluster import ClusterClient
from client.dlq import list_dead_letters
from client.errors import IllegalGenerationError, InvalidConfigError, ProducerFencedError, TideMQError
from client.partitioner import partition_for_key
from client.protocol import (
    LATEST,
    READ_COMMITTED,
    EndTxn,
    Fetch,
    FetchPartition,
    ListOffsets,
    OffsetFetch,
    Produce,
)
from node.transactions import TXN_TOPIC, TxnStatus
from segments import build_batch
from tests.cluster import local_cluster, read_all


def cluster(tmp_path):
    return local_cluster(tmp_path, 3, offsets_partitions=2, txn_partitions=2)


async def topics(c, *specs):
    async with Admin(c.bootstrap) as admin:
        for name, partitions in specs:
            await admin.create_topic(name, partitions=partitions, replication=3)
    await c.wait_leaders(TXN_TOPIC)


async def inputs(c, values):
    """Topics `in` and `out` (one partition each), with `values` written to `in`."""
    await topics(c, ("in", 1), ("out", 1))
    async with Producer(c.bootstrap) as p:
        for v in values:
            await p.send("in", v)


async def read(c, names, isolation="read_committed", quiet=1.5, timeout=20):
    return await read_all(c.bootstrap, names, isolation=isolation, quiet=quiet, timeout=timeout)


def values(msgs):
    return sorted(m.value for m in msgs)


async def test_commit_is_visible_together_and_abort_only_uncommitted(tmp_path):
    async with cluster(tmp_path) as c:
        await topics(c, ("orders", 2), ("ledger", 1))
        with trio.fail_after(30):
            async with Producer(c.bootstrap, transactional_id="billing-1") as producer:
                async with producer.transaction():
                    for i in range(10):
                        await producer.submit("orders", b"o%d" % i, key=b"k%d" % i)
                    await producer.send("ledger", b"l0")
                await producer.begin_transaction()
                await producer.send("orders", b"dropped", key=b"k1")
                await producer.send("ledger", b"dropped")
                await producer.abort()
                with pytest.raises(KeyError):
                    async with producer.transaction():
                        await producer.send("ledger", b"also dropped")
                        raise KeyError("the body failed")
                async with producer.transaction():
                    await producer.send("ledger", b"l1")
        committed = values(await read(c, ["orders", "ledger"]))
        assert committed == sorted([b"o%d" % i for i in range(10)] + [b"l0", b"l1"])
        everything = values(await read(c, ["orders", "ledger"], isolation="read_uncommitted"))
        assert everything == sorted(committed + [b"dropped", b"dropped", b"also dropped"])


async def fetch(client, topic, p, isolation, offset=0):
    resp = await client.leader_request(
        topic, p, Fetch([FetchPartition(topic, p, offset)], max_wait_ms=0, isolation=isolation)
    )
    return resp.results[0]


async def test_open_transaction_holds_back_read_committed_at_the_last_stable_offset(tmp_path):
    async with cluster(tmp_path) as c:
        await topics(c, ("t", 1))
        with trio.fail_after(30):
            async with (
                Producer(c.bootstrap, transactional_id="slow") as txn,
                Producer(c.bootstrap) as plain,
                ClusterClient(c.bootstrap) as client,
            ):
                await plain.send("t", b"before")
                await txn.begin_transaction()
                first = await txn.send("t", b"in txn")
                await plain.send("t", b"after")  # committed, but behind the open transaction
                res = await fetch(client, "t", 0, READ_COMMITTED)
                assert res.last_stable_offset == first.offset < res.high_watermark
                assert [m.value for m in await read(c, ["t"], quiet=0.5)] == [b"before"]
                assert len(await read(c, ["t"], "read_uncommitted", quiet=0.5)) == 3
                # "latest" for a read_committed reader is the last stable offset: one that
                # starts now must not skip the open transaction, which may yet commit.
                latest = await client.leader_request("t", 0, ListOffsets("t", 0, LATEST, READ_COMMITTED))
                assert latest.offset == first.offset
                latest = await client.leader_request("t", 0, ListOffsets("t", 0, LATEST))
                assert latest.offset == res.high_watermark
                async with Consumer(c.bootstrap, topics=["t"], offset_reset="latest") as late:
                    while ("t", 0) not in late.commit_points():  # its start is looked up
                        await trio.sleep(0.02)
                    assert late.commit_points()[("t", 0)] == first.offset
                    await txn.commit_transaction()
                    got = [(await late.__anext__()).value for _ in range(2)]
                assert got == [b"in txn", b"after"]
                res = await fetch(client, "t", 0, READ_COMMITTED)
                assert res.last_stable_offset == res.high_watermark and res.aborted == []
        assert [m.value for m in await read(c, ["t"])] == [b"before", b"in txn", b"after"]


async def test_new_producer_fences_the_old_one_and_aborts_its_transaction(tmp_path):
    async with cluster(tmp_path) as c:
        await topics(c, ("t", 2))
        with trio.fail_after(40):
            async with Producer(c.bootstrap, transactional_id="app") as zombie, ClusterClient(c.bootstrap) as client:
                await zombie.begin_transaction()
                await zombie.send("t", b"zombie-0", partition=0)
                pid, epoch = zombie.producer_id, zombie.producer_epoch
                async with Producer(c.bootstrap, transactional_id="app") as fresh:
                    assert fresh.producer_id == pid and fresh.producer_epoch > epoch
                    # Its open transaction was aborted, and everything it tries is refused:
                    # by the coordinator (a new partition, a commit) and by the partition
                    # the abort marker fenced.
                    with pytest.raises(ProducerFencedError):
                        await zombie.send("t", b"zombie-1", partition=1)
                    with pytest.raises(ProducerFencedError):
                        await client.transaction_coordinator_request("app", EndTxn("app", pid, epoch, commit=True))
                    late = build_batch(
                        [(None, b"zombie-2", (), None)],
                        producer_id=pid,
                        producer_epoch=epoch,
                        base_sequence=1,
                        transactional=True,
                    )
                    with pytest.raises(ProducerFencedError):
                        await client.leader_request("t", 0, Produce("t", 0, late))
                    with pytest.raises(ProducerFencedError):
                        await zombie.commit_transaction()
                    async with fresh.transaction():
                        await fresh.send("t", b"fresh", partition=0)
        assert [m.value for m in await read(c, ["t"])] == [b"fresh"]
        assert values(await read(c, ["t"], "read_uncommitted")) == [b"fresh", b"zombie-0"]


async def test_coordinator_aborts_a_transaction_past_its_timeout(tmp_path):
    async with cluster(tmp_path) as c:
        await topics(c, ("t", 1))
        with trio.fail_after(30):
            async with (
                Producer(c.bootstrap, transactional_id="stuck", transaction_timeout=0.5) as producer,
                ClusterClient(c.bootstrap) as client,
            ):
                await producer.begin_transaction()
                first = await producer.send("t", b"never")
                while (await fetch(client, "t", 0, READ_COMMITTED)).last_stable_offset == first.offset:
                    await trio.sleep(0.1)
                res = await fetch(client, "t", 0, READ_COMMITTED, offset=first.offset)
                assert res.records and [(a.producer_id, a.first_offset) for a in res.aborted] == [
                    (producer.producer_id, first.offset)
                ]
                with pytest.raises(ProducerFencedError):
                    await producer.commit_transaction()
        assert await read(c, ["t"], quiet=0.5) == []


async def test_offsets_sent_with_a_transaction_commit_with_it(tmp_path):
    async with cluster(tmp_path) as c:
        with trio.fail_after(40):
            await inputs(c, [b"%d" % i for i in range(4)])
            async with (
                Consumer(c.bootstrap, group="pipe", topics=["in"], offset_reset="earliest") as consumer,
                Producer(c.bootstrap, transactional_id="pipe-1") as producer,
                ClusterClient(c.bootstrap) as client,
            ):

                async def committed():
                    resp = await client.coordinator_request("pipe", OffsetFetch("pipe"))
                    return dict(((t, p), o) for t, p, o in resp.offsets)

                msgs = [await consumer.__anext__() for _ in range(2)]
                async with producer.transaction():
                    for m in msgs:
                        await producer.send("out", m.value + b"!")
                    await producer.send_offsets(consumer)
                done = msgs[-1].offset + 1
                assert await committed() == {("in", 0): done}
                msgs = [await consumer.__anext__() for _ in range(2)]
                await producer.begin_transaction()
                await producer.send("out", b"lost")
                await producer.send_offsets(consumer)
                await producer.abort()
                assert await committed() == {("in", 0): done}
        assert [m.value for m in await read(c, ["out"])] == [b"0!", b"1!"]


async def test_offsets_sent_as_group_metadata_are_checked_against_the_assignment(tmp_path):
    """Kafka's form: `send_offsets(consumer.group_metadata(), offsets)`. The metadata
    carries the member and the epoch of each partition it holds; offsets of a partition
    it does not hold are refused and the transaction can only abort."""
    async with cluster(tmp_path) as c:
        with trio.fail_after(40):
            await inputs(c, [b"a", b"b"])
            async with (
                Consumer(c.bootstrap, group="meta", topics=["in"], offset_reset="earliest") as consumer,
                Producer(c.bootstrap, transactional_id="meta-1") as producer,
                ClusterClient(c.bootstrap) as client,
            ):
                first = await consumer.__anext__()
                meta = consumer.group_metadata()
                assert (meta.group, set(meta.assigned_epochs)) == ("meta", {("in", 0)}) and meta.member_id
                async with producer.transaction():
                    await producer.send("out", first.value)
                    await producer.send_offsets(meta, {("in", 0): first.offset + 1})
                resp = await client.coordinator_request("meta", OffsetFetch("meta"))
                assert [(t, p, o) for t, p, o in resp.offsets] == [("in", 0, first.offset + 1)]

                await producer.begin_transaction()
                with pytest.raises(IllegalGenerationError):
                    await producer.send_offsets(meta, {("out", 0): 1})  # never assigned to this member
                with pytest.raises(InvalidConfigError):
                    await producer.send_offsets(meta)  # metadata alone names no offsets
                await producer.abort()


async def test_transaction_completes_after_its_coordinator_dies_between_prepare_and_markers(tmp_path):
    async with cluster(tmp_path) as c:
        await topics(c, ("a", 2), ("b", 1))
        n = len(c.brokers[1].state.topics[TXN_TOPIC].replicas)
        state_partition = partition_for_key(b"crashy", n)

        def coordinator():
            return next(
                b
                for b in c.brokers.values()
                if (part := b.partitions.get((TXN_TOPIC, state_partition))) is not None and part.ready_for_writes()
            )

        with trio.fail_after(60):
            async with Producer(
                c.bootstrap, transactional_id="crashy", request_timeout=2, delivery_timeout=40
            ) as producer:
                await producer.begin_transaction()
                for i in range(6):
                    await producer.send("a", b"a%d" % i, key=b"%d" % i)
                await producer.send("b", b"b")
                doomed = coordinator()

                async def hang(*args):  # the coordinator "crashes" right after PREPARE_COMMIT
                    await trio.sleep_forever()

                doomed.transactions._complete = hang
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(producer.commit_transaction)
                    part = doomed.partitions[(TXN_TOPIC, state_partition)]
                    while part.shard.txn_meta["crashy"].status != TxnStatus.PREPARE_COMMIT:
                        await trio.sleep(0.02)
                    assert await read(c, ["a", "b"], quiet=0.5) == []  # decided, but no marker yet
                    await c.stop(doomed.id, graceful=False)
                # commit_transaction returned: the new coordinator finished it
                assert (
                    coordinator().partitions[(TXN_TOPIC, state_partition)].shard.txn_meta["crashy"].status
                    == TxnStatus.COMPLETE_COMMIT
                )
        got = values(await read(c, ["a", "b"]))
        assert got == sorted([b"a%d" % i for i in range(6)] + [b"b"])


async def test_consume_process_produce_is_exactly_once_across_crashes(tmp_path):
    """Each round runs a pipeline for a random while and is then cut off (cancelled
    mid-handler or mid-commit); the next round's producer fences the previous one. Every
    input ends up in the output exactly once."""
    rng = random.Random(7)
    count = 40
    async with cluster(tmp_path) as c:
        await topics(c, ("in", 2), ("out", 2))
        async with Producer(c.bootstrap) as plain:
            for i in range(count):
                await plain.submit("in", b"%d" % i, key=b"%d" % i)
            await plain.flush()

        async def handler(msg):
            await producer.send("out", msg.value, key=msg.key)
            await trio.sleep(rng.random() * 0.05)

        with trio.fail_after(120):
            for _ in range(20):
                async with (
                    Consumer(
                        c.bootstrap, group="eo", topics=["in"], offset_reset="earliest", session_timeout=2
                    ) as consumer,
                    Producer(c.bootstrap, transactional_id="eo-1") as producer,
                ):
                    with trio.move_on_after(0.5 + rng.random() * 2):
                        await consumer.run(handler, producer=producer)
                if len(await read(c, ["out"], quiet=0.5)) >= count:
                    break
        out = await read(c, ["out"])
        assert sorted(int(m.value) for m in out) == list(range(count))


async def test_a_transaction_registers_its_partitions_in_one_request(tmp_path):
    """Sends only note their partitions; one AddPartitionsToTxn carries all of them (a
    round trip to the coordinator per partition, in a row, made transactions slow)."""
    async with cluster(tmp_path) as c:
        await topics(c, ("spread", 3))
        with trio.fail_after(30):
            async with Producer(c.bootstrap, transactional_id="one-trip") as producer:
                asked = []
                real = producer._txn_request

                async def counting(body):
                    asked.append((type(body).__name__, len(getattr(body, "partitions", ()))))
                    return await real(body)

                producer._txn_request = counting
                async with producer.transaction():
                    for i in range(9):
                        await producer.submit("spread", b"m%d" % i, partition=i % 3)
                assert asked == [("AddPartitionsToTxn", 3), ("EndTxn", 0)]
        assert values(await read(c, ["spread"])) == sorted(b"m%d" % i for i in range(9))


async def test_a_transaction_pays_no_linger_to_register_or_send(tmp_path):
    """Registering a partition and sending to it follow the producer's batching rule:
    nothing outstanding, no wait. A transaction of one send at a time commits in round
    trips, not in lingers (5 s here: the registration used to sleep one, and each batch
    another); partitions met while a registration is outstanding go in the next one."""
    async with cluster(tmp_path) as c:
        await topics(c, ("quick", 3))
        with trio.fail_after(60):
            async with Producer(c.bootstrap, transactional_id="quick-1", linger=5.0) as producer:
                asked = []
                real = producer._txn_request

                async def counting(body):
                    asked.append((type(body).__name__, len(getattr(body, "partitions", ()))))
                    return await real(body)

                producer._txn_request = counting
                start = trio.current_time()
                async with producer.transaction():
                    for i in range(3):
                        await producer.send("quick", b"q%d" % i, partition=i)
                    await producer.send("quick", b"again", partition=0)
                elapsed = trio.current_time() - start
                assert elapsed < 4.0, f"{elapsed:.1f}s: something waited for the linger"
                assert asked == [("AddPartitionsToTxn", 1)] * 3 + [("EndTxn", 0)]
        assert values(await read(c, ["quick"])) == [b"again", b"q0", b"q1", b"q2"]


async def test_a_late_duplicate_request_of_an_ended_transaction_begins_nothing(tmp_path):
    """A request whose connection dropped may still run on the node after its
    transaction ended; numbered, it is refused instead of beginning a transaction that
    nobody would end."""
    from client import Admin
    from client.errors import InvalidRequestError
    from client.protocol import AddPartitionsToTxn, TopicPartition

    async with cluster(tmp_path) as c:
        await topics(c, ("late", 1))
        with trio.fail_after(30):
            async with Producer(c.bootstrap, transactional_id="late-1") as producer, Admin(c.bootstrap) as admin:
                async with producer.transaction():
                    await producer.send("late", b"x")
                late = AddPartitionsToTxn(
                    "late-1", producer.producer_id, producer.producer_epoch, [TopicPartition("late", 0)], transaction=1
                )
                with pytest.raises(InvalidRequestError, match="late request for transaction 1"):
                    await producer.cluster.transaction_coordinator_request("late-1", late)
                assert (await admin.describe_transaction("late-1")).state == "complete_commit"
                async with producer.transaction():  # the next one is number 2: welcome
                    await producer.send("late", b"y")
                assert (await admin.describe_transaction("late-1")).state == "complete_commit"
        assert values(await read(c, ["late"])) == [b"x", b"y"]


async def test_a_partition_handed_over_mid_commit_starts_after_the_transactions_offsets(tmp_path):
    """KIP-447: a member's transaction carries its input offsets; it is decided but not
    complete when the member goes and the partition passes to another. Starting from the
    offset committed before would process that input again, next to the output the
    transaction is about to make visible. The next owner waits until the offsets land."""
    hold = tmp_path / "hold-markers"
    async with cluster(tmp_path) as c:
        for b in c.brokers.values():
            b.transactions._hold_path = str(hold)  # the test hook of test_transactions_process.py
        with trio.fail_after(60):
            await inputs(c, [b"m%d" % i for i in range(5)])
            # A short request_timeout bounds its shielded abort on cancel, which waits on the held commit.
            async with (
                Producer(c.bootstrap, transactional_id="worker-a", request_timeout=2.0) as pa,
                Admin(c.bootstrap) as admin,
            ):
                hold.write_text("")

                async def worker_a():
                    async with Consumer(
                        c.bootstrap, group="g", topics=["in"], offset_reset="earliest", session_timeout=1.0
                    ) as a:

                        async def handler(msg):
                            await pa.send("out", msg.value)

                        await a.run(handler, producer=pa, max_messages=1)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(worker_a)
                    while (await admin.describe_transaction("worker-a")).state != "prepare_commit":
                        await trio.sleep(0.02)
                    nursery.cancel_scope.cancel()  # worker A vanishes (expires); its commit is decided, not done
                async with Consumer(c.bootstrap, group="g", topics=["in"], offset_reset="earliest") as b:
                    with trio.move_on_after(1.5):
                        got = await b.__anext__()
                        pytest.fail(f"the next owner read {got.value!r} before the transaction's offsets landed")
                    hold.unlink()
                    first = await b.__anext__()
                assert first.value == b"m1"
        assert [m.value for m in await read(c, ["out"])] == [b"m0"]


async def out_per_input(c, n, **run_kw):
    """Group `g` turns `n` inputs into `out:<input>` with `run(producer=)`, one
    transaction each; an input `bad` fails. Returns the inputs in the order handled."""
    calls = []
    async with (
        Producer(c.bootstrap, transactional_id="worker") as tp,
        Consumer(c.bootstrap, group="g", topics=["in"], offset_reset="earliest") as consumer,
    ):

        async def handler(msg):
            calls.append(msg.value)
            await tp.send("out", b"out:" + msg.value)
            if msg.value == b"bad":
                raise ValueError("cannot handle it")

        await consumer.run(handler, producer=tp, max_messages=n, **run_kw)
    return calls


async def test_offsets_refused_while_the_partition_is_held_are_tried_again(tmp_path, monkeypatch):
    """The group refuses a transaction's offsets (as it does for a member fenced before it
    hears so) while the consumer still holds the partition: the message is neither
    dropped (a later transaction would commit past it) nor does run() stop; the handler
    runs again in a new transaction and each input gets one output."""
    from node import coordinator

    refusals = []
    check = coordinator._check_holder

    def refuse_once(coord, group, member_id, tps, what, assigned=None):
        if what == "transactional commit" and not refusals:
            refusals.append(sorted(tps))
            raise IllegalGenerationError("refused once by the test")
        return check(coord, group, member_id, tps, what, assigned)

    monkeypatch.setattr(coordinator, "_check_holder", refuse_once)
    async with cluster(tmp_path) as c:
        with trio.fail_after(60):
            await inputs(c, [b"m0", b"m1", b"m2"])
            calls = await out_per_input(c, 3)
        assert refusals == [[("in", 0)]]
        assert calls == [b"m0", b"m0", b"m1", b"m2"]
        assert [m.value for m in await read(c, ["out"])] == [b"out:m0", b"out:m1", b"out:m2"]


async def test_a_failing_input_is_retried_then_dead_lettered_in_its_transaction(tmp_path):
    """run(producer=): each failed attempt aborts its transaction (its outputs never
    show); after the last retry the dead letter and the input's offset commit together."""
    async with cluster(tmp_path) as c:
        with trio.fail_after(60):
            await inputs(c, [b"ok-0", b"bad", b"ok-1"])
            calls = await out_per_input(c, 3, retries=2, backoff=0.05)
            letters = await list_dead_letters(c.bootstrap, "g", idle=0.5)
        assert calls == [b"ok-0", b"bad", b"bad", b"bad", b"ok-1"]
        assert [m.value for m in await read(c, ["out"])] == [b"out:ok-0", b"out:ok-1"]
        [bad] = [m.offset for m in await read(c, ["in"]) if m.value == b"bad"]
        assert [(d.message.value, d.topic, d.offset, d.attempts) for d in letters] == [(b"bad", "in", bad, 3)]
        async with Consumer(c.bootstrap, group="g", topics=["in"], offset_reset="earliest") as again:
            with trio.move_on_after(2):
                got = await again.__anext__()
                pytest.fail(f"the group's offset did not pass the dead-lettered input: read {got.value!r}")


async def test_a_transaction_left_open_by_a_failed_abort_is_named_as_such(tmp_path):
    """A commit without an answer, then an abort without one: the outcome is unknown and
    the transaction still open here. The next begin says so and what to do, instead of
    a bare 'already open'; an abort that goes through lets the producer go on."""
    from client.errors import InvalidTxnStateError, RequestTimeoutError

    async with cluster(tmp_path) as c:
        await topics(c, ("t", 1))
        with trio.fail_after(30):
            async with Producer(c.bootstrap, transactional_id="stuck", request_timeout=2.0) as p:
                real = p._txn_request

                async def unanswered_end(body):
                    if isinstance(body, EndTxn):
                        raise RequestTimeoutError("no answer (test)")
                    return await real(body)

                p._txn_request = unanswered_end
                with pytest.raises(RequestTimeoutError):
                    async with p.transaction():
                        await p.send("t", b"x")
                with pytest.raises(InvalidTxnStateError, match="outcome unknown"):
                    await p.begin_transaction()
                with pytest.raises(RequestTimeoutError):  # an explicit abort without an answer: the same
                    await p.abort()
                with pytest.raises(InvalidTxnStateError, match="outcome unknown"):
                    await p.begin_transaction()
                p._txn_request = real
                await p.abort()
                async with p.transaction():
                    await p.send("t", b"y")
        assert values(await read(c, ["t"])) == [b"y"]


async def test_a_transaction_aborted_after_a_refused_send_leaves_no_sender_behind(tmp_path):
    """A refused batch fails the transaction; its abort starts a new epoch and drops
    the partitions' queues, whose sender tasks end rather than wait forever."""
    async with cluster(tmp_path) as c:
        await topics(c, ("a", 1))
        with trio.fail_after(30):
            async with Producer(c.bootstrap, transactional_id="refused-1") as producer:
                await producer.begin_transaction()
                await producer.send("a", b"fine")
                with pytest.raises(TideMQError):
                    await producer.send("a", b"from the far future", timestamp=32_503_680_000_000)  # year 3000
                old = producer._queues[("a", 0)]
                epoch = producer.producer_epoch
                await producer.abort()
                assert producer.producer_epoch != epoch and ("a", 0) not in producer._queues
                while old.running:
                    await trio.sleep(0.01)
                async with producer.transaction():
                    await producer.send("a", b"after")
        assert [m.value for m in await read(c, ["a"])] == [b"after"]
