"""The core's view of a durable log, and an in-memory implementation.

The core only *reads* storage. Writes come from the caller, driven by
``Ready``: it appends ``Ready.entries`` (truncating a conflicting suffix first),
installs ``Ready.snapshot``, records ``Ready.hard_state``, and compacts when
retention or a state-machine snapshot allows. The node's adapter over a
``segments`` log implements the same protocol; ``MemoryStorage`` is what the
tests and the simulator use.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Protocol

from raft.types import ConfState, Entry, EntryKind, HardState, Snapshot


class StorageError(Exception):
    """A request outside what the storage holds (compacted or beyond the end)."""


class Storage(Protocol):
    """What the core needs from a log. Offsets are batch offsets.

    A boundary is the last offset of an entry, or ``first_index() - 1`` (the
    log start / snapshot index, whose term comes from the snapshot metadata).
    """

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The durable hard state, and the configuration as of ``first_index() - 1``
        (the snapshot's). CONFIG entries after that come from ``config_entries``."""
        ...

    def first_index(self) -> int:
        """The first offset still held (snapshot index + 1)."""
        ...

    def last_index(self) -> int:
        """The last offset held, or ``first_index() - 1`` when the log is empty."""
        ...

    def term(self, index: int) -> int:
        """Term of the entry covering ``index``, for index in
        [first_index() - 1, last_index()]; raises StorageError outside."""
        ...

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Whole entries covering [lo, hi), in order, stopping before the byte total
        exceeds max_bytes but always at least one. lo >= first_index()."""
        ...

    def snapshot(self) -> Snapshot:
        """The latest snapshot; its index is ``first_index() - 1``."""
        ...

    def config_entries(self) -> Sequence[Entry]:
        """Every CONFIG entry after the snapshot, oldest first.

        Read once when the core starts, to rebuild membership (a server uses the
        latest configuration in its log, committed or not, so restarting needs the
        uncommitted ones too). They are rare; a segments adapter keeps an index of
        its control batches rather than scanning the log.
        """
        ...


class MemoryStorage:
    """A ``Storage`` in memory, with the write side the caller uses.

    ``start`` is the first offset of a fresh log (Kafka starts at 0); the log
    start boundary is then ``start - 1`` with term 0.
    """

    def __init__(self, conf: ConfState = ConfState(), start: int = 0) -> None:
        self._hard = HardState(commit=start - 1)
        self._snap = Snapshot(index=start - 1, term=0, conf=conf)
        self._entries: list[Entry] = []
        self._starts: list[int] = []

    # -- the read side (Storage protocol) -----------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard, self._snap.conf

    def first_index(self) -> int:
        return self._snap.index + 1

    def last_index(self) -> int:
        return self._entries[-1].last if self._entries else self._snap.index

    def term(self, index: int) -> int:
        if index == self._snap.index:
            return self._snap.term
        return self._entry_at(index).term

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        if lo >= hi:
            return []
        pos = self._pos(lo)
        out = [self._entries[pos]]
        size = out[0].size
        pos += 1
        while pos < len(self._entries):
            e = self._entries[pos]
            if e.index >= hi or size + e.size > max_bytes:
                break
            out.append(e)
            size += e.size
            pos += 1
        return out

    def snapshot(self) -> Snapshot:
        return self._snap

    def config_entries(self) -> list[Entry]:
        return [e for e in self._entries if e.kind == EntryKind.CONFIG]

    @property
    def hard_state(self) -> HardState:
        return self._hard

    # -- the write side (driven by Ready) ------------------------------------

    def set_hard_state(self, hs: HardState) -> None:
        self._hard = hs

    def append(self, entries: Sequence[Entry]) -> None:
        """Append ``entries``, first dropping anything at or after entries[0].index
        (a conflicting suffix the leader overwrote)."""
        if not entries:
            return
        first = entries[0].index
        if first <= self._snap.index:
            raise StorageError(f"append at {first} is inside the snapshot (<= {self._snap.index})")
        if first > self.last_index() + 1:
            raise StorageError(f"append at {first} leaves a gap after {self.last_index()}")
        self.truncate_after(first - 1)
        for e in entries:
            self._entries.append(e)
            self._starts.append(e.index)

    def truncate_after(self, index: int) -> None:
        """Drop every entry that starts after ``index`` (index must be a boundary)."""
        pos = bisect.bisect_right(self._starts, index)
        if pos and self._entries[pos - 1].last != index:
            raise StorageError(f"truncate_after({index}) is not at an entry boundary")
        del self._entries[pos:]
        del self._starts[pos:]

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Install a snapshot from the leader: the log now starts at snap.index + 1."""
        self._snap = snap
        self._entries = []
        self._starts = []

    def compact(self, index: int, data: bytes = b"") -> Snapshot:
        """Drop the prefix through ``index`` (an entry boundary the caller has applied),
        recording a snapshot with ``data`` and the configuration as of ``index``."""
        if index <= self._snap.index:
            return self._snap
        if index > self.last_index():
            raise StorageError(f"compact({index}) beyond last index {self.last_index()}")
        pos = bisect.bisect_right(self._starts, index)
        if self._entries[pos - 1].last != index:
            raise StorageError(f"compact({index}) is not at an entry boundary")
        conf = self._snap.conf
        for e in reversed(self._entries[:pos]):
            if e.kind == EntryKind.CONFIG:
                conf = ConfState.decode(e.data)
                break
        self._snap = Snapshot(index=index, term=self._entries[pos - 1].term, conf=conf, data=data)
        del self._entries[:pos]
        del self._starts[:pos]
        return self._snap

    def clone(self) -> MemoryStorage:
        """An independent copy (entries are immutable, so the lists are enough)."""
        c = MemoryStorage.__new__(MemoryStorage)
        c._hard, c._snap = self._hard, self._snap
        c._entries, c._starts = list(self._entries), list(self._starts)
        return c

    def all_entries(self) -> list[Entry]:
        """Every entry held, for checkers and tests."""
        return list(self._entries)

    # -- helpers --------------------------------------------------------------

    def _pos(self, index: int) -> int:
        if index <= self._snap.index:
            raise StorageError(f"offset {index} is compacted (log starts at {self._snap.index + 1})")
        if index > self.last_index():
            raise StorageError(f"offset {index} is beyond the last offset {self.last_index()}")
        return bisect.bisect_right(self._starts, index) - 1

    def _entry_at(self, index: int) -> Entry:
        return self._entries[self._pos(index)]
