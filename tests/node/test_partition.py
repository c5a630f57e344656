"""A partition's state checkpoint (`partition-state`): the producer state and the
transaction index a restart loads instead of replaying the log."""

from __future__ import annotations

import pytest
import trio

import node.partition
from client.cluster import ClusterClient
from client.protocol import (
    READ_COMMITTED,
    AbortedTxn,
    CreateTopic,
    Fetch,
    FetchPartition,
    InitProducerId,
    Produce,
)
from node.partition import STATE_FILE, Aborted, StateCheckpoint, TxnIndex
from node.peerprotocol import WriteTxnMarker
from node.producers import BatchRef, ProducerState
from node.storage import LogStorage
from raft.types import ConfState
from segments import LogConfig, build_batch
from tests.cluster import local_cluster

from .test_transactions import begin


def test_a_checkpoint_reads_back_as_written(tmp_path):
    producers = ProducerState()
    producers.apply(7, 0, BatchRef(0, 4, 10, 14), timestamp=1000)
    producers.apply(8, 2, BatchRef(0, 0, 15, 15), timestamp=1001)
    txns = TxnIndex()
    txns.data(8, 15)
    txns.marker(9, commit=False, offset=16, coordinator_epoch=3)
    cp = StateCheckpoint(16, producers.snapshot(), dict(txns.open), [(16, 5, 12)], dict(txns.coordinator_epochs))
    st = LogStorage(tmp_path / "p", LogConfig(fsync="never"), ConfState((1,)))
    assert StateCheckpoint.read(st) is None
    st.write_file(STATE_FILE, cp.encode())
    assert StateCheckpoint.read(st) == cp
    # Damaged (torn by a crash, say): ignored, and the log is replayed instead.
    path = tmp_path / "p" / STATE_FILE
    path.write_bytes(path.read_bytes()[:-3])
    assert StateCheckpoint.read(st) is None
    st.close()


async def _produce(client: ClusterClient, pid: int, seq: int, tid: str | None = None) -> int:
    data = build_batch(
        [(None, b"v%d" % seq, (), None)], producer_id=pid, producer_epoch=0, base_sequence=seq, transactional=bool(tid)
    )
    return (await client.leader_request("t", 0, Produce("t", 0, data, transactional_id=tid))).base_offset


def _state(b) -> tuple:
    part = b.partitions[("t", 0)]
    return part.producers.snapshot(), part.txns.open, part.txns.aborted, part.txns.coordinator_epochs


async def _caught_up(c, offset: int) -> None:
    for b in c.brokers.values():
        while b.partitions[("t", 0)].applied < offset:
            await trio.sleep(0.02)


async def _checkpoints(c) -> dict[int, int]:
    """Each replica's checkpoint offset on disk, once it has one (a task of its own
    writes it after the apply; where the checkpoints fall depends on how the entries
    were applied, one by one or a tick's at once)."""
    out = {}
    for n, b in c.brokers.items():
        storage = b.partitions[("t", 0)].storage
        while (saved := StateCheckpoint.read(storage)) is None:
            await trio.sleep(0.02)
        out[n] = saved.offset
    return out


@pytest.mark.parametrize("graceful", [True, False], ids=["graceful", "crash"])
async def test_a_restart_loads_the_checkpoint_and_replays_only_what_follows(tmp_path, monkeypatch, graceful):
    # Small, so the crash case has a checkpoint from before its last writes.
    monkeypatch.setattr(node.partition, "STATE_CHECKPOINT_EVERY", 4)
    async with local_cluster(tmp_path, 3, offsets_partitions=1, txn_partitions=1) as c:
        async with ClusterClient(c.bootstrap) as client, c.peer_client() as peer:
            with trio.fail_after(30):
                await client.controller_request(CreateTopic("t", 1, 3))
                await c.wait_leaders("t")
                pids = [(await client.controller_request(InitProducerId())).producer_id for _ in range(3)]
                for seq in range(3):
                    for pid in pids:
                        await _produce(client, pid, seq)
                txn = await begin(client, "x", "t")
                first = await _produce(client, txn, 0, tid="x")
                end = await peer.leader_request(
                    "t", 0, WriteTxnMarker("t", 0, txn, 0, commit=False, coordinator_epoch=2)
                )
                assert end is not None
                last = await _produce(client, pids[0], 3)
                await _caught_up(c, last)
                checkpoints = await _checkpoints(c)
                before = {n: _state(b) for n, b in c.brokers.items()}
                assert before[1][2] == [Aborted(first + 1, txn, first)]

            for n in list(c.brokers):
                await c.stop(n, graceful=graceful)
            for n in c.peers:
                await c.start(n)
            with trio.fail_after(30):
                await c.wait_leaders("t")
                await _caught_up(c, last)
                for n, b in c.brokers.items():
                    part = b.partitions[("t", 0)]
                    # Loaded from its checkpoint: through the last write after a graceful
                    # stop; after a crash from an earlier one, with the rest replayed.
                    assert part.state_at >= (last if graceful else checkpoints[n]) > 0
                    assert _state(b) == before[n]
                while True:  # (the client may ask the leader from before the restart first)
                    res = await client.leader_request(
                        "t", 0, Fetch([FetchPartition("t", 0, first)], max_wait_ms=0, isolation=READ_COMMITTED)
                    )
                    if res.results[0].error == 0:
                        break
                    await trio.sleep(0.05)
                assert res.results[0].aborted == [AbortedTxn(txn, first)]
                # Idempotence goes on where it was: a retry of the last batch is a duplicate.
                dup = await client.leader_request(
                    "t",
                    0,
                    Produce(
                        "t",
                        0,
                        build_batch([(None, b"v3", (), None)], producer_id=pids[0], producer_epoch=0, base_sequence=3),
                    ),
                )
                assert dup.duplicate and dup.base_offset == last
