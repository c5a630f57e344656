"""LogStorage: the Raft core's storage over a segments log."""

from __future__ import annotations

import pytest

from node.storage import LogStorage
from raft import ConfState, Entry, EntryKind, HardState, Snapshot
from raft.log import RaftInvariantError
from segments import LogConfig, build_batch


def _entry(index: int, term: int) -> Entry:
    return Entry(index, index, term, EntryKind.NORMAL, build_batch([(None, b"v%d" % index, (), 0)]))


def _open(tmp_path) -> LogStorage:
    return LogStorage(tmp_path / "g", LogConfig(fsync="always"), ConfState((1, 2, 3)))


def test_a_conflicting_uncommitted_suffix_is_cut_and_replaced(tmp_path):
    st = _open(tmp_path)
    st.append([_entry(i, 1) for i in range(4)])
    st.set_hard_state(HardState(term=1, vote=1, commit=1))
    st.append([_entry(2, 2)])
    st.sync()
    assert st.last_index() == 2 and st.term(2) == 2 and st.term(1) == 1


def test_refuses_to_cut_at_or_below_commit(tmp_path):
    st = _open(tmp_path)
    st.append([_entry(i, 1) for i in range(4)])
    st.set_hard_state(HardState(term=1, vote=1, commit=2))
    with pytest.raises(RaftInvariantError):
        st.append([_entry(2, 1)])  # even an identical rewrite of a committed entry
    assert st.last_index() == 3 and st.term(3) == 1


def test_commit_survives_a_reopen_only_as_far_as_the_log(tmp_path):
    st = _open(tmp_path)
    st.append([_entry(i, 1) for i in range(3)])
    st.set_hard_state(HardState(term=2, vote=1, commit=5))  # term change: saved now
    st.sync()
    st.close()
    again = _open(tmp_path)
    assert again.initial_state()[0] == HardState(term=2, vote=1, commit=2)
    again.close()


def test_a_vote_is_written_by_sync_not_on_the_event_loop(tmp_path):
    st = _open(tmp_path)
    assert st.state_dirty and not (tmp_path / "g" / "raft-state").exists()  # a new log: saved by the first sync
    st.sync(log=False)
    before = (tmp_path / "g" / "raft-state").read_bytes()
    st.set_hard_state(HardState(term=3, vote=2, commit=-1))
    assert st.state_dirty and (tmp_path / "g" / "raft-state").read_bytes() == before
    st.sync(log=False)  # the replica runs this in a worker thread before sending
    assert not st.state_dirty
    again = _open(tmp_path)
    assert again.initial_state()[0] == HardState(term=3, vote=2, commit=-1)


def test_a_crash_between_the_snapshot_file_and_raft_state_is_finished_on_open(tmp_path, monkeypatch):
    st = _open(tmp_path)
    st.append([_entry(i, 1) for i in range(6)])
    st.set_hard_state(HardState(term=1, vote=1, commit=5))
    st.sync()
    st.compact(1, b"state-at-1")

    def crash():
        raise OSError("power cut")

    monkeypatch.setattr(st, "_save", crash)
    with pytest.raises(OSError):
        st.compact(3, b"state-at-3")  # the snapshot file is written, raft-state is not
    monkeypatch.undo()
    again = _open(tmp_path)
    snap = again.snapshot()
    # Data and index agree: the entries after 3 apply once, on top of state-at-3.
    assert (snap.index, snap.term, snap.data) == (3, 1, b"state-at-3")
    assert again.first_index() == 4 and again.last_index() == 5


async def test_a_snapshot_asked_for_during_a_compaction_is_the_new_file_never_empty(tmp_path):
    st = _open(tmp_path)
    st.append([_entry(i, 1) for i in range(6)])
    st.set_hard_state(HardState(term=1, vote=1, commit=5))
    st.sync()
    st.compact(1, b"state-at-1")
    seen = []

    async def run(fn, *args):
        fn(*args)
        if fn == st.write_snapshot:  # the leader sends a snapshot between the file and the state
            seen.append(st.snapshot())

    await st.compact_with(run, 3, b"state-at-3")
    assert [(s.index, s.term, s.data) for s in seen] == [(3, 1, b"state-at-3")]
    assert (st.snapshot().index, st.snapshot().data) == (3, b"state-at-3")


def test_a_crash_after_a_snapshot_reset_the_log_but_before_raft_state_is_finished_on_open(tmp_path):
    st = _open(tmp_path)
    st.append([_entry(i, 1) for i in range(3)])
    st.set_hard_state(HardState(term=1, vote=1, commit=2))
    st.sync()
    snap = Snapshot(10, 3, ConfState((1, 2)), b"leader-state-at-10")
    st.write_snapshot(snap)  # the replica's order: data, emptied log, then raft-state
    st.install_snapshot(snap)
    st.log.flush()
    st.log.close()  # the crash: raft-state still names the old log
    again = _open(tmp_path)
    assert (again.first_index(), again.last_index(), again.term(10)) == (11, 10, 3)
    assert again.snapshot() == snap and again.initial_state() == (HardState(1, 1, 10), ConfState((1, 2)))


def _shape(entries):
    """What an entry is, whether it came from memory or back from the files (which stamp
    the batch's offset and epoch into its bytes)."""
    return [(e.index, e.last, e.term, e.kind, e.data[16:]) for e in entries]


def test_entries_not_yet_applied_come_from_memory_and_the_rest_from_the_files(tmp_path, monkeypatch):
    st = _open(tmp_path)
    written = [_entry(i, 1) for i in range(6)]
    st.append(written)
    st.sync()
    with monkeypatch.context() as m:
        m.setattr(st.log, "batches", lambda *a: pytest.fail("read the files"))
        assert st.entries(0, 6, 1 << 20) == written
        assert st.entries(2, 4, 1 << 20) == written[2:4]
        assert st.entries(2, 6, 1) == written[2:3]  # the byte limit, at least one
    st.forget_applied(3)
    assert _shape(st.entries(0, 6, 1 << 20)) == _shape(written)  # 0..3 from the files, 4..5 from memory
    st.forget_applied(5)
    assert st._recent == {} and st._recent_bytes == 0
    assert _shape(st.entries(1, 6, 1 << 20)) == _shape(written[1:])


def test_a_cut_suffix_and_a_reset_are_forgotten_in_memory_too(tmp_path):
    st = _open(tmp_path)
    st.append([_entry(i, 1) for i in range(4)])
    st.set_hard_state(HardState(term=1, vote=1, commit=1))
    st.append([_entry(2, 2)])  # the leader of term 2 overwrote 2 and 3
    assert [(e.index, e.term) for e in st.entries(0, 10, 1 << 20)] == [(0, 1), (1, 1), (2, 2)]
    assert sorted(st._recent) == [0, 1, 2]
    st.install_snapshot(Snapshot(9, 2, ConfState((1, 2, 3)), b""))
    assert st._recent == {} and st._recent_bytes == 0
    st.append([_entry(10, 2)])
    assert st.entries(10, 11, 1 << 20)[0].term == 2


def test_memory_for_unapplied_entries_is_bounded(tmp_path, monkeypatch):
    import node.storage as storage

    monkeypatch.setattr(storage, "RECENT_BYTES", 300)
    st = _open(tmp_path)
    written = [_entry(i, 1) for i in range(10)]
    st.append(written)
    assert 0 < st._recent_bytes <= 300 and len(st._recent) < 10
    assert _shape(st.entries(0, 10, 1 << 20)) == _shape(written)


def test_a_sync_is_claimed_only_for_a_small_write_and_no_state(tmp_path):
    st = LogStorage(tmp_path / "g", LogConfig(fsync="never"), ConfState((1, 2, 3)))  # (as the node opens it)
    st.append([_entry(0, 1)])
    st.sync()  # the new log's directory and the first raft-state
    st.append([_entry(1, 1)])
    assert st.claim_sync(10) is None  # more than 10 bytes written since
    fd = st.claim_sync(1 << 20)
    assert fd is not None and fd >= 0
    st.synced(True)
    st.set_hard_state(HardState(term=2, vote=1, commit=0))
    st.append([_entry(2, 2)])
    assert st.claim_sync(1 << 20) is None  # a vote to save first: a thread's sync
