"""Leadership transfer (thesis 3.10): catch the target up, then TimeoutNow."""

from __future__ import annotations

import pytest

from raft import NotLeader, ProposalDropped, Role, TimeoutNow
from tests.raft.harness import Cluster


def test_transfer_to_an_up_to_date_follower():
    c = Cluster()
    lead = c.elect(1)
    c.propose(1, b"x", 1)
    lead.transfer_leadership(2)
    c.flush()
    assert [m.to for m in c.sent if isinstance(m, TimeoutNow)] == [2]
    assert c.nodes[2].role == Role.LEADER and c.nodes[2].term == 2
    assert lead.role == Role.FOLLOWER and lead.leader == 2


def test_transfer_to_a_lagging_follower_catches_it_up_first():
    c = Cluster()
    lead = c.elect(1)
    c.isolate(3)
    for i in range(5):
        c.propose(1, b"%d" % i, 2)
    c.heal()
    lead.transfer_leadership(3)
    c.persist_all()
    assert not any(isinstance(m, TimeoutNow) for m in c.inflight)
    c.flush()
    assert c.nodes[3].role == Role.LEADER
    assert c.log(3)[: len(c.log(1)) - 1] == c.log(1)[:-1] or c.log(3) == c.log(1)


def test_proposals_are_dropped_while_transferring():
    c = Cluster()
    lead = c.elect(1)
    c.isolate(2)
    lead.transfer_leadership(2)
    with pytest.raises(ProposalDropped):
        lead.propose(b"x", 1)


def test_transfer_is_abandoned_after_an_election_timeout():
    c = Cluster(election_tick=10)
    lead = c.elect(1)
    c.isolate(2)
    lead.transfer_leadership(2)
    c.tick(10, only=[1, 3])
    assert lead.role == Role.LEADER and lead.lead_transferee == 0
    c.propose(1, b"accepted again", 1)


def test_transfer_needs_a_leader_and_a_voter_target():
    c = Cluster(learners=(4,))
    c.elect(1)
    with pytest.raises(NotLeader):
        c.nodes[2].transfer_leadership(3)
    with pytest.raises(ValueError):
        c.nodes[1].transfer_leadership(4)


def test_graceful_shutdown_hands_over_without_losing_commits():
    c = Cluster(ids=(1, 2, 3, 4, 5))
    lead = c.elect(1)
    e = c.propose(1, b"before", 3)
    lead.transfer_leadership(4)
    c.flush()
    c.crash(1)
    assert c.nodes[4].role == Role.LEADER
    e2 = c.propose(4, b"after", 1)
    assert all(c.nodes[i].commit >= e2.last for i in (2, 3, 4, 5))
    assert c.nodes[4].log_term(e.index) == 1
