"""The simulator on the production path: the shared driver over `LogStorage` on the
simulated file system, and proof that its checker fails when that path breaks a rule."""

from __future__ import annotations

import node.storage
from node.simstorage import SegmentsDisk, SegmentsDisks
from raft.simulator import Prng, SimOptions, run_seed
from raft.types import ConfState, Entry, EntryKind, HardState


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
    assert any(not _run(seed).ok for seed in range(40))
