"""Leader election: randomized timeouts, majorities, split votes, who may campaign."""

from __future__ import annotations

import random

from raft import Append, AppendResponse, Config, ConfState, MemoryStorage, RaftNode, Role, Vote, VoteResponse
from tests.raft.harness import Cluster, drain, make_node


def test_election_timeout_is_randomized_in_election_tick_to_twice_that():
    seen = set()
    for seed in range(200):
        node = RaftNode(Config(id=1, rng=random.Random(seed), election_tick=10), MemoryStorage(ConfState((1, 2, 3))))
        seen.add(node.randomized_election_timeout)
    assert seen == set(range(10, 20))


def test_follower_campaigns_after_its_timeout_and_not_before():
    node, st = make_node(1, pre_vote=False)
    timeout = node.randomized_election_timeout
    for _ in range(timeout - 1):
        node.tick()
    assert node.role == Role.FOLLOWER and drain(node, st) == []
    node.tick()
    assert node.role == Role.CANDIDATE and node.term == 1 and node.vote == 1
    assert sorted(m.to for m in drain(node, st) if isinstance(m, Vote)) == [2, 3]


def test_single_voter_elects_itself_at_once():
    c = Cluster(ids=(1,))
    c.nodes[1].campaign()
    assert c.nodes[1].role == Role.LEADER


def test_majority_wins_and_minority_loses():
    node, st = make_node(1, voters=(1, 2, 3, 4, 5), pre_vote=False)
    node.campaign()
    drain(node, st)
    node.step(VoteResponse(to=1, frm=2, term=1, granted=True))
    assert node.role == Role.CANDIDATE
    node.step(VoteResponse(to=1, frm=2, term=1, granted=True))  # a duplicate counts once
    assert node.role == Role.CANDIDATE
    node.step(VoteResponse(to=1, frm=3, term=1, granted=True))
    assert node.role == Role.LEADER

    node, st = make_node(1, voters=(1, 2, 3, 4, 5), pre_vote=False)
    node.campaign()
    for p in (2, 3, 4):
        node.step(VoteResponse(to=1, frm=p, term=1, granted=False))
    assert node.role == Role.FOLLOWER and node.term == 1


def test_split_vote_is_resolved_by_a_later_election():
    c = Cluster(ids=(1, 2, 3, 4), pre_vote=False)
    # 1 and 3 campaign at once; 2 votes for 1 and 4 for 3: nobody has 3 of 4.
    c.cut(1, 4)
    c.cut(3, 2)
    c.nodes[1].campaign()
    c.nodes[3].campaign()
    c.flush()
    assert c.leader() is None
    c.heal()
    for _ in range(60):
        c.tick()
        if c.leader() is not None:
            break
    lead = c.leader()
    assert lead is not None and c.nodes[lead].term >= 2


def test_candidate_steps_down_for_a_leader_of_its_term():
    node, st = make_node(1, pre_vote=False)
    node.campaign()
    node.step(Append(to=1, frm=2, term=1, prev_index=-1, prev_term=0, entries=(), commit=-1))
    assert node.role == Role.FOLLOWER and node.leader == 2


def test_learners_and_removed_nodes_never_campaign():
    node, st = make_node(4, voters=(1, 2, 3), learners=(4,))
    for _ in range(100):
        node.tick()
    assert node.role == Role.FOLLOWER and node.term == 0 and drain(node, st) == []


def test_leader_elected_after_the_old_one_crashes():
    c = Cluster(ids=(1, 2, 3, 4, 5))
    c.elect(1)
    c.propose(1, b"a", 1)
    c.crash(1)
    for _ in range(100):
        c.tick()
        if c.leader() not in (None, 1):
            break
    new = c.leader()
    assert new not in (None, 1)
    assert c.nodes[new].term == 2
    # The new leader still has the committed entry and can commit more.
    e = c.propose(new, b"b", 1)
    assert all(c.nodes[i].commit >= e.last for i in (2, 3, 4, 5))


def test_stale_leader_learns_the_new_term_from_a_reject():
    c = Cluster()
    old = c.elect(1)
    c.isolate(1)
    for _ in range(60):
        c.tick(only=[2, 3])
        if c.leader() in (2, 3):
            break
    assert c.leader() in (2, 3)
    c.heal()
    old.propose(b"stale", 1)  # the old leader still believes it leads (term 1)
    c.flush()
    assert old.role == Role.FOLLOWER and old.term == 2
    assert any(isinstance(m, AppendResponse) and m.to == 1 and m.term == 2 for m in c.sent)
