"""A simulated node's disk, written the way the node's ``LogStorage`` writes it.

The node persists a Ready in separate steps, and a crash can fall between any two:

1. cut a conflicting suffix (segments truncates and fsyncs at once) or install a
   snapshot (atomic, fsynced);
2. append the new entries: written, not yet fsynced (``raft-state`` is saved at once
   when a CONFIG entry is among them);
3. record the hard state: a term or vote change rewrites ``raft-state`` atomically
   (with the commit index of that moment); a commit-only change stays in memory;
4. fsync the log.

So the disk keeps two images: ``live`` (what the running core reads, the page cache)
and ``durable`` (what a crash leaves). Appended entries reach ``durable`` at the
fsync; a crash keeps only a prefix of the unsynced ones (a torn batch fails its CRC
and segments recovery cuts it, so a torn write ends on a whole-entry prefix) and, as
``LogStorage`` does on open, lowers a saved commit that the surviving log does not
reach.
"""

from __future__ import annotations

from collections.abc import Sequence

from raft.storage import MemoryStorage
from raft.types import ConfState, Entry, EntryKind, HardState, Snapshot


class SimDisk:
    def __init__(self, conf: ConfState) -> None:
        self.durable = MemoryStorage(conf)
        self.live = MemoryStorage(conf)
        self._unsynced: list[Entry] = []

    @property
    def unsynced(self) -> int:
        return len(self._unsynced)

    def cut_after(self, index: int) -> None:
        """Truncate both images after ``index`` (segments fsyncs a truncation, which
        also makes whatever was written before it durable)."""
        self.sync()
        self.live.truncate_after(index)
        self.durable.truncate_after(index)

    def append(self, entries: Sequence[Entry]) -> None:
        self.live.append(entries)
        self._unsynced.extend(entries)
        if any(e.kind == EntryKind.CONFIG for e in entries):
            self._save_state(self.live.hard_state)

    def set_hard_state(self, hs: HardState) -> None:
        old = self.live.hard_state
        self.live.set_hard_state(hs)
        if (hs.term, hs.vote) != (old.term, old.vote):
            self._save_state(hs)

    def sync(self) -> None:
        if self._unsynced:
            self.durable.append(self._unsynced)
            self._unsynced = []

    def apply_snapshot(self, snap: Snapshot) -> None:
        self.sync()
        for st in (self.live, self.durable):
            st.apply_snapshot(snap)
        hs = self.live.hard_state
        self.live.set_hard_state(HardState(hs.term, hs.vote, max(hs.commit, snap.index)))
        self._save_state(self.live.hard_state)

    def compact(self, index: int, data: bytes) -> None:
        """Drop the applied prefix in both images (only synced entries are applied)."""
        self.live.compact(index, data)
        self.durable.compact(index, data)

    def crash(self, keep: int) -> list[Entry]:
        """The machine stops: ``keep`` of the unsynced entries survive (0 <= keep <=
        ``unsynced``), the rest are lost; returns the lost ones. The running image is
        what the restarted node will read."""
        kept, lost = self._unsynced[:keep], self._unsynced[keep:]
        self._unsynced = []
        if kept:
            self.durable.append(kept)
        hs = self.durable.hard_state
        if hs.commit > self.durable.last_index():
            self.durable.set_hard_state(HardState(hs.term, hs.vote, self.durable.last_index()))
        self.live = self.durable.clone()
        return lost

    def _save_state(self, hs: HardState) -> None:
        self.durable.set_hard_state(hs)
