"""Log: appends, reads and their limits, rolling, retention, truncation, epochs, fsync."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segments.batch import build_batch, decode_records, iter_batches, stamped, verify
from segments.config import LogConfig
from segments.errors import (
    BatchTooLargeError,
    CorruptBatchError,
    InvalidEpochError,
    InvalidOffsetError,
    LogClosedError,
    OffsetOutOfRangeError,
)
from segments.log import Log

from .helpers import make_batch

SMALL = LogConfig(segment_bytes=2000, index_interval_bytes=256, fsync="never", segment_ms=None, retention_ms=None)


def _open(tmp_path, config=SMALL, **kwargs):
    return Log.open(str(tmp_path / "log"), config, **kwargs)


def _offsets(data):
    return [(h.base_offset, h.last_offset) for h, _ in iter_batches(data)]


def _fill(log, count, epoch=1, n=3, ts=1000):
    return [log.append(make_batch(n, ts=ts + 10 * i, size=40, tag=i), epoch) for i in range(count)]


def test_new_log_is_empty(tmp_path):
    log = _open(tmp_path)
    assert (log.log_start_offset, log.next_offset, log.size_bytes, log.segment_count) == (0, 0, 0, 1)
    assert log.last_epoch is None and log.term_at(0) is None
    assert log.read(0, 100) == b""
    assert list(log.batches(0)) == []
    assert log.offset_for_timestamp(0) is None
    assert log.end_offset_for_epoch(0) is None
    log.close()


def test_append_assigns_offsets_and_stamps(tmp_path):
    log = _open(tmp_path)
    assert log.append(make_batch(3), 4) == (0, 2)
    assert log.append(make_batch(1), 4) == (3, 3)
    assert log.append(stamped(make_batch(2), 999, 1), 5) == (4, 5)  # producer's offset is ignored
    data = log.read(0, 10**6)
    headers = [h for h, _ in iter_batches(data)]
    assert [(h.base_offset, h.leader_epoch) for h in headers] == [(0, 4), (3, 4), (4, 5)]
    assert [r.offset for r in decode_records(data[headers[0].size + headers[1].size :])] == [4, 5]
    log.close()


def test_append_rejects_bad_input_without_writing(tmp_path):
    log = _open(tmp_path, LogConfig(fsync="never", max_batch_bytes=500))
    good = make_batch(1)
    bad = bytearray(good)
    bad[-1] ^= 1
    with pytest.raises(CorruptBatchError, match="CRC mismatch"):
        log.append(bytes(bad), 1)
    with pytest.raises(CorruptBatchError, match="bytes follow the batch"):
        log.append(good + b"\x00", 1)
    with pytest.raises(BatchTooLargeError):
        log.append(make_batch(1, size=600), 1)
    with pytest.raises(CorruptBatchError):
        log.append_many([good, bytes(bad)], 1)
    with pytest.raises(InvalidEpochError):
        log.append(good, -1)
    assert log.next_offset == 0 and log.size_bytes == 0
    log.append(good, 3)
    with pytest.raises(InvalidEpochError, match="below the log's last epoch 3"):
        log.append(good, 2)
    log.close()


def test_append_at_requires_the_log_end(tmp_path):
    leader = _open(tmp_path / "a")
    follower = _open(tmp_path / "b")
    _fill(leader, 3, epoch=2)
    for header, data in leader.batches(0):
        assert follower.append_at(data, header.base_offset, header.leader_epoch) == (
            header.base_offset,
            header.last_offset,
        )
    assert follower.read(0, 10**6) == leader.read(0, 10**6)
    with pytest.raises(InvalidOffsetError) as err:
        follower.append_at(make_batch(), 100, 2)
    assert (err.value.offset, err.value.expected) == (100, 9)
    leader.close()
    follower.close()


def test_append_many_is_one_call(tmp_path, monkeypatch):
    syncs = []
    monkeypatch.setattr(os, "fdatasync", lambda fd: syncs.append(fd))
    log = _open(tmp_path, LogConfig(fsync="always", segment_bytes=10**6))
    result = log.append_many([make_batch(2), make_batch(3), make_batch(1)], 1)
    assert result == [(0, 1), (2, 4), (5, 5)]
    assert len(syncs) == 1
    assert log.append_many([], 1) == []
    log.close()


def test_read_limits(tmp_path):
    log = _open(tmp_path, LogConfig(segment_bytes=10**6, index_interval_bytes=256, fsync="never"))
    _fill(log, 20)
    size = verify(make_batch(3, size=40)).size
    assert _offsets(log.read(0, 1)) == [(0, 2)]  # always one whole batch
    assert _offsets(log.read(4, size * 3)) == [(3, 5), (6, 8), (9, 11)]  # from the batch holding 4
    assert _offsets(log.read(4, size * 3 - 1)) == [(3, 5), (6, 8)]
    assert _offsets(log.read(0, 10**6, max_offset=9)) == [(0, 2), (3, 5), (6, 8)]
    assert _offsets(log.read(0, 10**6, max_offset=8)) == [(0, 2), (3, 5)]  # never a batch past it
    assert log.read(6, 10**6, max_offset=8) == b""
    assert log.read(9, 10**6, max_offset=9) == b""
    assert log.read(60, 100) == b""  # the end
    with pytest.raises(OffsetOutOfRangeError) as err:
        log.read(61, 100)
    assert (err.value.log_start_offset, err.value.next_offset) == (0, 60)
    log.delete_before(30)
    with pytest.raises(OffsetOutOfRangeError, match=r"\[30, 60\)"):
        log.read(29, 100)
    log.close()


def test_big_batch_is_never_blocked(tmp_path):
    log = _open(tmp_path, LogConfig(fsync="never"))
    big = make_batch(2, size=50_000)
    log.append(big, 1)
    assert len(log.read(0, 100)) == len(big)
    log.close()


def test_batches_iterates_across_segments(tmp_path):
    log = _open(tmp_path)
    written = _fill(log, 30)
    assert log.segment_count > 3
    assert [(h.base_offset, h.last_offset) for h, _ in log.batches(0)] == written
    assert [(h.base_offset, h.last_offset) for h, _ in log.batches(44)] == written[14:]
    limited = list(log.batches(0, max_bytes=1000))
    assert 1 <= len(limited) and sum(len(d) for _, d in limited) <= 1000
    assert len(list(log.batches(0, max_bytes=1))) == 1
    for header, data in log.batches(0):
        assert verify(data) == header
    with pytest.raises(OffsetOutOfRangeError):
        log.batches(91)
    log.close()


def test_roll_by_size_and_offsets_stay_contiguous(tmp_path):
    log = _open(tmp_path)
    _fill(log, 30)
    bases = log.segment_base_offsets()
    assert len(bases) == log.segment_count > 3
    for base in bases:
        name = os.path.join(log.path, f"{base:020d}.log")
        assert os.path.getsize(name) <= SMALL.segment_bytes  # (the active one's allocated space too)
    for base, following in zip(bases, bases[1:]):  # sealed: exactly their batches
        name = os.path.join(log.path, f"{base:020d}.log")
        assert os.path.getsize(name) == len(log.read(base, 10**9, max_offset=following))
    for base in bases[1:]:
        assert log.term_at(base) == 1
        assert _offsets(log.read(base, 1))[0][0] == base
    log.roll()
    log.roll()  # an empty active segment does not roll again
    assert log.segment_count == len(bases) + 1
    log.close()


def test_batch_larger_than_a_segment_gets_one_of_its_own(tmp_path):
    fds = len(os.listdir("/proc/self/fd"))
    log = _open(tmp_path, LogConfig(segment_bytes=1000, fsync="never"))
    big = make_batch(2, size=3000)
    assert log.append(big, 1) == (0, 1)  # into the empty first segment
    assert log.append(big, 1) == (2, 3)  # rolls first
    log.append(make_batch(1), 1)
    assert log.segment_base_offsets() == [0, 2, 4]
    assert log.read(2, 1) == stamped(big, 2, 1)
    log.close()
    assert len(os.listdir("/proc/self/fd")) == fds  # no segment was replaced and leaked


def test_roll_by_age_uses_record_time(tmp_path):
    config = LogConfig(segment_ms=1000, fsync="never")
    log = _open(tmp_path, config)
    log.append(make_batch(1, ts=10_000), 1)
    log.append(make_batch(1, ts=10_900), 1)
    assert log.segment_count == 1
    log.append(make_batch(1, ts=11_001), 1)
    assert log.segment_base_offsets() == [0, 2]
    log.close()


def test_retention_by_size_keeps_the_active_segment(tmp_path):
    config = LogConfig(segment_bytes=2000, retention_bytes=4000, retention_ms=None, fsync="never")
    log = _open(tmp_path, config)
    _fill(log, 40)
    before = log.segment_count
    deleted = log.apply_retention(now_ms=0)
    assert deleted == before - log.segment_count > 0
    assert log.size_bytes >= 4000
    assert log.size_bytes - log._segments.peekitem(0)[1].size < 4000
    assert log.log_start_offset == log.segment_base_offsets()[0]
    assert log.apply_retention(now_ms=0) == 0
    log.close()


def test_retention_by_age(tmp_path):
    config = LogConfig(segment_bytes=2000, retention_ms=1000, fsync="never", segment_ms=None)
    log = _open(tmp_path, config)
    _fill(log, 30, ts=0)  # batch i has timestamps 10*i .. 10*i+2
    bases = log.segment_base_offsets()
    newest_of_first = log._segments.peekitem(0)[1].max_timestamp
    assert log.apply_retention(now_ms=newest_of_first + 1000) == 0
    assert log.apply_retention(now_ms=newest_of_first + 1001) == 1
    assert log.log_start_offset == bases[1]
    assert log.apply_retention(now_ms=10**9) == len(bases) - 2  # never the active one
    assert log.segment_count == 1
    log.close()


def test_delete_before(tmp_path):
    log = _open(tmp_path)
    written = _fill(log, 30)
    bases = log.segment_base_offsets()
    assert log.delete_before(bases[1] + 1) == 1
    assert log.log_start_offset == bases[1] + 1
    holding = next(w for w in written if w[0] <= bases[1] + 1 <= w[1])
    assert _offsets(log.read(bases[1] + 1, 1)) == [holding]  # the batch holding the start
    assert log.term_at(bases[1]) is None and log.term_at(bases[1] + 1) == 1
    assert log.delete_before(5) == 0
    with pytest.raises(OffsetOutOfRangeError):
        log.delete_before(log.next_offset + 1)
    end = log.next_offset
    log.delete_before(end)  # everything: a fresh empty segment at the end
    assert (log.log_start_offset, log.next_offset, log.segment_count, log.size_bytes) == (end, end, 1, 0)
    assert log.last_epoch is None
    assert log.append(make_batch(1), 7) == (end, end)
    log.close()
    reopened = _open(tmp_path)
    assert (reopened.log_start_offset, reopened.next_offset, reopened.term_at(end)) == (end, end + 1, 7)
    reopened.close()


def test_truncate_after(tmp_path):
    log = _open(tmp_path)
    _fill(log, 10, epoch=1)
    _fill(log, 10, epoch=2)
    _fill(log, 10, epoch=3)
    assert log.end_offset_for_epoch(2) == (2, 60)
    assert log.truncate_after(200) == 90  # nothing past the end
    assert log.truncate_after(44) == 45
    assert (log.next_offset, log.last_epoch, log.term_at(44), log.term_at(45)) == (45, 2, 2, None)
    assert log.end_offset_for_epoch(3) is None
    assert log.end_offset_for_epoch(2) == (2, 45)
    assert log.truncate_after(40) == 39  # the batch 39..41 straddles: it goes whole
    assert log.append(make_batch(3), 5) == (39, 41)
    assert (log.term_at(38), log.term_at(39), log.end_offset_for_epoch(4)) == (2, 5, (2, 39))
    log.close()
    reopened = _open(tmp_path)
    assert reopened.next_offset == 42
    assert [reopened.term_at(o) for o in (0, 29, 30, 38, 39, 41)] == [1, 1, 2, 2, 5, 5]
    assert reopened.truncate_after(-1) == 0
    assert (reopened.next_offset, reopened.last_epoch, reopened.segment_count) == (0, None, 1)
    reopened.close()


def test_truncate_after_below_log_start(tmp_path):
    log = _open(tmp_path)
    _fill(log, 10)
    log.delete_before(10)
    with pytest.raises(OffsetOutOfRangeError):
        log.truncate_after(8)
    assert log.truncate_after(9) == 10
    assert (log.log_start_offset, log.next_offset) == (10, 10)
    log.close()


def test_reset_to(tmp_path):
    log = _open(tmp_path)
    _fill(log, 30)
    log.reset_to(5000)
    assert (log.log_start_offset, log.next_offset, log.segment_count, log.last_epoch) == (5000, 5000, 1, None)
    assert log.append(make_batch(2), 9) == (5000, 5001)
    log.close()
    reopened = _open(tmp_path)
    assert (reopened.log_start_offset, reopened.next_offset, reopened.term_at(5001)) == (5000, 5002, 9)
    assert sorted(n for n in os.listdir(reopened.path) if n.endswith(".log")) == [f"{5000:020d}.log"]
    reopened.reset_to(3)  # backwards too
    assert (reopened.log_start_offset, reopened.next_offset) == (3, 3)
    reopened.close()


def test_epochs_and_end_offsets(tmp_path):
    log = _open(tmp_path)
    _fill(log, 2, epoch=1)  # 0..5
    _fill(log, 2, epoch=3)  # 6..11
    _fill(log, 2, epoch=6)  # 12..17
    assert [log.term_at(o) for o in (0, 5, 6, 11, 12, 17, 18)] == [1, 1, 3, 3, 6, 6, None]
    assert log.last_epoch == 6
    assert log.end_offset_for_epoch(0) == (0, 0)
    assert log.end_offset_for_epoch(1) == (1, 6)
    assert log.end_offset_for_epoch(2) == (1, 6)
    assert log.end_offset_for_epoch(5) == (3, 12)
    assert log.end_offset_for_epoch(6) == (6, 18)
    assert log.end_offset_for_epoch(7) is None
    log.close()


def test_offset_for_timestamp(tmp_path):
    log = _open(tmp_path)
    _fill(log, 30, ts=0)  # batch i: offsets 3i..3i+2, max timestamp 10i+2
    assert log.offset_for_timestamp(0) == 0
    assert log.offset_for_timestamp(2) == 0
    assert log.offset_for_timestamp(3) == 3
    assert log.offset_for_timestamp(10 * 17) == 51
    assert log.offset_for_timestamp(10 * 29 + 2) == 87
    assert log.offset_for_timestamp(10 * 29 + 3) is None
    log.delete_before(52)
    assert log.offset_for_timestamp(0) == 52
    log.close()


def test_offset_for_timestamp_with_out_of_order_times(tmp_path):
    log = _open(tmp_path)
    for ts in (500, 100, 900, 200, 1000):
        log.append(build_batch([(None, b"v" * 300, (), ts)]), 1)
    assert log.offset_for_timestamp(150) == 0
    assert log.offset_for_timestamp(600) == 2
    assert log.offset_for_timestamp(950) == 4
    log.close()


def test_fsync_policies(tmp_path, monkeypatch):
    syncs = []
    monkeypatch.setattr(os, "fdatasync", lambda fd: syncs.append(fd))
    now = [0]
    always = _open(tmp_path / "a", LogConfig(fsync="always"))
    always.append(make_batch(), 1)
    always.append(make_batch(), 1)
    assert len(syncs) == 2
    always.close()

    syncs.clear()
    interval = _open(tmp_path / "i", LogConfig(fsync="interval", fsync_interval_ms=100), clock_ms=lambda: now[0])
    interval.append(make_batch(), 1)
    assert syncs == [] and not interval.flush_if_due()
    now[0] = 99
    interval.append(make_batch(), 1)
    assert syncs == []
    now[0] = 100
    interval.append(make_batch(), 1)  # due: synced on append
    assert len(syncs) == 1
    interval.append(make_batch(), 1)
    assert not interval.flush_if_due(150)
    assert interval.flush_if_due(200) and len(syncs) == 2
    assert not interval.flush_if_due(10_000)  # nothing new to sync
    interval.close()

    syncs.clear()
    never = _open(tmp_path / "n", LogConfig(fsync="never"))
    never.append(make_batch(), 1)
    assert not never.flush_if_due(10**9)
    never.close()
    assert syncs == []
    never = _open(tmp_path / "n", LogConfig(fsync="never"))
    never.flush()  # an explicit flush always syncs
    assert len(syncs) == 1
    never.close()


def test_a_sync_claimed_by_the_caller_is_the_active_segment_alone(tmp_path, monkeypatch):
    """`claim_sync` hands out the descriptor only when the active segment's data is all
    a flush owes; anything else (a sealed segment, a checkpoint, the directory) is
    left to `flush()`. A claimed sync that failed is owed again."""
    synced: list[int] = []
    monkeypatch.setattr(os, "fdatasync", synced.append)
    log = _open(tmp_path)
    log.append(make_batch(), 1)
    assert log.claim_sync() is None  # a new log: its directory and epoch checkpoint are owed
    log.flush()
    assert log.claim_sync() == -1  # nothing written since
    log.synced(True)
    log.append(make_batch(), 1)
    fd = log.claim_sync()
    assert fd is not None and fd >= 0 and os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).endswith(".log")
    log.synced(False)  # it did not happen: the next sync owes it
    synced.clear()
    log.flush()
    assert synced == [fd]
    log.append(make_batch(), 1)
    assert log.claim_sync() == fd
    log.synced(True)
    synced.clear()
    log.flush()
    assert synced == []  # done by the caller: nothing left to sync
    _fill(log, 30)  # rolls: sealed segments and the directory are owed
    assert log.claim_sync() is None
    log.close()


def test_closed_log_refuses_use(tmp_path):
    log = _open(tmp_path)
    log.close()
    log.close()
    for call in (lambda: log.append(make_batch(), 1), lambda: log.read(0, 1), log.flush, log.roll):
        with pytest.raises(LogClosedError):
            call()


def test_config_validation():
    with pytest.raises(ValueError):
        LogConfig(fsync="sometimes")
    with pytest.raises(ValueError):
        LogConfig(segment_bytes=1 << 31)
    with pytest.raises(ValueError):
        LogConfig(retention_ms=-5)


def test_flush_syncs_everything_the_never_policy_deferred(tmp_path, monkeypatch):
    synced: list[str] = []

    def record(fd):
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))

    monkeypatch.setattr(os, "fdatasync", record)
    monkeypatch.setattr(os, "fsync", record)
    log = _open(tmp_path)
    _fill(log, 30)
    assert log.segment_count > 3
    assert synced == []  # "never" deferred them all, the epoch checkpoint too
    log.flush()
    logs = {f"{base:020d}.log" for base in log.segment_base_offsets()}
    assert logs <= set(synced)  # sealed segments too, not only the active one
    assert "leader-epoch-checkpoint" in synced
    assert "log" in synced  # the directory: the new segment files are durable
    synced.clear()
    log.flush()
    assert synced == []  # nothing new
    log.append(make_batch(), 1)
    log.flush()
    assert synced == [f"{log.segment_base_offsets()[-1]:020d}.log"]
    log.close()
    synced.clear()
    reopened = _open(tmp_path)
    reopened.flush()  # a previous process may have left anything unsynced
    assert logs <= set(synced)
    reopened.close()


def test_flush_racing_a_roll_still_syncs_what_was_appended_before_it(tmp_path, monkeypatch):
    # The node calls flush() in a worker thread while its event loop goes on
    # appending; an append that rolls in the middle must not let the flush skip the
    # segment holding what was appended before the flush began.
    import segments.log as log_module

    synced: list[str] = []
    monkeypatch.setattr(os, "fdatasync", lambda fd: synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))))
    log = _open(tmp_path, LogConfig(segment_bytes=1000, fsync="never"))
    log.append(make_batch(2, size=300), 1)  # "A", in the first segment
    real_fsync_directory = log_module.fsync_directory
    raced = []

    def fsync_directory_while_the_owner_appends(path, *fs):
        if not raced:
            raced.append(log.append(make_batch(2, size=300), 1))  # rolls: a new active segment
        real_fsync_directory(path, *fs)

    monkeypatch.setattr(log_module, "fsync_directory", fsync_directory_while_the_owner_appends)
    log.flush()
    assert raced and log.segment_count == 2
    assert f"{0:020d}.log" in synced
    log.close()


# -- read_slice: where read's bytes lie, for sendfile ----------------------------------------


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.tuples(st.integers(1, 12), st.integers(0, 900)), min_size=1, max_size=40),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 5000), st.integers(0, 10_000) | st.none()), max_size=30),
)
def test_read_slice_locates_exactly_the_bytes_read_returns(tmp_path_factory, shapes, asks):
    # Batches of many sizes over several segments and index entries: for any offset,
    # size and high watermark, the slice holds read()'s bytes and names the offset after.
    log = Log.open(str(tmp_path_factory.mktemp("log")), LogConfig(**{**SMALL.__dict__, "index_interval_bytes": 128}))
    for i, (n, size) in enumerate(shapes):
        log.append(build_batch([(None, bytes([i % 256]) * (size // n), (), 1_000 + i)] * n), 1)
    end = log.next_offset
    for offset, max_bytes, max_offset in asks:
        offset %= end + 1
        want = log.read(offset, max_bytes, max_offset)
        got = log.read_slice(offset, max_bytes, max_offset)
        if not want:
            assert got is None
            continue
        assert got is not None
        with got:
            assert got.read() == want
            assert got.next_offset == _offsets(want)[-1][1] + 1
    # A consumer reading on through the slices (its memory of where it stopped) sees the log.
    for max_bytes in (1, 300, 1000, 100_000):
        offset, seen = 0, b""
        while (part := log.read_slice(offset, max_bytes, end)) is not None:
            with part:
                seen += part.read()
                offset = part.next_offset
        assert offset == end
        assert seen == b"".join(log.read(o, 1 << 30) for o in _segment_starts(log))


def _segment_starts(log):
    return log.segment_base_offsets()


def test_a_slice_outlives_its_segment(tmp_path):
    # Retention deletes the segment and the log closes: the slice's own descriptor still
    # reads the committed bytes it names.
    log = _open(tmp_path)
    _fill(log, 30)
    first_segment_end = log.segment_base_offsets()[1]
    want = log.read(0, 1 << 20)
    part = log.read_slice(0, 1 << 20)
    assert part is not None and part.next_offset == first_segment_end
    log.delete_before(first_segment_end)
    assert not os.path.exists(os.path.join(str(tmp_path / "log"), "00000000000000000000.log"))
    log.close()
    assert part.read() == want
    fd = part.fd
    part.close()
    part.close()
    with pytest.raises(OSError):
        os.fstat(fd)
    with pytest.raises(LogClosedError):
        part.read()


def test_read_slice_errors_and_edges(tmp_path):
    log = _open(tmp_path)
    _fill(log, 5)
    assert log.read_slice(log.next_offset, 100) is None
    assert log.read_slice(3, 100, max_offset=3) is None
    assert log.read_slice(0, 100, max_offset=1) is None  # the first batch holds 0..2: not all below 1
    with pytest.raises(OffsetOutOfRangeError):
        log.read_slice(log.next_offset + 1, 100)
    part = log.read_slice(0, 1)  # the first batch whole, whatever max_bytes says
    assert part is not None and part.next_offset == 3 and len(part) == len(log.read(0, 1))
    del part  # dropped: its descriptor is closed
    log.close()
    with pytest.raises(LogClosedError):
        log.read_slice(0, 100)
