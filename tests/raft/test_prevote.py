"""Pre-vote (thesis 9.6): a candidate first asks whether it could win, without
touching terms, so a node that was cut off cannot inflate terms and depose a
healthy leader when it returns."""

from __future__ import annotations

from raft import ConfState, HardState, Role, Vote, VoteResponse
from tests.raft.harness import Cluster, drain, make_node


def test_pre_vote_does_not_change_term_or_vote():
    node, st = make_node(1)
    node.campaign()
    assert node.role == Role.PRE_CANDIDATE and node.term == 0 and node.vote == 0
    msgs = drain(node, st)
    assert {(m.to, m.term, m.pre_vote) for m in msgs} == {(2, 1, True), (3, 1, True)}
    assert st.hard_state == HardState(term=0, vote=0, commit=-1)


def test_granted_pre_votes_lead_to_a_real_election_at_term_plus_one():
    node, st = make_node(1)
    node.campaign()
    drain(node, st)
    node.step(VoteResponse(to=1, frm=2, term=1, granted=True, pre_vote=True))
    assert node.role == Role.CANDIDATE and node.term == 1 and node.vote == 1
    assert all(not m.pre_vote for m in drain(node, st) if isinstance(m, Vote))


def test_pre_vote_rejected_for_a_stale_log_and_the_voter_keeps_its_term():
    c = Cluster()
    c.elect(1)
    c.propose(1, b"x", 1)
    c.crash(1)
    # Node 3 missed everything: wipe it to an empty log at term 0.
    c.storage[3] = c.storage[3].__class__(ConfState((1, 2, 3)))
    c.restart(3)
    c.nodes[3].campaign()
    c.flush()
    assert c.nodes[3].role == Role.FOLLOWER
    assert c.nodes[2].term == 1 and c.nodes[2].vote == 1


def test_a_partitioned_node_does_not_disrupt_the_group_when_it_returns():
    c = Cluster(ids=(1, 2, 3, 4, 5))
    c.elect(1)
    c.isolate(5)
    c.tick(100)  # node 5 keeps pre-campaigning alone, never winning
    assert c.nodes[5].term == 1 and c.nodes[5].role == Role.PRE_CANDIDATE
    c.heal()
    c.tick(5)
    assert c.nodes[1].role == Role.LEADER and c.nodes[1].term == 1
    assert c.nodes[5].role == Role.FOLLOWER and c.nodes[5].leader == 1
    e = c.propose(1, b"after", 1)
    assert c.nodes[5].commit >= e.last


def test_without_pre_vote_the_returning_node_would_disrupt():
    # The contrast that makes the previous test meaningful.
    c = Cluster(ids=(1, 2, 3), pre_vote=False, check_quorum=False)
    c.elect(1)
    c.isolate(3)
    c.tick(60)
    assert c.nodes[3].term > 1
    c.heal()
    c.tick(30)
    assert c.nodes[1].term > 1  # node 3's next campaign deposed the leader


def test_node_with_higher_term_but_stale_log_does_not_block_elections():
    # Node 3 raised its term without pre-vote's protection (e.g. before an
    # upgrade); the others must still be able to elect a leader among themselves.
    c = Cluster()
    c.elect(1)
    c.propose(1, b"x", 1)
    c.crash(3)
    st = c.storage[3]
    st.truncate_after(0)
    st.set_hard_state(HardState(term=9, vote=3, commit=0))
    c.restart(3)
    c.tick(60)
    lead = c.leader()
    assert lead in (1, 2) and c.nodes[lead].term >= 9
    assert c.nodes[3].leader == lead


def test_pre_vote_from_a_lower_term_is_answered_with_our_term():
    node, st = make_node(2)
    node.term = 5
    node.step(Vote(to=2, frm=1, term=3, last_index=10, last_term=2, pre_vote=True))
    (resp,) = drain(node, st)
    assert not resp.granted and resp.term == 5 and resp.pre_vote
