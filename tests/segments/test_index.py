"""Sparse offset and time indexes: lookups, persistence, validation on load."""

from __future__ import annotations

import struct

import pytest

from segments.index import OffsetIndex, TimeIndex


def test_offset_index_lookup_and_persistence(tmp_path):
    path = str(tmp_path / "a.index")
    index = OffsetIndex(path, 100)
    assert index.lookup(150) == (100, 0)
    for rel, pos in [(5, 4096), (9, 8200), (20, 12400)]:
        index.append(100 + rel, pos)
    assert index.lookup(104) == (100, 0)
    assert index.lookup(105) == (105, 4096)
    assert index.lookup(119) == (109, 8200)
    assert index.lookup(10**9) == (120, 12400)
    index.flush(fsync=True)
    raw = open(path, "rb").read()
    assert raw == struct.pack(">IIIIII", 5, 4096, 9, 8200, 20, 12400)  # Kafka's layout
    again = OffsetIndex(path, 100)
    assert again.load(log_size=20000, max_offset=200)
    assert again.entries() == index.entries()


def test_offset_index_rejects_out_of_order_append(tmp_path):
    index = OffsetIndex(str(tmp_path / "a.index"), 0)
    index.append(10, 100)
    with pytest.raises(ValueError):
        index.append(10, 200)
    with pytest.raises(ValueError):
        index.append(11, 100)


@pytest.mark.parametrize(
    "raw,log_size,max_offset",
    [
        (struct.pack(">II", 5, 100) + b"\x00\x01", 1000, 100),  # partial entry
        (struct.pack(">IIII", 5, 100, 5, 200), 1000, 100),  # offsets not increasing
        (struct.pack(">IIII", 5, 200, 6, 100), 1000, 100),  # positions not increasing
        (struct.pack(">II", 5, 1000), 1000, 100),  # position beyond the log
        (struct.pack(">II", 100, 10), 1000, 100),  # offset beyond the segment
    ],
)
def test_offset_index_load_refuses_damage(tmp_path, raw, log_size, max_offset):
    path = tmp_path / "a.index"
    path.write_bytes(raw)
    index = OffsetIndex(str(path), 0)
    assert not index.load(log_size, max_offset)
    assert len(index) == 0


def test_missing_index_does_not_load(tmp_path):
    assert not OffsetIndex(str(tmp_path / "none.index"), 0).load(10, 10)
    assert not TimeIndex(str(tmp_path / "none.timeindex"), 0).load(10)


def test_truncation_rewrites_file_and_pending(tmp_path):
    path = str(tmp_path / "a.index")
    index = OffsetIndex(path, 0)
    index.append(1, 100)
    index.append(2, 200)
    index.flush(fsync=False)
    index.append(3, 300)
    index.truncate_to_position(200)
    index.flush(fsync=False)
    assert open(path, "rb").read() == struct.pack(">II", 1, 100)
    index.append(2, 250)
    index.append(3, 350)
    index.truncate_to_position(300)
    index.flush(fsync=False)
    assert open(path, "rb").read() == struct.pack(">IIII", 1, 100, 2, 250)


def test_time_index(tmp_path):
    path = str(tmp_path / "a.timeindex")
    index = TimeIndex(path, 1000)
    assert index.lookup(5) is None
    index.maybe_append(100, 1000)
    index.maybe_append(100, 1005)  # not a new maximum: ignored
    index.maybe_append(90, 1006)
    index.maybe_append(200, 1010)
    assert index.entries() == [(100, 0), (200, 10)]
    assert index.lookup(100) is None  # nothing strictly below 100 is indexed
    assert index.lookup(101) == 1000
    assert index.lookup(10**6) == 1010
    index.flush(fsync=False)
    assert open(path, "rb").read() == struct.pack(">qIqI", 100, 0, 200, 10)
    again = TimeIndex(path, 1000)
    assert again.load(max_offset=1011)
    assert not TimeIndex(path, 1000).load(max_offset=1010)  # an entry past the segment
    index.truncate_to_offset(1010)
    assert index.entries() == [(100, 0)]


def test_time_index_refuses_decreasing_timestamps(tmp_path):
    path = tmp_path / "a.timeindex"
    path.write_bytes(struct.pack(">qIqI", 200, 0, 100, 5))
    assert not TimeIndex(str(path), 0).load(100)
