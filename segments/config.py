"""LogConfig: the knobs of one partition log, with Kafka's names where Kafka has them.

fsync policies (what each risks is the point of choosing):

- "always": `fdatasync` the active segment before every append call returns. An
  acknowledged append survives a power cut. Group several batches per call
  (`Log.append_many`) to pay one sync for many. The default: Raft's "persist before
  send" needs it.
- "interval": sync when `fsync_interval_ms` passed since the last sync, checked on
  append and by `Log.flush_if_due()` from the broker's timer. A process crash loses
  nothing (the page cache survives it); a power cut or kernel crash loses up to the
  interval's worth of appends, which a replicated cluster then restores from peers.
- "never": leave it to the kernel's writeback (Kafka's default). A process crash
  still loses nothing; a machine crash loses whatever the kernel had not written,
  possibly more than any interval. Only for data a replica quorum protects or
  benchmarks.

Whatever the policy, recovery on open never serves a torn batch, and the small
metadata checkpoints (leader epochs, log start offset) are always fsynced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FsyncPolicy = Literal["always", "interval", "never"]

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class LogConfig:
    """Per-log settings. Sizes in bytes, times in milliseconds, None = unlimited."""

    segment_bytes: int = 128 * 1024 * 1024
    """Roll when the next batch would grow the active segment beyond this."""
    segment_ms: int | None = 7 * DAY_MS
    """Roll when a batch's max timestamp is this far past the active segment's first
    batch's max timestamp (Kafka's rule: record time, not wall time)."""
    retention_bytes: int | None = None
    """Delete the oldest sealed segments while the log stays at least this big."""
    retention_ms: int | None = 7 * DAY_MS
    """Delete sealed segments whose newest timestamp is older than this."""
    index_interval_bytes: int = 4096
    """Log bytes between two sparse index entries."""
    fsync: FsyncPolicy = "always"
    fsync_interval_ms: int = 1000
    max_batch_bytes: int = 1048588
    """Largest batch append accepts (Kafka's message.max.bytes default)."""

    def __post_init__(self) -> None:
        if not 0 < self.segment_bytes < (1 << 31):
            raise ValueError(f"segment_bytes {self.segment_bytes} must be in (0, 2**31)")
        if self.index_interval_bytes < 0:
            raise ValueError("index_interval_bytes must be >= 0")
        if self.fsync not in ("always", "interval", "never"):
            raise ValueError(f"fsync must be 'always', 'interval' or 'never', not {self.fsync!r}")
        if self.fsync_interval_ms < 0:
            raise ValueError("fsync_interval_ms must be >= 0")
        if self.max_batch_bytes <= 0:
            raise ValueError("max_batch_bytes must be > 0")
        for name in ("segment_ms", "retention_bytes", "retention_ms"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0 or None")
