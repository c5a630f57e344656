"""Transactions on the broker: the partition's open/aborted index, producer fencing by
markers, and marker writes through the wire (zombie coordinators refused, restart
rebuilds the index from the log)."""

import pytest
import trio

from client.cluster import ClusterClient
from client.errors import InvalidRequestError, InvalidTxnStateError, ProducerFencedError
from client.protocol import (
    READ_COMMITTED,
    READ_UNCOMMITTED,
    AbortedTxn,
    AddPartitionsToTxn,
    CreateTopic,
    EndTxn,
    Fetch,
    FetchPartition,
    InitProducerId,
    ListOffsets,
    Produce,
    TopicPartition,
)
from node.partition import TxnIndex
from node.peerprotocol import WriteTxnMarker
from node.producers import BatchRef, ProducerState
from segments import build_batch
from tests.cluster import local_cluster


def test_index_tracks_open_and_aborted_transactions():
    idx = TxnIndex()
    idx.data(7, 10)
    idx.data(7, 12)  # a later batch of the same transaction: still opened at 10
    idx.data(8, 11)
    assert idx.first_open() == 10
    idx.marker(7, commit=False, offset=13, coordinator_epoch=1)
    assert idx.first_open() == 11
    idx.marker(8, commit=True, offset=14, coordinator_epoch=1)
    assert idx.first_open() is None
    idx.marker(9, commit=False, offset=15, coordinator_epoch=1)  # closes nothing: no aborted entry
    assert idx.aborted_in(0, 100) == [AbortedTxn(7, 10)]
    assert idx.aborted_in(13, 100) == [AbortedTxn(7, 10)]  # the marker itself is in range
    assert idx.aborted_in(14, 100) == []  # wholly before the read
    assert idx.aborted_in(0, 10) == []  # wholly after the read
    idx.forget_before(14)
    assert idx.aborted == []


def test_marker_with_a_higher_epoch_fences_older_batches():
    state = ProducerState()
    state.apply(5, 0, BatchRef(0, 2, 10, 12))
    state.fence(5, 1)  # proposed, not yet committed
    with pytest.raises(ProducerFencedError):
        state.check(5, 0, 3, 1)
    state.clear_pending()  # lost leadership before it committed
    assert state.check(5, 0, 3, 1) is None
    state.apply_marker(5, 1)  # committed: the new epoch starts at 0
    with pytest.raises(ProducerFencedError):
        state.check(5, 0, 3, 1)
    assert state.check(5, 1, 0, 1) is None
    with pytest.raises(ProducerFencedError):
        state.fence(5, 0)  # a marker older than the producer


async def begin(client, tid, *topics):
    """A transactional id's producer id (epoch 0), with `topics`' partition 0 in its transaction."""
    pid = (await client.transaction_coordinator_request(tid, InitProducerId(tid))).producer_id
    await client.transaction_coordinator_request(
        tid, AddPartitionsToTxn(tid, pid, 0, [TopicPartition(t, 0) for t in topics])
    )
    return pid


async def test_markers_close_transactions_and_survive_a_restart(tmp_path):
    async with local_cluster(tmp_path, 3, offsets_partitions=1, txn_partitions=1) as c:
        async with ClusterClient(c.bootstrap) as client, c.peer_client() as node:
            with trio.fail_after(30):
                await client.controller_request(CreateTopic("t", 1, 3))
                await c.wait_leaders("t")

                tids = {}

                async def produce(value, pid, seq, transactional=True):
                    data = build_batch(
                        [(None, value, (), None)],
                        producer_id=pid,
                        producer_epoch=0,
                        base_sequence=seq,
                        transactional=transactional,
                    )
                    return (
                        await client.leader_request("t", 0, Produce("t", 0, data, transactional_id=tids.get(pid)))
                    ).base_offset

                a, b = await begin(client, "a", "t"), await begin(client, "b", "t")
                tids.update({a: "a", b: "b"})

                async def fetch(isolation):
                    resp = await client.leader_request(
                        "t", 0, Fetch([FetchPartition("t", 0, first)], max_wait_ms=0, isolation=isolation)
                    )
                    return resp.results[0]

                first = await produce(b"a0", a, 0)
                await produce(b"b0", b, 0)
                plain = await produce(b"plain", -1, -1, transactional=False)
                res = await fetch(READ_COMMITTED)
                assert res.last_stable_offset == first and res.records == b""
                assert (await fetch(READ_UNCOMMITTED)).last_stable_offset == first
                # Markers come from a transaction coordinator: a node, on the peer listener.
                await node.leader_request("t", 0, WriteTxnMarker("t", 0, a, 0, commit=False, coordinator_epoch=3))
                await node.leader_request("t", 0, WriteTxnMarker("t", 0, b, 0, commit=True, coordinator_epoch=3))
                # A deposed coordinator (older epoch) may not write a marker any more.
                with pytest.raises(ProducerFencedError):
                    await node.leader_request("t", 0, WriteTxnMarker("t", 0, a, 0, commit=True, coordinator_epoch=2))
                res = await fetch(READ_COMMITTED)
                assert res.last_stable_offset == res.high_watermark > plain
                assert res.aborted == [AbortedTxn(a, first)]

            # Every replica rebuilds the same index from its log after a restart.
            for node in list(c.brokers):
                await c.stop(node, graceful=False)
            for node in c.peers:
                await c.start(node)
            with trio.fail_after(30):
                await c.wait_leaders("t")
                # A node that leads in a newer term serves nothing until it commits an
                # entry of its own (and the client may still ask an older leader): retry.
                while not (res := await fetch(READ_COMMITTED)).records:
                    await trio.sleep(0.05)
                assert res.aborted == [AbortedTxn(a, first)] and res.last_stable_offset == res.high_watermark
                for b in c.brokers.values():
                    while b.partitions[("t", 0)].txns.aborted == []:  # followers apply once they learn the commit
                        await trio.sleep(0.05)
                    assert b.partitions[("t", 0)].txns.open == {}


async def test_a_partition_accepts_a_transaction_only_once_its_coordinator_confirms_it(tmp_path):
    """A transactional batch opens a transaction here that only a marker closes; one the
    coordinator does not know of (the partition never added, or its transaction already
    over) would hold back every read_committed reader forever. The leader asks first."""
    async with local_cluster(tmp_path, 3, offsets_partitions=1, txn_partitions=1) as c:
        async with ClusterClient(c.bootstrap) as client:
            with trio.fail_after(40):
                await client.controller_request(CreateTopic("t", 1, 3))
                await client.controller_request(CreateTopic("other", 1, 3))
                await c.wait_leaders("t")

                def batch(pid, seq, value=b"v"):
                    return build_batch(
                        [(None, value, (), None)],
                        producer_id=pid,
                        producer_epoch=0,
                        base_sequence=seq,
                        transactional=True,
                    )

                async def lso():
                    return (await client.leader_request("t", 0, ListOffsets("t", 0, isolation=READ_COMMITTED))).offset

                stray = await begin(client, "stray", "other")  # its transaction holds "other", not "t"
                end = await lso()
                with pytest.raises(InvalidTxnStateError, match="not in an ongoing transaction"):
                    await client.leader_request("t", 0, Produce("t", 0, batch(stray, 0), transactional_id="stray"))
                with pytest.raises(InvalidRequestError, match="needs its producer's transactional_id"):
                    await client.leader_request("t", 0, Produce("t", 0, batch(stray, 0)))
                with pytest.raises(ProducerFencedError):  # somebody else's id
                    await client.leader_request("t", 0, Produce("t", 0, batch(stray + 1, 0), transactional_id="stray"))
                assert await lso() == end  # nothing was opened

                # A registered producer pipelines batches; the held ones keep their order.
                pid = await begin(client, "good", "t")
                sent = [trio.Event() for _ in range(4)]
                offsets = [None] * 4

                async def send(i):
                    if i:
                        await sent[i - 1].wait()
                    resp = await client.leader_request(
                        "t", 0, Produce("t", 0, batch(pid, i, b"%d" % i), transactional_id="good"), sent[i]
                    )
                    offsets[i] = resp.base_offset

                async with trio.open_nursery() as nursery:
                    for i in range(4):
                        nursery.start_soon(send, i)
                assert offsets == sorted(offsets) and len(set(offsets)) == 4
                assert await lso() == offsets[0]  # open until its marker
                await client.transaction_coordinator_request("good", EndTxn("good", pid, 0, commit=True))
                assert await lso() > offsets[-1]
                # A late batch of the ended transaction is refused; it would open a new one.
                with pytest.raises(InvalidTxnStateError):
                    await client.leader_request("t", 0, Produce("t", 0, batch(pid, 4), transactional_id="good"))
                assert await lso() > offsets[-1]


async def test_a_marker_written_while_the_coordinator_is_asked_fails_the_held_batches(tmp_path):
    async with local_cluster(tmp_path, 3, offsets_partitions=1, txn_partitions=1) as c:
        async with ClusterClient(c.bootstrap) as client, c.peer_client() as node:
            with trio.fail_after(40):
                await client.controller_request(CreateTopic("t", 1, 3))
                leader = (await c.wait_leaders("t"))[0]
                part = c.brokers[leader].partitions[("t", 0)]
                asked, answer = trio.Event(), trio.Event()
                verify = part._txn_verifier

                async def slow_verifier(*args):
                    await verify(*args)  # the coordinator says yes...
                    asked.set()
                    await answer.wait()  # ...but the answer is slow to arrive

                part._txn_verifier = slow_verifier
                pid = await begin(client, "slow", "t")
                data = build_batch(
                    [(None, b"v", (), None)], producer_id=pid, producer_epoch=0, base_sequence=0, transactional=True
                )
                async with trio.open_nursery() as nursery:

                    async def produce():
                        with pytest.raises(InvalidTxnStateError, match="ended while its batch waited"):
                            await client.leader_request("t", 0, Produce("t", 0, data, transactional_id="slow"))

                    nursery.start_soon(produce)
                    await asked.wait()
                    await node.leader_request("t", 0, WriteTxnMarker("t", 0, pid, 0, commit=False, coordinator_epoch=1))
                    answer.set()
                lso = (await client.leader_request("t", 0, ListOffsets("t", 0, isolation=READ_COMMITTED))).offset
                assert lso == part.high_watermark  # nothing left open
