"""Snapshots: group 0 ships its state machine to followers too far behind."""

from __future__ import annotations

from raft import Append, ConfState, Entry, EntryKind, InstallSnapshot, ProgressState, Snapshot
from tests.raft.harness import Cluster, drain, make_node, persist


def controller_cluster() -> Cluster:
    c = Cluster()
    c.elect(1)
    c.crash(3)
    for i in range(8):
        c.propose(1, b"set k%d" % i, 1)
    return c


def test_lagging_follower_installs_the_controller_snapshot():
    c = controller_cluster()
    lead = c.nodes[1]
    state = b"{k0..k7}"
    c.storage[1].compact(lead.commit, state)  # the controller took a snapshot
    c.restart(3)
    c.tick(3)
    snaps = [m.snapshot for m in c.sent if isinstance(m, InstallSnapshot) and m.to == 3]
    assert len(snaps) == 1 and snaps[0].data == state and snaps[0].index == lead.commit
    assert snaps[0].conf == ConfState((1, 2, 3))
    assert c.storage[3].snapshot() == snaps[0]
    assert c.nodes[3].commit == lead.commit and c.nodes[3].log.applied == lead.commit
    e = c.propose(1, b"set k8", 1)
    assert c.applied[3][-1] == e


def test_snapshot_is_handed_over_in_ready_before_later_committed_entries():
    node, st = make_node(2)
    snap = Snapshot(index=9, term=2, conf=ConfState((1, 2, 3)), data=b"state")
    node.step(InstallSnapshot(to=2, frm=1, term=2, snapshot=snap))
    rd = node.ready()
    assert rd.snapshot == snap and rd.entries == [] and rd.committed_entries == []
    assert rd.hard_state is not None and rd.hard_state.commit == 9
    assert [m.index for m in rd.messages] == [9]
    st.apply_snapshot(rd.snapshot)
    st.set_hard_state(rd.hard_state)
    node.advance(rd)
    assert node.log.first_index() == 10 and node.log.applied == 9
    restarted, _ = make_node(2, storage=st)
    assert restarted.commit == 9 and restarted.log.first_index() == 10


def test_follower_holding_the_snapshot_entry_keeps_its_log():
    node, st = make_node(2)
    ents = (Entry(0, 4, 1, EntryKind.NORMAL, b"a"), Entry(5, 9, 1, EntryKind.NORMAL, b"b"), Entry(10, 10, 1))
    node.step(Append(to=2, frm=1, term=1, prev_index=-1, prev_term=0, entries=ents, commit=-1))
    drain(node, st)
    node.step(InstallSnapshot(to=2, frm=1, term=1, snapshot=Snapshot(index=9, term=1, conf=ConfState((1, 2, 3)))))
    rd = persist(node, st)
    assert rd.snapshot is None and node.commit == 9
    # Only the committed prefix is acknowledged: offset 10 is not known to match.
    assert [m.index for m in rd.messages] == [9]
    assert st.last_index() == 10


def test_stale_snapshot_acknowledges_only_the_committed_prefix():
    # A delayed snapshot reaches a follower that committed past it and also holds
    # an uncommitted suffix from an old term: acknowledging its last offset would
    # let the leader count that suffix as replicated.
    node, st = make_node(2)
    ents = (Entry(0, 9, 1), Entry(10, 19, 1))
    node.step(Append(to=2, frm=1, term=1, prev_index=-1, prev_term=0, entries=ents, commit=9))
    drain(node, st)
    node.step(InstallSnapshot(to=2, frm=3, term=2, snapshot=Snapshot(index=5, term=1)))
    rd = persist(node, st)
    assert rd.snapshot is None and node.commit == 9
    assert [m.index for m in rd.messages] == [9]


def test_lost_snapshot_is_sent_again_after_an_election_timeout():
    c = controller_cluster()
    lead = c.nodes[1]
    c.storage[1].compact(lead.commit, b"state")
    c.restart(3)
    c.drop_if = lambda m: isinstance(m, InstallSnapshot)
    c.tick(3)
    assert lead.prs[3].state == ProgressState.SNAPSHOT
    c.drop_if = None
    c.tick(12)
    snaps = [m for m in c.sent if isinstance(m, InstallSnapshot) and m.to == 3]
    assert len(snaps) == 2
    assert c.nodes[3].commit == lead.commit
    assert lead.prs[3].state == ProgressState.REPLICATE


def test_no_snapshot_to_a_peer_not_heard_from():
    c = controller_cluster()
    lead = c.nodes[1]
    c.storage[1].compact(lead.commit, b"state")
    # Node 3 is down: the leader never hears from it, so it ships nothing big to it.
    c.tick(5, only=[1, 2])
    assert not any(isinstance(m, InstallSnapshot) for m in c.sent)
