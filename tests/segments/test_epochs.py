"""LeaderEpochCache (Kafka's LeaderEpochFileCache rules) and checkpoint files."""

from __future__ import annotations

import os

import pytest
from crc32c import crc32c

from segments.checkpoint import read_checkpoint, write_checkpoint
from segments.epochs import LeaderEpochCache
from segments.errors import InvalidEpochError


def _cache():
    return LeaderEpochCache([(1, 0), (3, 10), (6, 20)])


def test_epoch_at():
    cache = _cache()
    assert [cache.epoch_at(o) for o in (-1, 0, 9, 10, 19, 20, 10**9)] == [None, 1, 1, 3, 3, 6, 6]
    assert cache.last_epoch == 6
    assert LeaderEpochCache().last_epoch is None


def test_assign():
    cache = _cache()
    assert not cache.assign(6, 25)  # same epoch: nothing new
    with pytest.raises(InvalidEpochError):
        cache.assign(5, 30)
    assert cache.assign(7, 30)
    # An epoch that holds no offsets yet (it starts at the log end) is replaced.
    assert cache.assign(8, 30)
    assert cache.entries() == [(1, 0), (3, 10), (6, 20), (8, 30)]


def test_end_offset_for_follows_kafka():
    cache = _cache()
    assert cache.end_offset_for(0, 40) == (0, 0)  # below every known epoch
    assert cache.end_offset_for(1, 40) == (1, 10)
    assert cache.end_offset_for(2, 40) == (1, 10)  # unknown epoch: the largest below it
    assert cache.end_offset_for(5, 40) == (3, 20)
    assert cache.end_offset_for(6, 40) == (6, 40)  # the latest ends at the log end
    assert cache.end_offset_for(7, 40) is None
    assert LeaderEpochCache().end_offset_for(1, 0) is None


def test_truncate_from_end_and_start():
    cache = _cache()
    assert not cache.truncate_from_end(21)
    assert cache.truncate_from_end(20)
    assert cache.entries() == [(1, 0), (3, 10)]
    assert not cache.truncate_from_start(0)
    assert cache.truncate_from_start(12)
    assert cache.entries() == [(3, 12)]
    cache = _cache()
    assert cache.truncate_from_start(10)
    assert cache.entries() == [(3, 10), (6, 20)]
    cache.clear()
    assert cache.entries() == []


def test_checkpoint_round_trip_and_malformed_files(tmp_path):
    path = str(tmp_path / "cp")
    assert read_checkpoint(path, 0, 2) is None
    write_checkpoint(path, 0, [(1, 0), (3, 10)])
    crc = crc32c(b"2\n1 0\n3 10\n")
    assert open(path).read() == f"0 crc32c:{crc:08x}\n2\n1 0\n3 10\n"  # Kafka's text format, checksummed
    assert read_checkpoint(path, 0, 2) == [(1, 0), (3, 10)]
    assert not os.path.exists(path + ".tmp")
    assert read_checkpoint(path, 1, 2) is None  # another version
    assert read_checkpoint(path, 0, 1) is None  # another width
    for text in ("0\n3\n1 0\n", "0\nx\n", "", "0\n1\n1 a\n", "\xff", "0 crc32c:00000000\n1\n1 0\n", "0 x y\n1\n1 0\n"):
        with open(path, "w", encoding="latin-1") as f:
            f.write(text)
        assert read_checkpoint(path, 0, 2) is None
    with open(path, "w") as f:
        f.write("0\n2\n1 0\n3 10\n")  # written before the checksum
    assert read_checkpoint(path, 0, 2) == [(1, 0), (3, 10)]


def test_a_torn_checkpoint_reads_as_missing_never_as_smaller_numbers(tmp_path):
    """A crash may leave a checkpoint renamed over the old one but only partly written
    (the log defers its fsync to the next flush): every cut must read as None, so the
    log rebuilds from its batches instead of trusting "5 4" for "5 482"."""
    path = str(tmp_path / "cp")
    write_checkpoint(path, 0, [(3, 389), (5, 482)])
    whole = open(path, "rb").read()
    for cut in range(len(whole) - 1):
        with open(path, "wb") as f:
            f.write(whole[:cut])
        assert read_checkpoint(path, 0, 2) is None, whole[:cut]


def test_saved_epochs_out_of_order_are_refused_not_rearranged():
    assert LeaderEpochCache.load([(1, 0), (3, 10)]).entries() == [(1, 0), (3, 10)]
    for bad in ([(3, 389), (5, 4)], [(3, 10), (3, 20)], [(5, 10), (3, 20)], [(1, 5), (2, 5)]):
        with pytest.raises(ValueError):
            LeaderEpochCache.load(bad)
