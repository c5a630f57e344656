"""Transactions on the broker: the partition's open/aborted index, producer fencing by
markers, and marker writes through the wire (zombie coordinators refused, restart
rebuilds the index from the log)."""

import pytest
import trio

from client.cluster import ClusterClient
from client.errors import ProducerFencedError
from client.protocol import READ_COMMITTED, READ_UNCOMMITTED, AbortedTxn, CreateTopic, Fetch, FetchPartition, \
    Produce, WriteTxnMarker
from node.partition import TxnIndex
from node.producers import BatchRef, ProducerState
from segments import build_batch
from tests.cluster import local_cluster


def test_index_tracks_open_and_aborted_transactions():
    idx = TxnIndex()
    idx.data(7, 10)
    idx.data(7, 12)            # a later batch of the same transaction: still opened at 10
    idx.data(8, 11)
    assert idx.first_open() == 10
    idx.marker(7, commit=False, offset=13, coordinator_epoch=1)
    assert idx.first_open() == 11
    idx.marker(8, commit=True, offset=14, coordinator_epoch=1)
    assert idx.first_open() is None
    idx.marker(9, commit=False, offset=15, coordinator_epoch=1)     # closes nothing: no aborted entry
    assert idx.aborted_in(0, 100) == [AbortedTxn(7, 10)]
    assert idx.aborted_in(13, 100) == [AbortedTxn(7, 10)]          # the marker itself is in range
    assert idx.aborted_in(14, 100) == []                           # wholly before the read
    assert idx.aborted_in(0, 10) == []                             # wholly after the read
    idx.forget_before(14)
    assert idx.aborted == []


def test_marker_with_a_higher_epoch_fences_older_batches():
    state = ProducerState()
    state.apply(5, 0, BatchRef(0, 2, 10, 12))
    state.fence(5, 1)                                   # proposed, not yet committed
    with pytest.raises(ProducerFencedError):
        state.check(5, 0, 3, 1)
    state.clear_pending()                               # lost leadership before it committed
    assert state.check(5, 0, 3, 1) is None
    state.apply_marker(5, 1)                            # committed: the new epoch starts at 0
    with pytest.raises(ProducerFencedError):
        state.check(5, 0, 3, 1)
    assert state.check(5, 1, 0, 1) is None
    with pytest.raises(ProducerFencedError):
        state.fence(5, 0)                               # a marker older than the producer


async def test_markers_close_transactions_and_survive_a_restart(tmp_path):
    async with local_cluster(tmp_path, 3, offsets_partitions=1, txn_partitions=1) as c:
        async with ClusterClient(c.bootstrap) as client:
            with trio.fail_after(30):
                await client.controller_request(CreateTopic("t", 1, 3))
                await c.wait_leaders("t")

                async def produce(value, pid, seq, transactional=True):
                    data = build_batch([(None, value, (), None)], producer_id=pid, producer_epoch=0,
                                       base_sequence=seq, transactional=transactional)
                    return (await client.leader_request("t", 0, Produce("t", 0, data))).base_offset

                async def fetch(isolation):
                    resp = await client.leader_request("t", 0, Fetch([FetchPartition("t", 0, first)], max_wait_ms=0,
                                                                     isolation=isolation))
                    return resp.results[0]

                first = await produce(b"a0", 100, 0)
                await produce(b"b0", 200, 0)
                plain = await produce(b"plain", -1, -1, transactional=False)
                res = await fetch(READ_COMMITTED)
                assert res.last_stable_offset == first and res.records == b""
                assert (await fetch(READ_UNCOMMITTED)).last_stable_offset == first
                await client.leader_request("t", 0, WriteTxnMarker("t", 0, 100, 0, commit=False, coordinator_epoch=3))
                await client.leader_request("t", 0, WriteTxnMarker("t", 0, 200, 0, commit=True, coordinator_epoch=3))
                # A deposed coordinator (older epoch) may not write a marker any more.
                with pytest.raises(ProducerFencedError):
                    await client.leader_request("t", 0, WriteTxnMarker("t", 0, 100, 0, commit=True, coordinator_epoch=2))
                res = await fetch(READ_COMMITTED)
                assert res.last_stable_offset == res.high_watermark > plain
                assert res.aborted == [AbortedTxn(100, first)]

            # Every replica rebuilds the same index from its log after a restart.
            for node in list(c.brokers):
                await c.stop(node, graceful=False)
            for node in c.peers:
                await c.start(node)
            with trio.fail_after(30):
                await c.wait_leaders("t")
                res = await fetch(READ_COMMITTED)
                assert res.aborted == [AbortedTxn(100, first)] and res.last_stable_offset == res.high_watermark
                for b in c.brokers.values():
                    while b.partitions[("t", 0)].txns.aborted == []:   # followers apply once they learn the commit
                        await trio.sleep(0.05)
                    assert b.partitions[("t", 0)].txns.open == {}
