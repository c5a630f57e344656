"""The core's log: durable storage plus the entries not yet handed out as durable.

Like etcd's raftLog/unstable pair. Entries the core appended (a leader's
proposals, a follower's accepted appends) live in ``unstable`` until the
caller reports them durable through ``RaftNode.advance``; reads see unstable
entries shadowing storage from ``unstable_offset`` on, which is how a
truncation is represented before the caller has carried it out.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from raft.storage import Storage, StorageError
from raft.types import Entry, Snapshot


class RaftInvariantError(AssertionError):
    """The log was asked to do something Raft's safety argument rules out
    (overwrite a committed entry, commit beyond the log). Never caught: it
    means a bug or a corrupted log, and continuing could lose acknowledged data."""


def _entry_key(e: Entry) -> int:
    return e.index


class RaftLog:
    def __init__(self, storage: Storage, committed: int, applied: int) -> None:
        self.storage = storage
        self.unstable: list[Entry] = []
        self.unstable_offset = storage.last_index() + 1
        self.unstable_snapshot: Snapshot | None = None
        self.committed = committed
        self.applied = applied

    # -- bounds ---------------------------------------------------------------

    def first_index(self) -> int:
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        if self.unstable:
            return self.unstable[-1].last
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.index
        return self.unstable_offset - 1

    def last_term(self) -> int:
        t = self.term(self.last_index())
        assert t is not None
        return t

    def last_stable_index(self) -> int:
        """The last offset the caller has reported durable."""
        return self.unstable_offset - 1

    # -- reads ----------------------------------------------------------------

    def term(self, index: int) -> int | None:
        """Term of the entry covering ``index``; None if compacted or beyond the end."""
        snap = self.unstable_snapshot
        if snap is not None:
            if index == snap.index:
                return snap.term
            if index < snap.index:
                return None
        if index >= self.unstable_offset:
            e = self._unstable_at(index)
            return e.term if e is not None else None
        if index < self.storage.first_index() - 1 or snap is not None:
            return None
        try:
            return self.storage.term(index)
        except StorageError:
            return None

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def entry_at(self, index: int) -> Entry | None:
        """The entry covering ``index`` (None if compacted or beyond the end)."""
        if index >= self.unstable_offset:
            return self._unstable_at(index)
        if self.unstable_snapshot is not None or index < self.storage.first_index():
            return None
        try:
            return self.storage.entries(index, index + 1, 0)[0]
        except StorageError:
            return None

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry] | None:
        """Whole entries covering [lo, hi) within max_bytes (at least one), or None
        if lo is compacted. lo must be an entry start."""
        if lo < self.first_index():
            return None
        hi = min(hi, self.last_index() + 1)
        if lo >= hi:
            return []
        out: list[Entry] = []
        size = 0
        if lo < self.unstable_offset:
            try:
                out = self.storage.entries(lo, min(hi, self.unstable_offset), max_bytes)
            except StorageError:
                return None
            size = sum(e.size for e in out)
            if out[-1].last + 1 < min(hi, self.unstable_offset):
                return out  # the byte limit stopped us inside storage
        if hi > self.unstable_offset:
            pos = max(0, bisect.bisect_right(self.unstable, max(lo, self.unstable_offset), key=_entry_key) - 1)
            for e in self.unstable[pos:]:
                if e.index >= hi:
                    break
                if out and size + e.size > max_bytes:
                    break
                out.append(e)
                size += e.size
        return out

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft's election restriction: is a candidate's log at least as up to date?"""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    def boundary_at_or_below(self, index: int) -> int:
        """The largest boundary <= index (an entry's last, or first_index - 1)."""
        if index < self.first_index():
            return index
        e = self.entry_at(index)
        if e is None:
            return self.last_index()
        return index if e.last == index else e.index - 1

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """The largest boundary <= index whose term is <= term, stopping at the log
        start boundary. Below the log start the index is returned unchanged, which
        sends the leader to a snapshot. Used on both sides of fast backtracking."""
        index = min(index, self.last_index())
        if index < self.first_index() - 1:
            return index
        index = self.boundary_at_or_below(index)
        while index >= self.first_index():
            e = self.entry_at(index)
            assert e is not None and e.last == index
            if e.term <= term:
                return index
            index = e.index - 1
        return index

    # -- writes ---------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Append contiguous entries at entries[0].index, replacing whatever was there."""
        if not entries:
            return
        after = entries[0].index
        if after - 1 < self.committed:
            raise RaftInvariantError(f"append at {after} would overwrite committed offset {self.committed}")
        if after == self.last_index() + 1:
            pass
        elif after <= self.unstable_offset:
            # The suffix being replaced is (partly) durable: the caller truncates
            # storage after entries[0].index - 1 when it persists these.
            self.unstable_offset = after
            self.unstable = []
        else:
            pos = bisect.bisect_left(self.unstable, after, key=_entry_key)
            if pos == 0 or self.unstable[pos - 1].last != after - 1:
                raise RaftInvariantError(f"append at {after} is not at an entry boundary")
            del self.unstable[pos:]
        self.unstable.extend(entries)

    def maybe_append(self, prev_index: int, prev_term: int, commit: int, entries: Sequence[Entry]) -> int | None:
        """A follower's AppendEntries: if the log matches at prev, append the new part
        and adopt the leader's commit (bounded by what is known to match); return the
        last offset known to match, or None to reject."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = entries[-1].last if entries else prev_index
        conflict = self._find_conflict(entries)
        if conflict is not None:
            if entries[conflict].index <= self.committed:
                raise RaftInvariantError(
                    f"entry at {entries[conflict].index} term {entries[conflict].term} "
                    f"conflicts with committed offset {self.committed}"
                )
            self.append(entries[conflict:])
        self.commit_to(min(commit, last_new))
        return last_new

    def _find_conflict(self, entries: Sequence[Entry]) -> int | None:
        """Position of the first entry the log lacks or holds with another term.

        Entry boundaries agree up to there: an (offset, term) pair names one entry
        of one leader, so a matching term means the same batch."""
        for pos, e in enumerate(entries):
            if not self.match_term(e.index, e.term):
                return pos
        return None

    def commit_to(self, index: int) -> bool:
        if index <= self.committed:
            return False
        if index > self.last_index():
            raise RaftInvariantError(f"commit {index} is beyond the last offset {self.last_index()}")
        self.committed = index
        return True

    def applied_to(self, index: int) -> None:
        if index > self.applied:
            self.applied = index

    def next_committed_entries(self, max_bytes: int) -> list[Entry]:
        lo = max(self.applied + 1, self.first_index())
        if lo > self.committed:
            return []
        out = self.entries(lo, self.committed + 1, max_bytes)
        if out is None:
            raise RaftInvariantError(f"committed entries from {lo} are not available")
        return out

    def has_next_committed_entries(self) -> bool:
        return max(self.applied + 1, self.first_index()) <= self.committed

    def stable_to(self, written: Sequence[Entry]) -> None:
        """The caller made ``written`` durable (a Ready's entries, which began at
        ``unstable_offset`` when it was taken). Forget here the longest prefix of it
        that is still the same entry (start, end, term) in ``unstable``.

        Steps may land while the write is in flight, and a conflicting Append can
        replace the tail of what is being written: the prefix before the conflict is
        on disk all the same and must be credited, or the next Ready would start
        below it (possibly below commit) and have storage cut and rewrite it. Like
        etcd's in-progress offsets, only the replaced tail is written again.
        """
        if not written or not self.unstable or self.unstable_snapshot is not None:
            return  # nothing pending, or a newer snapshot will replace the log anyway
        if written[0].index != self.unstable_offset:
            return  # the log was cut below the write meanwhile: it all goes again
        n = min(len(written), len(self.unstable))
        last = self.unstable[n - 1]
        w = written[n - 1]
        if not (last.index == w.index and last.last == w.last and last.term == w.term):
            # The tail was replaced: find where (a prefix matches, by log matching).
            n = 0
            for u, w in zip(self.unstable, written):
                if u.index != w.index or u.last != w.last or u.term != w.term:
                    break
                n += 1
            if n == 0:
                return
        self.unstable_offset = self.unstable[n - 1].last + 1
        del self.unstable[:n]

    def stable_snap_to(self, index: int) -> None:
        if self.unstable_snapshot is not None and self.unstable_snapshot.index == index:
            self.unstable_snapshot = None

    def restore(self, snap: Snapshot) -> None:
        """Replace the whole log by a snapshot (the caller installs it from Ready)."""
        self.committed = snap.index
        self.unstable = []
        self.unstable_offset = snap.index + 1
        self.unstable_snapshot = snap

    def snapshot(self) -> Snapshot:
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot
        return self.storage.snapshot()

    # -- helpers --------------------------------------------------------------

    def _unstable_at(self, index: int) -> Entry | None:
        if not self.unstable or index < self.unstable_offset or index > self.unstable[-1].last:
            return None
        pos = bisect.bisect_right(self.unstable, index, key=_entry_key) - 1
        return self.unstable[pos]
