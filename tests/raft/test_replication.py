"""Replication: pipelining with count/byte limits, probing, fast backtracking,
recovery from lost appends, and followers behind the leader's log start."""

from __future__ import annotations

from raft import (
    Append,
    AppendResponse,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    HeartbeatResponse,
    InstallSnapshot,
    MemoryStorage,
    ProgressState,
    Role,
)
from tests.raft.harness import Cluster, drain


def appends_to(msgs, to):
    return [m for m in msgs if isinstance(m, Append) and m.to == to]


def test_replicate_state_pipelines_up_to_max_inflight_then_pauses():
    c = Cluster(max_inflight_msgs=3)
    lead = c.elect(1)
    assert lead.prs[2].state == ProgressState.REPLICATE
    c.isolate(2)  # acks from 2 never come back
    sent = []
    for i in range(6):
        lead.propose(b"e%d" % i, 1)
        sent += drain(lead, c.storage[1])
    apps = [m for m in appends_to(sent, 2) if m.entries]
    assert len(apps) == 3  # the window is full
    assert lead.prs[2].is_paused()
    # Acks free the window and the rest follows in one go.
    for m in apps:
        lead.step(AppendResponse(to=1, frm=2, term=1, index=m.entries[-1].last))
    more = [m for m in appends_to(drain(lead, c.storage[1]), 2) if m.entries]
    assert more and more[-1].entries[-1].last == lead.log.last_index()


def test_max_size_per_msg_splits_entries_but_sends_at_least_one():
    c = Cluster(max_size_per_msg=10)
    lead = c.elect(1)
    c.isolate(2)
    c.isolate(3)
    for _ in range(4):
        lead.propose(b"x" * 6, 1)
    lead.propose(b"y" * 50, 1)  # bigger than the limit on its own
    drain(lead, c.storage[1])
    c.heal()
    c.sent.clear()
    lead.prs[2].become_probe()
    lead.step(HeartbeatResponse(to=1, frm=2, term=1))
    c.persist_all()
    c.flush()
    sizes = [sum(len(e.data) for e in m.entries) for m in appends_to(c.sent, 2) if m.entries]
    assert sizes and max(sizes) == 50 and all(s <= 10 for s in sizes if s != 50)
    assert c.nodes[2].log.last_index() == lead.log.last_index()


def test_probe_sends_one_append_until_a_reply_or_heartbeat_reply():
    c = Cluster()
    lead = c.elect(1)
    c.isolate(2)
    lead.prs[2].become_probe()
    sent = []
    for _ in range(3):
        lead.propose(b"x", 1)
        sent += drain(lead, c.storage[1])
    assert len(appends_to(sent, 2)) == 1
    lead.step(HeartbeatResponse(to=1, frm=2, term=1))
    assert len(appends_to(drain(lead, c.storage[1]), 2)) == 1


def test_fast_backtracking_skips_a_whole_conflicting_term_per_round_trip():
    # Follower 2 holds 100 batches of a stale term 2 after the common prefix; the
    # leader (term 3) must find the match point in a few round trips, not 100.
    common = [Entry(0, 0, 1, EntryKind.NOOP, b"")]
    stale = [Entry(1 + 3 * k, 3 + 3 * k, 2, EntryKind.NORMAL, b"s") for k in range(100)]
    good = [Entry(1 + 2 * k, 2 + 2 * k, 3, EntryKind.NORMAL, b"g") for k in range(30)]
    c = Cluster()
    for i, tail, term in [(1, good, 3), (2, stale, 2), (3, good, 3)]:
        c.storage[i].append(common + tail)
        c.storage[i].set_hard_state(HardState(term=term, vote=0, commit=0))
        c.restart(i)
    c.elect(1)
    c.flush()
    rejects = [m for m in c.sent if isinstance(m, AppendResponse) and m.frm == 2 and m.reject]
    assert 1 <= len(rejects) <= 3
    assert c.log(2) == c.log(1)


def test_a_lost_append_is_repaired_by_the_heartbeat_path():
    c = Cluster(max_inflight_msgs=2)
    lead = c.elect(1)
    c.cut(1, 2)
    e = c.propose(1, b"lost", 1)
    c.heal()
    assert c.nodes[2].log.last_index() < e.last
    c.tick(3)
    assert c.nodes[2].log.last_index() == lead.log.last_index()
    assert c.nodes[2].commit == lead.commit


def test_window_full_of_lost_appends_reopens_on_heartbeat():
    c = Cluster(max_inflight_msgs=2)
    lead = c.elect(1)
    c.cut(1, 2)
    for i in range(5):
        c.propose(1, b"%d" % i, 1)
    assert lead.prs[2].is_paused()
    c.heal()
    c.tick(4)
    assert c.nodes[2].log.last_index() == lead.log.last_index()


def test_duplicated_and_reordered_appends_are_harmless():
    c = Cluster()
    lead = c.elect(1)
    c.isolate(2)
    for i in range(4):
        lead.propose(b"%d" % i, 2)
    c.persist_all()
    c.inflight.clear()
    c.heal()
    msgs = [m for m in c.sent if isinstance(m, Append) and m.to == 2]
    f = c.nodes[2]
    for m in reversed(msgs + msgs):
        f.step(m)
    c.flush()
    c.tick(3)
    assert c.log(2) == c.log(1)


def test_follower_behind_the_log_start_restarts_from_the_leaders_start():
    # A data partition: retention dropped the prefix, the "snapshot" has no data.
    c = Cluster()
    lead = c.elect(1)
    c.crash(3)
    for i in range(10):
        c.propose(1, b"r%d" % i, 4)
    c.storage[1].compact(lead.commit - 4)  # retention: the log now starts late
    c.restart(3)
    c.tick(3)
    snaps = [m for m in c.sent if isinstance(m, InstallSnapshot) and m.to == 3]
    assert len(snaps) == 1 and snaps[0].snapshot.data == b""
    st3 = c.storage[3]
    assert st3.first_index() == c.storage[1].first_index()
    assert c.log(3) == c.log(1)
    assert c.nodes[3].commit == lead.commit
    e = c.propose(1, b"after", 1)
    assert c.nodes[3].commit == e.last


def test_conflicting_suffix_is_truncated_and_replaced_on_the_follower():
    c = Cluster()
    c.elect(1)
    c.isolate(1)
    for i in range(3):
        c.nodes[1].propose(b"orphan%d" % i, 2)  # never reaches anyone
    c.flush()
    for _ in range(60):  # 2 and 3 elect a new leader once 1's lease expired
        c.tick(only=[2, 3])
        if c.leader() in (2, 3):
            break
    new = c.leader()
    assert new in (2, 3)
    c.propose(new, b"new", 1)
    c.heal()
    c.tick(25)
    lead = c.leader()
    assert c.log(1) == c.log(lead)
    assert not any(e.data.startswith(b"orphan") for e in c.storage[1].all_entries())


def test_status_reports_lag_and_under_replication():
    c = Cluster()
    lead = c.elect(1)
    c.isolate(3)
    c.propose(1, b"x", 5)
    s = lead.status()
    assert s.role == Role.LEADER and s.leader == 1 and s.commit == lead.commit
    assert s.progress[2].lag == 0 and s.progress[3].lag == 5
    # Behind means lacking what the leader had a tick ago: an acknowledgement on its way
    # (or a trailing follower's batch, `Config.thrifty`) is not under-replication.
    assert s.under_replicated() == [] and not lead.lagging()
    c.tick()
    assert lead.status().under_replicated() == [] and not lead.lagging()
    c.tick()
    s = lead.status()
    assert s.under_replicated() == [3] and lead.lagging()
    assert s.progress[2].caught_up and not s.progress[3].caught_up
    assert c.nodes[2].status().progress == {}


def test_storage_starting_at_a_later_offset():
    # A partition whose log starts at offset 1000 (e.g. after a reassignment).
    ids = (1, 2, 3)
    c = Cluster(ids)
    for i in ids:
        c.storage[i] = MemoryStorage(ConfState(ids), start=1000)
        c.restart(i)
    c.elect(1)
    e = c.propose(1, b"x", 3)
    assert (e.index, e.last) == (1001, 1003)
    assert c.log(2) == [(1000, 1000, 1), (1001, 1003, 1)]


def test_follower_that_lost_an_acknowledged_tail_catches_up_again():
    """A damaged disk cut a follower's log below what it had acknowledged: the leader's
    heartbeat commit must not break it, and the leader must stop trusting the old match."""
    c = Cluster()
    c.elect(1)
    for _ in range(6):
        c.propose(1)
    before = c.nodes[1].status().progress[2].match
    c.crash(2)
    st = c.storage[2]
    keep = c.log(2)[2][1]  # cut after the third entry
    st.truncate_after(keep)
    st.set_hard_state(HardState(st.hard_state.term, st.hard_state.vote, min(st.hard_state.commit, keep)))
    c.restart(2)
    from raft.types import HeartbeatResponse

    c.drop_if = lambda m: isinstance(m, HeartbeatResponse)  # only the append path may repair it here
    c.tick(3)  # heartbeats carry the old commit: no exception
    assert c.storage[2].last_index() == keep and c.nodes[1].status().progress[2].match == before
    c.propose(1)  # the next append is rejected below the match
    assert c.log(2) == c.log(1)
    assert c.nodes[1].status().progress[2].match == c.nodes[1].log.last_index()


def test_idle_leader_repairs_a_follower_that_lost_a_tail():
    """No new writes: the follower's heartbeat answer says where its log ends."""
    from raft.types import HardState
    from tests.raft.harness import Cluster

    c = Cluster()
    c.elect(1)
    for _ in range(6):
        c.propose(1)
    c.crash(2)
    st = c.storage[2]
    keep = c.log(2)[2][1]
    st.truncate_after(keep)
    st.set_hard_state(HardState(st.hard_state.term, st.hard_state.vote, min(st.hard_state.commit, keep)))
    c.restart(2)
    c.tick(3)
    assert c.log(2) == c.log(1)
    assert c.nodes[1].status().progress[2].match == c.nodes[1].log.last_index()


def test_idle_leader_repairs_a_follower_whose_whole_log_was_lost():
    from raft.types import HardState
    from tests.raft.harness import Cluster

    c = Cluster()
    c.elect(1)
    c.propose(1)
    c.crash(2)
    st = c.storage[2]
    st.truncate_after(-1)
    st.set_hard_state(HardState(st.hard_state.term, st.hard_state.vote, -1))
    c.restart(2)
    c.tick(3)
    assert c.log(2) == c.log(1)


def test_eagerly_every_follower_hears_of_a_commit_at_once():
    c = Cluster()
    lead = c.elect(1)
    c.sent.clear()
    e = c.propose(1, b"a", 1)
    assert lead.commit == e.last == c.nodes[2].commit == c.nodes[3].commit
    assert len([m for m in c.sent if isinstance(m, Append) and not m.entries]) == 2  # one per follower


def test_without_eager_commit_a_commit_costs_no_empty_append_and_followers_learn_it_from_what_goes_next():
    # The commit index needs no acknowledgement: a follower learns it from the next
    # append (a proposal) or heartbeat, instead of from an append of its own per commit
    # (which cost each follower a Ready and an acknowledgement per write).
    c = Cluster(eager_commit=False)
    lead = c.elect(1)
    c.sent.clear()
    e = c.propose(1, b"a", 1)
    assert lead.commit == e.last
    assert not [m for m in c.sent if isinstance(m, Append) and not m.entries]
    assert c.nodes[2].commit < e.last and c.nodes[3].commit < e.last
    e2 = c.propose(1, b"b", 1)
    assert c.nodes[2].commit >= e.last and c.nodes[3].commit >= e.last  # on the next append
    c.tick()
    assert c.nodes[2].commit == c.nodes[3].commit == e2.last  # or the next heartbeat
