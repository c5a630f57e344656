"""Quiescence: an idle group goes quiet (no heartbeats, no election timers) and wakes on
anything that needs it: a proposal, a message, a transfer, or the node's failure
detector calling a member down (`RaftNode.peer_down`)."""

from __future__ import annotations

from raft import ConfState, Heartbeat, HeartbeatResponse, Role, Vote
from tests.raft.harness import Cluster, drain, make_node

ET = 10


def quiet_cluster(ids=(1, 2, 3), **cfg) -> Cluster:
    cfg = {"election_tick": ET, "quiesce": True, **cfg}
    return Cluster(ids=ids, **cfg)


def settle(c: Cluster, ticks: int = 5) -> None:
    c.tick(ticks)


def test_an_idle_group_goes_quiet_and_ticks_then_send_nothing():
    c = quiet_cluster()
    lead = c.elect(1)
    settle(c)
    assert all(n.quiescent for n in c.nodes.values())
    sent = len(c.sent)
    c.tick(10 * ET)
    assert len(c.sent) == sent  # not one heartbeat, not one campaign
    assert lead.role == Role.LEADER and all(n.leader == 1 and n.term == 1 for n in c.nodes.values())
    assert lead.status().quiescent


def test_quiescence_is_off_by_default():
    c = Cluster(election_tick=ET)
    c.elect(1)
    c.tick(3 * ET)
    assert not any(n.quiescent for n in c.nodes.values())
    assert not any(isinstance(m, Heartbeat) and m.quiesce for m in c.sent)


def test_a_follower_without_quiescence_keeps_the_leader_awake():
    c = quiet_cluster()
    c.nodes[3].cfg.quiesce = False  # (a node of a build from before quiescence, say)
    lead = c.elect(1)
    c.tick(3 * ET)
    assert not lead.quiescent
    assert not c.nodes[3].quiescent
    answers = [m for m in c.sent if isinstance(m, HeartbeatResponse) and m.frm == 3]
    assert answers and all(m.quiesced is None for m in answers)


def test_a_proposal_wakes_the_group_commits_and_it_goes_quiet_again():
    c = quiet_cluster()
    lead = c.elect(1)
    settle(c)
    e = c.propose(1, b"hello")
    assert not lead.quiescent
    assert all(n.commit == e.last for n in c.nodes.values())
    settle(c)
    assert all(n.quiescent for n in c.nodes.values())
    # The quiescing heartbeat carried the commit: a quiet follower holds and committed it all.
    assert all(n.log.last_index() == n.commit == e.last for n in c.nodes.values())


def test_the_leader_waits_for_every_follower_it_hears_from():
    c = quiet_cluster()
    lead = c.elect(1)
    lost = []

    def drop_first_quiescing_heartbeat_to_3(m) -> bool:
        if isinstance(m, Heartbeat) and m.quiesce and m.to == 3 and not lost:
            lost.append(m)
            return True
        return False

    c.drop_if = drop_first_quiescing_heartbeat_to_3
    c.tick(1)
    assert lost and c.nodes[2].quiescent and not c.nodes[3].quiescent
    assert not lead.quiescent  # 2 is a quorum with us, but 3 answered this period
    c.tick(1)
    assert lead.quiescent and c.nodes[3].quiescent


def test_a_lagging_follower_is_caught_up_before_the_group_goes_quiet():
    c = quiet_cluster()
    lead = c.elect(1)
    c.cut(1, 3)
    for _ in range(3):
        c.propose(1, b"x")
    c.tick(2)
    assert not lead.quiescent  # 3 was heard this period and is behind
    c.heal()
    c.tick(5)
    assert c.nodes[3].log.last_index() == lead.log.last_index()
    assert lead.quiescent and c.nodes[3].quiescent


def test_a_dead_follower_does_not_hold_the_group_awake_once_the_failure_detector_says_so():
    c = quiet_cluster()
    lead = c.elect(1)
    c.crash(3)
    c.propose(1, b"written while 3 is down")
    c.tick(4 * ET)
    assert not lead.quiescent  # silent in the group is not down: it may be up and unable to hear us
    lead.peer_down(3)
    c.tick(3)
    assert lead.role == Role.LEADER and lead.quiescent and c.nodes[2].quiescent


def test_quiet_followers_never_campaign_and_keep_their_lease():
    c = quiet_cluster()
    c.elect(1)
    settle(c)
    c.crash(1)
    c.tick(20 * ET)
    assert all(c.nodes[i].role == Role.FOLLOWER and c.nodes[i].leader == 1 for i in (2, 3))
    f = c.nodes[2]
    f.step(Vote(to=2, frm=3, term=5, last_index=100, last_term=5, pre_vote=True))
    assert f.term == 1 and f.leader == 1  # in lease: a campaign is ignored (and wakes it)
    assert not f.quiescent


def test_when_the_leader_is_called_down_the_followers_elect_another():
    c = quiet_cluster()
    c.elect(1)
    settle(c)
    c.crash(1)
    for i in (2, 3):
        c.nodes[i].peer_down(1)
        assert not c.nodes[i].quiescent
        assert not c.nodes[i]._in_lease()  # the lease went with the leader
    c.tick(ET + 1)  # the randomized timeout is in [ET, 2 ET): at most ET more ticks
    new = c.leader()
    assert new in (2, 3) and c.nodes[new].term == 2


def test_a_follower_called_down_wakes_only_the_leader():
    c = quiet_cluster()
    lead = c.elect(1)
    settle(c)
    c.nodes[2].peer_down(3)  # not 2's leader: nothing to do
    assert c.nodes[2].quiescent
    lead.peer_down(3)
    assert not lead.quiescent


def test_a_quiet_leader_cut_off_from_its_followers_steps_down_once_it_hears_they_are_down():
    c = quiet_cluster()
    lead = c.elect(1)
    settle(c)
    c.isolate(1)
    c.tick(5 * ET, only=[1])
    assert lead.role == Role.LEADER  # quiet: check-quorum does not run
    lead.peer_down(2)
    lead.peer_down(3)
    c.tick(ET + 1, only=[1])
    assert lead.role == Role.FOLLOWER


def test_a_restarted_follower_wakes_the_quiet_leader_and_falls_back_in_line():
    c = quiet_cluster()
    lead = c.elect(1)
    settle(c)
    c.crash(3)
    c.restart(3)  # a fresh core: no leader known, its election timer running
    assert not c.nodes[3].quiescent and c.nodes[3].leader == 0
    c.tick(2 * ET + 5)
    # Its pre-vote woke the leader (the others, in lease, refused it); the leader's next
    # heartbeat was a quiescing one, which made 3 a quiet follower again.
    assert lead.role == Role.LEADER and lead.term == 1
    assert c.nodes[3].leader == 1 and c.nodes[3].term == 1
    assert all(n.quiescent for n in c.nodes.values())


def test_a_restarted_leader_is_replaced_when_its_restart_is_reported():
    c = quiet_cluster()
    c.elect(1)
    settle(c)
    c.crash(1)
    c.restart(1)
    for i in (2, 3):
        c.nodes[i].peer_down(1)  # the detector saw a new incarnation of node 1
    c.tick(2 * ET + 2)
    new = c.leader()
    assert new is not None and c.nodes[new].term >= 2
    settle(c)
    assert all(n.quiescent and n.leader == new for n in c.nodes.values())


def test_a_transfer_from_a_quiet_leader():
    c = quiet_cluster()
    lead = c.elect(1)
    settle(c)
    lead.transfer_leadership(2)
    c.flush()
    assert c.nodes[2].role == Role.LEADER and c.nodes[2].term == 2
    settle(c)
    assert all(n.quiescent and n.leader == 2 for n in c.nodes.values())


def test_a_stray_message_wakes_a_quiet_node_which_settles_again():
    c = quiet_cluster()
    lead = c.elect(1)
    settle(c)
    lead.step(HeartbeatResponse(to=1, frm=2, term=1))  # no quiesced: 2 says it is awake
    assert not lead.quiescent
    settle(c)
    assert all(n.quiescent for n in c.nodes.values()) and lead.term == 1


def test_followers_woken_by_a_campaign_that_misses_the_leader_wake_it_and_it_keeps_the_lead():
    """Simulator seed 2084153: a removed node (its own stale membership leaves the
    leader out) campaigned to two quiet followers. They woke and refused it, their
    election timers ran again, and the leader slept on: one election timeout later
    each granted the other's pre-vote, and they elected without it. A follower woken
    by anyone but its leader now wakes the leader, whose heartbeats hold them."""
    c = quiet_cluster()
    lead = c.elect(1)
    settle(c)
    c.add_node(4, ConfState(voters=(2, 3, 4)))  # stale: thinks 1 is not a member
    c.nodes[4].campaign()
    c.flush()
    assert not c.nodes[2].quiescent and not c.nodes[3].quiescent
    assert not lead.quiescent  # woken by their word, not by the campaign
    c.tick(4 * ET, only=[1, 2, 3])
    assert lead.role == Role.LEADER and lead.term == 1
    assert all(c.nodes[i].quiescent and c.nodes[i].leader == 1 for i in (1, 2, 3))


def test_duplicate_acknowledgements_leave_a_quiet_leader_quiet():
    c = quiet_cluster()
    lead = c.elect(1)
    settle(c)
    ack = [m for m in c.sent if isinstance(m, HeartbeatResponse) and m.quiesced is not None][-1]
    lead.step(ack)
    assert lead.quiescent and drain(lead, c.storage[1]) == []


def test_a_follower_that_lost_its_tail_does_not_go_quiet():
    c = quiet_cluster()
    lead = c.elect(1)
    e = c.propose(1, b"x")
    settle(c)
    f = c.nodes[2]
    f.step(Heartbeat(to=2, frm=1, term=1, commit=e.last + 5, quiesce=True))  # more than it holds
    answer = [m for m in drain(f, c.storage[2]) if isinstance(m, HeartbeatResponse)][-1]
    assert not f.quiescent and answer.quiesced is None and answer.lost_tail == e.last
    assert lead.term == 1


def test_a_group_of_one_goes_quiet_at_once():
    node, st = make_node(1, voters=(1,), quiesce=True, election_tick=ET)
    node.campaign()
    drain(node, st)
    assert node.role == Role.LEADER
    node.tick()
    drain(node, st)
    assert node.quiescent
    node.propose(b"x", 1)
    assert not node.quiescent
    drain(node, st)
    node.tick()
    assert node.quiescent


def test_learners_go_quiet_too():
    c = quiet_cluster(ids=(1, 2, 3), learners=(4,))
    c.elect(1)
    settle(c)
    assert all(n.quiescent for n in c.nodes.values())


def test_a_member_heard_from_again_wakes_the_quiet_leader_that_went_quiet_without_it():
    c = quiet_cluster()
    lead = c.elect(1)
    settle(c)
    c.isolate(3)  # 3 stays quiet, in lease, with what it had
    e = c.propose(1, b"written while 3 is cut off")
    lead.peer_down(3)  # 1 and 2 go quiet without it
    c.tick(3)
    assert lead.quiescent and c.nodes[2].quiescent and c.nodes[3].quiescent
    c.heal()
    c.tick(10 * ET)
    assert c.nodes[3].log.last_index() < e.last  # nobody speaks to a quiet member
    c.nodes[2].peer_back(3)  # a follower has nothing to do
    assert c.nodes[2].quiescent
    lead.peer_back(3)  # the failure detector hears 3 again
    assert not lead.quiescent
    c.tick(5)
    assert c.nodes[3].log.last_index() == e.last and c.nodes[3].commit == e.last
    assert all(n.quiescent for n in c.nodes.values())
