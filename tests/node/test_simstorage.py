"""The simulator on the production path: the shared driver over `LogStorage` on the
simulated file system, and proof that its checker fails when that path breaks a rule."""

from __future__ import annotations

import node.storage
import raft.simulator
from node.simstorage import SegmentsDisk, SegmentsDisks
from raft.simulator import Prng, SimOptions, run_seed
from raft.types import ConfState, Entry, EntryKind, HardState
from tests.raft.broken import SendsBeforeFsync, SendsEarly


def _run(seed: int):
    return run_seed(seed, SimOptions(disks=SegmentsDisks()))


def test_a_few_seeds_run_clean_and_crash_the_segments():
    results = [_run(seed) for seed in range(6)]
    bad = [r for r in results if not r.ok]
    assert not bad, f"seed {bad[0].seed}: {bad[0].violation}\n" + "\n".join(bad[0].trace[-20:])
    assert all(r.committed > 0 for r in results)
    faults = {k for r in results for k in r.faults}
    assert {"crash", "torn_write", "unsynced_lost", "compact"} <= faults, faults
    assert sum(r.snapshots for r in results) > 0


def test_a_seed_replays_exactly_on_segments():
    assert _run(0) == _run(0)


def test_the_disk_loses_unsynced_entries_and_reopens_what_was_synced():
    disk = SegmentsDisk(1, ConfState(voters=(1, 2, 3)), Prng(5))
    payload = SegmentsDisks().payload
    st = disk.storage
    st.set_hard_state(HardState(term=1, vote=1, commit=-1))
    st.append([Entry(0, 1, 1, EntryKind.NORMAL, payload(b"a", 2))])
    st.sync()
    st.append([Entry(2, 4, 1, EntryKind.NORMAL, payload(b"b", 3))])  # never synced
    disk.crash()
    disk.reopen()
    st = disk.storage
    assert st.last_index() in (1, 4)  # the unsynced batch is whole or gone, never torn
    assert st.initial_state()[0].term == 1 and st.entries(0, 2, 1 << 20)[0].last == 1


def test_the_checker_catches_a_storage_that_acks_an_fsync_it_skipped(monkeypatch):
    def sync_state_only(self, log=True):
        if self.state_dirty:
            self.state_dirty = False
            self._save()

    monkeypatch.setattr(node.storage.LogStorage, "sync", sync_state_only)
    monkeypatch.setattr(node.storage.LogStorage, "flush_log", lambda self: None)
    # Caught on the first seed by persist-before-send (the first ack of an entry the file
    # system never synced), without waiting for a crash to lose it.
    r = _run(0)
    assert r.violation is not None and "before the log through it was durable" in r.violation, r.violation


# -- persist before send, on the production storage ---------------------------------------


def test_the_checker_catches_sends_before_persisting_on_segments(monkeypatch):
    monkeypatch.setattr(raft.simulator, "ReadyDriver", SendsEarly)
    r = _run(0)
    assert r.violation is not None and "persist before send" in r.violation and "with term 0" in r.violation


def test_the_checker_catches_acks_before_the_segments_fsync(monkeypatch):
    monkeypatch.setattr(raft.simulator, "ReadyDriver", SendsBeforeFsync)
    r = _run(0)
    assert r.violation is not None and "before the log through it was durable" in r.violation, r.violation


def test_what_a_crash_would_leave_is_read_from_the_file_system():
    disk = SegmentsDisk(1, ConfState(voters=(1, 2, 3)), Prng(5))
    payload = SegmentsDisks().payload
    st = disk.storage
    assert disk.durable_state().term == 0
    st.set_hard_state(HardState(term=2, vote=3, commit=-1))
    assert disk.durable_state().term == 0  # raft-state not rewritten yet
    st.append([Entry(0, 1, 2, EntryKind.NORMAL, payload(b"a", 2))])
    assert not disk.durable_through(1)
    st.sync()
    assert disk.durable_state() == HardState(term=2, vote=3, commit=-1) and disk.durable_through(1)
    st.append([Entry(2, 4, 2, EntryKind.NORMAL, payload(b"b", 3))])
    assert disk.durable_through(1) and not disk.durable_through(4)
    st.sync()
    assert disk.durable_through(4)
    # A conflicting suffix rewritten in place: the old bytes are durable, the new ones not.
    st.set_hard_state(HardState(term=3, vote=0, commit=1))
    st.append([Entry(2, 3, 3, EntryKind.NORMAL, payload(b"c", 2))])
    assert disk.durable_through(1) and not disk.durable_through(3)
    st.sync()
    assert disk.durable_through(3) and disk.durable_state().term == 3
    # Compaction moves the durable start: what it dropped counts as kept.
    st.compact(1)
    assert disk.durable_through(0) and disk.durable_through(3)
    st.flush_log()
    assert disk._durable_log_start() == 2, "the durable log-start checkpoint names the new start"
