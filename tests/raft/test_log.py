"""MemoryStorage and RaftLog over entries that span offset ranges."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raft import ConfState, Entry, EntryKind, MemoryStorage, StorageError
from raft.log import RaftInvariantError, RaftLog


def batches(spec: list[tuple[int, int]], start: int = 0) -> list[Entry]:
    """[(count, term), ...] -> contiguous entries from ``start``."""
    out, at = [], start
    for count, term in spec:
        out.append(Entry(at, at + count - 1, term, EntryKind.NORMAL, b"%d" % at))
        at += count
    return out


def storage(spec, start=0) -> MemoryStorage:
    s = MemoryStorage(ConfState((1,)), start=start)
    s.append(batches(spec, start))
    return s


def test_term_of_an_offset_is_the_term_of_its_batch():
    s = storage([(3, 1), (5, 2), (1, 2)])
    assert [s.term(i) for i in range(-1, 9)] == [0, 1, 1, 1, 2, 2, 2, 2, 2, 2]
    with pytest.raises(StorageError):
        s.term(9)


def test_entries_are_whole_batches_within_the_byte_limit_but_at_least_one():
    s = storage([(3, 1), (5, 2), (1, 2), (2, 3)])
    assert [e.index for e in s.entries(4, 100, 1 << 30)] == [3, 8, 9]
    assert [e.index for e in s.entries(4, 9, 1 << 30)] == [3, 8]
    assert [e.index for e in s.entries(4, 100, 0)] == [3]
    assert [e.index for e in s.entries(0, 100, 2)] == [0, 3]  # b"0" + b"3" = 2 bytes


def test_truncate_and_append_only_at_boundaries():
    s = storage([(3, 1), (5, 2)])
    with pytest.raises(StorageError):
        s.truncate_after(4)
    s.append(batches([(2, 3)], start=3))
    assert [(e.index, e.last, e.term) for e in s.all_entries()] == [(0, 2, 1), (3, 4, 3)]
    with pytest.raises(StorageError):
        s.append(batches([(1, 3)], start=9))  # a gap


def test_compact_keeps_the_boundary_term_and_the_conf():
    s = MemoryStorage(ConfState((1,)))
    conf = ConfState((1, 2), (3,))
    s.append([Entry(0, 0, 1, EntryKind.NOOP), Entry(1, 1, 1, EntryKind.CONFIG, conf.encode())] + batches([(4, 1)], 2))
    snap = s.compact(1, b"sm")
    assert (snap.index, snap.term, snap.conf, snap.data) == (1, 1, conf, b"sm")
    assert s.first_index() == 2 and s.term(1) == 1
    with pytest.raises(StorageError):
        s.entries(1, 3, 100)
    with pytest.raises(StorageError):
        s.compact(3)  # not a boundary


def test_unstable_entries_shadow_storage_until_stable():
    s = storage([(3, 1), (3, 1)])
    log = RaftLog(s, committed=2, applied=2)
    log.append(batches([(2, 2)], start=3))  # replaces offsets 3..5 from 3
    assert log.last_index() == 4 and log.term(3) == 2 and log.term(5) is None
    assert [e.index for e in log.entries(0, 10, 1 << 20)] == [0, 3]
    log.stable_to(batches([(2, 1)], start=3))  # a stale report (other term) changes nothing
    assert log.unstable
    s.append(log.unstable)
    log.stable_to(list(log.unstable))
    assert not log.unstable and log.last_index() == 4


def test_stable_to_credits_the_written_prefix_whose_tail_was_replaced():
    log = RaftLog(storage([(3, 1)]), committed=2, applied=2)
    written = batches([(2, 1), (2, 1), (2, 1)], start=3)  # 3-4, 5-6, 7-8 in flight
    log.append(written)
    log.commit_to(6)
    log.append(batches([(1, 2)], start=7))  # a new leader replaces 7-8 meanwhile
    log.storage.append(written)
    log.stable_to(written)
    assert log.unstable_offset == 7 and [(e.index, e.term) for e in log.unstable] == [(7, 2)]


def test_stable_to_credits_nothing_when_the_log_was_cut_below_the_write():
    log = RaftLog(storage([(3, 1)]), committed=0, applied=0)
    written = batches([(2, 1)], start=3)
    log.append(written)
    log.append(batches([(1, 2)], start=1))  # replaces from 1: below what was written
    log.stable_to(written)
    assert log.unstable_offset == 1 and [(e.index, e.term) for e in log.unstable] == [(1, 2)]


def test_append_refuses_to_overwrite_committed_offsets():
    log = RaftLog(storage([(3, 1), (3, 1)]), committed=5, applied=-1)
    with pytest.raises(RaftInvariantError):
        log.append(batches([(1, 2)], start=3))


def test_find_conflict_by_term_walks_boundaries():
    log = RaftLog(storage([(3, 1), (3, 2), (3, 2), (3, 4)]), committed=-1, applied=-1)
    # boundaries: 2 (t1), 5 (t2), 8 (t2), 11 (t4)
    assert log.find_conflict_by_term(11, 4) == 11
    assert log.find_conflict_by_term(11, 3) == 8
    assert log.find_conflict_by_term(7, 3) == 5  # inside a batch: the boundary below
    assert log.find_conflict_by_term(11, 1) == 2
    assert log.find_conflict_by_term(11, 0) == -1  # the log start boundary


@given(st.lists(st.tuples(st.integers(1, 5), st.integers(0, 3)), min_size=1, max_size=30))
def test_entries_cover_every_requested_offset_exactly_once(spec):
    spec = [(n, 1 + sum(d for _, d in spec[: i + 1])) for i, (n, _) in enumerate(spec)]
    s = storage(spec)
    last = s.last_index()
    for lo_entry in s.all_entries():
        got = s.entries(lo_entry.index, last + 1, 1 << 30)
        offsets = [o for e in got for o in range(e.index, e.last + 1)]
        assert offsets == list(range(lo_entry.index, last + 1))
