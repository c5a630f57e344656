import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.errors import OutOfOrderSequenceError, ProducerFencedError, UnknownProducerError
from node.producers import BatchRef, ProducerState


def write(state, pid, epoch, seq, count, offset, commit=True):
    dup = state.check(pid, epoch, seq, count)
    if dup is not None:
        return dup
    ref = BatchRef(seq, seq + count - 1, offset, offset + count - 1)
    state.add_pending(pid, epoch, ref)
    if commit:
        state.apply(pid, epoch, ref)
    return None


def test_duplicates_in_window_answer_original_offsets():
    s = ProducerState()
    for i in range(5):
        assert write(s, 7, 0, i * 10, 10, 100 + i * 10) is None
    assert s.check(7, 0, 20, 10) == BatchRef(20, 29, 120, 129)
    assert s.check(7, 0, 50, 10) is None


def test_gap_fenced_and_unknown():
    s = ProducerState()
    write(s, 1, 0, 0, 3, 0)
    with pytest.raises(OutOfOrderSequenceError, match="expected sequence 3"):
        s.check(1, 0, 5, 1)
    write(s, 1, 1, 0, 1, 3)  # new epoch restarts at 0
    with pytest.raises(ProducerFencedError):
        s.check(1, 0, 3, 1)
    with pytest.raises(UnknownProducerError):
        s.check(2, 0, 4, 1)
    with pytest.raises(OutOfOrderSequenceError):
        s.check(1, 2, 5, 1)


def test_pending_counts_until_leadership_lost():
    s = ProducerState()
    write(s, 1, 0, 0, 2, 0, commit=False)
    assert s.check(1, 0, 0, 2) == BatchRef(0, 1, 0, 1)  # retry while in flight
    assert s.check(1, 0, 2, 1) is None  # pipelined next batch
    s.clear_pending()
    assert s.check(1, 0, 0, 2) is None  # never committed: may be written again


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 4), st.booleans()), max_size=60))
def test_any_retry_pattern_never_duplicates(ops):
    """Replaying a random mix of new sends and retries of any of the last five batches
    writes each sequence number exactly once and in order."""
    s = ProducerState()
    sent: list[tuple[int, int]] = []
    written: list[int] = []
    offset = 0
    next_seq = 0
    for back, count, retry in ops:
        if retry and sent:
            seq, cnt = sent[-1 - min(back, len(sent) - 1, 4)]
        else:
            seq, cnt = next_seq, count
            sent.append((seq, cnt))
            next_seq += cnt
        if write(s, 9, 0, seq, cnt, offset) is None:
            written.extend(range(seq, seq + cnt))
            offset += cnt
    assert written == list(range(next_seq))


def test_sequences_older_than_the_window_are_known_duplicates():
    from client.errors import DuplicateSequenceError

    s = ProducerState()
    for i in range(10):
        write(s, 3, 0, i, 1, 100 + i)
    with pytest.raises(DuplicateSequenceError, match="already written"):
        s.check(3, 0, 2, 1)
    assert s.check(3, 0, 8, 1) == BatchRef(8, 8, 108, 108)  # still in the window: offsets known


def test_a_range_covered_only_by_an_uncommitted_batch_is_not_called_written():
    """A replay cut differently from a batch still in flight must not be told "written":
    a leader change may yet discard that batch."""
    from client.errors import DuplicateSequenceError, RequestTimeoutError

    s = ProducerState()
    write(s, 4, 0, 0, 3, 0)
    write(s, 4, 0, 3, 2, 3, commit=False)  # 3-4 in flight
    with pytest.raises(RequestTimeoutError, match="not committed yet"):
        s.check(4, 0, 3, 1)
    with pytest.raises(DuplicateSequenceError):  # 0-2 are committed
        s.check(4, 0, 1, 1)
    s.apply(4, 0, BatchRef(3, 4, 3, 4))
    with pytest.raises(DuplicateSequenceError):
        s.check(4, 0, 3, 1)


def test_idle_producers_expire_by_the_logs_own_clock_and_may_start_again():
    day = 86_400_000
    s = ProducerState(expiration_ms=day)
    s.apply(1, 0, BatchRef(0, 4, 0, 4), timestamp=1_000)
    s.apply(2, 0, BatchRef(0, 0, 5, 5), timestamp=1_000 + day // 2)
    assert len(s) == 2
    s.apply(2, 0, BatchRef(1, 1, 6, 6), timestamp=2_000 + day)  # producer 1 idle for over a day
    assert len(s) == 1
    assert s.check(1, 0, 5, 1) is None  # forgotten: its next batch is a fresh start
    with pytest.raises(UnknownProducerError):
        s.check(3, 0, 5, 1)  # never seen: still refused


def test_producers_loaded_from_a_snapshot_expire_only_after_a_full_period():
    day = 86_400_000
    s = ProducerState(expiration_ms=day)
    s.load([(1, 0, [(0, 0, 0, 0)])])
    s.apply(2, 0, BatchRef(0, 0, 1, 1), timestamp=10 * day)  # the loaded one's clock starts here
    assert len(s) == 2
    s.apply(2, 0, BatchRef(1, 1, 2, 2), timestamp=11 * day + 1)
    assert len(s) == 1


@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 2), st.integers(1, 3), st.integers(0, 10_000)), max_size=80)
)
def test_a_snapshot_restores_exactly_what_applying_built(ops):
    """What a restart loads from a partition's checkpoint goes on exactly as the state
    that applied the log itself: same producers, windows, batch times and expiries."""
    s = ProducerState(expiration_ms=3000)
    offset = 0
    seqs: dict[int, int] = {}
    for pid, epoch, count, ts in ops:
        seq = seqs.get(pid, 0)
        s.apply(pid, epoch, BatchRef(seq, seq + count - 1, offset, offset + count - 1), timestamp=ts)
        seqs[pid] = seq + count
        offset += count
    copy = ProducerState(expiration_ms=3000)
    copy.restore(s.snapshot())
    assert copy.snapshot() == s.snapshot()
    # And both go on alike: the same next batch lands (or is refused) the same way.
    for pid in range(6):
        for state in (s, copy):
            state.apply(pid, 9, BatchRef(0, 0, offset, offset), timestamp=20_000)
        offset += 1
        assert copy.snapshot() == s.snapshot()
