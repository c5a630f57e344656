"""RecordBatch v2 codec: round trips, Kafka compatibility both ways, typed errors.

Every test here runs twice: with the compiled codec (when aiokafka is installed) and
with TIDEMQ_PURE_CODEC=1; test_codec.py holds the two to each other.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from segments.batch import (
    ATTRIBUTES_OFFSET,
    HEADER_SIZE,
    PURE_CODEC_ENV,
    Record,
    TimestampType,
    build_batch,
    decode_records,
    iter_batches,
    parse_header,
    reload_codec,
    stamp,
    stamped,
    stamped_prefix,
    validate,
    verify,
)
from segments.compression import Compression
from segments.errors import CorruptBatchError, InvalidTimestampError, TruncatedBatchError, UnsupportedCompressionError
from segments.varint import append_varint, read_varint, size_of_varint

from .helpers import make_batch, recrc

INT64 = st.integers(-(1 << 63), (1 << 63) - 1)
INT32 = st.integers(-(1 << 31), (1 << 31) - 1)
maybe_bytes = st.none() | st.binary(max_size=40)
headers = st.lists(st.tuples(st.text(max_size=8), maybe_bytes), max_size=3).map(tuple)
CODECS = st.sampled_from([Compression.NONE, Compression.GZIP, Compression.ZSTD])


@pytest.fixture(scope="module", autouse=True, params=["compiled", "pure"])
def codec(request):
    """The codec build_batch and decode_records use for this module's run."""
    with pytest.MonkeyPatch.context() as mp:
        if request.param == "pure":
            mp.setenv(PURE_CODEC_ENV, "1")
        else:
            mp.delenv(PURE_CODEC_ENV, raising=False)
        assert (reload_codec() == "pure") == (request.param == "pure")
        yield request.param
    reload_codec()


@st.composite
def batches(draw):
    n = draw(st.integers(1, 8))
    base_ts = draw(st.integers(-(1 << 40), 1 << 40))
    recs = [
        (draw(maybe_bytes), draw(maybe_bytes), draw(headers), base_ts + draw(st.integers(-(1 << 30), 1 << 30)))
        for _ in range(n)
    ]
    kwargs = dict(
        compression=draw(CODECS),
        base_offset=draw(st.integers(0, (1 << 62))),
        leader_epoch=draw(INT32),
        producer_id=draw(INT64),
        producer_epoch=draw(st.integers(-(1 << 15), (1 << 15) - 1)),
        base_sequence=draw(INT32),
        transactional=draw(st.booleans()),
    )
    return recs, kwargs


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_build_then_decode_is_exact_inverse(case):
    recs, kwargs = case
    buf = build_batch(recs, **kwargs)
    header = verify(buf)
    assert header.size == len(buf)
    assert header.base_offset == kwargs["base_offset"]
    assert header.leader_epoch == kwargs["leader_epoch"]
    assert header.producer_id == kwargs["producer_id"]
    assert header.producer_epoch == kwargs["producer_epoch"]
    assert header.base_sequence == kwargs["base_sequence"]
    assert header.is_transactional == kwargs["transactional"]
    assert header.compression == kwargs["compression"]
    assert header.record_count == len(recs)
    assert header.base_timestamp == recs[0][3]
    assert header.max_timestamp == max(r[3] for r in recs)
    assert header.last_offset == kwargs["base_offset"] + len(recs) - 1
    expected = [Record(kwargs["base_offset"] + i, ts, k, v, h) for i, (k, v, h, ts) in enumerate(recs)]
    assert decode_records(buf) == expected
    # Records themselves are accepted as input (their offsets are ignored).
    assert build_batch(expected, **kwargs) == buf


@settings(max_examples=60, deadline=None)
@given(batches())
def test_kafka_python_parses_what_we_build(case):
    recs, kwargs = case
    buf = build_batch(recs, **kwargs)
    kb = DefaultRecordBatch(buf)
    assert kb.validate_crc()
    assert kb.base_offset == kwargs["base_offset"]
    assert kb.producer_id == kwargs["producer_id"]
    assert (kb.producer_epoch, kb.base_sequence) == (kwargs["producer_epoch"], kwargs["base_sequence"])
    assert (kb.first_timestamp, kb.max_timestamp) == (recs[0][3], max(r[3] for r in recs))
    assert kb.leader_epoch == kwargs["leader_epoch"] and kb.compression_type == kwargs["compression"]
    assert kb.is_transactional == kwargs["transactional"]
    got = [(r.offset, r.timestamp, r.key, r.value, tuple(r.headers)) for r in kb]
    assert got == [(kwargs["base_offset"] + i, ts, k, v, h) for i, (k, v, h, ts) in enumerate(recs)]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(maybe_bytes, maybe_bytes, headers, st.integers(0, 1 << 41)), min_size=1, max_size=8),
    st.sampled_from([0, 1, 4]),
    st.booleans(),
)
def test_we_parse_what_kafka_python_builds(recs, codec, transactional):
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=codec,
        is_transactional=transactional,
        producer_id=7 if transactional else -1,
        producer_epoch=1 if transactional else -1,
        base_sequence=0 if transactional else -1,
        batch_size=1 << 20,
    )
    for i, (k, v, h, ts) in enumerate(recs):
        assert builder.append(i, ts, k, v, list(h)) is not None
    buf = bytes(builder.build())
    header = verify(buf)
    kafka_view = DefaultRecordBatch(buf)
    assert header.is_transactional == transactional
    assert (header.base_timestamp, header.max_timestamp) == (recs[0][3], max(r[3] for r in recs))
    assert (header.crc, header.last_offset, header.producer_id) == (
        kafka_view.crc,
        kafka_view.last_offset,
        kafka_view.producer_id,
    )
    assert decode_records(buf) == [Record(i, ts, k, v, h) for i, (k, v, h, ts) in enumerate(recs)]


def test_kafka_python_compresses_and_we_decompress():
    # Compressible data so kafka-python really keeps the codec.
    for codec in (Compression.GZIP, Compression.ZSTD):
        builder = DefaultRecordBatchBuilder(2, int(codec), False, -1, -1, -1, 1 << 20)
        for i in range(20):
            builder.append(i, 1000 + i, b"key", b"x" * 500, [("h", None)])
        buf = bytes(builder.build())
        assert parse_header(buf).compression == codec
        records = decode_records(buf)
        assert [r.offset for r in records] == list(range(20))
        assert all(r.value == b"x" * 500 and r.headers == (("h", None),) for r in records)


def test_compressed_batch_is_smaller_and_kafka_reads_it():
    recs = [(b"k", b"y" * 1000, (), 5) for _ in range(10)]
    plain = build_batch(recs)
    for codec in (Compression.GZIP, Compression.ZSTD):
        buf = build_batch(recs, compression=codec)
        assert len(buf) < len(plain) // 5
        assert [r.value for r in DefaultRecordBatch(buf)] == [b"y" * 1000] * 10


def test_log_append_time_reports_max_timestamp():
    buf = build_batch(
        [(None, b"a", (), 10), (None, b"b", (), 30), (None, b"c", (), 20)], timestamp_type=TimestampType.LOG_APPEND_TIME
    )
    header = verify(buf)
    assert header.timestamp_type is TimestampType.LOG_APPEND_TIME
    assert [r.timestamp for r in decode_records(buf)] == [30, 30, 30]


def test_none_timestamp_means_now():
    import time

    before = int(time.time() * 1000)
    records = decode_records(build_batch([(None, b"v", (), None)]))
    assert before <= records[0].timestamp <= int(time.time() * 1000)


def test_build_rejects_empty_and_out_of_range():
    with pytest.raises(ValueError, match="at least one record"):
        build_batch([])
    with pytest.raises(ValueError, match="producer epoch"):
        build_batch([(None, b"v", (), 0)], producer_epoch=1 << 15)
    with pytest.raises(ValueError, match="timestamp delta"):
        build_batch([(None, b"v", (), -(1 << 63)), (None, b"v", (), (1 << 63) - 1)])


def test_snappy_and_lz4_are_unsupported_but_storable():
    with pytest.raises(UnsupportedCompressionError, match="SNAPPY"):
        build_batch([(None, b"v", (), 0)], compression=Compression.SNAPPY)
    # A valid LZ4 batch from elsewhere: verify passes (the broker stores it), decoding says why not.
    buf = bytearray(build_batch([(None, b"v", (), 0)]))
    struct.pack_into(">h", buf, 21, int(Compression.LZ4))
    buf = recrc(buf)
    assert verify(buf).compression is Compression.LZ4
    with pytest.raises(UnsupportedCompressionError, match="LZ4"):
        decode_records(buf)


# -- stamping ---------------------------------------------------------------------------


def test_stamp_keeps_crc_valid():
    buf = make_batch()
    out = bytearray(buf)
    stamp(out, 1234, 9)
    header = verify(out)
    assert (header.base_offset, header.leader_epoch, header.crc) == (1234, 9, verify(buf).crc)
    assert stamped(buf, 1234, 9) == bytes(out)
    assert stamped_prefix(verify(buf), 1234, 9) + buf[16:] == bytes(out)
    assert [r.offset for r in decode_records(out)] == [1234, 1235, 1236]


# -- corruption ---------------------------------------------------------------------------

UNCOVERED = set(range(0, 8)) | set(range(12, 16))  # base offset, leader epoch


@settings(max_examples=200, deadline=None)
@given(st.data(), CODECS)
def test_any_flipped_byte_is_caught_unless_crc_does_not_cover_it(data, codec):
    buf = build_batch([(b"key", b"value" * 20, (("h", b"1"),), 77)] * 3, compression=codec)
    i = data.draw(st.integers(0, len(buf) - 1))
    flip = data.draw(st.integers(1, 255))
    bad = bytearray(buf)
    bad[i] ^= flip
    if i in UNCOVERED:
        header = verify(bad)
        assert header.base_offset != verify(buf).base_offset or header.leader_epoch != verify(buf).leader_epoch
        assert len(decode_records(bad)) == 3
    else:
        with pytest.raises(CorruptBatchError):
            decode_records(bad)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_any_cut_raises_truncated(data):
    buf = make_batch(5)
    cut = data.draw(st.integers(0, len(buf) - 1))
    with pytest.raises(TruncatedBatchError) as err:
        verify(buf[:cut])
    assert err.value.available == cut
    with pytest.raises(TruncatedBatchError):
        decode_records(buf[:cut])


def test_error_messages_say_what_is_wrong():
    buf = make_batch()
    bad = bytearray(buf)
    bad[16] = 1
    with pytest.raises(CorruptBatchError, match="bad magic 1"):
        verify(bad)
    bad = bytearray(buf)
    bad[-1] ^= 0xFF
    with pytest.raises(CorruptBatchError, match=r"CRC mismatch .* header says 0x[0-9a-f]{8}, data gives 0x[0-9a-f]{8}"):
        verify(bad)
    bad = bytearray(buf)
    struct.pack_into(">i", bad, 8, 10)
    with pytest.raises(CorruptBatchError, match="batch length 10 .* out of range"):
        parse_header(bad)
    with pytest.raises(TruncatedBatchError, match="header truncated at byte 30"):
        parse_header(buf[:30])
    bad = bytearray(buf)
    struct.pack_into(">h", bad, 21, 6)
    with pytest.raises(CorruptBatchError, match="unknown compression codec 6"):
        verify(recrc(bad))
    bad = bytearray(buf)
    struct.pack_into(">i", bad, 23, 5)  # lastOffsetDelta 5 with 3 records
    with pytest.raises(CorruptBatchError, match="record count mismatch"):
        verify(recrc(bad))


def _records_section_batch(section: bytes, count: int) -> bytes:
    """A batch header around a hand-made records section, CRC made valid."""
    header = bytearray(make_batch(1)[:HEADER_SIZE])
    struct.pack_into(">i", header, 8, HEADER_SIZE - 12 + len(section))
    struct.pack_into(">i", header, 23, count - 1)
    struct.pack_into(">i", header, 57, count)
    return recrc(bytes(header) + section)


def _record(offset_delta: int = 0, key: bytes | None = b"k", value: bytes = b"v", extra: bytes = b"") -> bytes:
    body = bytearray([0])
    append_varint(body, 0)
    append_varint(body, offset_delta)
    append_varint(body, len(key))
    body += key
    append_varint(body, len(value))
    body += value
    append_varint(body, 0)
    body += extra
    out = bytearray()
    append_varint(out, len(body))
    return bytes(out + body)


def test_well_formed_section_decodes():
    buf = _records_section_batch(_record(0) + _record(1), 2)
    assert [r.offset for r in decode_records(buf)] == [0, 1]


@pytest.mark.parametrize(
    "section,count,message",
    [
        (_record(0), 2, "record count mismatch"),
        (_record(0) + _record(1) + b"\x00", 2, "record count mismatch: 1 bytes left"),
        (_record(0) + _record(0), 2, "offset delta 0 is out of order"),
        (_record(0, extra=b"\x00"), 1, "length 9 disagrees with its fields"),
        (b"\xff" * 12, 1, "bad varint at byte 0: longer than 5 bytes"),
        (_record(0)[:-3] + b"\x80\x80\x80", 1, "bad varint"),
        (b"\x0e\x00\x00\x00\x0b" + b"k" * 8 + b"\x00", 1, "key length -6"),
    ],
)
def test_corrupt_records_under_valid_crc_raise(section, count, message):
    with pytest.raises(CorruptBatchError, match=message):
        decode_records(_records_section_batch(section, count))


def test_corrupt_compressed_section_raises():
    buf = build_batch([(None, b"z" * 300, (), 1)], compression=Compression.GZIP)
    bad = bytearray(buf)
    bad[HEADER_SIZE + 12] ^= 0xFF
    with pytest.raises(CorruptBatchError, match="gzip"):
        decode_records(recrc(bad))
    buf = build_batch([(None, b"z" * 300, (), 1)], compression=Compression.ZSTD)
    bad = bytearray(buf)
    bad[HEADER_SIZE] ^= 0xFF  # the zstd frame's magic number
    with pytest.raises(CorruptBatchError, match="zstd"):
        decode_records(recrc(bad))


# -- splitting concatenations --------------------------------------------------------------


def test_iter_batches_splits_and_reports_partial_tail():
    parts = [stamped(make_batch(i + 1), 10 * i, 1) for i in range(3)]
    whole = b"".join(parts)
    got = [(h.base_offset, bytes(v)) for h, v in iter_batches(whole)]
    assert got == [(10 * i, p) for i, p in enumerate(parts)]
    cut = whole[:-5]
    seen = []
    with pytest.raises(TruncatedBatchError) as err:
        for h, _ in iter_batches(cut):
            seen.append(h.base_offset)
    assert seen == [0, 10]
    assert err.value.needed == len(parts[2])
    assert [h.base_offset for h, _ in iter_batches(cut, allow_partial=True)] == [0, 10]
    assert [h.base_offset for h, _ in iter_batches(cut, check_crc=False, allow_partial=True)] == [0, 10]
    with pytest.raises(TruncatedBatchError):
        list(iter_batches(cut, check_crc=False))
    bad = bytearray(whole)
    bad[len(parts[0]) + 40] ^= 1
    with pytest.raises(CorruptBatchError, match="CRC mismatch in batch at byte"):
        list(iter_batches(bad))
    assert list(iter_batches(b"")) == []


# -- varints ----------------------------------------------------------------------------------


@given(INT64)
def test_varint_round_trip(value):
    out = bytearray()
    append_varint(out, value)
    assert len(out) == size_of_varint(value)
    assert read_varint(out, 0, len(out), 10) == (value, len(out))


def test_varint_limits():
    out = bytearray()
    append_varint(out, 1 << 31)
    with pytest.raises(CorruptBatchError, match="does not fit an int32"):
        read_varint(out, 0, len(out), 5)
    with pytest.raises(CorruptBatchError, match="does not fit an int64"):
        read_varint(b"\xff" * 9 + b"\x7f", 0, 10, 10)
    with pytest.raises(CorruptBatchError, match="ends inside a varint at byte 2"):
        read_varint(b"\x00\x00\x80", 2, 3, 5)


# -- validate: a producer's batch before it goes into the log -------------------------------


def _recs(n, ts=1_700_000_000_000):
    return [(b"k%d" % i, b"v%d" % i, (), ts + i) for i in range(n)]


def test_validate_accepts_what_build_batch_makes():
    for codec in (Compression.NONE, Compression.GZIP, Compression.ZSTD):
        data = build_batch(_recs(5), compression=codec)
        h = validate(data, max_records_bytes=1 << 20, min_timestamp=0, max_timestamp=1 << 60)
        assert h.record_count == 5


def test_validate_refuses_garbage_records_with_a_valid_crc():
    good = bytearray(build_batch(_recs(3)))
    good[HEADER_SIZE] = 0x7F  # the first record's length
    garbage = recrc(good)
    verify(garbage)  # the CRC is fine...
    with pytest.raises(CorruptBatchError):
        validate(garbage, max_records_bytes=1 << 20)  # ...the records are not


def test_validate_refuses_codecs_it_cannot_read_and_log_append_time():
    data = bytearray(build_batch(_recs(1)))
    for attrs, err in ((int(Compression.LZ4), UnsupportedCompressionError), (0x08, InvalidTimestampError)):
        b = bytearray(data)
        b[ATTRIBUTES_OFFSET : ATTRIBUTES_OFFSET + 2] = attrs.to_bytes(2, "big")
        with pytest.raises(err):
            validate(recrc(b), max_records_bytes=1 << 20)


def test_validate_bounds_the_decompressed_size():
    bomb = build_batch([(None, bytes(4 << 20), (), 1)], compression=Compression.GZIP)
    assert len(bomb) < 64 * 1024
    with pytest.raises(CorruptBatchError, match="more than"):
        validate(bomb, max_records_bytes=1 << 20)
    zbomb = build_batch([(None, bytes(4 << 20), (), 1)], compression=Compression.ZSTD)
    with pytest.raises(CorruptBatchError, match="more than"):
        validate(zbomb, max_records_bytes=1 << 20)


def test_validate_checks_timestamps_against_the_window():
    data = build_batch(_recs(2, ts=5_000))
    validate(data, max_records_bytes=1 << 20, min_timestamp=1_000, max_timestamp=10_000)
    with pytest.raises(InvalidTimestampError, match="future"):
        validate(data, max_records_bytes=1 << 20, max_timestamp=5_000)
    with pytest.raises(InvalidTimestampError, match="older"):
        validate(data, max_records_bytes=1 << 20, min_timestamp=5_001)
    year_9999 = build_batch([(None, b"x", (), 253_402_300_799_000)])
    with pytest.raises(InvalidTimestampError):
        validate(year_9999, max_records_bytes=1 << 20, max_timestamp=10_000)


def test_validate_refuses_trailing_bytes():
    data = build_batch(_recs(1))
    with pytest.raises(CorruptBatchError, match="after the batch"):
        validate(data + b"\0", max_records_bytes=1 << 20)
