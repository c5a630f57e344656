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

from node.storage import LogStorage
from raft.simulator import Prng
from raft.types import ConfState
from segments import LogConfig
from segments.batch import build_batch
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

    def open(self, node_id: int, conf: ConfState, rng: Prng) -> SegmentsDisk:
        return SegmentsDisk(node_id, conf, rng)

    def payload(self, body: bytes, count: int) -> bytes:
        return build_batch([(None, body if i == 0 else b"", (), 0) for i in range(count)])

    def canon(self, data: bytes) -> bytes:
        out = bytearray(data)
        for part in _STAMP:
            out[part] = bytes(part.stop - part.start)
        return bytes(out)
