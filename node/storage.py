"""The Raft core's storage over a segments log: one directory per group.

    <dir>/00000000000000000000.log ...   the partition log (segments.Log): the Raft log
    <dir>/raft-state                     term, vote, commit, the log-start snapshot
                                         metadata, and the CONFIG entries in the log
    <dir>/snapshot                       group 0 (and half messages): the state machine at the
                                         snapshot, with the index, term and membership it covers

Entries map to batches one to one: a NORMAL entry's data is the producer's batch (the
log stamps its offset and epoch); a NOOP is a LEADER_CHANGE control batch and a CONFIG
entry a RAFT_CONFIG control batch carrying the encoded ConfState. Control batches are
built with no timestamp so every replica writes identical bytes.

`raft-state` is small and rewritten atomically (temp file, fsync, rename, directory
fsync) whenever term, vote, membership or the log start change; the commit index in it
may lag, which Raft tolerates (a restarted node learns commit from its leader).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import crc32c
import msgspec

from raft.driver import Runner, run_now, run_sync
from raft.log import RaftInvariantError
from raft.storage import StorageError
from raft.types import ConfState, Entry, EntryKind, HardState, Snapshot
from segments import ControlType, Log, LogConfig, build_control_batch, control_type_of, decode_records
from segments.fs import OS, FileSystem, write_all

NO_TIMESTAMP = -1
RECENT_BYTES = 4 << 20  # entries kept in memory until applied, at most (per replica)


class _SnapFile(msgspec.Struct, array_like=True):
    """`snapshot`: the state machine's data and the log position it covers, in one
    atomic file, so a crash between it and `raft-state` cannot pair data of one index
    with the log of another (the entries after the old index would apply twice)."""

    index: int
    term: int
    conf: ConfState
    data: bytes


_SNAP_MAGIC = b"TSN1"


class _State(msgspec.Struct):
    hard: HardState
    snap_index: int
    snap_term: int
    snap_conf: ConfState
    configs: list[Entry] = []


def _write_atomic(fs: FileSystem, path: Path, data: bytes) -> None:
    tmp = str(path.with_name(path.name + ".tmp"))
    fd = fs.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        write_all(fs, fd, crc32c.crc32c(data).to_bytes(4, "big") + data)
        fs.fsync(fd)
    finally:
        fs.close(fd)
    fs.replace(tmp, str(path))
    fs.fsync_directory(str(path.parent))


def _read_checked(fs: FileSystem, path: Path) -> bytes | None:
    try:
        raw = fs.read_file(str(path))
    except FileNotFoundError:
        return None
    if len(raw) < 4 or int.from_bytes(raw[:4], "big") != crc32c.crc32c(raw[4:]):
        raise StorageError(
            f"{path} is damaged (checksum mismatch); restore it or remove the replica's directory to resync it from its peers"
        )
    return raw[4:]


def decode_raft_state(raw: bytes) -> tuple[HardState, int]:
    """(hard state, snapshot index) from the bytes of a whole `raft-state` file (the
    checksum, then the state): how the simulator reads the state a crash would leave
    (`node.simstorage`) without opening the storage again."""
    st = msgspec.msgpack.decode(raw[4:], type=_State)
    return st.hard, st.snap_index


def entry_to_batch(e: Entry) -> bytes:
    if e.kind == EntryKind.NORMAL:
        return e.data
    if e.kind == EntryKind.NOOP:
        return build_control_batch(ControlType.LEADER_CHANGE, timestamp=NO_TIMESTAMP)
    return build_control_batch(ControlType.RAFT_CONFIG, e.data, timestamp=NO_TIMESTAMP)


def batch_to_entry(header, data: bytes) -> Entry:
    kind, payload = EntryKind.NORMAL, data
    if header.is_control and not header.is_transactional:
        ctype = control_type_of(data)
        if ctype == ControlType.LEADER_CHANGE:
            kind, payload = EntryKind.NOOP, b""
        elif ctype == ControlType.RAFT_CONFIG:
            kind, payload = EntryKind.CONFIG, decode_records(data)[0].value or b""
    return Entry(header.base_offset, header.last_offset, header.leader_epoch, kind, payload)


class LogStorage:
    """`raft.storage.Storage` over a `segments.Log`, plus the write side the node's
    driver calls for each Ready."""

    def __init__(self, path: Path, log_config: LogConfig, initial: ConfState, *, fs: FileSystem = OS) -> None:
        self.path = Path(path)
        self.fs = fs  # the real disk, or the simulator's (scripts/simulate.py)
        fs.makedirs(str(self.path))
        self.log = Log.open(str(self.path), log_config, fs=fs)
        self.state_dirty = False
        self.unsynced_bytes = 0  # written by `append` since the last sync began
        # Entries written and not yet applied, by start offset, with their batch sizes:
        # applying them (and replicating them while fresh) needs no read of the files.
        self._recent: dict[int, tuple[Entry, int]] = {}
        self._recent_bytes = 0
        raw = _read_checked(self.fs, self.path / "raft-state")
        if raw is None:
            # Saved by the first Ready's sync, in a worker thread: a crash before then
            # leaves no raft-state, and this makes the same one again.
            start = self.log.log_start_offset
            self._state = _State(HardState(commit=start - 1), start - 1, 0, initial)
            self.state_dirty = True
        else:
            self._state = msgspec.msgpack.decode(raw, type=_State)
        self._check_against_log()
        self._finish_snapshot()

    def _read_snapshot(self) -> _SnapFile | None:
        raw = _read_checked(self.fs, self.path / "snapshot")
        if raw is None:
            return None
        if raw.startswith(_SNAP_MAGIC):
            return msgspec.msgpack.decode(raw[len(_SNAP_MAGIC) :], type=_SnapFile)
        st = self._state  # written before snapshots named their index: it is raft-state's
        return _SnapFile(st.snap_index, st.snap_term, st.snap_conf, raw)

    def _finish_snapshot(self) -> None:
        """A crash after the snapshot file but before raft-state (compaction, or a
        snapshot from the leader): the file is whole and names its index, so finish
        moving the log start there."""
        snap = self._read_snapshot()
        st = self._state
        if (
            snap is None
            or snap.index < st.snap_index
            or (snap.index, snap.term, snap.conf) == (st.snap_index, st.snap_term, st.snap_conf)
        ):
            return
        # (An equal index with another term: the log was reset to it and raft-state not
        # yet saved, so `_check_against_log` took the index from the log alone.)
        st.snap_index, st.snap_term, st.snap_conf = snap.index, snap.term, snap.conf
        st.configs = [c for c in st.configs if c.last > snap.index]
        st.hard = HardState(st.hard.term, st.hard.vote, max(st.hard.commit, snap.index))
        if self.log.log_start_offset <= snap.index:  # the log start has not moved yet
            if self.log.next_offset - 1 >= snap.index and self.log.term_at(snap.index) == snap.term:
                self.log.delete_before(snap.index + 1)
            else:
                self.log.reset_to(snap.index + 1)
        self.state_dirty = True  # redone from the same files if we crash again first

    def _check_against_log(self) -> None:
        """Repair what a crash between the log and raft-state writes can leave."""
        st = self._state
        last = self.log.next_offset - 1
        if st.hard.commit > last:
            # Only possible when fsync was not "always": the committed tail was lost here.
            # Clamp, so the core starts; the leader re-replicates the tail.
            st.hard = HardState(st.hard.term, st.hard.vote, last)
        st.configs = [c for c in st.configs if c.last <= last]
        if self.log.log_start_offset - 1 > st.snap_index:
            st.snap_index = self.log.log_start_offset - 1

    def _save(self) -> None:
        _write_atomic(self.fs, self.path / "raft-state", msgspec.msgpack.encode(self._state))

    # -- the read side ---------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._state.hard, self._state.snap_conf

    def first_index(self) -> int:
        return self._state.snap_index + 1

    def last_index(self) -> int:
        return self.log.next_offset - 1

    def term(self, index: int) -> int:
        if index == self._state.snap_index:
            return self._state.snap_term
        term = self.log.term_at(index) if index > self._state.snap_index else None
        if term is None:
            raise StorageError(f"offset {index} is outside the log [{self.first_index()}, {self.last_index()}]")
        return term

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Whole entries from the one holding `lo`: those written and not yet applied
        from memory (`_recent`), the rest read back from the segment files."""
        if lo >= hi:
            return []
        if lo <= self._state.snap_index or lo > self.last_index():
            raise StorageError(f"entries from {lo}: outside the log [{self.first_index()}, {self.last_index()}]")
        out: list[Entry] = []
        size = 0
        recent = self._recent
        while lo < hi and (held := recent.get(lo)) is not None:
            e, n = held
            if out and size + n > max_bytes:
                return out
            out.append(e)
            size += n
            lo = e.last + 1
        if lo >= hi or lo > self.last_index():
            return out
        for header, data in self.log.batches(lo, max(max_bytes - size, 0)):
            if header.base_offset >= hi or (out and size + len(data) > max_bytes):
                break
            out.append(batch_to_entry(header, data))
            size += len(data)
        return out

    def forget_applied(self, index: int) -> None:
        """Entries through `index` are applied: drop them from memory (`_recent`); a
        follower catching up reads them from the files."""
        recent = self._recent
        while recent:
            first = next(iter(recent))
            e, n = recent[first]
            if e.last > index:
                return
            del recent[first]
            self._recent_bytes -= n

    def _forget_from(self, index: int) -> None:
        """The log no longer holds entries from `index` on (cut, reset): forget them."""
        for start in [k for k in self._recent if k >= index]:
            self._recent_bytes -= self._recent.pop(start)[1]

    def snapshot(self) -> Snapshot:
        """The newest snapshot whole on disk. While a compaction runs its file is written
        (durable, of committed entries) before the log start moves: from then on the
        file is the snapshot to send, since the one the state still names is gone."""
        st = self._state
        file = self._read_snapshot() if st.snap_index >= 0 else None
        if file is not None and file.index >= st.snap_index:
            return Snapshot(file.index, file.term, file.conf, file.data)
        return Snapshot(st.snap_index, st.snap_term, st.snap_conf, b"")

    def config_entries(self) -> Sequence[Entry]:
        return list(self._state.configs)

    # -- the write side ----------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Write entries (not yet fsynced: call `sync()`), first cutting a conflicting
        suffix the leader overwrote."""
        if not entries:
            return
        first = entries[0].index
        if first <= self.log.next_offset - 1:
            if first <= self._state.hard.commit:
                raise RaftInvariantError(
                    f"{self.path}: asked to cut the log after {first - 1}, below commit "
                    f"{self._state.hard.commit}; committed entries are never rewritten"
                )
            self.log.truncate_after(first - 1)
            self._forget_from(first)
            if any(c.last >= first for c in self._state.configs):
                self._state.configs = [c for c in self._state.configs if c.last < first]
                self.state_dirty = True
        for e in entries:
            batch = entry_to_batch(e)
            self.log.append_at(batch, e.index, e.term)
            self.unsynced_bytes += len(batch)
            if self._recent_bytes + len(batch) <= RECENT_BYTES:
                self._recent[e.index] = (e, len(batch))
                self._recent_bytes += len(batch)
            if e.kind == EntryKind.CONFIG:
                self._state.configs.append(e)
                self.state_dirty = True

    def sync(self, log: bool = True) -> None:
        """Make `raft-state` durable if a term, vote or membership change is pending, then
        (with `log`) fsync what `append` wrote. Runs in a worker thread while the event
        loop reads. The state goes first: configs it names beyond the log are dropped
        on open, while a log entry whose CONFIG the state missed would be misread."""
        if self.state_dirty:
            self.state_dirty = False
            self._save()
        if log:
            self.unsynced_bytes = 0
            self.log.flush()

    def claim_sync(self, max_bytes: int) -> int | None:
        """`sync()` for a caller that fdatasyncs by its own means, when all it owes is
        one file's data (no state to save), at most `max_bytes` written since the last
        sync: see `Log.claim_sync`; report with `synced`."""
        if self.state_dirty or self.unsynced_bytes > max_bytes:
            return None
        fd = self.log.claim_sync()
        if fd is not None:
            self.unsynced_bytes = 0
        return fd

    def synced(self, ok: bool) -> None:
        self.log.synced(ok)

    def flush_log(self) -> None:
        """fsync the log's files (the driver's step after `install_snapshot`; blocking)."""
        self.log.flush()

    def set_hard_state(self, hs: HardState) -> None:
        """Record the hard state; a term or vote change must be made durable by `sync`
        before any message that relies on it leaves (`state_dirty` says so)."""
        old = self._state.hard
        self._state.hard = hs
        if (hs.term, hs.vote) != (old.term, old.vote):
            self.state_dirty = True

    def write_snapshot(self, snap: Snapshot) -> None:
        """Make a snapshot's data durable (fsynced: call from a worker thread) before
        `install_snapshot` or `move_start` moves the log start past what it covers."""
        if snap.data:
            _write_atomic(
                self.fs,
                self.path / "snapshot",
                _SNAP_MAGIC + msgspec.msgpack.encode(_SnapFile(snap.index, snap.term, snap.conf, snap.data)),
            )

    def install_snapshot(self, snap: Snapshot) -> None:
        """The leader no longer has our next entry: restart the log after `snap.index`
        (its data written first by `write_snapshot`; `sync` saves the new state, and a
        crash before that finishes the move on open)."""
        self.log.reset_to(snap.index + 1)
        self._forget_from(-1)
        st = self._state
        st.snap_index, st.snap_term, st.snap_conf, st.configs = snap.index, snap.term, snap.conf, []
        st.hard = HardState(st.hard.term, st.hard.vote, max(st.hard.commit, snap.index))
        self.state_dirty = True

    def compaction_point(self, index: int) -> Snapshot | None:
        """The snapshot header for dropping the log through `index` (None if it is
        already gone); its `data` is the caller's to fill."""
        st = self._state
        if index <= st.snap_index:
            return None
        conf = st.snap_conf
        for c in st.configs:
            if c.last <= index:
                conf = ConfState.decode(c.data)
        return Snapshot(index, self.term(index), conf, b"")

    def move_start(self, snap: Snapshot) -> None:
        """Record `snap` (its data already durable) as covering the log through its
        index; `sync(log=False)` makes that durable, then `drop_compacted` frees the
        segments. In that order a crash at any step leaves a log that opens."""
        st = self._state
        st.snap_index, st.snap_term, st.snap_conf = snap.index, snap.term, snap.conf
        st.configs = [c for c in st.configs if c.last > snap.index]
        self.state_dirty = True

    def drop_compacted(self) -> None:
        self.log.delete_before(self._state.snap_index + 1)
        self.forget_applied(self._state.snap_index)

    async def compact_with(self, run: Runner, index: int, data: bytes = b"") -> None:
        """Drop the log through `index` (applied), recording `data` (if any) as the
        snapshot, each blocking step through `run` (a replica's worker thread; the
        segments stay until the new start is durable)."""
        point = self.compaction_point(index)
        if point is None:
            return
        snap = Snapshot(point.index, point.term, point.conf, data)
        if data:
            await run(self.write_snapshot, snap)
        self.move_start(snap)
        await run(self.sync, False)
        self.drop_compacted()

    def compact(self, index: int, data: bytes = b"") -> None:
        """`compact_with`, all in the calling thread."""
        run_sync(self.compact_with(run_now, index, data))

    def retention_point(self, now_ms: int, applied: int) -> int | None:
        """The last offset retention lets go (whole old segments by the topic's
        retention), never past `applied`: only committed data may go, as a follower
        still needs the rest."""
        boundary = self.log.retention_offset(now_ms)
        if boundary is not None and boundary - 1 <= applied:
            return boundary - 1
        return None

    def write_file(self, name: str, data: bytes) -> None:
        """Replace `<dir>/<name>` atomically with `data` under a checksum (fsynced:
        call from a worker thread). For state kept beside the log that a restart could
        rebuild, only more slowly (`node.partition.StateCheckpoint`)."""
        _write_atomic(self.fs, self.path / name, data)

    def read_file(self, name: str) -> bytes | None:
        """What `write_file` wrote; None if there is no such file or it is damaged."""
        try:
            return _read_checked(self.fs, self.path / name)
        except StorageError:
            return None

    def close(self) -> None:
        self._save()
        self.log.close()
