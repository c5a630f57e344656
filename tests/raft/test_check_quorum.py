"""Check-quorum: a leader that cannot hear a majority steps down, and followers that
hear a live leader ignore campaigns (the lease that makes that safe)."""

from __future__ import annotations

from raft import ConfChange, ConfChangeOp, Role, Vote
from tests.raft.harness import Cluster, drain


def test_leader_steps_down_without_a_quorum():
    c = Cluster(election_tick=10)
    lead = c.elect(1)
    c.isolate(1)
    c.tick(9, only=[1])
    assert lead.role == Role.LEADER  # not yet: the check runs every election_tick
    c.tick(11, only=[1])
    assert lead.role == Role.FOLLOWER and lead.term == 1 and lead.leader == 0


def test_leader_with_a_quorum_stays():
    c = Cluster(ids=(1, 2, 3, 4, 5), election_tick=10)
    lead = c.elect(1)
    c.isolate(4)
    c.isolate(5)
    c.heal()
    c.cut(1, 4)
    c.cut(1, 5)
    c.tick(50)
    assert lead.role == Role.LEADER and lead.term == 1


def test_without_check_quorum_a_cut_off_leader_stays_leader():
    c = Cluster(check_quorum=False)
    lead = c.elect(1)
    c.isolate(1)
    c.tick(50, only=[1])
    assert lead.role == Role.LEADER


def test_follower_in_lease_ignores_a_vote_request():
    c = Cluster(pre_vote=False)
    c.elect(1)
    f = c.nodes[2]
    f.step(Vote(to=2, frm=3, term=5, last_index=100, last_term=5))
    assert f.term == 1 and f.leader == 1
    assert drain(f, c.storage[2]) == []


def test_follower_out_of_lease_grants():
    c = Cluster(pre_vote=False, election_tick=10)
    c.elect(1)
    c.isolate(1)
    f = c.nodes[2]
    for _ in range(10):
        f.tick()
    f.step(Vote(to=2, frm=3, term=5, last_index=100, last_term=5))
    assert f.term == 5 and f.vote == 3


def test_a_transfer_campaign_bypasses_the_lease():
    c = Cluster(pre_vote=False)
    c.elect(1)
    f = c.nodes[2]
    f.step(Vote(to=2, frm=3, term=2, last_index=100, last_term=1, transfer=True))
    assert f.term == 2 and f.vote == 3


def test_removed_server_cannot_disrupt_by_campaigning():
    # Thesis 4.2.3: a server removed while cut off never learns it, times out and
    # campaigns with ever higher terms; the lease keeps the group from deposing
    # its leader (which no longer sends to it, so never hears its term).
    c = Cluster(ids=(1, 2, 3), pre_vote=False)
    c.elect(1)
    c.isolate(3)
    c.nodes[1].propose_conf_change(ConfChange(ConfChangeOp.REMOVE, 3))
    c.flush()
    assert c.nodes[1].conf.voters == (1, 2)
    c.tick(40, only=[3])
    assert c.nodes[3].term > 1
    c.heal()
    c.tick(30)
    assert c.nodes[1].role == Role.LEADER and c.nodes[1].term == 1
    assert any(isinstance(m, Vote) and m.frm == 3 for m in c.sent)
