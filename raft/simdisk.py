"""The simulator's model disk: a `MemoryStorage` pair written the way the node's
``LogStorage`` writes, for the seeds that do not run the production storage.

It is both sides of a node's storage: the core reads ``live`` (the page cache), and
the shared driver (`raft.driver`) writes through the ``ReadyStorage`` methods:

1. ``append`` cuts a conflicting suffix (made durable at once, with what was written
   before it) and writes the new entries, not yet durable; a CONFIG entry among them
   marks the state dirty, as a term or vote change in ``set_hard_state`` does;
2. ``sync`` saves a dirty state first, then (with ``log``) makes the entries durable;
3. ``install_snapshot`` replaces both images at once (atomic and fsynced).

So the disk keeps two images: ``live`` and ``durable`` (what a crash leaves). A crash
keeps a prefix of the unsynced entries (a torn batch fails its CRC and segments
recovery cuts it, so a torn write ends on a whole-entry prefix) and, as ``LogStorage``
does on open, lowers a saved commit that the surviving log does not reach. The
production path runs the real ``LogStorage`` on `segments.simfs` instead
(`node/simstorage.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from raft.storage import MemoryStorage
from raft.types import ConfState, Entry, EntryKind, HardState, Snapshot


class _Rng(Protocol):
    def randrange(self, start: int, stop: int) -> int: ...


class SimDisk:
    """One node's model disk; ``storage`` is itself (reads go to the live image)."""

    def __init__(self, conf: ConfState, rng: _Rng) -> None:
        self.durable = MemoryStorage(conf)
        self.live = MemoryStorage(conf)
        self.rng = rng
        self._unsynced: list[Entry] = []
        self._state_dirty = False

    @property
    def storage(self) -> SimDisk:
        return self

    @property
    def unsynced(self) -> int:
        return len(self._unsynced)

    # -- the read side (raft.storage.Storage) ----------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.live.initial_state()

    def first_index(self) -> int:
        return self.live.first_index()

    def last_index(self) -> int:
        return self.live.last_index()

    def term(self, index: int) -> int:
        return self.live.term(index)

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        return self.live.entries(lo, hi, max_bytes)

    def snapshot(self) -> Snapshot:
        return self.live.snapshot()

    def config_entries(self) -> Sequence[Entry]:
        return self.live.config_entries()

    # -- the write side (raft.driver.ReadyStorage) -----------------------------------

    @property
    def state_dirty(self) -> bool:
        return self._state_dirty

    def append(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        first = entries[0].index
        if self.live.last_index() >= first:
            self.flush_log()  # segments truncates the file: what came before it is on disk
            self.live.truncate_after(first - 1)
            self.durable.truncate_after(first - 1)
        self.live.append(entries)
        self._unsynced.extend(entries)
        if any(e.kind == EntryKind.CONFIG for e in entries):
            self._state_dirty = True

    def set_hard_state(self, hs: HardState) -> None:
        old = self.live.hard_state
        self.live.set_hard_state(hs)
        if (hs.term, hs.vote) != (old.term, old.vote):
            self._state_dirty = True

    def sync(self, log: bool = True) -> None:
        if self._state_dirty:
            self._state_dirty = False
            self.durable.set_hard_state(self.live.hard_state)
        if log:
            self.flush_log()

    def write_snapshot(self, snap: Snapshot) -> None:
        pass  # the data travels inside the snapshot that install_snapshot stores

    def install_snapshot(self, snap: Snapshot) -> None:
        self.flush_log()
        for st in (self.live, self.durable):
            st.apply_snapshot(snap)
        hs = self.live.hard_state
        self.live.set_hard_state(HardState(hs.term, hs.vote, max(hs.commit, snap.index)))
        self.durable.set_hard_state(self.live.hard_state)

    def flush_log(self) -> None:
        if self._unsynced:
            self.durable.append(self._unsynced)
            self._unsynced = []

    # -- what a crash now would leave (the checker's persist-before-send rule) --------

    def durable_state(self) -> HardState:
        return self.durable.hard_state

    def durable_through(self, index: int) -> bool:
        """The live log through `index` survives a crash now (the durable image is a
        prefix of the live one: truncations and snapshots change both at once)."""
        d = self.durable
        if index <= d.snapshot().index:
            return True
        return index <= d.last_index() and d.term(index) == self.live.term(index)

    # -- the world's side ------------------------------------------------------------

    def compact(self, index: int, data: bytes) -> None:
        """Drop the applied prefix in both images (only synced entries are applied)."""
        self.live.compact(index, data)
        self.durable.compact(index, data)

    def crash(self) -> str | None:
        """The machine stops: a random prefix of the unsynced entries survives, the
        rest is lost. Returns the fault's name, None when nothing was unsynced."""
        if not self._unsynced:
            fault = None
        else:
            keep = self.rng.randrange(0, len(self._unsynced) + 1)
            if keep:
                self.durable.append(self._unsynced[:keep])
            fault = "unsynced_lost" if keep < len(self._unsynced) else "unsynced_kept"
        self._unsynced = []
        self._state_dirty = False
        hs = self.durable.hard_state
        if hs.commit > self.durable.last_index():
            self.durable.set_hard_state(HardState(hs.term, hs.vote, self.durable.last_index()))
        self.live = self.durable.clone()
        return fault

    def reopen(self) -> None:
        """Nothing to recover: the crash left the live image equal to the durable one."""
