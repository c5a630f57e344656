"""Log: one partition's log, a directory of segments. The Raft log IS this log.

Directory layout::

    00000000000000000000.log         batches, back to back, as producers built them
    00000000000000000000.index       sparse offset index (see segments.index)
    00000000000000000000.timeindex   sparse time index
    00000000000000004096.log ...     the next segment, named by its base offset
    leader-epoch-checkpoint          (epoch, start offset) per epoch change
    log-start-offset-checkpoint      the log start offset, when it is inside a segment

Public API (offsets are Kafka offsets = Raft indexes; epochs are Raft terms):

- `Log.open(path, config=LogConfig(), *, clock_ms=None) -> Log`: create or recover.
- `log_start_offset`, `next_offset` (log end offset), `size_bytes`, `segment_count`,
  `last_epoch`, `segment_base_offsets()`.
- `append(batch, leader_epoch) -> (base_offset, last_offset)` assigns the offsets;
  `append_at(batch, base_offset, leader_epoch)` for a replica copying the leader
  (base_offset must be `next_offset`); `append_many(batches, leader_epoch)` writes
  several with one fsync (group commit).
- `read(offset, max_bytes, max_offset=None) -> bytes`: whole batches from the one
  holding `offset`; `read_slice(...)` says where those bytes lie in the file instead
  (a `LogSlice`, for `os.sendfile`); `batches(from_offset, max_bytes=None)` yields
  (header, bytes).
- `term_at(offset)`, `end_offset_for_epoch(epoch)`, `offset_for_timestamp(ts_ms)`.
- `truncate_after(offset)`, `reset_to(offset)`, `delete_before(offset)`,
  `retention_offset(now_ms)`, `apply_retention(now_ms)`, `roll()`, `flush()`, `flush_if_due(now_ms=None)`,
  `close()`.

Recovery on open: the active (last) segment is always scanned batch by batch with
every CRC verified, offsets checked contiguous and epochs non-decreasing, and cut at
the first batch that fails. A sealed segment is trusted when its indexes validate and
the batches after its last index entry verify; otherwise it is scanned the same way,
and if it has a bad batch the log ends there: later segments are deleted, since what
follows a hole cannot be trusted. So what was fsynced before the damage survives and
what was torn is never served.

Leader epochs: kept in a LeaderEpochCache persisted in `leader-epoch-checkpoint`,
written (and fsynced) before the first batch of a new epoch, so the file always
covers what is on disk, plus possibly epochs past the end after a crash. On open the
cache is cut to the recovered log, then checked against the epochs of every batch the
recovery scanned; if the file is missing, malformed or disagrees, the cache is
rebuilt from all batch headers. The cache describes exactly the offsets in the log:
it is cleared when the log becomes empty.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence

from sortedcontainers import SortedDict

from .batch import LOG_OVERHEAD, BatchHeader, verify
from .checkpoint import fsync_directory, fsync_file, read_checkpoint, write_checkpoint
from .config import LogConfig
from .epochs import LeaderEpochCache
from .errors import (
    BatchTooLargeError,
    CorruptBatchError,
    InvalidEpochError,
    InvalidOffsetError,
    LogClosedError,
    OffsetOutOfRangeError,
)
from .fs import OS, FileSystem
from .segment import LogSegment, LogSlice, RecoveryResult
from .varint import INT32_MAX

EPOCH_CHECKPOINT = "leader-epoch-checkpoint"
LOG_START_CHECKPOINT = "log-start-offset-checkpoint"
CHECKPOINT_VERSION = 0
_READ_CHUNK = 1 << 20  # bytes read at a time by batches()
_Bytes = bytes | bytearray | memoryview


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def _transitions(entries: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """Epoch changes over offsets [lo, hi) from sorted (epoch, start) entries, with the
    epoch in force at `lo` first."""
    out: list[tuple[int, int]] = []
    for epoch, start in entries:
        if start <= lo:
            out = [(epoch, lo)]
        elif start < hi:
            out.append((epoch, start))
    return out


class Log:
    """A partition log. Use `Log.open`; not thread-safe (one owner drives it)."""

    def __init__(self, path: str, config: LogConfig, clock_ms: Callable[[], int], fs: FileSystem = OS) -> None:
        self.fs = fs
        self.path = path
        self.config = config
        self._clock_ms = clock_ms
        self._segments: SortedDict = SortedDict()  # base offset -> LogSegment
        self._active: LogSegment  # the last segment, the one appends go to
        self._log_start = 0
        self._epochs = LeaderEpochCache()
        self._last_sync_ms = clock_ms()
        self._unsynced = False
        # Sealed segments and directory changes not yet fsynced (the "never" policy
        # defers them, and a previous process may have left any of them unsynced);
        # `flush()` syncs them all, so it always makes the whole log durable.
        self._pending_sync: list[LogSegment] = []
        self._dir_unsynced = True
        self._checkpoints_unsynced: set[str] = set()
        self._claimed: LogSegment | None = None  # the segment a `claim_sync` handed out
        self._closed = False

    # -- opening and recovery --------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str,
        config: LogConfig | None = None,
        *,
        clock_ms: Callable[[], int] | None = None,
        fs: FileSystem = OS,
    ) -> Log:
        """Open the log in directory `path` (created if missing), recovering it.

        `clock_ms` (monotonic milliseconds by default) drives the "interval" fsync
        policy only; retention takes its time as an argument.
        """
        log = cls(path, config or LogConfig(), clock_ms or _monotonic_ms, fs)
        fs.makedirs(path)
        log._load()
        return log

    def _load(self) -> None:
        interval = self.config.index_interval_bytes
        bases = self._scan_directory()
        segments = [LogSegment.open(self.path, base, interval, self.fs) for base in bases]
        recovered: list[tuple[LogSegment, RecoveryResult]] = []
        i = 0
        while i < len(segments):
            segment = segments[i]
            following = segments[i + 1].base_offset if i + 1 < len(segments) else None
            if following is not None and segment.load(following):
                i += 1
                continue
            recovered.append((segment, segment.recover()))
            if following is not None:
                if segment.next_offset != following:
                    for later in segments[i + 1 :]:
                        later.delete()
                    del segments[i + 1 :]
                else:  # sealed and sound: persist its rebuilt indexes now
                    segment.flush(fsync=self.config.fsync != "never")
            i += 1

        start_entries = read_checkpoint(os.path.join(self.path, LOG_START_CHECKPOINT), CHECKPOINT_VERSION, 1, self.fs)
        saved_start = start_entries[0][0] if start_entries else None
        if saved_start is not None and segments and saved_start > segments[-1].next_offset:
            # Only reset_to moves the start past the end: it was interrupted; finish it.
            for segment in segments:
                segment.delete()
            segments = []
        if not segments:
            segments = [LogSegment.create(self.path, saved_start or 0, interval, self.fs)]
        for segment in segments:
            self._add_segment(segment)
        self._pending_sync = segments[:-1]
        self._log_start = max(saved_start or 0, segments[0].base_offset)
        self._delete_segments_below(self._log_start)
        self._load_epochs([(s, r) for s, r in recovered if not s.closed])

    def _scan_directory(self) -> list[int]:
        """Base offsets of the `.log` files; removes our leftover checkpoint temp files
        and orphan index files. Files of other names are left alone: the directory may
        be shared (the node keeps its Raft state beside the log)."""
        bases: set[int] = set()
        others: list[tuple[int, str]] = []
        for name in self.fs.listdir(self.path):
            stem, dot, suffix = name.partition(".")
            if name in (EPOCH_CHECKPOINT + ".tmp", LOG_START_CHECKPOINT + ".tmp"):
                self.fs.unlink(os.path.join(self.path, name))
            elif dot and len(stem) == 20 and stem.isdigit():
                if suffix == "log":
                    bases.add(int(stem))
                elif suffix in ("index", "timeindex"):
                    others.append((int(stem), name))
        for base, name in others:
            if base not in bases:
                self.fs.unlink(os.path.join(self.path, name))
        return sorted(bases)

    def _load_epochs(self, recovered: list[tuple[LogSegment, RecoveryResult]]) -> None:
        path = os.path.join(self.path, EPOCH_CHECKPOINT)
        saved = read_checkpoint(path, CHECKPOINT_VERSION, 2, self.fs)
        cache: LeaderEpochCache | None = None
        if saved is not None:
            try:
                cache = LeaderEpochCache.load([(e, s) for e, s in saved])
            except (InvalidEpochError, ValueError):
                cache = None
        end = self.next_offset
        if cache is not None:
            cache.truncate_from_end(end)
            cache.truncate_from_start(self._log_start)
            if self._log_start == end:
                cache.clear()
            elif cache.epoch_at(self._log_start) is None or not self._epochs_agree(cache, recovered):
                cache = None  # it must cover the whole log and agree with what was scanned
        if cache is None:
            cache = self._rebuild_epochs()
        self._epochs = cache
        if saved is None or [tuple(e) for e in saved] != cache.entries():
            self._save_epochs()

    def _epochs_agree(self, cache: LeaderEpochCache, recovered: list[tuple[LogSegment, RecoveryResult]]) -> bool:
        entries = cache.entries()
        for segment, result in recovered:
            lo, hi = max(segment.base_offset, self._log_start), segment.next_offset
            if lo < hi and _transitions(entries, lo, hi) != _transitions(result.epochs, lo, hi):
                return False
        return True

    def _rebuild_epochs(self) -> LeaderEpochCache:
        """The cache from every batch header. A batch whose epoch goes back (only a
        damaged header can do that: appends refuse it) ends the log there."""
        cache = LeaderEpochCache()
        bad: int | None = None
        headers = (h for segment in self._segments.values() for _pos, h in segment.headers())
        for header in headers:
            if header.next_offset <= self._log_start:
                continue
            if cache.last_epoch is not None and header.leader_epoch < cache.last_epoch:
                bad = header.base_offset
                break
            cache.assign(header.leader_epoch, header.base_offset)
        if bad is not None:
            if bad < self._log_start:  # the batch straddles the log start
                self.reset_to(self._log_start)
                return LeaderEpochCache()
            self._truncate_to(bad)
        cache.truncate_from_start(self._log_start)
        return cache

    # -- properties -------------------------------------------------------------------

    def _add_segment(self, segment: LogSegment) -> None:
        segment.allocate_limit = self.config.segment_bytes  # (it rolls there: no space is allocated past it)
        self._segments[segment.base_offset] = segment
        self._active = self._segments.peekitem(-1)[1]

    def _pop_segment(self, index: int) -> LogSegment:
        segment: LogSegment = self._segments.popitem(index)[1]
        if self._segments:
            self._active = self._segments.peekitem(-1)[1]
        return segment

    @property
    def log_start_offset(self) -> int:
        """The first offset a reader may ask for."""
        return self._log_start

    @property
    def next_offset(self) -> int:
        """The log end offset: the offset the next appended record gets."""
        return self._active.next_offset

    @property
    def size_bytes(self) -> int:
        return sum(segment.size for segment in self._segments.values())

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    @property
    def last_epoch(self) -> int | None:
        """The epoch of the last batch, None for an empty log."""
        return self._epochs.last_epoch

    def segment_base_offsets(self) -> list[int]:
        return list(self._segments.keys())

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError(f"log {self.path} is closed")

    def _segment_for(self, offset: int) -> LogSegment:
        if offset >= self._active.base_offset:
            return self._active
        segment: LogSegment = self._segments.peekitem(self._segments.bisect_right(offset) - 1)[1]
        return segment

    def _check_range(self, offset: int) -> None:
        if not self._log_start <= offset <= self.next_offset:
            raise OffsetOutOfRangeError(offset, self._log_start, self.next_offset)

    # -- appending --------------------------------------------------------------------

    def append(self, batch: _Bytes, leader_epoch: int) -> tuple[int, int]:
        """Verify `batch` once, give it the next offsets, stamp them and `leader_epoch`
        into it, write it. Returns (base offset, last offset).

        Raises CorruptBatchError (nothing written), BatchTooLargeError, or
        InvalidEpochError for an epoch below `last_epoch` or negative.
        """
        return self._append([batch], leader_epoch, None)[0]

    def append_at(self, batch: _Bytes, base_offset: int, leader_epoch: int) -> tuple[int, int]:
        """`append` for a replica: `base_offset` must equal `next_offset`
        (InvalidOffsetError otherwise; truncate first to resolve a conflict)."""
        return self._append([batch], leader_epoch, base_offset)[0]

    def append_many(self, batches: Sequence[_Bytes], leader_epoch: int) -> list[tuple[int, int]]:
        """Append several batches in order with one fsync (group commit). All are
        verified before any is written, so a corrupt one rejects the whole call."""
        return self._append(batches, leader_epoch, None)

    def _append(self, batches: Sequence[_Bytes], leader_epoch: int, base_offset: int | None) -> list[tuple[int, int]]:
        # The broker's hot path: kept free of property calls and helpers on purpose.
        if self._closed:
            raise LogClosedError(f"log {self.path} is closed")
        last_epoch = self._epochs.last_epoch
        if not 0 <= leader_epoch <= INT32_MAX:
            raise InvalidEpochError(f"leader epoch {leader_epoch} is not a valid epoch")
        if last_epoch is not None and leader_epoch < last_epoch:
            raise InvalidEpochError(f"leader epoch {leader_epoch} is below the log's last epoch {last_epoch}")
        cfg = self.config
        max_bytes = cfg.max_batch_bytes
        headers: list[BatchHeader] = []
        for batch in batches:
            header = verify(batch)
            size = header.length + LOG_OVERHEAD
            if size != len(batch):
                raise CorruptBatchError(f"{len(batch) - size} bytes follow the batch")
            if size > max_bytes:
                raise BatchTooLargeError(f"batch of {size} bytes exceeds max_batch_bytes {max_bytes}")
            headers.append(header)
        active = self._active
        offset = active.next_offset
        if base_offset is not None and base_offset != offset:
            raise InvalidOffsetError(base_offset, offset)
        if not headers:
            return []
        if leader_epoch != last_epoch and self._epochs.assign(leader_epoch, offset):
            self._save_epochs()  # before the data: the file must cover what is on disk
        results = []
        segment_bytes, segment_ms = cfg.segment_bytes, cfg.segment_ms
        for header, batch in zip(headers, batches):
            last = offset + header.last_offset_delta
            if active.size and (
                active.size + header.length + LOG_OVERHEAD > segment_bytes
                or last - active.base_offset > INT32_MAX  # relative offsets are 4 bytes
                or (
                    segment_ms is not None  # age, in record time (Kafka's rule)
                    and active.first_timestamp is not None
                    and header.max_timestamp - active.first_timestamp > segment_ms
                )
            ):
                self._roll()
                active = self._active
            active.append(header, batch, offset, leader_epoch)
            results.append((offset, last))
            offset = last + 1
        self._unsynced = True
        if cfg.fsync == "always":
            self._sync()
        elif cfg.fsync == "interval":
            self.flush_if_due()
        return results

    def roll(self) -> None:
        """Seal the active segment and start a new one (no-op if it is empty)."""
        self._check_open()
        if self._active.size:
            self._roll()

    def _roll(self) -> None:
        sealed = self._active
        durable = self.config.fsync != "never"
        sealed.trim()
        sealed.flush(fsync=durable)
        if not durable:
            self._pending_sync.append(sealed)
        self._add_segment(LogSegment.create(self.path, self.next_offset, self.config.index_interval_bytes, self.fs))
        self._directory_changed()

    def _directory_changed(self) -> None:
        """A segment file was created or deleted: make that durable per the policy."""
        if self.config.fsync != "never":
            fsync_directory(self.path, self.fs)
        else:
            self._dir_unsynced = True

    # -- durability ---------------------------------------------------------------------

    def _sync(self) -> None:
        # The active segment is read first: if an append in the owner's thread rolls
        # it while this runs in a worker, it is still synced here (and again, being
        # sealed, by the next flush), so what was appended before the call is durable.
        active = self._active
        pending, self._pending_sync = self._pending_sync, []
        for segment in pending:
            if not segment.closed:
                segment.flush(fsync=True)
        names, self._checkpoints_unsynced = self._checkpoints_unsynced, set()
        for name in names:
            fsync_file(os.path.join(self.path, name), self.fs)
        if self._dir_unsynced:
            self._dir_unsynced = False
            fsync_directory(self.path, self.fs)
        active.sync()
        self._mark_synced()

    def _mark_synced(self) -> None:
        self._unsynced = False
        self._last_sync_ms = self._clock_ms()

    def flush(self) -> None:
        """fsync everything appended so far (also sealed segments and directory
        changes the policy deferred), whatever the policy.

        It may run in a worker thread while the owner appends and reads (an append
        racing it is synced by the next flush), but not concurrently with roll(),
        truncation, reset, deletion, retention or close.
        """
        self._check_open()
        self._sync()

    def claim_sync(self) -> int | None:
        """`flush()` for a caller that fdatasyncs by its own means (the node's
        asynchronous fdatasync), when all it owes is the active segment's data: the
        descriptor to fdatasync, or -1 when nothing is owed. None when more is owed (a
        sealed segment, a checkpoint, the directory): then `flush()` must do it. Report
        the outcome with `synced`; one claim at a time."""
        self._check_open()
        if self._pending_sync or self._checkpoints_unsynced or self._dir_unsynced:
            return None
        self._claimed = self._active
        return self._active.claim_sync()

    def synced(self, ok: bool) -> None:
        """The outcome of the sync `claim_sync` handed out; a failed one is owed again."""
        segment, self._claimed = self._claimed, None
        if segment is None:
            return
        if not ok:
            if not segment.closed:
                segment.sync_failed()
            return
        self._mark_synced()

    def flush_if_due(self, now_ms: int | None = None) -> bool:
        """Under the "interval" policy, fsync if `fsync_interval_ms` passed since the
        last sync (`now_ms` on the log's clock, read when None). True if it synced."""
        self._check_open()
        if self.config.fsync != "interval" or not self._unsynced:
            return False
        now = self._clock_ms() if now_ms is None else now_ms
        if now - self._last_sync_ms < self.config.fsync_interval_ms:
            return False
        self._sync()
        return True

    def close(self) -> None:
        """Flush (fsync unless the policy is "never") and close every segment."""
        if self._closed:
            return
        if self.config.fsync != "never":
            self._sync()
        for segment in self._segments.values():
            segment.close()
        self._closed = True

    def _save_epochs(self) -> None:
        self._write_checkpoint(EPOCH_CHECKPOINT, self._epochs.entries())

    def _save_log_start(self, offset: int) -> None:
        self._write_checkpoint(LOG_START_CHECKPOINT, [(offset,)])

    def _write_checkpoint(self, name: str, entries: Sequence[tuple[int, ...]]) -> None:
        """Under "never" the owner syncs: the file is fsynced by the next flush (before
        the active segment, so once a flush returns the file covers what is on disk;
        after a crash before it, open rebuilds a stale or torn one from the batches)."""
        deferred = self.config.fsync == "never"
        write_checkpoint(os.path.join(self.path, name), CHECKPOINT_VERSION, entries, sync=not deferred, fs=self.fs)
        if deferred:
            self._checkpoints_unsynced.add(name)
            self._dir_unsynced = True

    # -- reading ------------------------------------------------------------------------

    def read(self, offset: int, max_bytes: int, max_offset: int | None = None) -> bytes:
        """Whole batches starting with the one holding `offset`, exactly as stored.

        At most `max_bytes`, except that the first batch is returned whatever its size
        (Kafka's rule: a big batch never blocks a consumer); never a batch holding an
        offset >= `max_offset` (the high watermark, exclusive). Reads stay within one
        segment. Empty at the log end. OffsetOutOfRangeError outside
        [log_start_offset, next_offset].
        """
        segment = self._readable(offset, max_offset)
        return b"" if segment is None else segment.read(offset, max_bytes, max_offset)

    def read_slice(self, offset: int, max_bytes: int, max_offset: int | None = None) -> LogSlice | None:
        """Where the bytes `read` would return lie, as a `LogSlice` on a descriptor of its
        own (None where `read` returns nothing), without reading them: for sending them
        from the file (`os.sendfile`). The slice stays readable whatever happens to the
        segment meanwhile (a roll, retention, close); the caller closes it. Same errors
        as `read`; OSError if no descriptor is left to duplicate."""
        segment = self._readable(offset, max_offset)
        return None if segment is None else segment.read_slice(offset, max_bytes, max_offset)

    def _readable(self, offset: int, max_offset: int | None) -> LogSegment | None:
        """The segment a read from `offset` starts in; None where there is nothing to read
        (the log end, or at `max_offset`). The consumer's hot path: no helpers."""
        if self._closed:
            raise LogClosedError(f"log {self.path} is closed")
        end = self._active.next_offset
        if not self._log_start <= offset <= end:
            raise OffsetOutOfRangeError(offset, self._log_start, end)
        if offset == end or (max_offset is not None and offset >= max_offset):
            return None
        return self._segment_for(offset)

    def batches(self, from_offset: int, max_bytes: int | None = None) -> Iterator[tuple[BatchHeader, bytes]]:
        """(header, bytes) of each batch from the one holding `from_offset` to the end,
        across segments; with `max_bytes`, stop before exceeding it (but always yield
        at least one batch). The range is checked now, the batches read lazily; do not
        truncate the log while iterating."""
        self._check_open()
        self._check_range(from_offset)
        return self._iter_batches(from_offset, max_bytes)

    def _iter_batches(self, offset: int, max_bytes: int | None) -> Iterator[tuple[BatchHeader, bytes]]:
        total = 0
        chunk = min(max_bytes, _READ_CHUNK) if max_bytes is not None else _READ_CHUNK
        start = self._segments.bisect_right(offset) - 1
        for base in list(self._segments.keys())[max(start, 0) :]:
            segment = self._segments.get(base)
            if segment is None:
                return
            for header, data in segment.iter_batches(max(offset, base), chunk):
                total += header.size
                if max_bytes is not None and total > max_bytes and total > header.size:
                    return
                yield header, data

    def locate(self, offset: int) -> tuple[str, int, int] | None:
        """(segment file, byte position, size) of the batch holding `offset`; None
        outside the log. For checkers that ask a simulated file system whether those
        bytes are durable yet (`raft.simulator`'s persist-before-send rule)."""
        self._check_open()
        if not self._log_start <= offset < self.next_offset:
            return None
        segment = self._segment_for(offset)
        found = segment.find(offset)
        if found is None:
            return None
        position, header = found
        return segment.log_path, position, header.size

    def term_at(self, offset: int) -> int | None:
        """The leader epoch of the batch holding `offset`; None outside the log."""
        if not self._log_start <= offset < self.next_offset:
            return None
        return self._epochs.epoch_at(offset)

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int] | None:
        """(largest epoch <= `epoch` in the log, the offset after its last record):
        Kafka's OffsetsForLeaderEpoch. For the last epoch the end is `next_offset`;
        for an epoch below all known ones, (`epoch`, first epoch's start). None when
        `epoch` is above `last_epoch` or the log is empty."""
        return self._epochs.end_offset_for(epoch, self.next_offset)

    def offset_for_timestamp(self, ts_ms: int) -> int | None:
        """The first offset (>= log start) of the first batch whose max timestamp is
        >= `ts_ms`, or None. Batch granularity: records are not decoded."""
        self._check_open()
        for segment in self._segments.values():
            if segment.next_offset <= self._log_start:
                continue
            offset: int | None = segment.first_offset_at_or_after_time(ts_ms, self._log_start)
            if offset is not None:
                return max(offset, self._log_start)
        return None

    # -- truncation and retention ---------------------------------------------------------

    def truncate_after(self, offset: int) -> int:
        """Keep offsets <= `offset`, drop the rest (Raft conflict resolution).

        Whole batches: one straddling `offset` is dropped too, so the returned new
        `next_offset` can be below `offset + 1`. OffsetOutOfRangeError below
        `log_start_offset - 1`.
        """
        self._check_open()
        if offset >= self.next_offset - 1:
            return self.next_offset
        if offset < self._log_start - 1:
            raise OffsetOutOfRangeError(offset, self._log_start, self.next_offset)
        self._truncate_to(offset + 1)
        if self.next_offset < self._log_start:
            # The dropped batch straddled the log start: nothing below it may come back.
            self.reset_to(self._log_start)
        return self.next_offset

    def _truncate_to(self, end: int) -> None:
        """Drop every batch holding an offset >= `end`; keeps the epochs in step."""
        deleted = False
        while len(self._segments) > 1 and self._active.base_offset >= end:
            self._pop_segment(-1).delete()
            deleted = True
        self._active.truncate_to(end)
        if self.config.fsync != "never":
            self._active.sync()
        if deleted:
            self._directory_changed()
        changed = self._epochs.truncate_from_end(self.next_offset)
        if self.next_offset == self._log_start and self._epochs.last_epoch is not None:
            self._epochs.clear()
            changed = True
        if changed:
            self._save_epochs()

    def reset_to(self, offset: int) -> None:
        """Drop everything; the log restarts empty at `offset` (a follower far behind
        the leader's log start). Crash-safe: the new start is saved first, and open
        completes an interrupted reset. Durable per the policy (under "never", once the
        owner's next `flush` returns)."""
        self._check_open()
        if offset < 0:
            raise ValueError(f"cannot reset the log to negative offset {offset}")
        self._save_log_start(offset)
        for segment in list(self._segments.values()):
            segment.delete()
        self._segments.clear()
        self._add_segment(LogSegment.create(self.path, offset, self.config.index_interval_bytes, self.fs))
        self._directory_changed()
        self._log_start = offset
        self._epochs.clear()
        self._save_epochs()

    def delete_before(self, offset: int) -> int:
        """Advance the log start to `offset` (a Raft snapshot or retention); delete the
        segments wholly below it. Returns how many segments were deleted.
        OffsetOutOfRangeError beyond `next_offset`."""
        self._check_open()
        if offset <= self._log_start:
            return 0
        if offset > self.next_offset:
            raise OffsetOutOfRangeError(offset, self._log_start, self.next_offset)
        self._save_log_start(offset)
        self._log_start = offset
        deleted = self._delete_segments_below(offset)
        changed = self._epochs.truncate_from_start(offset)
        if offset == self.next_offset and self._epochs.last_epoch is not None:
            self._epochs.clear()
            changed = True
        if changed:
            self._save_epochs()
        return deleted

    def _delete_segments_below(self, offset: int) -> int:
        if self._active.size and self._active.next_offset <= offset:
            self._roll()
        deleted = 0
        while len(self._segments) > 1 and self._segments.peekitem(0)[1].next_offset <= offset:
            self._pop_segment(0).delete()
            deleted += 1
        if deleted:
            self._directory_changed()
        return deleted

    def retention_offset(self, now_ms: int) -> int | None:
        """The log start retention would move to now, or None: the end of the oldest
        sealed segments past `retention_ms` (by their newest timestamp) or beyond
        `retention_bytes`; never into the active one. A replicated caller clamps it to
        what is committed before deleting (see `apply_retention`)."""
        self._check_open()
        cfg = self.config
        sealed = list(self._segments.values())[:-1]
        count = 0
        if cfg.retention_ms is not None:
            while count < len(sealed):
                newest = sealed[count].max_timestamp
                if newest is not None and now_ms - newest <= cfg.retention_ms:
                    break
                count += 1
        if cfg.retention_bytes is not None:
            excess = self.size_bytes - cfg.retention_bytes - sum(s.size for s in sealed[:count])
            while count < len(sealed) and excess - sealed[count].size >= 0:
                excess -= sealed[count].size
                count += 1
        if count == 0:
            return None
        end: int = sealed[count - 1].next_offset
        return max(end, self._log_start)

    def apply_retention(self, now_ms: int) -> int:
        """Delete the segments `retention_offset` allows. Returns how many."""
        offset = self.retention_offset(now_ms)
        return 0 if offset is None else self.delete_before(offset)
