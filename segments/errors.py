"""Typed errors of the storage engine.

Everything the segments package raises on purpose derives from `SegmentError`, so a
broker can map a whole family to one wire error code:

- `CorruptBatchError`: the bytes are not a valid RecordBatch v2. The message says
  exactly what is wrong (bad magic, CRC mismatch with both values, a length out of
  range, a record count mismatch, a bad varint, ...). A broker answers CORRUPT_BATCH.
- `TruncatedBatchError`: a `CorruptBatchError` whose bytes simply stop early. A fetch
  response that ends in a partial batch, or a torn write at the tail of a segment,
  produce this one; callers that expect partial tails catch it specifically.
- `UnsupportedCompressionError`: a valid batch compressed with a codec this build
  cannot decode (snappy, lz4). The bytes are fine, the reader is not able.
- `OffsetOutOfRangeError`: an offset below the log start or beyond the log end.
- `InvalidOffsetError`: an append whose offsets do not continue the log.
- `InvalidEpochError`: an append whose leader epoch is lower than the log's last one
  (a Raft log's terms never decrease along the log).
- `BatchTooLargeError`: an append larger than `LogConfig.max_batch_bytes`.
- `LogClosedError`: use of a log or segment after `close()`.
"""

from __future__ import annotations


class SegmentError(Exception):
    """Base class of every error the segments package raises on purpose."""


class CorruptBatchError(SegmentError):
    """The bytes are not a valid record batch; the message says what is wrong."""


class TruncatedBatchError(CorruptBatchError):
    """The bytes end before the batch does (a partial or torn batch).

    `needed` is how many bytes the batch (or the header, if even that is cut) needs
    from its start, `available` how many there are.
    """

    def __init__(self, message: str, *, needed: int, available: int) -> None:
        super().__init__(message)
        self.needed = needed
        self.available = available


class UnsupportedCompressionError(SegmentError):
    """The batch uses a compression codec this build cannot encode or decode."""


class InvalidTimestampError(SegmentError):
    """A record's timestamp is outside what the log accepts (negative, or too far from now)."""


class OffsetOutOfRangeError(SegmentError):
    """An offset outside [log_start_offset, next_offset]."""

    def __init__(self, offset: int, log_start_offset: int, next_offset: int) -> None:
        super().__init__(f"offset {offset} is out of range: the log holds [{log_start_offset}, {next_offset})")
        self.offset = offset
        self.log_start_offset = log_start_offset
        self.next_offset = next_offset


class InvalidOffsetError(SegmentError):
    """An append whose base offset is not the log's next offset."""

    def __init__(self, offset: int, expected: int) -> None:
        super().__init__(f"non-contiguous append: batch base offset {offset}, log end offset {expected}")
        self.offset = offset
        self.expected = expected


class InvalidEpochError(SegmentError):
    """An append whose leader epoch is negative or lower than the log's last epoch."""


class BatchTooLargeError(SegmentError):
    """An appended batch exceeds the configured maximum batch size."""


class LogClosedError(SegmentError):
    """The log or segment was closed."""
