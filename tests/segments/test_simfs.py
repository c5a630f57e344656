"""The simulated file system: what survives its crash, and segments recovering from it."""

from __future__ import annotations

import os
import random

from segments.config import LogConfig
from segments.log import Log
from segments.simfs import SimFileSystem

from .helpers import make_batch

CREATE = os.O_RDWR | os.O_CREAT | os.O_APPEND


class Fixed:
    """An rng whose every draw is the lowest, the highest, or a given offset from the low end."""

    def __init__(self, pick: str | int) -> None:
        self.pick = pick

    def randrange(self, start: int, stop: int) -> int:
        if self.pick == "low":
            return start
        if self.pick == "high":
            return stop - 1
        assert isinstance(self.pick, int)
        return min(start + self.pick, stop - 1)


def _fs(pick: str | int = "high") -> SimFileSystem:
    fs = SimFileSystem(Fixed(pick))
    fs.makedirs("/d")
    return fs


def test_synced_data_and_names_survive_a_crash():
    fs = _fs("low")
    fd = fs.open("/d/a", CREATE)
    fs.write(fd, b"hello")
    fs.fsync(fd)
    fs.fsync_directory("/d")
    fs.crash()
    assert fs.read_file("/d/a") == b"hello"


def test_unsynced_appends_are_lost_or_torn():
    fs = _fs("low")  # the crash keeps nothing unsynced
    fd = fs.open("/d/a", CREATE)
    fs.write(fd, b"hello")
    fs.fsync(fd)
    fs.fsync_directory("/d")
    fs.write(fd, b" world")
    assert fs.read_file("/d/a") == b"hello world"  # reads see the page cache
    fs.crash()
    assert fs.read_file("/d/a") == b"hello"

    fs = _fs(3)  # the crash cuts the unsynced write after 3 bytes
    fd = fs.open("/d/a", CREATE)
    fs.fsync_directory("/d")
    fs.write(fd, b"abcdef")
    fs.crash()
    assert fs.read_file("/d/a") == b"abc" and fs.torn == 1


def test_descriptors_die_with_the_crash():
    fs = _fs()
    fd = fs.open("/d/a", CREATE)
    fs.crash()
    try:
        fs.write(fd, b"x")
    except OSError:
        pass
    else:
        raise AssertionError("a descriptor outlived the crash")


def test_a_creation_is_durable_only_after_the_directory_fsync():
    fs = _fs()
    fd = fs.open("/d/a", CREATE)
    fs.write(fd, b"data")
    fs.fsync(fd)  # the data, not the name
    fs.crash()
    assert not fs.exists("/d/a") and fs.listdir("/d") == []


def test_a_rename_and_an_unlink_are_durable_only_after_the_directory_fsync():
    fs = _fs()
    for name, body in (("/d/state", b"old"), ("/d/gone", b"x")):
        fd = fs.open(name, CREATE)
        fs.write(fd, body)
        fs.fsync(fd)
        fs.close(fd)
    fs.fsync_directory("/d")
    fd = fs.open("/d/state.tmp", CREATE)
    fs.write(fd, b"new")
    fs.fsync(fd)
    fs.replace("/d/state.tmp", "/d/state")
    fs.unlink("/d/gone")
    assert fs.read_file("/d/state") == b"new" and not fs.exists("/d/gone")
    fs.crash()
    assert fs.read_file("/d/state") == b"old" and fs.exists("/d/gone")  # neither reached the disk
    assert not fs.exists("/d/state.tmp")

    fd = fs.open("/d/state.tmp", CREATE)
    fs.write(fd, b"new")
    fs.fsync(fd)
    fs.replace("/d/state.tmp", "/d/state")
    fs.unlink("/d/gone")
    fs.fsync_directory("/d")
    fs.crash()
    assert fs.read_file("/d/state") == b"new" and not fs.exists("/d/gone")


def test_an_unsynced_truncation_leaves_old_or_new_bytes():
    for pick, expected in (("low", b"abcdef"), ("high", b"abXY")):
        fs = _fs(pick)
        fd = fs.open("/d/a", CREATE)
        fs.write(fd, b"abcdef")
        fs.fsync(fd)
        fs.fsync_directory("/d")
        fs.ftruncate(fd, 2)
        fs.write(fd, b"XY")
        fs.crash()
        # "low" draws 0 at the coin (keep the old bytes); "high" keeps all the new ones
        assert fs.read_file("/d/a") == expected, pick


def _log(fs: SimFileSystem) -> Log:
    return Log.open("/d/log", LogConfig(segment_bytes=700, fsync="never"), fs=fs)


def test_segments_recovery_cuts_a_torn_batch_and_keeps_what_was_synced():
    batches = [make_batch(2, size=50, tag=i) for i in range(6)]
    for cut in range(0, 2 * len(batches[0]) + 3, 7):
        fs = _fs(cut)
        log = _log(fs)
        for b in batches[:4]:
            log.append(b, 1)
        log.flush()
        synced = log.next_offset
        for b in batches[4:]:
            log.append(b, 1)  # unsynced: the crash keeps `cut` bytes of them
        fs.crash()
        log = _log(fs)
        ends = [h.last_offset for h, _ in log.batches(0)]
        assert log.next_offset >= synced, cut
        whole = cut // len(batches[0])  # unsynced batches that survived whole
        assert log.next_offset == synced + 2 * whole, cut
        assert ends == list(range(1, log.next_offset, 2)), cut


def test_a_random_crash_sweep_always_reopens_a_prefix_of_what_was_written():
    for seed in range(40):
        rng = random.Random(seed)
        fs = SimFileSystem(rng)
        log = _log(fs)
        durable = 0
        for step in range(30):
            if rng.random() < 0.2:
                log.flush()
                durable = log.next_offset
            else:
                log.append(make_batch(1 + rng.randrange(3), size=rng.randrange(5, 120), tag=step), 1)
        written = [(h.base_offset, bytes(d)) for h, d in log.batches(0)]
        fs.crash()
        log = _log(fs)
        got = [(h.base_offset, bytes(d)) for h, d in log.batches(0)]
        assert got == written[: len(got)], seed
        assert log.next_offset >= durable, seed
