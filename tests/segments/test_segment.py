"""LogSegment: append, find/read, recovery, index rebuild, truncation."""

from __future__ import annotations

import errno
import os

import pytest

from segments.batch import iter_batches, stamped, verify
from segments.errors import LogClosedError
from segments.fs import OsFileSystem
from segments.segment import LogSegment, segment_file_name

from .helpers import make_batch


def _filled(tmp_path, count=40, interval=256, base=0):
    segment = LogSegment.create(str(tmp_path), base, interval)
    offset = base
    written = []
    for i in range(count):
        batch = make_batch(1 + i % 4, ts=1000 + 10 * i, size=50)
        header = verify(batch)
        segment.append(header, batch, offset, 1 + i // 10)
        written.append((offset, offset + header.last_offset_delta))
        offset += header.last_offset_delta + 1
    return segment, written


def test_file_names_are_twenty_digits():
    assert segment_file_name(42, ".log") == "00000000000000000042.log"


def test_append_stamps_and_indexes(tmp_path):
    segment, written = _filled(tmp_path)
    assert segment.next_offset == written[-1][1] + 1
    # The file runs ahead of the data with allocated zeros, which a close cuts.
    on_disk = open(segment.log_path, "rb").read()
    assert len(on_disk) > segment.size and not any(on_disk[segment.size :])
    assert len(segment.offset_index) > 5
    assert segment.first_timestamp == 1000  # the first batch: one record at ts 1000
    data = on_disk[: segment.size]
    headers = [h for h, _ in iter_batches(data)]
    assert [(h.base_offset, h.last_offset) for h in headers] == written
    assert [h.leader_epoch for h in headers] == [1 + i // 10 for i in range(40)]
    # Every index entry points at the start of a batch with that base offset.
    for rel, pos in segment.offset_index.entries():
        assert verify(data, pos).base_offset == rel
    segment.close()


def test_find_every_offset(tmp_path):
    segment, written = _filled(tmp_path)
    for first, last in written:
        for offset in range(first, last + 1):
            position, header = segment.find(offset)
            assert (header.base_offset, header.last_offset) == (first, last)
    assert segment.find(written[-1][1] + 1) is None
    segment.close()


def test_read_respects_limits(tmp_path):
    segment, written = _filled(tmp_path)
    one = segment.read(written[5][0] + 0, 1)
    assert [h.base_offset for h, _ in iter_batches(one)] == [written[5][0]]  # at least one batch
    some = segment.read(written[5][0], 1000)
    got = [h.base_offset for h, _ in iter_batches(some)]
    assert len(some) <= 1000 and len(got) > 1 and got[0] == written[5][0]
    capped = segment.read(written[5][0], 10**6, max_offset=written[8][1])
    assert [h.base_offset for h, _ in iter_batches(capped)] == [w[0] for w in written[5:8]]
    assert segment.read(written[5][0], 10**6, max_offset=written[5][1]) == b""
    everything = segment.read(0, 10**9)
    assert everything == open(segment.log_path, "rb").read()[: segment.size]
    segment.close()
    assert everything == open(segment.log_path, "rb").read()  # closed: cut to its data


def test_sequential_reads_follow_the_hint(tmp_path):
    segment, written = _filled(tmp_path)
    offset, seen = 0, []
    while True:
        data = segment.read(offset, 300)
        if not data:
            break
        headers = [h for h, _ in iter_batches(data)]
        seen += [(h.base_offset, h.last_offset) for h in headers]
        offset = headers[-1].next_offset
    assert seen == written
    segment.close()


def test_recover_rebuilds_the_same_indexes(tmp_path):
    segment, written = _filled(tmp_path)
    built = (segment.offset_index.entries(), segment.time_index.entries())
    segment.close()
    os.unlink(segment.offset_index.path)
    reopened = LogSegment.open(str(tmp_path), 0, 256)
    result = reopened.recover()
    assert result.error is None and result.truncated_bytes == 0
    assert (reopened.offset_index.entries(), reopened.time_index.entries()) == built
    assert result.epochs == [(1, 0), (2, written[10][0]), (3, written[20][0]), (4, written[30][0])]
    assert reopened.next_offset == segment.next_offset
    assert reopened.max_timestamp == segment.max_timestamp
    reopened.close()


def test_recover_cuts_a_torn_tail(tmp_path):
    segment, written = _filled(tmp_path)
    segment.close()
    size = os.path.getsize(segment.log_path)
    with open(segment.log_path, "r+b") as f:
        f.truncate(size - 7)
    reopened = LogSegment.open(str(tmp_path), 0, 256)
    result = reopened.recover()
    assert "torn batch" in result.error
    assert reopened.next_offset == written[-1][0]
    assert os.path.getsize(segment.log_path) == result.valid_bytes
    reopened.close()


def test_recovery_cuts_the_space_allocated_ahead_without_calling_it_damage(tmp_path):
    """A killed node leaves its active segment's allocated zeros after the data."""
    segment, written = _filled(tmp_path)
    data = segment.read(0, 10**9)
    os.close(segment._fd)  # (killed: no close, no trim)
    assert os.path.getsize(segment.log_path) > len(data)
    reopened = LogSegment.open(str(tmp_path), 0, 256)
    result = reopened.recover()
    assert result.error is None and result.truncated_bytes > 0
    assert result.valid_bytes == len(data) == os.path.getsize(segment.log_path)
    assert reopened.next_offset == written[-1][1] + 1
    # A torn batch before the zeros is still damage, and named.
    batch = make_batch(2, size=50)
    reopened.append(verify(batch), batch, reopened.next_offset, 5)
    with open(segment.log_path, "r+b") as f:
        f.seek(len(data) + 20)
        f.write(b"\x7f")
    os.close(reopened._fd)
    again = LogSegment.open(str(tmp_path), 0, 256)
    result = again.recover()
    assert result.error is not None and result.valid_bytes == len(data)
    again.close()


def test_a_segment_that_cannot_allocate_grows_with_its_writes(tmp_path):
    class Full(OsFileSystem):
        def allocate(self, fd, length):
            raise OSError(errno.ENOSPC, "No space left on device")

    segment = LogSegment.create(str(tmp_path), 0, 256, fs=Full())
    for i in range(5):
        batch = make_batch(1, size=50)
        segment.append(verify(batch), batch, i, 1)
        assert os.path.getsize(segment.log_path) == segment.size
    assert [h.base_offset for h, _ in iter_batches(segment.read(0, 10**6))] == [0, 1, 2, 3, 4]
    segment.close()


def test_load_trusts_a_sound_sealed_segment_and_refuses_a_damaged_one(tmp_path):
    segment, written = _filled(tmp_path)
    end = segment.next_offset
    segment.flush(fsync=True)
    segment.close()
    sealed = LogSegment.open(str(tmp_path), 0, 256)
    assert sealed.load(end)
    assert (sealed.next_offset, sealed.max_timestamp) == (end, segment.max_timestamp)
    assert sealed.first_timestamp == segment.first_timestamp
    assert not sealed.load(end + 1)  # the next segment does not start where this one ends
    sealed.close()
    with open(segment.log_path, "r+b") as f:
        f.seek(-3, os.SEEK_END)
        f.write(b"\xff\xff\xff")
    damaged = LogSegment.open(str(tmp_path), 0, 256)
    assert not damaged.load(end)  # the batches after the last index entry fail their CRC
    damaged.close()


def test_truncate_to(tmp_path):
    segment, written = _filled(tmp_path)
    first, last = written[23]  # a batch of four records
    assert last == first + 3
    removed = segment.truncate_to(first + 2)  # inside it: the batch goes whole
    assert segment.next_offset == first
    assert removed == sum(verify(make_batch(1 + i % 4, ts=0, size=50)).size for i in range(23, 40))
    assert segment.truncate_to(first) == 0  # nothing left at or past it
    assert segment.size == os.path.getsize(segment.log_path)
    assert all(pos < segment.size for _, pos in segment.offset_index.entries())
    assert segment.max_timestamp == max(1000 + 10 * i + (i % 4) for i in range(23))
    assert segment.find(first - 1)[1].last_offset == first - 1
    # Appends continue at the cut.
    batch = make_batch(2)
    segment.append(verify(batch), batch, first, 9)
    assert segment.find(first)[1].leader_epoch == 9
    assert segment.read(first, 10**6) == stamped(batch, first, 9)
    segment.truncate_to(0)
    assert (segment.size, segment.next_offset, segment.max_timestamp) == (0, 0, None)
    segment.close()


def test_time_search(tmp_path):
    segment, written = _filled(tmp_path)
    assert segment.first_offset_at_or_after_time(0, 0) == 0
    assert segment.first_offset_at_or_after_time(1000 + 10 * 25, 0) == written[25][0]
    assert segment.first_offset_at_or_after_time(1000 + 10 * 25 - 5, 0) == written[25][0]
    assert segment.first_offset_at_or_after_time(0, written[30][0] + 1) == written[30][0]
    assert segment.first_offset_at_or_after_time(10**9, 0) is None
    segment.close()


def test_closed_segment_refuses_use(tmp_path):
    segment, _ = _filled(tmp_path, count=2)
    segment.close()
    with pytest.raises(LogClosedError):
        segment.read(0, 100)
    segment.delete()
    assert os.listdir(tmp_path) == []
