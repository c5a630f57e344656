"""Sparse indexes beside each segment, in Kafka's file layouts.

- `OffsetIndex` (`.index`): 8-byte entries, 4-byte offset relative to the segment's
  base offset + 4-byte file position of a batch starting there, big-endian.
- `TimeIndex` (`.timeindex`): 12-byte entries, 8-byte timestamp + 4-byte relative
  offset: "up to and including the batch at this offset, no batch has a max timestamp
  above this one". Entries only grow, so lookups bisect.

The segment adds one entry to each about every `index_interval_bytes` of log, so a
lookup lands within a few KiB of its target and finishes with a short scan.

Lookups bisect in-memory `array`s: an index is small (8 bytes per 4 KiB of log) and
this keeps reads free of mmap lifetime rules (a truncated mmap-ed file faults). New
entries are buffered and written by `flush()` (the segment calls it on flush, roll
and close). Indexes carry no checksum: `load` validates one on open (whole entries,
strictly increasing, within the segment) and refuses it when damaged; the segment then
rebuilds it from the log, and it always rebuilds the active segment's. Losing an index
never loses data, it costs a scan.
"""

from __future__ import annotations

import os
import struct
from array import array
from bisect import bisect_left, bisect_right

from segments.fs import OS, FileSystem, write_all


class _SparseIndex:
    """Two parallel increasing arrays persisted as fixed-size big-endian entries."""

    _ENTRY: struct.Struct
    _KEY_CODE: str

    def __init__(self, path: str, base_offset: int, fs: FileSystem = OS) -> None:
        self.path = path
        self.base_offset = base_offset
        self._fs = fs
        self._keys = array(self._KEY_CODE)
        self._values = array("I")
        self._written = 0  # entries already in the file
        self._pending = bytearray()

    def __len__(self) -> int:
        return len(self._keys)

    def entries(self) -> list[tuple[int, int]]:
        """All entries as stored: (key, value) with offsets relative to the base."""
        return list(zip(self._keys, self._values))

    def last_entry(self) -> tuple[int, int] | None:
        """The last (key, value) as stored, or None when empty."""
        return (self._keys[-1], self._values[-1]) if self._keys else None

    def _add(self, key: int, value: int) -> None:
        self._keys.append(key)
        self._values.append(value)
        self._pending += self._ENTRY.pack(key, value)

    def _load_entries(self) -> list[tuple[int, int]] | None:
        try:
            data = self._fs.read_file(self.path)
        except FileNotFoundError:
            return None
        if len(data) % self._ENTRY.size:
            return None
        return list(self._ENTRY.iter_unpack(data))

    def _install(self, entries: list[tuple[int, int]]) -> None:
        self._keys = array(self._KEY_CODE, (k for k, _ in entries))
        self._values = array("I", (v for _, v in entries))
        self._written = len(entries)
        self._pending = bytearray()

    def _truncate_entries(self, keep: int) -> None:
        """Keep the first `keep` entries, in memory and in the file."""
        if keep >= len(self._keys):
            return
        del self._keys[keep:]
        del self._values[keep:]
        if keep < self._written:
            fd = self._fs.open(self.path, os.O_RDWR)
            try:
                self._fs.ftruncate(fd, keep * self._ENTRY.size)
            finally:
                self._fs.close(fd)
            self._written = keep
            self._pending = bytearray()
        else:
            self._pending = self._pending[: (keep - self._written) * self._ENTRY.size]

    def reset(self) -> None:
        """Drop every entry and empty the file (before a rebuild)."""
        self._install([])
        self._fs.close(self._fs.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC))

    def flush(self, fsync: bool) -> None:
        """Write buffered entries to the file, then fsync it if asked."""
        if not self._pending and not fsync:
            return
        fs = self._fs
        fd = fs.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            if self._pending:
                write_all(fs, fd, self._pending)
                self._written = len(self._keys)
                self._pending = bytearray()
            if fsync:
                fs.fsync(fd)
        finally:
            fs.close(fd)

    def delete(self) -> None:
        try:
            self._fs.unlink(self.path)
        except FileNotFoundError:
            pass


class OffsetIndex(_SparseIndex):
    """Relative offset -> file position of the batch with that base offset."""

    _ENTRY = struct.Struct(">II")
    _KEY_CODE = "I"

    def append(self, offset: int, position: int) -> None:
        """Index the batch with base offset `offset` starting at `position`."""
        rel = offset - self.base_offset
        if self._keys and (rel <= self._keys[-1] or position <= self._values[-1]):
            raise ValueError(f"index entry ({offset}, {position}) does not follow the last one")
        self._add(rel, position)

    def lookup(self, offset: int) -> tuple[int, int]:
        """(base offset, position) of the last indexed batch starting at or before
        `offset`; (segment base offset, 0) when there is none."""
        i = bisect_right(self._keys, offset - self.base_offset) - 1
        if i < 0:
            return self.base_offset, 0
        return self.base_offset + self._keys[i], self._values[i]

    def floor_position(self, position: int) -> int:
        """The largest indexed batch position <= `position` (0 when none is)."""
        i = bisect_right(self._values, position) - 1
        return self._values[i] if i >= 0 else 0

    @property
    def last_position(self) -> int:
        """The last entry's position, 0 when empty."""
        return self._values[-1] if self._values else 0

    def last(self) -> tuple[int, int]:
        """The last entry as `lookup` returns it."""
        if not self._keys:
            return self.base_offset, 0
        return self.base_offset + self._keys[-1], self._values[-1]

    def truncate_to_position(self, position: int) -> None:
        """Forget entries for batches at or after file position `position`."""
        self._truncate_entries(bisect_left(self._values, position))

    def load(self, log_size: int, max_offset: int) -> bool:
        """Load and validate the file; False (and empty) if missing or damaged.

        Valid means whole entries, offsets and positions strictly increasing,
        positions inside the log and offsets below `max_offset` (exclusive).
        """
        entries = self._load_entries()
        if entries is None or not _valid_offset_entries(entries, log_size, max_offset - self.base_offset):
            self._install([])
            return False
        self._install(entries)
        return True


def _valid_offset_entries(entries: list[tuple[int, int]], log_size: int, max_rel: int) -> bool:
    prev_rel = prev_pos = -1
    for rel, pos in entries:
        if rel <= prev_rel or pos <= prev_pos or pos >= log_size or rel >= max_rel:
            return False
        prev_rel, prev_pos = rel, pos
    return True


class TimeIndex(_SparseIndex):
    """Max timestamp so far -> relative offset of the batch that set it."""

    _ENTRY = struct.Struct(">qI")
    _KEY_CODE = "q"

    def maybe_append(self, timestamp: int, offset: int) -> None:
        """Add (timestamp, offset) if it raises the last entry's timestamp."""
        if self._keys and timestamp <= self._keys[-1]:
            return
        rel = offset - self.base_offset
        if self._values and rel <= self._values[-1]:
            raise ValueError(f"time index entry ({timestamp}, {offset}) does not follow the last one")
        self._add(timestamp, rel)

    def lookup(self, timestamp: int) -> int | None:
        """The offset of the last entry with a timestamp below `timestamp`, or None.

        Every batch up to that offset has max timestamp < `timestamp`, so a search
        for the first batch reaching `timestamp` may start at that offset's batch.
        """
        i = bisect_left(self._keys, timestamp) - 1
        if i < 0:
            return None
        return self.base_offset + self._values[i]

    def truncate_to_offset(self, offset: int) -> None:
        """Forget entries for offsets at or after `offset`."""
        self._truncate_entries(bisect_left(self._values, offset - self.base_offset))

    def load(self, max_offset: int) -> bool:
        """Load and validate the file; False (and empty) if missing or damaged."""
        entries = self._load_entries()
        max_rel = max_offset - self.base_offset
        valid = entries is not None
        if entries:
            prev_ts, prev_rel = entries[0][0] - 1, -1
            for ts, rel in entries:
                if ts <= prev_ts or rel <= prev_rel or rel >= max_rel:
                    valid = False
                    break
                prev_ts, prev_rel = ts, rel
        if not valid:
            self._install([])
            return False
        self._install(entries or [])
        return True
