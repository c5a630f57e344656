"""Membership changes: single-server steps through learners, one at a time, in
effect as soon as the CONFIG entry is in a node's log."""

from __future__ import annotations

import pytest

from raft import Append, ConfChange, ConfChangeOp, ConfState, Entry, EntryKind, Heartbeat, ProposalDropped, Role
from tests.raft.harness import Cluster, make_node, persist

ADD, PROMOTE, REMOVE = ConfChangeOp.ADD_LEARNER, ConfChangeOp.PROMOTE, ConfChangeOp.REMOVE


def change(c: Cluster, leader: int, op: ConfChangeOp, node: int):
    e = c.nodes[leader].propose_conf_change(ConfChange(op, node))
    c.flush()
    return e


def test_add_learner_catch_up_then_promote():
    c = Cluster()
    lead = c.elect(1)
    for i in range(5):
        c.propose(1, b"%d" % i, 2)
    c.add_node(4)
    e = change(c, 1, ADD, 4)
    assert e.kind == EntryKind.CONFIG and ConfState.decode(e.data) == ConfState((1, 2, 3), (4,))
    assert lead.conf.learners == (4,)
    c.tick(3)
    assert c.log(4) == c.log(1)
    assert c.nodes[4].conf.learners == (4,)
    change(c, 1, PROMOTE, 4)
    assert lead.conf.voters == (1, 2, 3, 4)
    assert c.nodes[4].conf.voters == (1, 2, 3, 4)


def test_learner_neither_counts_for_commit_nor_votes():
    c = Cluster(learners=(4,))
    lead = c.elect(1)
    c.isolate(2)
    c.isolate(3)
    e = c.propose(1, b"x", 1)
    assert lead.commit < e.last  # 1 of 3 voters plus a learner is no majority
    assert c.nodes[4].log.last_index() == e.last
    for _ in range(50):
        c.nodes[4].tick()
    assert c.nodes[4].role == Role.FOLLOWER


def test_promote_refused_until_the_learner_caught_up():
    c = Cluster(learners=(4,))
    c.elect(1)
    c.isolate(4)
    c.propose(1, b"x", 1)
    with pytest.raises(ProposalDropped, match="caught up"):
        c.nodes[1].propose_conf_change(ConfChange(PROMOTE, 4))


def test_one_change_at_a_time():
    c = Cluster(ids=(1, 2, 3, 4, 5))
    c.elect(1)
    c.isolate(2)
    c.isolate(3)
    c.isolate(4)
    c.nodes[1].propose_conf_change(ConfChange(REMOVE, 5))  # cannot commit now
    with pytest.raises(ProposalDropped, match="uncommitted"):
        c.nodes[1].propose_conf_change(ConfChange(REMOVE, 4))


def test_new_leader_changes_membership_only_after_its_noop_commits():
    c = Cluster()
    lead = c.nodes[1]
    lead.campaign()
    for _ in range(4):  # pre-vote and vote rounds only
        c.persist_all()
        c.deliver()
    assert lead.role == Role.LEADER
    c.persist_all()
    c.inflight.clear()  # the no-op's appends are lost: nothing of term 1 is committed
    with pytest.raises(ProposalDropped):
        lead.propose_conf_change(ConfChange(REMOVE, 3))
    c.tick(2)
    change(c, 1, REMOVE, 3)
    assert lead.conf.voters == (1, 2)


def test_remove_voter_shrinks_the_quorum():
    c = Cluster(ids=(1, 2, 3, 4))
    lead = c.elect(1)
    change(c, 1, REMOVE, 4)
    assert lead.conf.voters == (1, 2, 3)
    c.crash(4)
    c.isolate(3)
    e = c.propose(1, b"x", 1)
    assert lead.commit >= e.last  # 2 of 3 is a majority now (it would not be of 4)


def test_leader_cannot_remove_itself():
    c = Cluster()
    c.elect(1)
    with pytest.raises(ProposalDropped, match="transfer"):
        c.nodes[1].propose_conf_change(ConfChange(REMOVE, 1))


def test_removed_follower_is_cut_off_and_cannot_disrupt():
    # The change is in effect on the leader once appended, so it stops replicating
    # to 3 at once; 3 may never learn it was removed. Its pre-votes are ignored by
    # members that hear the leader (the node hosting it stops the group).
    c = Cluster()
    c.elect(1)
    change(c, 1, REMOVE, 3)
    assert c.nodes[1].conf.voters == (1, 2) and c.nodes[2].conf.voters == (1, 2)
    c.sent.clear()
    c.tick(60)
    assert c.nodes[1].role == Role.LEADER and c.nodes[1].term == 1
    assert not any(m.to == 3 and isinstance(m, (Append, Heartbeat)) for m in c.sent)
    assert any(m.frm == 3 for m in c.sent)  # it did try


def test_uncommitted_config_is_reverted_when_truncated():
    node, st = make_node(2)
    noop = Entry(0, 0, 1, EntryKind.NOOP, b"")
    conf = ConfState((1, 2, 3), (9,))
    cfg_entry = Entry(1, 1, 1, EntryKind.CONFIG, conf.encode())
    node.step(Append(to=2, frm=1, term=1, prev_index=-1, prev_term=0, entries=(noop, cfg_entry), commit=0))
    assert node.conf == conf  # in effect as soon as it is in the log
    persist(node, st)
    # A leader of term 2 never had it: its entry at offset 1 replaces the config entry.
    node.step(
        Append(
            to=2, frm=3, term=2, prev_index=0, prev_term=1, entries=(Entry(1, 4, 2, EntryKind.NORMAL, b"x"),), commit=0
        )
    )
    assert node.conf == ConfState((1, 2, 3))
    persist(node, st)
    # And a restart agrees (the CONFIG entry is gone from storage).
    node2, _ = make_node(2, storage=st)
    assert node2.conf == ConfState((1, 2, 3))


def test_committed_config_survives_restart_before_the_snapshot_base():
    node, st = make_node(2)
    conf = ConfState((1, 2, 3), (9,))
    ents = (Entry(0, 0, 1, EntryKind.NOOP, b""), Entry(1, 1, 1, EntryKind.CONFIG, conf.encode()), Entry(2, 5, 1))
    node.step(Append(to=2, frm=1, term=1, prev_index=-1, prev_term=0, entries=ents, commit=5))
    persist(node, st)
    st.compact(1)
    assert st.snapshot().conf == conf
    node2, _ = make_node(2, storage=st)
    assert node2.conf == conf


def test_config_is_rebuilt_from_storage_on_restart():
    c = Cluster()
    c.elect(1)
    c.add_node(4)
    change(c, 1, ADD, 4)
    c.tick(2)
    change(c, 1, PROMOTE, 4)
    for i in (1, 2, 4):
        c.crash(i)
        c.restart(i)
        assert c.nodes[i].conf == ConfState((1, 2, 3, 4), ())
    rd = persist(c.nodes[4], c.storage[4])
    assert any(e.kind == EntryKind.CONFIG for e in rd.committed_entries)
