"""The compiled record codec (aiokafka's Cython module) held to the pure one.

build_batch must give the bytes build_batch_pure gives, decode_records the records
decode_records_pure gives, and both the same errors; where the compiled codec is ruled
out (TIDEMQ_PURE_CODEC=1) or missing, the pure codec does the work. The two places where
the compiled decoder reads what the pure one refuses are pinned here as well, so a
change on either side shows up (docs/segments.md, "Compiled codec").
"""

from __future__ import annotations

import struct
import subprocess
import sys
import time
from typing import NamedTuple
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segments import batch
from segments.batch import (
    ATTRIBUTES_OFFSET,
    HEADER_SIZE,
    PURE_CODEC_ENV,
    Record,
    TimestampType,
    build_batch,
    build_batch_pure,
    codec_in_use,
    decode_records,
    decode_records_pure,
    decode_rows,
    reload_codec,
    validate,
)
from segments.compression import Compression, compress
from segments.errors import CorruptBatchError
from segments.varint import INT64_MAX, append_varint, read_varint

from .helpers import recrc

INT64 = st.integers(-(1 << 63), (1 << 63) - 1)
INT32 = st.integers(-(1 << 31), (1 << 31) - 1)
NOW_MS = 1_733_000_000_123

payloads = st.one_of(
    st.none(),
    st.binary(max_size=48),
    st.binary(min_size=1000, max_size=4000),
    st.binary(max_size=48).map(bytearray),
    st.binary(max_size=48).map(memoryview),
)
header_lists = st.lists(st.tuples(st.text(max_size=8), st.none() | st.binary(max_size=24)), max_size=3)
headers = header_lists.map(tuple) | header_lists
timestamps = st.one_of(
    st.none(),
    st.integers(0, 1 << 45),
    st.just(-1),
    st.integers(-(1 << 45), 1 << 45),
    INT64,
    st.sampled_from([INT64_MAX, -(1 << 63), (1 << 63), -(1 << 63) - 1]),  # the edges, and one past each
)


@st.composite
def cases(draw):
    """(records, keyword arguments of build_batch): every knob the format has."""
    recs = draw(st.lists(st.tuples(payloads, payloads, headers, timestamps), min_size=1, max_size=12))
    if draw(st.booleans()):
        ts = draw(st.integers(0, 1 << 45))
        recs = [(k, v, h, ts + i) for i, (k, v, h, _) in enumerate(recs)]  # the usual shape
    kwargs = dict(
        compression=draw(st.sampled_from([Compression.NONE, Compression.GZIP, Compression.ZSTD])),
        base_offset=draw(st.integers(0, 1 << 40) | INT64),
        leader_epoch=draw(st.just(-1) | INT32),
        producer_id=draw(st.just(-1) | INT64),
        producer_epoch=draw(st.just(-1) | st.integers(-(1 << 15), (1 << 15) - 1)),
        base_sequence=draw(st.just(-1) | INT32),
        transactional=draw(st.booleans()),
        control=draw(st.booleans()) and draw(st.booleans()),
        timestamp_type=draw(st.sampled_from([TimestampType.CREATE_TIME] * 3 + [TimestampType.LOG_APPEND_TIME])),
    )
    if draw(st.booleans()):
        recs = [Record(0, ts, k, v, tuple(h)) for k, v, h, ts in recs]  # type: ignore[misc]
    return recs, kwargs


def outcome(fn, *args, **kwargs):
    """What a call gives: ("ok", value) or ("error", type, message)."""
    try:
        return ("ok", fn(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001 - the comparison is the point
        return ("error", type(exc), str(exc))


def stamps(recs) -> list[int | None]:
    return [r.timestamp if isinstance(r, Record) else r[3] for r in recs]


class Row(NamedTuple):
    """A consumer's message layout, for `decode_rows`."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple
    timestamp: int


class Row3(NamedTuple):
    topic: str
    partition: int
    extra: str
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple
    timestamp: int


@pytest.fixture(autouse=True)
def compiled_on(monkeypatch):
    """These tests choose the codec themselves, whatever the environment says."""
    monkeypatch.delenv(PURE_CODEC_ENV, raising=False)
    reload_codec()
    yield
    monkeypatch.undo()
    reload_codec()


def test_compiled_codec_is_loaded():
    # aiokafka is a dependency: on a supported platform the compiled codec must load
    # (and pass its self-check), or every other test here compares the pure codec with itself.
    assert codec_in_use().startswith("aiokafka 0.14")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(cases())
def test_build_is_byte_identical_and_decode_value_identical(case):
    recs, kwargs = case
    with mock.patch.object(time, "time", return_value=NOW_MS / 1000):
        want = outcome(build_batch_pure, recs, **kwargs)
        got = outcome(build_batch, recs, **kwargs)
        ts = [NOW_MS if t is None else t for t in stamps(recs)]
        ordinary = not kwargs["control"] and not kwargs["timestamp_type"] and all(0 <= t <= INT64_MAX for t in ts)
        if ordinary:
            # These are the compiled codec's to build: prove it did, by taking the pure one away.
            with mock.patch.object(batch, "build_batch_pure", side_effect=AssertionError("pure codec used")):
                assert build_batch(recs, **kwargs) == want[1]
    assert got == want
    if want[0] == "error":
        return
    buf = want[1]
    assert decode_records(buf) == decode_records_pure(buf)
    rows = [Row("t", 7, o, k, v, h, t) for o, t, k, v, h in decode_records_pure(buf)]
    assert decode_rows(Row, ("t", 7), buf) == rows
    assert decode_rows(Row3, ("t", 7, "x"), buf) == [Row3(*r[:2], "x", *r[2:]) for r in rows]
    n = len(recs)
    trusted_times = kwargs["timestamp_type"] or all(t >= 0 for t in ts)
    if trusted_times and kwargs["base_offset"] + n - 1 <= INT64_MAX:
        with mock.patch.object(batch, "decode_records_pure", side_effect=AssertionError("pure codec used")):
            records = decode_records(buf)
        assert all(type(r) is Record and type(r.headers) is tuple for r in records)
        assert all(type(h) is tuple for r in records for h in r.headers)


def record_attributes_bytes(section: bytes) -> list[int]:
    """The attributes byte of each record, walking the section as the pure codec does."""
    out, p = [], 0
    while p < len(section):
        length, p = read_varint(section, p, len(section), 5)
        out.append(section[p])
        p += length
    return out


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(st.none() | st.binary(max_size=80), st.binary(max_size=80), header_lists), min_size=1, max_size=5
    ),
    st.data(),
)
def test_a_damaged_batch_gets_the_pure_codecs_answer(recs, data):
    # A batch changed past its CRC (the CRC then fixed): whatever the pure codec reads, the
    # compiled one reads the same; whatever error the compiled one gives is the pure one's.
    # The one known exception (a record attributes byte >= 0x80) is kept out and pinned below.
    good = build_batch_pure([(k, v, h, 1_000 + i) for i, (k, v, h) in enumerate(recs)])
    damaged = bytearray(good)
    for _ in range(data.draw(st.integers(1, 3))):
        damaged[data.draw(st.integers(HEADER_SIZE, len(good) - 1))] = data.draw(st.integers(0, 255))
    damaged = recrc(damaged)
    want = outcome(decode_records_pure, damaged)
    got = outcome(decode_records, damaged)
    as_rows = outcome(decode_rows, Row, ("t", 7), damaged)
    assert as_rows == (got if got[0] == "error" else ("ok", [Row("t", 7, o, k, v, h, t) for o, t, k, v, h in got[1]]))
    if want[0] == "ok":
        if all(a < 0x80 for a in record_attributes_bytes(damaged[HEADER_SIZE:])):
            assert got == want
    elif got[0] == "error":
        assert got == want
    else:
        assert want[1] is CorruptBatchError  # read by the compiled codec only: see the pinned cases


def test_negative_null_length_is_read_by_the_compiled_codec_only():
    # aiokafka takes any negative length for null; Kafka and the pure codec only -1. The
    # broker's validate (pure) refuses such a batch, so no log holds one.
    good = build_batch_pure([(None, b"v", (), 1_000)])
    section = bytearray(good[HEADER_SIZE:])
    assert section[4] == 0x01  # length, attributes, ts delta, offset delta, then key length -1
    section[4] = 0x03  # -2
    odd = recrc(good[:HEADER_SIZE] + bytes(section))
    with pytest.raises(CorruptBatchError, match="key length -2"):
        decode_records_pure(odd)
    with pytest.raises(CorruptBatchError, match="key length -2"):
        validate(odd, max_records_bytes=1 << 20)
    assert decode_records(odd) == [Record(0, 1_000, None, b"v", ())]


def test_overlong_varint_is_read_by_the_compiled_codec_only():
    # A key length of 1 in six varint bytes: Kafka's int32 varint has at most five. The
    # pure codec (and so validate) refuses it; aiokafka reads up to ten for any field.
    rec = bytes([0x00, 0x00, 0x00, 0x82, 0x80, 0x80, 0x80, 0x80, 0x00]) + b"k" + bytes([0x02]) + b"v" + bytes([0x00])
    section = bytearray()
    append_varint(section, len(rec))
    section += rec
    head = bytearray(build_batch_pure([(b"k", b"v", (), 1_000)])[:HEADER_SIZE])
    struct.pack_into(">i", head, 8, HEADER_SIZE - 12 + len(section))
    odd = recrc(bytes(head) + bytes(section))
    with pytest.raises(CorruptBatchError, match="longer than 5 bytes"):
        validate(odd, max_records_bytes=1 << 20)
    assert decode_records(odd) == [Record(0, 1_000, b"k", b"v", ())]


def test_record_attributes_high_bit_is_read_two_ways_so_validate_refuses_it():
    # Kafka and the pure codec read a record's attributes as one (unused) byte; aiokafka
    # reads a varint, so a crafted record with attributes 0x80 parses differently and
    # still consistently. validate refuses any attributes other than 0, so no log holds
    # a record the two codecs (or a Java client) would read apart.
    value = b"VALUE"
    rec = bytearray([0x80, 0x00, 0x00, 0x00])  # attributes, ts delta 0, offset delta 0, key b""
    append_varint(rec, len(value))
    rec += value
    rec += bytes([0x02, 0x00, 0x00])  # one header: key "", value b""
    section = bytearray()
    append_varint(section, len(rec))
    section += rec
    template = build_batch_pure([(b"", value, (("", b""),), 1_000)])
    head = bytearray(template[:HEADER_SIZE])
    struct.pack_into(">i", head, 8, HEADER_SIZE - 12 + len(section))
    crafted = recrc(bytes(head) + bytes(section))
    with pytest.raises(CorruptBatchError, match="attributes 0x80"):
        validate(crafted, max_records_bytes=1 << 20)
    assert decode_records_pure(crafted) == [Record(0, 1_000, b"", value, (("", b""),))]
    assert decode_records(crafted) == [Record(0, 1_000, value, b"\x00", ())]


def pure_validate(buf, **limits):
    """`validate` as it decides without the compiled codec: the reference."""
    with mock.patch.object(batch, "_validate_compiled", return_value=False):
        return validate(buf, **limits)


@pytest.mark.parametrize("compression", [Compression.NONE, Compression.GZIP, Compression.ZSTD])
def test_validate_checks_an_ordinary_batch_in_compiled_code(compression):
    # What producers send is checked by the compiled codec alone: no record is walked in
    # Python (the pure decoder taken away proves it).
    buf = build_batch_pure(
        [(b"k", b"v" * 100, (("h", b"1"), ("n", None)), 1_000 + i) for i in range(10)] + [(None, None, (), 1_005)],
        compression=compression,
        producer_id=7,
        producer_epoch=0,
        base_sequence=0,
    )
    with mock.patch.object(batch, "_decode_section_pure", side_effect=AssertionError("pure codec used")):
        assert validate(buf, max_records_bytes=1 << 20, max_timestamp=2_000).record_count == 11
    assert pure_validate(buf, max_records_bytes=1 << 20, max_timestamp=2_000).record_count == 11


LIMITS = [
    {"max_records_bytes": 1 << 20},
    {"max_records_bytes": 1 << 20, "min_timestamp": 1_003, "max_timestamp": 1_009},
    {"max_records_bytes": 1 << 20, "min_timestamp": 0, "max_timestamp": 1 << 50},
    {"max_records_bytes": 64},
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(cases(), st.sampled_from(LIMITS))
def test_validate_gives_the_pure_verdict(case, limits):
    # Compiled or pure, validate accepts the same batches and refuses the others with
    # the same error and message, whatever the builder was asked for.
    recs, kwargs = case
    with mock.patch.object(time, "time", return_value=NOW_MS / 1000):
        built = outcome(build_batch_pure, recs, **kwargs)
    if built[0] == "error":
        return
    assert outcome(validate, built[1], **limits) == outcome(pure_validate, built[1], **limits)


@settings(max_examples=600, deadline=None)
@given(
    st.lists(
        st.tuples(st.none() | st.binary(max_size=80), st.none() | st.binary(max_size=80), header_lists),
        min_size=1,
        max_size=5,
    ),
    st.sampled_from([Compression.NONE, Compression.NONE, Compression.GZIP]),
    st.sampled_from(LIMITS),
    st.data(),
)
def test_validate_gives_the_pure_verdict_on_damaged_batches(recs, compression, limits, data):
    # Bytes changed past the CRC (the CRC then fixed), in the records or the header: the
    # verdict and its message are the pure codec's, including for the encodings
    # aiokafka's reader is lenient about (nulls other than -1, long varints, attributes).
    good = build_batch_pure([(k, v, h, 1_000 + i) for i, (k, v, h) in enumerate(recs)])
    damaged = bytearray(good)
    for _ in range(data.draw(st.integers(1, 3))):
        damaged[data.draw(st.integers(ATTRIBUTES_OFFSET + 2, len(good) - 1))] = data.draw(st.integers(0, 255))
    if compression is not Compression.NONE:  # the damage inside the compressed records
        section = compress(compression, damaged[HEADER_SIZE:])
        damaged = damaged[:HEADER_SIZE] + section
        struct.pack_into(">i", damaged, 8, HEADER_SIZE - 12 + len(section))
        damaged[ATTRIBUTES_OFFSET + 1] |= compression
    damaged = recrc(damaged)
    assert outcome(validate, damaged, **limits) == outcome(pure_validate, damaged, **limits)


@pytest.mark.parametrize("damage_at", [None, 0, 4095, 4096, 9999])
def test_validate_in_chunks_of_records(damage_at):
    # More records than a chunk: the checks carry across chunks, and a record out of
    # place in any chunk gets the pure codec's verdict.
    recs = [(None, b"", (), 1_000 + i % 7) for i in range(10_000)]
    good = build_batch_pure(recs)
    assert batch._VALIDATE_CHUNK < len(recs)
    if damage_at is None:
        with mock.patch.object(batch, "_decode_section_pure", side_effect=AssertionError("pure codec used")):
            assert validate(good, max_records_bytes=1 << 20, max_timestamp=1_006).record_count == 10_000
        return
    section = bytearray(good[HEADER_SIZE:])
    # each record: length 6, attributes, ts delta, offset delta (1 or 2 bytes), key -1, value 0, 0 headers
    pos = 0
    for _ in range(damage_at):
        pos += 1 + section[pos] // 2
    section[pos + 1] = 0x01  # attributes: only the pure codec may say why this is refused
    damaged = recrc(good[:HEADER_SIZE] + bytes(section))
    assert outcome(validate, damaged, max_records_bytes=1 << 20) == outcome(
        pure_validate, damaged, max_records_bytes=1 << 20
    )
    assert outcome(validate, damaged, max_records_bytes=1 << 20)[0] == "error"


def test_validate_takes_a_valid_batch_the_compiled_codec_does_not_write_through_the_pure_codec():
    # A key length of 1 in two varint bytes (0x82 0x00): needless, but within Kafka's
    # five, so valid. The compiled check cannot prove it canonical and hands it on.
    rec = bytes([0x00, 0x00, 0x00, 0x82, 0x00]) + b"k" + bytes([0x02]) + b"v" + bytes([0x00])
    section = bytearray()
    append_varint(section, len(rec))
    section += rec
    head = bytearray(build_batch_pure([(b"k", b"v", (), 1_000)])[:HEADER_SIZE])
    struct.pack_into(">i", head, 8, HEADER_SIZE - 12 + len(section))
    odd = recrc(bytes(head) + bytes(section))
    with mock.patch.object(batch, "_decode_section_pure", wraps=batch._decode_section_pure) as pure:
        assert validate(odd, max_records_bytes=1 << 20).record_count == 1
    assert pure.called


def test_generators_of_records_and_headers_are_read_once():
    recs = [(b"k%d" % i, b"v", [("a", b"1")], 5_000 + i) for i in range(5)]
    want = build_batch_pure(recs)
    assert build_batch(r for r in recs) == want
    assert build_batch((k, v, (h for h in hs), ts) for k, v, hs, ts in recs) == want  # headers go pure


def test_the_pure_codec_when_ruled_out(monkeypatch):
    recs = [(b"k", b"v" * 256, (), 1_000 + i) for i in range(20)]
    want = build_batch_pure(recs, compression=Compression.ZSTD)
    for value in ("1", "yes"):
        monkeypatch.setenv(PURE_CODEC_ENV, value)
        assert codec_in_use().startswith("aiokafka")  # chosen once, until asked again
        assert reload_codec() == "pure"
        with (
            mock.patch.object(batch, "_build_compiled", side_effect=AssertionError("compiled codec used")),
            mock.patch.object(batch, "_decode_compiled", side_effect=AssertionError("compiled codec used")),
        ):
            assert build_batch(recs, compression=Compression.ZSTD) == want
            assert decode_records(want) == decode_records_pure(want)
        monkeypatch.delenv(PURE_CODEC_ENV)
        reload_codec()
    monkeypatch.setenv(PURE_CODEC_ENV, "0")
    assert reload_codec().startswith("aiokafka")


def test_the_pure_codec_when_aiokafka_is_missing():
    code = (
        "import sys; sys.modules['aiokafka'] = None\n"
        "from segments.batch import build_batch, codec_in_use, decode_records\n"
        "buf = build_batch([(b'k', b'v', (), 1)])\n"
        "assert decode_records(buf)[0].value == b'v'\n"
        "print(codec_in_use())\n"
    )
    env_free = {k: v for k, v in __import__("os").environ.items() if k != PURE_CODEC_ENV}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env_free, check=True)
    assert out.stdout.strip() == "pure"


def test_a_compiled_codec_that_writes_other_bytes_is_refused():
    from aiokafka.record._crecords import default_records

    real = default_records.DefaultRecordBatchBuilder

    class Skewed:
        """Writes one byte of the first key wrong, as a changed release might."""

        def __init__(self, *args):
            self._inner = real(*args)

        def append(self, offset, timestamp, key, value, headers):
            if offset == 0 and key:
                key = b"K" + bytes(key[1:])
            return self._inner.append(offset, timestamp, key, value, headers)

        def build(self):
            return self._inner.build()

    with mock.patch.object(default_records, "DefaultRecordBatchBuilder", Skewed):
        assert batch._load_compiled() is None
    assert batch._load_compiled() is not None


@pytest.mark.parametrize("base_ts, deltas", [(INT64_MAX - 5, (0, 10)), (-(1 << 63) + 5, (0, -10)), (-7, (0, 3))])
def test_timestamps_beyond_int64_are_the_pure_codecs(base_ts, deltas):
    # The pure codec adds base timestamp and delta in Python; aiokafka in int64, where
    # the sum wraps. build_batch never writes such a batch, a crafted one can.
    plain = bytearray(build_batch_pure([(None, b"v", (), d) for d in deltas]))
    struct.pack_into(">q", plain, 27, base_ts)  # baseTimestamp
    crafted = recrc(plain)
    want = [Record(i, base_ts + d, None, b"v", ()) for i, d in enumerate(deltas)]
    assert decode_records_pure(crafted) == want
    assert decode_records(crafted) == want
