"""The rules of the Raft paper's Figure 2, one test per rule, on offset-range entries."""

from __future__ import annotations

import pytest

from raft import (
    Append,
    AppendResponse,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    MemoryStorage,
    NotLeader,
    RaftError,
    RaftInvariantError,
    Role,
    Vote,
    VoteResponse,
)
from tests.raft.harness import Cluster, drain, make_node, persist


def E(index: int, last: int, term: int, data: bytes = b"d") -> Entry:
    return Entry(index=index, last=last, term=term, kind=EntryKind.NORMAL, data=data)


def follower_with(entries: list[Entry], term: int, commit: int = -1):
    st = MemoryStorage(ConfState((1, 2, 3)))
    st.append(entries)
    st.set_hard_state(HardState(term=term, vote=0, commit=commit))
    return make_node(2, storage=st)


# -- rules for all servers ----------------------------------------------------------


def test_higher_term_in_any_message_makes_a_leader_step_down():
    c = Cluster()
    lead = c.elect(1)
    assert lead.term == 1
    lead.step(AppendResponse(to=1, frm=2, term=5, index=-1, reject=True))
    assert lead.role == Role.FOLLOWER and lead.term == 5 and lead.leader == 0


def test_append_from_a_higher_term_adopts_term_and_leader():
    node, st = make_node(2)
    node.step(Append(to=2, frm=3, term=4, prev_index=-1, prev_term=0, entries=(), commit=-1))
    assert node.term == 4 and node.leader == 3 and node.role == Role.FOLLOWER


# -- AppendEntries receiver -----------------------------------------------------------


def test_append_with_stale_term_is_refused_with_our_term():
    node, st = follower_with([E(0, 0, 1)], term=3)
    node.step(Append(to=2, frm=1, term=2, prev_index=0, prev_term=1, entries=(E(1, 1, 2),), commit=0))
    msgs = drain(node, st)
    assert [(type(m), m.term, m.reject) for m in msgs] == [(AppendResponse, 3, True)]
    assert st.last_index() == 0


def test_append_rejected_when_prev_entry_does_not_match_with_conflict_hint():
    # Follower: batches 0-2 (t1), 3-5 (t2), 6-9 (t2). Leader thinks prev is 9 with term 3.
    node, st = follower_with([E(0, 2, 1), E(3, 5, 2), E(6, 9, 2)], term=3)
    node.step(Append(to=2, frm=1, term=3, prev_index=9, prev_term=3, entries=(E(10, 10, 3),), commit=-1))
    (resp,) = drain(node, st)
    assert isinstance(resp, AppendResponse) and resp.reject and resp.index == 9
    # Its last boundary with term <= 3 is its last entry: offset 9, term 2.
    assert (resp.hint_index, resp.hint_term) == (9, 2)
    # A prev beyond the follower's log: the hint is its last offset.
    node.step(Append(to=2, frm=1, term=3, prev_index=20, prev_term=3, entries=(), commit=-1))
    (resp,) = drain(node, st)
    assert resp.reject and resp.hint_index == 9
    # A prev inside the follower's entry with an older term: the hint skips the term.
    node.step(Append(to=2, frm=1, term=3, prev_index=9, prev_term=1, entries=(), commit=-1))
    (resp,) = drain(node, st)
    assert resp.reject and (resp.hint_index, resp.hint_term) == (2, 1)


def test_conflicting_entries_are_replaced_and_the_caller_truncates_from_entries0():
    node, st = follower_with([E(0, 2, 1), E(3, 5, 2), E(6, 9, 2)], term=3)
    new = (E(3, 4, 3), E(5, 7, 3))
    node.step(Append(to=2, frm=1, term=3, prev_index=2, prev_term=1, entries=new, commit=-1))
    rd = node.ready()
    assert rd.entries == list(new) and rd.entries[0].index == 3
    st.append(rd.entries)  # truncate_after(2) then append
    node.advance(rd)
    assert [(e.index, e.last, e.term) for e in st.all_entries()] == [(0, 2, 1), (3, 4, 3), (5, 7, 3)]
    assert node.log_term(6) == 3 and node.log_term(8) is None


def test_entries_already_present_are_not_appended_again():
    node, st = follower_with([E(0, 2, 1), E(3, 5, 1)], term=1)
    node.step(Append(to=2, frm=1, term=1, prev_index=-1, prev_term=0, entries=(E(0, 2, 1), E(3, 5, 1)), commit=-1))
    rd = persist(node, st)
    assert rd.entries == []
    assert [m.index for m in rd.messages] == [5]


def test_follower_commit_is_min_of_leader_commit_and_last_new_entry():
    node, st = follower_with([], term=1)
    node.step(Append(to=2, frm=1, term=1, prev_index=-1, prev_term=0, entries=(E(0, 3, 1),), commit=10))
    assert node.commit == 3
    node.step(Append(to=2, frm=1, term=1, prev_index=3, prev_term=1, entries=(E(4, 6, 1),), commit=5))
    assert node.commit == 5


def test_follower_never_commits_past_what_matched_the_leader():
    # A stale suffix (term 1) beyond the append's last new entry must not be committed.
    node, st = follower_with([E(0, 2, 1), E(3, 5, 1)], term=2)
    node.step(Append(to=2, frm=1, term=2, prev_index=-1, prev_term=0, entries=(E(0, 2, 1),), commit=9))
    assert node.commit == 2


def test_overwriting_a_committed_entry_is_an_invariant_error():
    node, st = follower_with([E(0, 2, 1), E(3, 5, 1)], term=2, commit=5)
    with pytest.raises(RaftInvariantError):
        node.log.maybe_append(2, 1, 9, (E(3, 5, 2),))


# -- RequestVote receiver -------------------------------------------------------------


def vote(frm: int, term: int, last_index: int, last_term: int, **kw) -> Vote:
    return Vote(to=2, frm=frm, term=term, last_index=last_index, last_term=last_term, **kw)


def test_vote_refused_for_a_stale_term():
    node, st = follower_with([E(0, 0, 2)], term=3)
    node.step(vote(1, 2, 5, 2))
    assert drain(node, st) == []  # ignored: a stale candidate learns nothing from us


def test_vote_granted_once_per_term_and_persisted_before_the_reply():
    node, st = follower_with([E(0, 0, 1)], term=1)
    node.step(vote(1, 2, 0, 1))
    rd = node.ready()
    assert rd.hard_state == HardState(term=2, vote=1, commit=-1)
    assert [(m.frm, m.granted) for m in rd.messages] == [(2, True)]
    st.set_hard_state(rd.hard_state)
    node.advance(rd)
    node.step(vote(3, 2, 9, 1))
    (resp,) = drain(node, st)
    assert not resp.granted  # already voted for 1 in term 2
    node.step(vote(1, 2, 0, 1))
    (resp,) = drain(node, st)
    assert resp.granted  # a retry from the same candidate is granted again


def test_vote_survives_restart():
    node, st = follower_with([E(0, 0, 1)], term=1)
    node.step(vote(1, 2, 0, 1))
    drain(node, st)
    node2, _ = make_node(2, storage=st)
    assert (node2.term, node2.vote) == (2, 1)
    node2.step(vote(3, 2, 9, 1))
    assert [m.granted for m in drain(node2, st)] == [False]


@pytest.mark.parametrize(
    "last_index,last_term,granted",
    [
        (9, 1, False),  # older last term loses even with a longer log
        (4, 2, False),  # same term, shorter log
        (5, 2, True),  # same term, same length
        (7, 2, True),  # same term, longer
        (0, 3, True),  # newer last term wins even with a shorter log
    ],
)
def test_vote_only_for_an_up_to_date_log(last_index, last_term, granted):
    node, st = follower_with([E(0, 2, 1), E(3, 5, 2)], term=2)
    node.step(vote(1, 3, last_index, last_term))
    (resp,) = drain(node, st)
    assert isinstance(resp, VoteResponse) and resp.granted is granted


# -- candidates and leaders -----------------------------------------------------------


def test_new_leader_appends_a_noop_of_its_term_and_commits_it():
    c = Cluster()
    lead = c.elect(1)
    for i in (1, 2, 3):
        assert c.storage[i].all_entries() == [Entry(0, 0, 1, EntryKind.NOOP, b"")]
    assert lead.commit == 0
    assert [e.kind for e in c.applied[1]] == [EntryKind.NOOP]


def test_propose_on_a_follower_raises_not_leader_with_hint():
    c = Cluster()
    c.elect(1)
    with pytest.raises(NotLeader) as err:
        c.nodes[2].propose(b"x", 1)
    assert err.value.leader == 1


def test_batches_take_offset_ranges_and_prev_checks_use_the_previous_batch_last():
    c = Cluster()
    lead = c.elect(1)
    e1 = lead.propose(b"a", 5)
    e2 = lead.propose(b"b", 3)
    assert (e1.index, e1.last, e2.index, e2.last) == (1, 5, 6, 8)
    c.persist_all()
    appends = [m for m in c.inflight if isinstance(m, Append) and m.to == 2]
    assert appends[-1].prev_index in (0, 5)
    c.flush()
    assert c.log(2) == [(0, 0, 1), (1, 5, 1), (6, 8, 1)]
    assert c.nodes[2].commit == 8


def test_leader_counts_its_own_entry_only_once_durable():
    c = Cluster(ids=(1,))
    lead = c.elect(1)
    e = lead.propose(b"x", 2)
    rd = lead.ready()
    assert rd.entries == [e] and rd.committed_entries == [] and lead.commit == 0
    c.storage[1].append(rd.entries)
    lead.advance(rd)
    assert lead.commit == e.last
    assert lead.ready().committed_entries == [e]


def test_leader_does_not_commit_an_older_term_entry_by_counting_replicas():
    # Figure 8 on three nodes: X (offset 1, term 2) is on nodes 1 and 2, node 3 holds
    # Y (offset 1, term 3). Node 1 wins term 4. X is on a majority, but node 3 could
    # still win a later term (its last term 3 beats 2) and overwrite it, so X may
    # commit only together with an entry of term 4.
    c = Cluster()
    noop = Entry(0, 0, 1, EntryKind.NOOP, b"")
    for i, ents, term in [(1, [noop, E(1, 1, 2)], 3), (2, [noop, E(1, 1, 2)], 3), (3, [noop, E(1, 1, 3)], 3)]:
        c.storage[i].append(ents)
        c.storage[i].set_hard_state(HardState(term=term, vote=0, commit=0))
        c.restart(i)
    lead = c.nodes[1]
    lead.campaign()
    for _ in range(4):  # pre-vote and vote rounds, nothing more
        c.persist_all()
        c.deliver()
    assert lead.role == Role.LEADER and lead.term == 4
    c.persist_all()
    c.inflight.clear()  # the appends carrying the no-op are lost
    lead.step(AppendResponse(to=1, frm=2, term=4, index=1))
    assert lead.commit == 0, "an older-term entry was committed by counting replicas"
    lead.step(AppendResponse(to=1, frm=2, term=4, index=2))
    assert lead.commit == 2 and lead.log_term(1) == 2


def test_commit_requires_a_current_term_entry():
    c = Cluster()
    lead = c.elect(1)
    # Stop replication, append an entry, then force the matches up by hand: commit
    # moves only for an index whose term is the current one.
    c.isolate(1)
    e = lead.propose(b"x", 1)
    drain(lead, c.storage[1])
    lead.term += 1  # pretend a new term began without a new entry
    lead.prs[2].match = e.last
    lead.prs[3].match = e.last
    assert not lead._maybe_commit()
    lead.term -= 1
    assert lead._maybe_commit() and lead.commit == e.last


def test_heartbeats_carry_a_safe_commit():
    c = Cluster()
    lead = c.elect(1)
    c.propose(1, b"x", 3)
    c.tick(1, only=[1])
    hb = [m for m in c.sent if isinstance(m, Heartbeat)]
    assert hb and all(m.commit <= lead.prs[m.to].match for m in hb)


def test_ready_and_advance_must_alternate():
    node, st = make_node(1)
    node.campaign()
    rd = node.ready()
    with pytest.raises(RaftError):
        node.ready()
    assert not node.has_ready()
    node.advance(rd)
    with pytest.raises(RaftError):
        node.advance(rd)


def test_messages_leave_only_through_ready_with_their_state():
    node, st = make_node(1)
    node.campaign()  # pre-vote: no term change, requests at term + 1
    rd = node.ready()
    assert all(isinstance(m, Vote) and m.pre_vote and m.term == 1 for m in rd.messages)
    assert rd.hard_state is None
    node.advance(rd)
    node.step(VoteResponse(to=1, frm=2, term=1, granted=True, pre_vote=True))
    rd = node.ready()
    # The real campaign: the self-vote is in the same Ready as the requests.
    assert rd.hard_state == HardState(term=1, vote=1, commit=-1)
    assert all(isinstance(m, Vote) and not m.pre_vote for m in rd.messages)


def test_restart_redelivers_committed_entries_from_applied():
    c = Cluster()
    c.elect(1)
    e = c.propose(1, b"x", 2)
    c.tick(2)
    c.crash(2)
    c.restart(2)
    n2 = c.nodes[2]
    assert n2.term == 1 and n2.commit >= e.last
    rd = persist(n2, c.storage[2])
    assert [x.last for x in rd.committed_entries] == [0, e.last]
    # With Config.applied the caller says what its state machine already has.
    n3, _ = make_node(3, storage=c.storage[3], applied=0)
    assert [x.last for x in persist(n3, c.storage[3]).committed_entries] == [e.last]


def test_restart_refuses_a_commit_beyond_the_durable_log():
    st = MemoryStorage(ConfState((1, 2, 3)))
    st.set_hard_state(HardState(term=1, vote=1, commit=4))
    with pytest.raises(RaftInvariantError):
        make_node(1, storage=st)


def test_config_and_proposal_arguments_are_validated():
    with pytest.raises(ValueError):
        make_node(0)
    with pytest.raises(ValueError):
        make_node(1, election_tick=2, heartbeat_tick=2)
    c = Cluster()
    c.elect(1)
    with pytest.raises(ValueError):
        c.nodes[1].propose(b"x", 0)


def test_a_write_whose_tail_is_overwritten_in_flight_still_counts_as_durable():
    # Issue 20 (simulator seed 777667): node 2 writes 0..5 (commit 3) from leader 1;
    # before the write lands, leader 3 of term 2 replaces 4..5. The write then lands.
    node, st = follower_with([], term=1)
    first = (E(0, 1, 1), E(2, 3, 1), E(4, 5, 1))
    node.step(Append(to=2, frm=1, term=1, prev_index=-1, prev_term=0, entries=first, commit=3))
    rd = node.ready()
    assert [e.index for e in rd.entries] == [0, 2, 4] and node.commit == 3
    node.step(Append(to=2, frm=3, term=2, prev_index=3, prev_term=1, entries=(E(4, 4, 2, b"new"),), commit=3))
    st.append(rd.entries)  # the first write lands, its last entry already replaced
    st.set_hard_state(rd.hard_state)
    node.advance(rd)
    # Only the replaced tail is written again: storage never cuts below commit.
    rd2 = node.ready()
    assert [(e.index, e.term) for e in rd2.entries] == [(4, 2)]
    st.append(rd2.entries)
    node.advance(rd2)
    assert [(e.index, e.last, e.term) for e in st.all_entries()] == [(0, 1, 1), (2, 3, 1), (4, 4, 2)]


def test_ready_refuses_to_rewrite_committed_entries_storage_holds():
    node, st = follower_with([E(0, 1, 1), E(2, 3, 1)], term=1, commit=3)
    node.log.unstable_offset = 2  # as if the core had lost track of what is durable
    node.log.unstable = [E(2, 3, 1)]
    with pytest.raises(RaftInvariantError):
        node.ready()
