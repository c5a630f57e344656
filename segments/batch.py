"""Kafka RecordBatch v2 (magic 2): the one format from producer to disk to consumer.

Layout (big-endian), byte-compatible with Kafka's DefaultRecordBatch::

    0  baseOffset int64        set by the leader (stamp)     \\ not covered
    8  batchLength int32       bytes after this field          | by the CRC
   12  partitionLeaderEpoch    set by the leader = Raft term  /
   16  magic int8 = 2
   17  crc uint32              CRC-32C of bytes 21..end
   21  attributes int16        0-2 compression, 3 timestamp type, 4 transactional, 5 control
   23  lastOffsetDelta int32
   27  baseTimestamp int64
   35  maxTimestamp int64
   43  producerId int64
   51  producerEpoch int16
   53  baseSequence int32
   57  recordCount int32
   61  records (compressed as one stream when attributes say so)

Each record: length varint, attributes int8, timestampDelta varlong, offsetDelta
varint, key (varint length, -1 = null), value (same), header count varint, then
headers (key: varint length + UTF-8, value: varint length + bytes, -1 = null).

Because the CRC starts at the attributes, the leader can stamp the base offset and
its epoch into a producer's batch without recomputing it, and the broker's hot path
is `verify` (header sanity + one CRC) then `stamped_prefix` + write: records are never
unpacked there.

Public API:

- `Record(offset, timestamp, key, value, headers)` and `BatchHeader` (every header
  field plus `last_offset`, `next_offset`, `size`, `compression`, `timestamp_type`,
  `is_transactional`, `is_control`).
- `build_batch(records, *, compression, base_offset, leader_epoch, producer_id,
  producer_epoch, base_sequence, transactional, control, timestamp_type) -> bytes`.
- `parse_header(buf, pos=0)`: the header alone, cheap.
- `verify(buf, pos=0)`: header + full length + CRC + offset/count consistency.
- `stamp(buf, base_offset, leader_epoch, pos=0)` in place, `stamped(...)` as a copy,
  `stamped_prefix(header, base_offset, leader_epoch)` for zero-copy writes.
- `decode_records(buf, pos=0) -> list[Record]`: verify, decompress, decode;
  `decode_rows(cls, prefix, buf, pos=0)` the same into a caller's tuple type.
- `build_batch_pure` / `decode_records_pure`: the pure-Python codec, the reference the
  compiled one is held to; `codec_in_use()` names the codec `build_batch` and
  `decode_records` use, `reload_codec()` chooses again (see "The compiled codec" below).
- `validate(buf, *, max_records_bytes, min_timestamp, max_timestamp)`: a producer's
  batch checked as Kafka's LogValidator would, before it goes into the log.
- `iter_batches(buf, *, check_crc=True, allow_partial=False)`: split a concatenation.

Control batches (transaction markers, leader change, Raft configuration) are built
and read by `segments.control` on top of this module.

The compiled codec: per record, Python costs about 3 us to build and 3-4 us to decode,
which caps a producer and a consumer well below the brokers. aiokafka's Cython record
module (`aiokafka.record._crecords`) speaks this format and is used, when importable,
for the records section. `build_batch` gives the pure codec's bytes, byte for byte, and
`decode_records` its records and errors (tests/segments/test_codec.py), by handing
anything the compiled code would treat differently to the pure codec (control and
log-append-time batches, negative timestamps, any error) and by checking what it cannot
be trusted with (offsets, timestamp overflow, reads past the end). Three encodings no
Kafka producer writes are still read by it where the pure codec refuses or reads them
otherwise; `validate`, the broker's gate for hostile input, therefore accepts a batch
in compiled code only once aiokafka's builder, given the records its reader decoded,
writes back exactly the bytes sent (none of those three encodings survives that), and
leaves every other batch to the strict pure decoder (docs/segments.md, "Compiled
codec"). `TIDEMQ_PURE_CODEC=1` in the environment at the first use (or at
`reload_codec()`) rules the compiled codec out.
"""

from __future__ import annotations

import enum
import os
import struct
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from itertools import islice
from operator import attrgetter, itemgetter
from typing import Any, NamedTuple, TypeAlias, TypeVar

from crc32c import crc32c

from .compression import Compression, codec_of, compress, decompress
from .errors import CorruptBatchError, InvalidTimestampError, TruncatedBatchError, UnsupportedCompressionError
from .varint import INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN, append_varint, read_varint

MAGIC = 2
HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE = HEADER.size  # 61
LOG_OVERHEAD = 12  # baseOffset + batchLength: the bytes batchLength does not count
MIN_BATCH_LENGTH = HEADER_SIZE - LOG_OVERHEAD  # 49, a batch without records
EPOCH_OFFSET = 12
MAGIC_OFFSET = 16
CRC_OFFSET = 17
ATTRIBUTES_OFFSET = 21

COMPRESSION_MASK = 0x07
TIMESTAMP_TYPE_MASK = 0x08
TRANSACTIONAL_MASK = 0x10
CONTROL_MASK = 0x20

_PREFIX = struct.Struct(">qii")  # baseOffset, batchLength, partitionLeaderEpoch
_INT64 = struct.Struct(">q")
_INT32 = struct.Struct(">i")
_MAX_CODEC = max(Compression)
_MIN_RECORD_SIZE = 7  # length, attributes, ts delta, offset delta, key, value, header count


class TimestampType(enum.IntEnum):
    """Attributes bit 3: whose clock the timestamps are."""

    CREATE_TIME = 0
    LOG_APPEND_TIME = 1


Headers: TypeAlias = tuple[tuple[str, bytes | None], ...]


class Record(NamedTuple):
    """One decoded record. `headers` keeps order and duplicates, as Kafka does."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()


# What build_batch accepts per record: a Record (its offset is ignored, offsets are
# base_offset + position) or (key, value, headers, timestamp-or-None-for-now).
RecordInput: TypeAlias = (
    Record
    | tuple[
        bytes | bytearray | memoryview | None,
        bytes | bytearray | memoryview | None,
        Iterable[tuple[str, bytes | None]],
        int | None,
    ]
)


class BatchHeader(NamedTuple):
    """The 61-byte batch header, field by field, plus derived values."""

    base_offset: int
    length: int
    leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def size(self) -> int:
        """Bytes of the whole batch, header included."""
        return self.length + LOG_OVERHEAD

    @property
    def compression(self) -> Compression:
        return Compression(self.attributes & COMPRESSION_MASK)

    @property
    def timestamp_type(self) -> TimestampType:
        return TimestampType(bool(self.attributes & TIMESTAMP_TYPE_MASK))

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_MASK)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_MASK)


_Buffer: TypeAlias = bytes | bytearray | memoryview
_Row = TypeVar("_Row", bound=tuple[Any, ...])


def parse_header(buf: _Buffer, pos: int = 0) -> BatchHeader:
    """Parse and sanity-check the header of the batch at `buf[pos:]`.

    Checks what the header alone can show: length in range, magic 2, a known codec,
    non-negative record count and offset delta. The records are not looked at and
    need not be in `buf`. Raises TruncatedBatchError when the header itself is cut.
    """
    available = len(buf) - pos
    if available < HEADER_SIZE:
        _check_partial_header(buf, pos, available)
    header = BatchHeader._make(HEADER.unpack_from(buf, pos))
    if header.length < MIN_BATCH_LENGTH:
        raise CorruptBatchError(
            f"batch length {header.length} at byte {pos} is out of range (a v2 batch has at least {MIN_BATCH_LENGTH})"
        )
    if header.magic != MAGIC:
        raise CorruptBatchError(f"bad magic {header.magic} at byte {pos + MAGIC_OFFSET} (expected {MAGIC})")
    if header.attributes & COMPRESSION_MASK > _MAX_CODEC:
        codec_of(header.attributes & COMPRESSION_MASK)  # raises, naming the codec
    if header.record_count < 0:
        raise CorruptBatchError(f"negative record count {header.record_count} at byte {pos}")
    if header.last_offset_delta < 0:
        raise CorruptBatchError(f"negative last offset delta {header.last_offset_delta} at byte {pos}")
    return header


def _check_partial_header(buf: _Buffer, pos: int, available: int) -> None:
    """Raise for a header cut short: CorruptBatchError if what is there is already
    wrong (length, magic), else TruncatedBatchError."""
    if available >= LOG_OVERHEAD:
        length = _INT32.unpack_from(buf, pos + 8)[0]
        if length < MIN_BATCH_LENGTH:
            raise CorruptBatchError(
                f"batch length {length} at byte {pos} is out of range (a v2 batch has at least {MIN_BATCH_LENGTH})"
            )
    if available > MAGIC_OFFSET and buf[pos + MAGIC_OFFSET] != MAGIC:
        raise CorruptBatchError(f"bad magic {buf[pos + MAGIC_OFFSET]} at byte {pos + MAGIC_OFFSET} (expected {MAGIC})")
    raise TruncatedBatchError(
        f"batch header truncated at byte {pos + available}: {available} of {HEADER_SIZE} header bytes present",
        needed=HEADER_SIZE,
        available=available,
    )


def verify(buf: _Buffer, pos: int = 0) -> BatchHeader:
    """Check the batch at `buf[pos:]` without decoding its records; return its header.

    The broker's once-per-batch check: `parse_header`, the whole batch present, the
    CRC-32C over attributes..end, and the offset range agreeing with the record count
    (Kafka's own rule for v2 batches: count >= 1 and lastOffsetDelta == count - 1).
    """
    header = parse_header(buf, pos)
    end = pos + header.length + LOG_OVERHEAD
    if len(buf) < end:
        available = len(buf) - pos
        raise TruncatedBatchError(
            f"batch at byte {pos} truncated at byte {len(buf)}: {available} of {header.size} bytes present",
            needed=header.size,
            available=available,
        )
    actual = crc32c(memoryview(buf)[pos + ATTRIBUTES_OFFSET : end])
    if actual != header.crc:
        raise CorruptBatchError(
            f"CRC mismatch in batch at byte {pos}: header says {header.crc:#010x}, data gives {actual:#010x}"
        )
    if header.record_count < 1 or header.last_offset_delta != header.record_count - 1:
        raise CorruptBatchError(
            f"record count mismatch in batch at byte {pos}: {header.record_count} records "
            f"but last offset delta {header.last_offset_delta}"
        )
    return header


def stamp(buf: bytearray | memoryview, base_offset: int, leader_epoch: int, pos: int = 0) -> None:
    """Set the base offset and partition leader epoch in place (the CRC stays valid)."""
    _INT64.pack_into(buf, pos, base_offset)
    _INT32.pack_into(buf, pos + EPOCH_OFFSET, leader_epoch)


def stamped(buf: _Buffer, base_offset: int, leader_epoch: int) -> bytes:
    """A copy of the single batch `buf` with base offset and epoch set."""
    out = bytearray(buf)
    stamp(out, base_offset, leader_epoch)
    return bytes(out)


def stamped_prefix(header: BatchHeader, base_offset: int, leader_epoch: int) -> bytes:
    """The first 16 bytes of the batch once stamped.

    Writing this followed by `batch[16:]` stores the stamped batch without copying it.
    """
    return _PREFIX.pack(base_offset, header.length, leader_epoch)


def _check_range(name: str, value: int, lo: int, hi: int) -> None:
    if not lo <= value <= hi:
        raise ValueError(f"{name} {value} is out of range [{lo}, {hi}]")


def _append_bytes(out: bytearray, data: bytes | bytearray | memoryview | None) -> None:
    if data is None:
        out.append(1)  # zig-zag -1
    else:
        append_varint(out, len(data))
        out += data


def build_batch(
    records: Iterable[RecordInput],
    *,
    compression: Compression = Compression.NONE,
    base_offset: int = 0,
    leader_epoch: int = -1,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    transactional: bool = False,
    control: bool = False,
    timestamp_type: TimestampType | int = TimestampType.CREATE_TIME,
) -> bytes:
    """Encode records as one v2 batch with offsets base_offset, base_offset+1, ...

    Each item is a `Record` (its offset is ignored) or a (key, value, headers,
    timestamp) tuple where a None timestamp means now. The batch's base timestamp is
    the first record's, as in Kafka. Raises ValueError for an empty batch or a field
    out of its wire range, UnsupportedCompressionError for snappy/lz4.

    Uses the compiled codec when it is loaded and the batch is one it writes exactly as
    `build_batch_pure` does (the bytes are the same either way); otherwise, and for
    any error, the pure codec, so errors are always the pure codec's.
    """
    codec = _compiled()
    if codec is not None and not control and not timestamp_type:
        compression = Compression(compression)
        _check_producer_fields(base_offset, leader_epoch, producer_id, producer_epoch, base_sequence)
        items = records if isinstance(records, list | tuple) else list(records)
        out = _build_compiled(
            codec,
            items,
            compression,
            base_offset,
            leader_epoch,
            producer_id,
            producer_epoch,
            base_sequence,
            transactional,
        )
        if out is not None:
            return out
        records = items
    return build_batch_pure(
        records,
        compression=compression,
        base_offset=base_offset,
        leader_epoch=leader_epoch,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        transactional=transactional,
        control=control,
        timestamp_type=timestamp_type,
    )


def _check_producer_fields(
    base_offset: int, leader_epoch: int, producer_id: int, producer_epoch: int, base_sequence: int
) -> None:
    _check_range("base offset", base_offset, INT64_MIN, INT64_MAX)
    _check_range("leader epoch", leader_epoch, INT32_MIN, INT32_MAX)
    _check_range("producer id", producer_id, INT64_MIN, INT64_MAX)
    _check_range("producer epoch", producer_epoch, -(1 << 15), (1 << 15) - 1)
    _check_range("base sequence", base_sequence, INT32_MIN, INT32_MAX)


def build_batch_pure(
    records: Iterable[RecordInput],
    *,
    compression: Compression = Compression.NONE,
    base_offset: int = 0,
    leader_epoch: int = -1,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    transactional: bool = False,
    control: bool = False,
    timestamp_type: TimestampType | int = TimestampType.CREATE_TIME,
) -> bytes:
    """`build_batch` in pure Python: the reference the compiled codec is tested against
    and the codec wherever the compiled one is not loaded or not exact."""
    compression = Compression(compression)
    _check_producer_fields(base_offset, leader_epoch, producer_id, producer_epoch, base_sequence)
    body = bytearray()
    rec = bytearray()
    count = 0
    base_ts = max_ts = 0
    now_ms: int | None = None
    key: bytes | bytearray | memoryview | None
    value: bytes | bytearray | memoryview | None
    headers: Iterable[tuple[str, bytes | None]]
    ts: int | None
    for item in records:
        if isinstance(item, Record):
            key, value, headers, ts = item.key, item.value, item.headers, item.timestamp
        else:
            key, value, headers, ts = item
        if ts is None:
            if now_ms is None:
                now_ms = int(time.time() * 1000)
            ts = now_ms
        _check_range("timestamp", ts, INT64_MIN, INT64_MAX)
        if count == 0:
            base_ts = max_ts = ts
        elif ts > max_ts:
            max_ts = ts
        ts_delta = ts - base_ts
        _check_range("timestamp delta", ts_delta, INT64_MIN, INT64_MAX)
        del rec[:]
        rec.append(0)  # record attributes: unused, always 0
        append_varint(rec, ts_delta)
        append_varint(rec, count)
        _append_bytes(rec, key)
        _append_bytes(rec, value)
        pairs = tuple(headers)
        append_varint(rec, len(pairs))
        for h_key, h_value in pairs:
            _append_bytes(rec, h_key.encode("utf-8"))
            _append_bytes(rec, h_value)
        if len(rec) > INT32_MAX:
            raise ValueError(f"record {count} is larger than an int32 length allows")
        append_varint(body, len(rec))
        body += rec
        count += 1
    if count == 0:
        raise ValueError("a batch holds at least one record")
    _check_range("record count", count, 1, INT32_MAX)
    section = compress(compression, body) if compression is not Compression.NONE else body
    attributes = int(compression)
    if timestamp_type:
        attributes |= TIMESTAMP_TYPE_MASK
    if transactional:
        attributes |= TRANSACTIONAL_MASK
    if control:
        attributes |= CONTROL_MASK
    length = MIN_BATCH_LENGTH + len(section)
    if length > INT32_MAX:
        raise ValueError(f"batch of {length} bytes does not fit an int32 length")
    out = bytearray(HEADER_SIZE)
    HEADER.pack_into(
        out,
        0,
        base_offset,
        length,
        leader_epoch,
        MAGIC,
        0,
        attributes,
        count - 1,
        base_ts,
        max_ts,
        producer_id,
        producer_epoch,
        base_sequence,
        count,
    )
    out += section
    struct.pack_into(">I", out, CRC_OFFSET, crc32c(memoryview(out)[ATTRIBUTES_OFFSET:]))
    return bytes(out)


def _read_bytes(data: bytes, pos: int, end: int, what: str) -> tuple[bytes | None, int]:
    n, pos = read_varint(data, pos, end, 5)
    if n == -1:
        return None, pos
    if n < -1 or pos + n > end:
        raise CorruptBatchError(f"{what} length {n} at byte {pos} is out of range")
    return data[pos : pos + n], pos + n


def decode_records(buf: _Buffer, pos: int = 0) -> list[Record]:
    """Verify and fully decode the batch at `buf[pos:]`.

    Raises CorruptBatchError on any inconsistency (CRC, a bad varint, a record whose
    length disagrees with its fields, a record count that disagrees with the data,
    offset deltas out of order, bytes left over) and never returns partial results.
    Positions in messages are relative to the records section.

    Uses the compiled codec when it is loaded. The records are those
    `decode_records_pure` gives for every batch `validate` accepts; it also reads
    encodings `validate` refuses (a null length other than -1, an int32 varint over 5
    bytes, record attributes other than 0; see docs/segments.md, "Compiled codec"). Otherwise any error, and any batch the
    compiled code cannot be trusted with, goes to the pure codec: its errors.
    """
    codec = _compiled()
    if codec is not None:
        records = _decode_compiled(codec, buf, pos)
        if records is not None:
            return records
    return decode_records_pure(buf, pos)


def decode_rows(cls: type[_Row], prefix: tuple[Any, ...], buf: _Buffer, pos: int = 0) -> list[_Row]:
    """`decode_records`, each record built straight into `cls`, a tuple type laid out
    as `(*prefix, offset, key, value, headers, timestamp)` (a consumer's message type:
    the prefix is its topic and partition), with no `Record` in between: a consumer's
    decoding costs a third less. Same checks, same errors."""
    codec = _compiled()
    if codec is not None:
        rows = _decode_compiled(codec, buf, pos, cls, prefix)
        if rows is not None:
            return rows
    return [_new_record(cls, (*prefix, o, k, v, h, ts)) for o, ts, k, v, h in decode_records_pure(buf, pos)]


def decode_records_pure(buf: _Buffer, pos: int = 0, *, strict: bool = False) -> list[Record]:
    """`decode_records` in pure Python: the reference, and the decoder `validate` falls
    back to, being strict where aiokafka's reader is not. With `strict` (validate), a
    record's attributes byte must be 0: Kafka producers write nothing else, and the
    compiled reader takes the byte as a varint, so another value would read differently
    there."""
    header = verify(buf, pos)
    section = memoryview(buf)[pos + HEADER_SIZE : pos + header.size]
    return _decode_section_pure(header, decompress(header.compression, section), strict)


def _decode_section_pure(header: BatchHeader, data: bytes, strict: bool) -> list[Record]:
    """The records of a verified batch from its records section (decompressed)."""
    end = len(data)
    count = header.record_count
    if count * _MIN_RECORD_SIZE > end:
        raise CorruptBatchError(f"record count mismatch: {count} records cannot fit in {end} bytes of records")
    log_append = header.attributes & TIMESTAMP_TYPE_MASK
    base_offset, base_ts, max_ts = header.base_offset, header.base_timestamp, header.max_timestamp
    records: list[Record] = []
    p = 0
    last_delta = -1
    for i in range(count):
        length, p = read_varint(data, p, end, 5)
        start = p
        stop = p + length
        if length < _MIN_RECORD_SIZE - 1 or stop > end:
            raise CorruptBatchError(f"record {i} length {length} at byte {start} is out of range")
        if strict and data[p]:
            raise CorruptBatchError(f"record {i} has attributes {data[p]:#04x}; record attributes are unused and 0")
        p += 1  # attributes
        ts_delta, p = read_varint(data, p, stop, 10)
        offset_delta, p = read_varint(data, p, stop, 5)
        if offset_delta <= last_delta or offset_delta > header.last_offset_delta:
            raise CorruptBatchError(
                f"record {i} offset delta {offset_delta} is out of order "
                f"(previous {last_delta}, last offset delta {header.last_offset_delta})"
            )
        last_delta = offset_delta
        key, p = _read_bytes(data, p, stop, "key")
        value, p = _read_bytes(data, p, stop, "value")
        n_headers, p = read_varint(data, p, stop, 5)
        if n_headers < 0 or n_headers * 2 > stop - p:
            raise CorruptBatchError(f"record {i} header count {n_headers} is out of range")
        headers = []
        for _ in range(n_headers):
            raw_key, p = _read_bytes(data, p, stop, "header key")
            if raw_key is None:
                raise CorruptBatchError(f"record {i} has a null header key")
            try:
                h_key = raw_key.decode("utf-8")
            except UnicodeDecodeError:
                raise CorruptBatchError(f"record {i} header key is not UTF-8") from None
            h_value, p = _read_bytes(data, p, stop, "header value")
            headers.append((h_key, h_value))
        if p != stop:
            raise CorruptBatchError(f"record {i} length {length} disagrees with its fields ({p - start} bytes)")
        ts = max_ts if log_append else base_ts + ts_delta
        records.append(Record(base_offset + offset_delta, ts, key, value, tuple(headers)))
    if p != end:
        raise CorruptBatchError(f"record count mismatch: {end - p} bytes left after {count} records")
    return records


def validate(
    buf: _Buffer, *, max_records_bytes: int, min_timestamp: int | None = None, max_timestamp: int | None = None
) -> BatchHeader:
    """Check a producer's batch the way Kafka's LogValidator does before it is written:
    one whole batch, CRC, a codec the log can read, records that decompress within
    `max_records_bytes` and decode, offset deltas 0..n-1 with the count to match, create
    times (other than -1, none) within [min_timestamp, max_timestamp], and a max
    timestamp that is the records' own. The bytes are stored as they are, so what
    passes here can always be decoded again (by a consumer, a replica, a scheduler).

    The CRC is computed once and the records decompressed once. With the compiled codec
    loaded, the records are checked in compiled code (`_validate_compiled`): decoded by
    aiokafka's reader and written again by its builder, and accepted only if that gives
    back exactly the bytes sent, which no encoding the pure codec would refuse or read
    otherwise can; anything else (and every error) is decided by the pure codec, so the
    verdict and its message are the pure codec's either way.

    Raises CorruptBatchError, UnsupportedCompressionError or InvalidTimestampError.
    """
    header = verify(buf)
    if header.size != len(buf):
        raise CorruptBatchError(f"{len(buf) - header.size} bytes after the batch; send one batch per request")
    codec = codec_of(header.compression)
    if codec not in (Compression.NONE, Compression.GZIP, Compression.ZSTD):
        raise UnsupportedCompressionError(f"{codec.name} batches are not accepted; use none, gzip or zstd")
    if header.attributes & TIMESTAMP_TYPE_MASK:
        raise InvalidTimestampError("producers send create times; the broker sets LogAppendTime itself")
    if header.is_control:
        return header  # the caller decides who may write control batches
    data: _Buffer = memoryview(buf)[HEADER_SIZE : header.size]
    if codec is not Compression.NONE:
        data = decompress(codec, data, limit=max_records_bytes)  # once; a bomb fails before decoding
    compiled = _compiled()
    if compiled is not None and _validate_compiled(compiled, header, buf, data, min_timestamp, max_timestamp):
        return header
    records = _decode_section_pure(header, bytes(data), strict=True)
    if len(records) != header.last_offset_delta + 1:
        raise CorruptBatchError(f"{len(records)} records but the last offset delta says {header.last_offset_delta + 1}")
    newest = -1
    for i, r in enumerate(records):
        if r.offset - header.base_offset != i:
            raise CorruptBatchError(f"record {i} has offset delta {r.offset - header.base_offset}, not {i}")
        if r.timestamp == -1:
            continue
        if r.timestamp < 0:
            raise InvalidTimestampError(f"record {i} has timestamp {r.timestamp}")
        if min_timestamp is not None and r.timestamp < min_timestamp:
            raise InvalidTimestampError(
                f"record {i} timestamp {r.timestamp} is older than the topic accepts ({min_timestamp})"
            )
        if max_timestamp is not None and r.timestamp > max_timestamp:
            raise InvalidTimestampError(
                f"record {i} timestamp {r.timestamp} is too far in the future "
                f"(the node accepts up to {max_timestamp}); check the producer's clock"
            )
        newest = max(newest, r.timestamp)
    if newest != -1 and newest != header.max_timestamp:
        raise CorruptBatchError(f"max timestamp {header.max_timestamp} is not the records' newest ({newest})")
    return header


def iter_batches(
    buf: _Buffer, *, check_crc: bool = True, allow_partial: bool = False
) -> Iterator[tuple[BatchHeader, memoryview]]:
    """Split a concatenation of batches (a fetch response, a segment) into batches.

    Yields (header, view of the whole batch). A partial batch at the end raises
    TruncatedBatchError after every complete batch was yielded, or, with
    `allow_partial=True`, ends the iteration quietly (a fetch response cut at
    max_bytes by an older broker). `check_crc=False` trusts the bytes (they were
    verified when appended) and only parses headers.
    """
    view = memoryview(buf)
    pos = 0
    total = len(view)
    while pos < total:
        try:
            header = verify(view, pos) if check_crc else parse_header(view, pos)
            if not check_crc and pos + header.size > total:
                raise TruncatedBatchError(
                    f"batch at byte {pos} truncated at byte {total}: {total - pos} of {header.size} bytes present",
                    needed=header.size,
                    available=total - pos,
                )
        except TruncatedBatchError:
            if allow_partial:
                return
            raise
        end = pos + header.size
        yield header, view[pos:end]
        pos = end


# -- the compiled codec --------------------------------------------------------------------------------------

PURE_CODEC_ENV = "TIDEMQ_PURE_CODEC"


class _CompiledCodec(NamedTuple):
    name: str
    builder: Any  # aiokafka's DefaultRecordBatchBuilder (Cython, untyped)
    reader: Any  # aiokafka's DefaultRecordBatch


_chosen: list[_CompiledCodec | None] = []  # [] until the first use chose (None: the pure codec)
_NO_HEADERS: list[tuple[str, bytes | None]] = []  # shared, read only: aiokafka wants a list
_PAD = bytes(16)
_offset_of = itemgetter(0)
_timestamp_of = itemgetter(1)
_row_offset_of, _row_timestamp_of = itemgetter(2), itemgetter(6)
_new_record = tuple.__new__
_attr_offset = attrgetter("offset")  # of aiokafka's records
_attr_timestamp = attrgetter("timestamp")
_attr_key = attrgetter("key")
_attr_value = attrgetter("value")
_attr_headers = attrgetter("headers")
_drain = deque  # deque(iterator, 0) runs an iterator to its end in C
_VALIDATE_CHUNK = 4096  # records decoded and written again at a time (`_validate_compiled`)


def codec_in_use() -> str:
    """Which codec `build_batch` and `decode_records` use now: "pure", or the compiled
    one's name and version. The first call imports the compiled codec (about 0.15 s, all
    of aiokafka's package), so a client calls it at start rather than on its first send."""
    codec = _compiled()
    return "pure" if codec is None else codec.name


def reload_codec() -> str:
    """Choose the codec again, reading TIDEMQ_PURE_CODEC anew (tests switch codecs this
    way); returns `codec_in_use()`."""
    _chosen.clear()
    return codec_in_use()


def _compiled() -> _CompiledCodec | None:
    """The compiled codec, unless TIDEMQ_PURE_CODEC rules it out or it cannot be
    imported. Chosen once: reading the environment costs more than a small batch's build."""
    if not _chosen:
        pure = os.environ.get(PURE_CODEC_ENV, "") not in ("", "0")
        _chosen.append(None if pure else _load_compiled())
    return _chosen[0]


def _load_compiled() -> _CompiledCodec | None:
    """Import aiokafka's Cython record module (never its pure-Python twin, which is
    slower than ours) and refuse it unless it writes and reads a sample batch exactly as
    the pure codec does: a release that changed its format is not used."""
    try:
        from aiokafka.record._crecords.default_records import (  # type: ignore[import-not-found,unused-ignore]
            DefaultRecordBatch,
            DefaultRecordBatchBuilder,
        )
    except ImportError:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        name = f"aiokafka {version('aiokafka')}"
    except PackageNotFoundError:  # pragma: no cover - imported but not installed as a distribution
        name = "aiokafka"
    codec = _CompiledCodec(name, DefaultRecordBatchBuilder, DefaultRecordBatch)
    sample: list[RecordInput] = [
        (b"k", b"v" * 300, (("h", b"x"), ("n", None)), 1_700_000_000_000),
        (None, b"", (), 1_700_000_000_007),
    ]
    want = build_batch_pure(sample, base_offset=5, producer_id=7, producer_epoch=1, base_sequence=3, transactional=True)
    try:
        got = _build_compiled(codec, sample, Compression.NONE, 5, -1, 7, 1, 3, True)
        ok = got == want and _decode_compiled(codec, want, 0) == decode_records_pure(want)
    except Exception:  # noqa: BLE001 - any failure of the self-check means: do not use it
        ok = False
    return codec if ok else None


def _build_compiled(
    codec: _CompiledCodec,
    items: list[RecordInput] | tuple[RecordInput, ...],
    compression: Compression,
    base_offset: int,
    leader_epoch: int,
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
    transactional: bool,
) -> bytes | None:
    """`build_batch` with aiokafka writing the records; None where it would differ.

    What aiokafka does not do as we do, and how this copes: it writes base offset 0 and
    epoch -1 (stamped here, outside the CRC); it reads the time per record (a None
    timestamp becomes the same `now` for the whole batch here, as in the pure codec);
    it takes a first timestamp of -1 for "none yet" (negative timestamps go pure, which
    also rules out int64 overflow of a delta); it wraps an oversized batch length
    (checked); it compresses with its own settings and needs cramjam for zstd (it writes
    the records uncompressed and ours compresses them, as `build_batch_pure` does).
    Headers it wants as a list of (str, bytes) tuples: a list or tuple is handed over,
    anything else goes pure before it is iterated, so the pure codec always sees the
    records unconsumed.
    """
    if not items or compression not in (Compression.NONE, Compression.GZIP, Compression.ZSTD):
        return None
    try:
        if items and type(items[0]) is Record:
            items = [(r.key, r.value, r.headers, r.timestamp) for r in items]  # type: ignore[union-attr]
        builder = codec.builder(
            MAGIC, 0, 1 if transactional else 0, producer_id, producer_epoch, base_sequence, sys.maxsize
        )
        append = builder.append
        now_ms: int | None = None
        for offset, (key, value, headers, ts) in enumerate(items):  # type: ignore[misc]
            if ts is None:
                if now_ms is None:
                    now_ms = int(time.time() * 1000)
                ts = now_ms
            elif ts < 0:
                return None
            if not headers:
                headers = _NO_HEADERS  # whatever empty thing it was, the pure codec writes 0 headers
            elif type(headers) is not list:
                if type(headers) is not tuple:
                    return None
                headers = list(headers)
            append(offset, ts, key, value, headers)
        out: bytearray = builder.build()
    except Exception:  # noqa: BLE001 - the pure codec raises its own error for it
        return None
    length = len(out) - LOG_OVERHEAD
    if length > INT32_MAX:
        return None
    if compression is Compression.NONE:
        _PREFIX.pack_into(out, 0, base_offset, length, leader_epoch)
        return bytes(out)
    section = compress(compression, memoryview(out)[HEADER_SIZE:])
    length = MIN_BATCH_LENGTH + len(section)
    if length > INT32_MAX:
        return None
    fields = HEADER.unpack_from(out)
    head = bytearray(HEADER_SIZE)
    HEADER.pack_into(head, 0, base_offset, length, leader_epoch, MAGIC, 0, fields[5] | compression, *fields[6:])
    head += section
    struct.pack_into(">I", head, CRC_OFFSET, crc32c(memoryview(head)[ATTRIBUTES_OFFSET:]))
    return bytes(head)


def _decode_compiled(
    codec: _CompiledCodec, buf: _Buffer, pos: int, cls: type = Record, prefix: tuple[Any, ...] = ()
) -> list[Any] | None:
    """`decode_records` with aiokafka reading the records; None where it may differ.

    Our `verify` runs first (aiokafka checks no CRC unless asked). aiokafka reads
    varints without a bound, trusting a zero byte to end them: it gets a copy of the
    batch followed by 16 zero bytes it is not told about, so a malformed batch cannot
    make it read past memory we own. It does not check offset deltas (checked here:
    exactly 0..n-1, which is all `verify` and the pure decoder allow) and adds the base
    timestamp to a delta in int64 (a negative base timestamp or a negative result goes
    pure, which rules out a wrapped sum). It decompresses with its own codecs (ours
    decompress here, and it gets the records uncompressed). Any exception: pure.
    """
    header = verify(buf, pos)  # the pure decoder's first step: its errors are the same
    view = memoryview(buf)
    end = pos + header.size
    try:
        if header.attributes & COMPRESSION_MASK:
            data = decompress(header.compression, view[pos + HEADER_SIZE : end])
            head = bytearray(view[pos : pos + HEADER_SIZE])
            head[ATTRIBUTES_OFFSET + 1] &= 0xFF ^ COMPRESSION_MASK
            whole = b"".join((head, data, _PAD))
        else:
            whole = b"".join((view[pos:end], _PAD))
        reader = codec.reader(memoryview(whole)[: len(whole) - len(_PAD)])
        if cls is Record:
            records = [_new_record(Record, (r.offset, r.timestamp, r.key, r.value, tuple(r.headers))) for r in reader]
            offset_of, timestamp_of = _offset_of, _timestamp_of
        elif len(prefix) == 2:  # decode_rows of a (topic, partition, ...) row: unpacked by hand, faster
            h0, h1 = prefix
            records = [
                _new_record(cls, (h0, h1, r.offset, r.key, r.value, tuple(r.headers), r.timestamp)) for r in reader
            ]
            offset_of, timestamp_of = _row_offset_of, _row_timestamp_of
        else:  # decode_rows
            records = [
                _new_record(cls, (*prefix, r.offset, r.key, r.value, tuple(r.headers), r.timestamp)) for r in reader
            ]
            offset_of, timestamp_of = itemgetter(len(prefix)), itemgetter(len(prefix) + 4)
    except Exception:  # noqa: BLE001 - the pure codec raises its own error for it
        return None
    base = header.base_offset
    if list(map(offset_of, records)) != list(range(base, base + len(records))):
        return None
    if not header.attributes & TIMESTAMP_TYPE_MASK and (
        header.base_timestamp < 0 or min(map(timestamp_of, records)) < 0
    ):
        return None
    return records


def _validate_compiled(
    codec: _CompiledCodec,
    header: BatchHeader,
    buf: _Buffer,
    data: _Buffer,
    min_timestamp: int | None,
    max_timestamp: int | None,
) -> bool:
    """`validate`'s record checks in compiled code: True if the batch (verified, its
    records section `data` decompressed) passes them; False if it may not, and the pure
    codec must decide (and name the error).

    aiokafka's reader decodes the records (past the end of what it is given it finds 16
    zero bytes, as in `_decode_compiled`), and its builder writes them again: the
    batch passes only if that gives back exactly the records section sent. The builder
    writes what `build_batch_pure` writes, byte for byte (checked when the codec loads),
    so the section is then the canonical encoding of those records: record attributes
    0, every null as -1, every varint as short as it can be. Those are the encodings
    the pure codec reads as aiokafka does, so the strict pure decoder would give these
    records too, and the checks left (offset deltas 0..n-1, timestamps, the max
    timestamp) run on them as `validate` runs them. A batch that is valid but written
    otherwise (a varint with needless bytes, a first record whose time is not the base
    timestamp, a timestamp of -1, a negative base timestamp) goes to the pure codec.

    Every record is handled in compiled code: the reader and `map` over the builder's
    `append`; Python runs per chunk of `_VALIDATE_CHUNK` records, not per record, and
    only a chunk's records are alive at a time.
    """
    base_ts = header.base_timestamp
    if base_ts < 0:  # aiokafka adds base and delta in int64: with a base >= 0 a wrapped sum is negative
        return False
    count = header.record_count
    try:
        if header.attributes & COMPRESSION_MASK:
            head = bytearray(memoryview(buf)[:HEADER_SIZE])
            head[ATTRIBUTES_OFFSET + 1] &= 0xFF ^ COMPRESSION_MASK
            whole = b"".join((head, data, _PAD))
        else:
            whole = b"".join((buf, _PAD))
        reader = iter(codec.reader(memoryview(whole)[: len(whole) - len(_PAD)]))
        records = iter(reader.__next__, None)  # (islice calls iter() each time: the reader's refuses a second)
        builder = codec.builder(MAGIC, 0, 0, -1, -1, -1, sys.maxsize)
        append = builder.append
        base = header.base_offset
        done = 0
        oldest, newest = INT64_MAX, INT64_MIN
        # A chunk at a time: a batch of millions of tiny records never has them all alive.
        # (Never asked for more than `count`: an exhausted reader starts over.)
        while done < count:
            chunk = list(islice(records, min(_VALIDATE_CHUNK, count - done)))
            n = len(chunk)
            if list(map(_attr_offset, chunk)) != list(range(base + done, base + done + n)):
                return False
            times = list(map(_attr_timestamp, chunk))
            oldest, newest = min(oldest, min(times)), max(newest, max(times))
            keys, values, headers = map(_attr_key, chunk), map(_attr_value, chunk), map(_attr_headers, chunk)
            _drain(map(append, range(done, done + n), times, keys, values, headers), 0)
            done += n
        if oldest < 0 or newest != header.max_timestamp:
            return False
        if (min_timestamp is not None and oldest < min_timestamp) or (
            max_timestamp is not None and newest > max_timestamp
        ):
            return False
        out: bytearray = builder.build()
    except Exception:  # noqa: BLE001 - the pure codec decides, with its own error
        return False
    return len(out) == HEADER_SIZE + len(data) and out[HEADER_SIZE:] == data
