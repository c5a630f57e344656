"""The production storage on the simulator's disk: `LogStorage` over a segments log on
`segments.simfs`, as a `raft.simulator.DiskKind`.

With it, the simulator (`scripts/simulate`) runs the node's own storage path under the
shared driver: each Ready's appends, truncations, raft-state rewrites, snapshot files
and fsyncs go through segments to a file system that, on a crash, keeps only what was
synced and tears the last unsynced write; the restart reopens `LogStorage` from it, so
segments recovery and `LogStorage`'s open path run after every crash. Payloads are real
Kafka v2 batches, since that is what the log stores.
"""

from __future__ import annotations

from pathlib import Path

from node.storage import LogStorage, decode_raft_state
from raft.simulator import Prng
from raft.types import ConfState, HardState
from segments import LogConfig
from segments.batch import build_batch
from segments.checkpoint import parse_checkpoint
from segments.log import CHECKPOINT_VERSION, LOG_START_CHECKPOINT
from segments.simfs import SimFileSystem

# Small segments, so the simulated logs roll and delete segments too; "never" because
# the driver fsyncs once per Ready (the node's configuration).
_CONFIG = LogConfig(segment_bytes=2048, index_interval_bytes=256, fsync="never")
_STAMP = slice(0, 8), slice(12, 16)  # base offset, partition leader epoch (outside the CRC)


class SegmentsDisk:
    """One node's simulated disk with `LogStorage` open on it."""

    def __init__(self, node_id: int, conf: ConfState, rng: Prng) -> None:
        self.fs = SimFileSystem(rng)
        self.path = Path(f"/sim/node-{node_id}")
        self.conf = conf
        self.storage = LogStorage(self.path, _CONFIG, conf, fs=self.fs)
        self._durable: tuple[bytes, HardState, int] | None = None  # decoded raft-state, by its bytes
        # joined once: the checker asks on every message, and Path joins are slow
        self._state_file = str(self.path / "raft-state")
        self._start_file = str(self.path / LOG_START_CHECKPOINT)

    def _durable_state(self) -> tuple[HardState, int]:
        """(term/vote/commit, snapshot index) of the durable `raft-state`; decoded again
        only when an fsync replaced its bytes (the checker asks on every message)."""
        raw = self.fs.durable_bytes(self._state_file)
        if raw is None:
            return HardState(), -1  # never saved: a crash leaves what a first open makes
        if self._durable is None or self._durable[0] is not raw:
            self._durable = (raw, *decode_raft_state(raw))
        return self._durable[1], self._durable[2]

    def durable_state(self) -> HardState:
        return self._durable_state()[0]

    def durable_through(self, index: int) -> bool:
        """The live log through `index` survives a crash now: `index` is at or below the
        durable snapshot, or the bytes of the segment up to the end of the batch holding
        it are fsynced as they are now under a durable name (recovery scans a segment
        from its start, so the whole prefix must be). Earlier segments are not looked
        at: the log's flush syncs sealed segments before the active one."""
        if index <= self._durable_state()[1]:
            return True
        if index < self.storage.first_index():  # compacted or replaced by a snapshot here
            return index < self._durable_log_start()
        where = self.storage.log.locate(index)
        if where is None:
            return False
        path, position, size = where
        return self.fs.durable_prefix(path, position + size)

    def _durable_log_start(self) -> int:
        """The log start a reopen would find in the durable log-start checkpoint (it
        raises the snapshot index when a crash fell between the log's flush and the
        `raft-state` save of a snapshot install); -1 without one."""
        raw = self.fs.durable_bytes(self._start_file)
        entries = parse_checkpoint(raw, CHECKPOINT_VERSION, 1) if raw else None
        return entries[0][0] if entries else -1

    def compact(self, index: int, data: bytes) -> None:
        self.storage.compact(index, data)

    def crash(self) -> str | None:
        torn, lost = self.fs.torn, self.fs.lost
        self.fs.crash()
        if self.fs.torn > torn:
            return "torn_write"
        return "unsynced_lost" if self.fs.lost > lost else None

    def reopen(self) -> None:
        self.storage = LogStorage(self.path, _CONFIG, self.conf, fs=self.fs)


class SegmentsDisks:
    """`raft.simulator.DiskKind` for the production storage."""

    name = "segments"
    stamps = True

    def open(self, node_id: int, conf: ConfState, rng: Prng) -> SegmentsDisk:
        return SegmentsDisk(node_id, conf, rng)

    def payload(self, body: bytes, count: int) -> bytes:
        return build_batch([(None, body if i == 0 else b"", (), 0) for i in range(count)])

    def canon(self, data: bytes) -> bytes:
        out = bytearray(data)
        for part in _STAMP:
            out[part] = bytes(part.stop - part.start)
        return bytes(out)
