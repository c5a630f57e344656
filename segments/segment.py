"""LogSegment: one `.log` file of whole batches and its two sparse indexes.

A segment holds the batches with offsets from its base offset (its file name, 20
digits) up to the next segment's. It knows nothing of other segments, retention or
fsync policy; `segments.log.Log` decides those and calls:

- `LogSegment.create(directory, base_offset, index_interval_bytes)` /
  `LogSegment.open(...)` (open does no I/O beyond opening the file: the log then
  calls `load()` for a sealed segment or `recover()` for the active one).
- `append(header, batch, base_offset, leader_epoch) -> position`: writes the stamped
  batch (a 16-byte prefix then the producer's bytes, no copy) and maybe an index entry.
- `find(offset) -> (position, header) | None`: the batch holding `offset`, through the
  offset index and a short forward scan of headers.
- `read(offset, max_bytes, max_offset) -> bytes`: whole batches, Kafka's size rule.
- `read_slice(offset, max_bytes, max_offset) -> LogSlice | None`: where those same
  bytes lie in the file, on a descriptor of the slice's own, without reading them (the
  node sends them from the file to a socket with `os.sendfile`).
- `iter_batches(offset) -> (header, bytes)` for replication and tooling.
- `recover() -> RecoveryResult`: read every batch, verify CRC, offsets contiguous and
  epochs non-decreasing, cut the file at the first batch that fails (a torn write or
  corruption: nothing after it can be trusted), rebuild both indexes.
- `load() -> bool`: trust a sealed segment after checking its indexes and the batches
  after the last index entry (CRC included); False means "call recover()".
- `truncate_to(offset)`: drop every batch holding an offset >= `offset`.
- `sync()` (data only), `flush(fsync)` (indexes too), `close()`, `delete()`.

I/O is plain blocking `pread`/`pwritev` (through `segments.fs`) at positions the
segment keeps: reads never move a file position, and there is no user-space buffer, so
a read sees every completed append and a crash leaves at worst one torn batch at the
tail for `recover()` to cut.

The active segment's file runs ahead of its data: space is allocated in steps (zeros,
`allocate`), so an append does not change the file's size and its fdatasync has no
size to journal (docs/segments.md has the figures). Readers go by `size` (the data's
end) alone; the zeros after it end the scan of `recover()` as a torn tail does, and a
sealed or closed segment is cut to its data (`trim`).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import NamedTuple

from .batch import HEADER_SIZE, LOG_OVERHEAD, BatchHeader, parse_header, stamped_prefix, verify
from .errors import CorruptBatchError, LogClosedError
from .fs import OS, FileSystem
from .index import OffsetIndex, TimeIndex

_SCAN_CHUNK = 1 << 20
#: The active segment's file is allocated ahead of its data by a quarter of its size,
#: within these bounds (an idle partition holds little unused space, a busy one
#: allocates seldom).
ALLOCATE_MIN_BYTES = 64 << 10
ALLOCATE_MAX_BYTES = 8 << 20
_WALK = struct.Struct(">qi")  # baseOffset, batchLength
_LAST_DELTA = struct.Struct(">i")  # lastOffsetDelta, at byte 23
_LAST_DELTA_POS = 23


def segment_file_name(base_offset: int, suffix: str) -> str:
    """`00000000000000000042.log` for base offset 42 and suffix ".log"."""
    return f"{base_offset:020d}{suffix}"


class RecoveryResult(NamedTuple):
    """What `LogSegment.recover()` found."""

    valid_bytes: int
    truncated_bytes: int
    error: str | None  # why the tail was cut, None if nothing was
    epochs: list[tuple[int, int]]  # (epoch, first offset) at each epoch change


class _Scan:
    """Iterate (position, header, bytes or None) over the batches in a file range.

    Checks each batch: whole within the range, base offset continuing the previous
    one (from `expected_offset` when given), epoch not going backwards and, with
    `check_crc`, its CRC. Stops at the first that fails, leaving the reason in
    `error` and its position in `end`. Reads `chunk` bytes at a time; without
    `need_body` (and without `check_crc`) it reads only headers and yields None for
    the bytes.
    """

    def __init__(
        self,
        fs: FileSystem,
        fd: int,
        start: int,
        end: int,
        expected_offset: int | None,
        *,
        check_crc: bool,
        need_body: bool,
        chunk: int = _SCAN_CHUNK,
    ) -> None:
        self.fs = fs
        self.fd = fd
        self.start = start
        self.file_end = end
        self.expected = expected_offset
        self.check_crc = check_crc
        self.need_body = need_body or check_crc
        self.chunk = max(chunk, HEADER_SIZE)
        self.error: str | None = None
        self.end = start

    def __iter__(self) -> Iterator[tuple[int, BatchHeader, memoryview | None]]:
        pread, fd, pos, file_end, chunk = self.fs.pread, self.fd, self.start, self.file_end, self.chunk
        expected = self.expected
        prev_epoch = None
        buf = b""
        buf_pos = pos  # file position of buf[0]
        while pos < file_end:
            rel = pos - buf_pos
            if rel + HEADER_SIZE > len(buf):
                buf = pread(fd, min(chunk, file_end - pos), pos)
                buf_pos, rel = pos, 0
            view = None
            try:
                header = parse_header(buf, rel)
                size = header.size
                if pos + size > file_end:
                    raise CorruptBatchError(f"torn batch at byte {pos}: {file_end - pos} of {size} bytes in the file")
                if self.need_body:
                    if rel + size > len(buf):
                        buf = pread(fd, max(size, min(chunk, file_end - pos)), pos)
                        buf_pos, rel = pos, 0
                    if self.check_crc:
                        verify(buf, rel)
                    view = memoryview(buf)[rel : rel + size]
                if expected is not None and header.base_offset != expected:
                    raise CorruptBatchError(
                        f"batch at byte {pos} has base offset {header.base_offset}, expected {expected}"
                    )
                if prev_epoch is not None and header.leader_epoch < prev_epoch:
                    raise CorruptBatchError(
                        f"batch at byte {pos} has leader epoch {header.leader_epoch} after epoch {prev_epoch}"
                    )
            except CorruptBatchError as exc:
                self.error = str(exc)
                self.end = pos
                return
            prev_epoch = header.leader_epoch
            expected = header.next_offset
            yield pos, header, view
            pos += size
            self.end = pos


class LogSlice:
    """Whole batches of a segment file, not read: `length` bytes at `position` of the
    open file `fd`, a duplicate of the segment's descriptor owned by the slice, so the
    bytes stay readable (`os.sendfile`, `read()`) after the segment rolls, is deleted by
    retention or closed. `next_offset` is the offset after the last batch. Close it when
    done (it is a context manager; dropping it closes it too)."""

    __slots__ = ("_fs", "fd", "position", "length", "next_offset")

    def __init__(self, fs: FileSystem, fd: int, position: int, length: int, next_offset: int) -> None:
        self._fs = fs
        self.fd = fd
        self.position = position
        self.length = length
        self.next_offset = next_offset

    def __len__(self) -> int:
        return self.length

    def read(self) -> bytes:
        """The bytes themselves (for a link that cannot take them from the file)."""
        if self.fd < 0:
            raise LogClosedError("read from a closed slice")
        data = self._fs.pread(self.fd, self.length, self.position)
        while len(data) < self.length:  # a short read: finish it
            more = self._fs.pread(self.fd, self.length - len(data), self.position + len(data))
            if not more:
                raise CorruptBatchError(
                    f"segment file ends at byte {self.position + len(data)}, inside a slice of committed batches"
                )
            data += more
        return data

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            self._fs.close(fd)

    def __enter__(self) -> LogSlice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if self.fd >= 0:
            self.close()

    def __repr__(self) -> str:
        return f"LogSlice(fd={self.fd}, position={self.position}, length={self.length}, next_offset={self.next_offset})"


class LogSegment:
    """One segment: a `.log` file plus `.index` and `.timeindex` beside it."""

    def __init__(
        self, directory: str, base_offset: int, index_interval_bytes: int, fd: int, fs: FileSystem = OS
    ) -> None:
        self.directory = directory
        self._fs = fs
        self.base_offset = base_offset
        self.index_interval_bytes = index_interval_bytes
        self.log_path = os.path.join(directory, segment_file_name(base_offset, ".log"))
        self.offset_index = OffsetIndex(
            os.path.join(directory, segment_file_name(base_offset, ".index")), base_offset, fs
        )
        self.time_index = TimeIndex(
            os.path.join(directory, segment_file_name(base_offset, ".timeindex")), base_offset, fs
        )
        self._fd = fd
        self.size = fs.size(fd)
        self._allocated = self.size  # the file's size: `size` plus the zeros allocated ahead
        self._allocating = True  # until allocation fails (a full disk): then appends grow the file
        self.allocate_limit: int | None = None  # no space allocated past this (the log's roll size)
        self.next_offset = base_offset
        self.first_timestamp: int | None = None  # max timestamp of the first batch
        self.max_timestamp: int | None = None
        self._offset_of_max_ts = base_offset
        self._dirty = False
        self._hint = (-1, 0)  # (offset, position) where the last read stopped

    # -- life cycle ---------------------------------------------------------------

    @classmethod
    def create(cls, directory: str, base_offset: int, index_interval_bytes: int, fs: FileSystem = OS) -> LogSegment:
        """A new empty segment (replacing any leftover files of that name)."""
        path = os.path.join(directory, segment_file_name(base_offset, ".log"))
        fd = fs.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        segment = cls(directory, base_offset, index_interval_bytes, fd, fs)
        segment.offset_index.reset()
        segment.time_index.reset()
        return segment

    @classmethod
    def open(cls, directory: str, base_offset: int, index_interval_bytes: int, fs: FileSystem = OS) -> LogSegment:
        """An existing segment; call `load()` or `recover()` before using it."""
        path = os.path.join(directory, segment_file_name(base_offset, ".log"))
        fd = fs.open(path, os.O_RDWR)
        segment = cls(directory, base_offset, index_interval_bytes, fd, fs)
        segment._dirty = True  # a previous process may have left pages unsynced
        return segment

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def _check_open(self) -> None:
        if self._fd < 0:
            raise LogClosedError(f"segment {self.log_path} is closed")

    def sync(self) -> None:
        """fdatasync the log file if anything was written since the last sync.

        Only the data: the active segment's indexes are rebuilt on open anyway, so
        syncing them on every append would buy nothing.
        """
        fd = self.claim_sync()
        if fd < 0:
            return
        try:
            self._fs.fdatasync(fd)
        except BaseException:
            self.sync_failed()
            raise

    def claim_sync(self) -> int:
        """`sync` for a caller that fdatasyncs by its own means: the descriptor to sync,
        or -1 when nothing was written since the last. A failed sync must be reported
        with `sync_failed`. Marked clean first: an append racing the sync (from another
        thread) marks the segment dirty again for the next sync instead of being
        forgotten."""
        self._check_open()
        if not self._dirty:
            return -1
        self._dirty = False
        return self._fd

    def sync_failed(self) -> None:
        """The sync `claim_sync` handed out did not happen: the next sync owes it."""
        self._dirty = True

    def flush(self, fsync: bool) -> None:
        """Write buffered index entries; with `fsync`, make data and indexes durable
        (when the segment is sealed by a roll)."""
        self._check_open()
        self.offset_index.flush(fsync)
        self.time_index.flush(fsync)
        if fsync:
            self.sync()

    def trim(self) -> None:
        """Cut the file to its data (the space allocated ahead goes): a sealed segment
        is exactly its batches."""
        self._check_open()
        if self._allocated > self.size:
            self._fs.ftruncate(self._fd, self.size)
            self._allocated = self.size
            self._dirty = True

    def close(self) -> None:
        """Write buffered index entries, cut the file to its data and close it (no
        fsync: see `flush`)."""
        if self._fd < 0:
            return
        try:
            self.trim()
        except OSError:
            pass  # (the zeros stay; the next open's recovery cuts them)
        self.offset_index.flush(False)
        self.time_index.flush(False)
        self._fs.close(self._fd)
        self._fd = -1

    def delete(self) -> None:
        """Close and remove the segment's three files."""
        if self._fd >= 0:
            self._fs.close(self._fd)
            self._fd = -1
        for path in (self.log_path, self.offset_index.path, self.time_index.path):
            try:
                self._fs.unlink(path)
            except FileNotFoundError:
                pass

    # -- writing ------------------------------------------------------------------

    def append(
        self, header: BatchHeader, batch: bytes | bytearray | memoryview, base_offset: int, leader_epoch: int
    ) -> int:
        """Write a verified batch stamped with `base_offset` and `leader_epoch`.

        `base_offset` must be `next_offset` (the log checks). Returns the position.
        """
        if self._fd < 0:
            raise LogClosedError(f"segment {self.log_path} is closed")
        position = self.size
        parts: list[bytes | memoryview] = [stamped_prefix(header, base_offset, leader_epoch), memoryview(batch)[16:]]
        total = header.length + LOG_OVERHEAD
        if position + total > self._allocated and self._allocating:
            self._allocate(position + total)
        written = self._fs.pwritev(self._fd, parts, position)
        while written < total:  # a short write: finish it from where it stopped
            view = memoryview(b"".join(parts))[written:]
            written += self._fs.pwritev(self._fd, [view], position + written)
        self.size = position + total
        self._allocated = max(self._allocated, self.size)
        self._dirty = True
        self._track(position, base_offset, header)
        return position

    def _allocate(self, needed: int) -> None:
        """Allocate the file ahead of `needed` bytes (see the module docstring)."""
        step = min(ALLOCATE_MAX_BYTES, max(ALLOCATE_MIN_BYTES, self.size // 4))
        target = -(-(needed + step) // 4096) * 4096
        if self.allocate_limit is not None:
            target = max(needed, min(target, self.allocate_limit))
        try:
            self._fs.allocate(self._fd, target)
        except OSError:
            self._allocating = False  # (a full disk: the write itself then says so, or fits)
            return
        self._allocated = target

    def _track(self, position: int, base_offset: int, header: BatchHeader) -> None:
        """Account for a batch now at `position` with base offset `base_offset`:
        offsets, timestamps and (every index_interval_bytes) index entries."""
        max_ts = header.max_timestamp
        if self.max_timestamp is None:
            self.first_timestamp = max_ts
        if self.max_timestamp is None or max_ts > self.max_timestamp:
            self.max_timestamp = max_ts
            self._offset_of_max_ts = base_offset
        if position - self.offset_index.last_position >= self.index_interval_bytes:
            self.offset_index.append(base_offset, position)
            self.time_index.maybe_append(self.max_timestamp, self._offset_of_max_ts)
        self.next_offset = base_offset + header.last_offset_delta + 1

    # -- reading ------------------------------------------------------------------

    def _header_at(self, position: int) -> BatchHeader:
        return parse_header(self._fs.pread(self._fd, HEADER_SIZE, position))

    def find(self, offset: int) -> tuple[int, BatchHeader] | None:
        """(position, header) of the batch holding `offset`, None past the end."""
        self._check_open()
        if offset >= self.next_offset:
            return None
        hint_offset, hint_pos = self._hint
        if hint_offset == offset and hint_pos < self.size:
            position = hint_pos
        else:
            position = self.offset_index.lookup(offset)[1]
        while position < self.size:
            header = self._header_at(position)
            if header.base_offset + header.last_offset_delta >= offset:
                return position, header
            position += header.size
        return None

    def read(self, offset: int, max_bytes: int, max_offset: int | None = None) -> bytes:
        """Whole batches from the one holding `offset`: at most `max_bytes`, but the
        first batch whatever its size; none with an offset >= `max_offset`.

        The hot path of a consumer: where the previous read stopped is remembered, so
        a sequential reader needs no index lookup, and the bytes to read end at the
        segment end or, through the offset index, at a known batch start if that
        gives up at most 1/8 of `max_bytes`. So the common read is one exact `pread`,
        returned without a copy. Otherwise it reads `max_bytes` and cuts after the
        last whole batch (a copy).
        """
        self._check_open()
        if offset >= self.next_offset:
            return b""
        hint_offset, position = self._hint
        if hint_offset != offset or position >= self.size:
            found = self.find(offset)
            if found is None:
                return b""
            position = found[0]
        fd, size = self._fd, self.size
        limit = position + max(max_bytes, HEADER_SIZE)
        if limit >= size:
            limit = size
        else:
            boundary = self.offset_index.floor_position(limit)
            if boundary > position and limit - boundary <= max_bytes >> 3:
                limit = boundary
        buf = self._fs.pread(fd, limit - position, position)
        base, length = _WALK.unpack_from(buf, 0)
        last = base + _LAST_DELTA.unpack_from(buf, _LAST_DELTA_POS)[0]
        if max_offset is not None and last >= max_offset:
            return b""
        end = length + LOG_OVERHEAD
        if end > len(buf):  # the first batch alone is larger than max_bytes
            buf += self._fs.pread(fd, end - len(buf), position + len(buf))
        next_offset = last + 1
        total = len(buf)
        stop_walk = total - _LAST_DELTA_POS - 4
        while end <= stop_walk:
            base, length = _WALK.unpack_from(buf, end)
            last = base + _LAST_DELTA.unpack_from(buf, end + _LAST_DELTA_POS)[0]
            stop = end + length + LOG_OVERHEAD
            if stop > total or (max_offset is not None and last >= max_offset):
                break
            end = stop
            next_offset = last + 1
        self._hint = (next_offset, position + end)
        return buf if end == total else buf[:end]

    def read_slice(self, offset: int, max_bytes: int, max_offset: int | None = None) -> LogSlice | None:
        """Where the bytes `read` would return lie in the file, as a `LogSlice` (None
        where `read` returns nothing), found without reading the records: the first
        batch's header, the end through the offset index and a short walk of headers
        from the last indexed batch (at most `index_interval_bytes` of small batches),
        and, below the segment's end, the batch holding `max_offset`. Same rule as
        `read`, same bytes, and the same memory of where the read stopped."""
        span = self._span(offset, max_bytes, max_offset)
        if span is None:
            return None
        position, end, next_offset = span
        return LogSlice(self._fs, self._fs.dup(self._fd), position, end - position, next_offset)

    def _span(self, offset: int, max_bytes: int, max_offset: int | None) -> tuple[int, int, int] | None:
        """(position, end, next offset) of `read_slice`."""
        self._check_open()
        if offset >= self.next_offset:
            return None
        hint_offset, position = self._hint
        if hint_offset == offset and position < self.size:
            first = self._header_at(position)
        else:
            found = self.find(offset)
            if found is None:
                return None
            position, first = found
        first_last = first.base_offset + first.last_offset_delta
        if max_offset is not None and first_last >= max_offset:
            return None
        size = self.size
        limit = position + max(max_bytes, HEADER_SIZE)  # as `read` computes it
        if limit >= size:
            limit = size
        else:
            boundary = self.offset_index.floor_position(limit)
            if boundary > position and limit - boundary <= max_bytes >> 3:
                limit = boundary
        end, next_offset = position + first.size, first_last + 1
        cut: tuple[int, BatchHeader] | None = None
        if max_offset is not None and max_offset < self.next_offset:
            cut = self.find(max_offset)  # the batch holding it: no byte from its start on goes
            if cut is not None and cut[0] < limit:
                limit = cut[0]
        if end < limit:
            if limit == size:
                end, next_offset = size, self.next_offset
            elif cut is not None and limit == cut[0]:
                end, next_offset = limit, cut[1].base_offset
            else:  # a batch start at or after the first batch's end, at or before limit
                end, next_offset = self._last_boundary(max(end, self.offset_index.floor_position(limit)), limit)
        self._hint = (next_offset, end)
        return position, end, next_offset

    def _last_boundary(self, start: int, limit: int) -> tuple[int, int]:
        """(position, offset) of the last batch start at or before `limit`, walking the
        headers from the batch start `start` (<= `limit`)."""
        pos = start
        if pos >= self.size:
            return pos, self.next_offset
        head = self._fs.pread(self._fd, _LAST_DELTA_POS + 4, pos)
        next_offset = _WALK.unpack_from(head, 0)[0]
        while True:
            base, length = _WALK.unpack_from(head, 0)
            stop = pos + length + LOG_OVERHEAD
            if stop > limit:
                return pos, next_offset
            pos, next_offset = stop, base + _LAST_DELTA.unpack_from(head, _LAST_DELTA_POS)[0] + 1
            if pos >= self.size or pos + _LAST_DELTA_POS + 4 > limit:
                return pos, next_offset
            head = self._fs.pread(self._fd, _LAST_DELTA_POS + 4, pos)

    def iter_batches(self, offset: int, chunk_bytes: int = _SCAN_CHUNK) -> Iterator[tuple[BatchHeader, bytes]]:
        """(header, bytes) of each batch from the one holding `offset` to the end,
        reading about `chunk_bytes` at a time (no CRC check: verified on append)."""
        found = self.find(offset)
        if found is None:
            return
        scan = _Scan(self._fs, self._fd, found[0], self.size, None, check_crc=False, need_body=True, chunk=chunk_bytes)
        for _pos, header, view in scan:
            assert view is not None  # need_body: always a view
            yield header, bytes(view)

    def headers(self, start: int = 0) -> Iterator[tuple[int, BatchHeader]]:
        """(position, header) of each batch from file position `start`, reading only
        the headers (no CRC check)."""
        self._check_open()
        scan = _Scan(self._fs, self._fd, start, self.size, None, check_crc=False, need_body=False, chunk=HEADER_SIZE)
        return ((pos, header) for pos, header, _view in scan)

    def first_offset_at_or_after_time(self, timestamp: int, min_offset: int) -> int | None:
        """Base offset of the first batch holding offsets >= `min_offset` whose max
        timestamp is >= `timestamp`, found through the time index and a short scan."""
        self._check_open()
        if self.max_timestamp is None or self.max_timestamp < timestamp:
            return None
        indexed = self.time_index.lookup(timestamp)
        start_offset = max(self.base_offset if indexed is None else indexed, min_offset)
        found = self.find(start_offset)
        if found is None:
            return None
        for _pos, header in self.headers(found[0]):
            if header.max_timestamp >= timestamp:
                return header.base_offset
        return None

    # -- recovery and truncation -----------------------------------------------------

    def _reset_stats(self) -> None:
        self.next_offset = self.base_offset
        self.first_timestamp = self.max_timestamp = None
        self._offset_of_max_ts = self.base_offset
        self._hint = (-1, 0)

    def recover(self) -> RecoveryResult:
        """Scan and verify every batch, cut at the first bad one, rebuild the indexes."""
        self._check_open()
        file_size = self._fs.size(self._fd)
        self._reset_stats()
        self.offset_index.reset()
        self.time_index.reset()
        self.size = 0
        epochs: list[tuple[int, int]] = []
        scan = _Scan(self._fs, self._fd, 0, file_size, self.base_offset, check_crc=True, need_body=True)
        for position, header, _view in scan:
            self.size = position + header.size
            self._track(position, header.base_offset, header)
            if not epochs or epochs[-1][0] != header.leader_epoch:
                epochs.append((header.leader_epoch, header.base_offset))
        truncated = file_size - scan.end
        error = scan.error
        if truncated:
            if error is not None and not any(self._fs.pread(self._fd, HEADER_SIZE, scan.end)):
                error = None  # zeros: space allocated ahead (or never written), not a torn batch
            self._fs.ftruncate(self._fd, scan.end)
            self._dirty = True
        self.size = self._allocated = scan.end
        return RecoveryResult(scan.end, truncated, error, epochs)

    def load(self, next_segment_base: int) -> bool:
        """Adopt a sealed segment's indexes if they are sound.

        Validates both index files against the log size and `next_segment_base`, then
        verifies (CRC included) every batch after the last offset index entry up to
        the end of the file, which also proves that entry points at a batch start.
        Returns False when anything is off; the caller then runs `recover()`.
        """
        self._check_open()
        self._reset_stats()
        if not self.offset_index.load(self.size, next_segment_base):
            return False
        if not self.time_index.load(next_segment_base):
            return False
        try:
            if not self._load_tail(check_crc=True):
                return False
        except CorruptBatchError:  # the first batch's header, read for its timestamp
            return False
        return self.next_offset == next_segment_base

    def _load_tail(self, check_crc: bool) -> bool:
        """Set offsets and timestamps from the indexes plus a scan of the batches after
        the last offset index entry; False if that scan finds a bad batch."""
        start_offset, start = self.offset_index.last()
        if self.size == 0:
            return True
        self.first_timestamp = self._header_at(0).max_timestamp
        last_time_entry = self.time_index.last_entry()
        if last_time_entry is not None:
            self.max_timestamp = last_time_entry[0]
            self._offset_of_max_ts = self.base_offset + last_time_entry[1]
        scan = _Scan(self._fs, self._fd, start, self.size, start_offset, check_crc=check_crc, need_body=False)
        for _pos, header, _view in scan:
            if self.max_timestamp is None or header.max_timestamp > self.max_timestamp:
                self.max_timestamp = header.max_timestamp
                self._offset_of_max_ts = header.base_offset
            self.next_offset = header.next_offset
        return scan.error is None and scan.end == self.size

    def truncate_to(self, offset: int) -> int:
        """Remove every batch holding an offset >= `offset`; return bytes removed.

        A batch that straddles `offset` goes too (a batch is never split), so
        `next_offset` afterwards may be below `offset`.
        """
        found = self.find(offset)
        if found is None:
            return 0
        position = found[0]
        removed = self.size - position
        self._fs.ftruncate(self._fd, position)
        self.size = self._allocated = position
        self._dirty = True
        self.offset_index.truncate_to_position(position)
        self.time_index.truncate_to_offset(found[1].base_offset)
        self._reset_stats()
        if not self._load_tail(check_crc=False):
            raise CorruptBatchError(f"segment {self.log_path} does not scan after truncation")
        return removed
