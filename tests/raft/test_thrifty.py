"""Thrifty appends (`Config.thrifty`): a new entry goes at once only to a commit's
quorum; the other voters get what they lack at the tick, or once it is a batch."""

from __future__ import annotations

from raft import Append
from tests.raft.harness import Cluster


def entry_appends(c: Cluster) -> list[Append]:
    return [m for m in c.sent if isinstance(m, Append) and m.entries]


def waited_on(c: Cluster, data: bytes = b"a") -> int:
    """Propose one entry; the one follower it went to at once."""
    c.sent.clear()
    c.propose(1, data)
    (fast,) = {m.to for m in entry_appends(c)}
    return fast


def thrifty_cluster(ids: tuple[int, ...] = (1, 2, 3), **cfg: object) -> Cluster:
    c = Cluster(ids, thrifty=True, eager_commit=False, **cfg)
    c.elect(1)
    c.tick()  # the trailing followers' share of the election's no-op
    return c


def test_a_new_entry_goes_at_once_to_one_follower_of_two_and_to_the_other_at_the_tick():
    c = thrifty_cluster()
    lead = c.nodes[1]
    assert c.nodes[2].log.last_index() == c.nodes[3].log.last_index() == lead.log.last_index()
    c.sent.clear()
    e1 = c.propose(1, b"a")
    e2 = c.propose(1, b"b")
    assert lead.commit == e2.last  # one follower's acknowledgement is the quorum
    (fast,) = {m.to for m in entry_appends(c)}
    trailing = 5 - fast
    assert c.nodes[trailing].log.last_index() < e1.index
    assert lead.status().under_replicated() == []  # a tick's trail is not under-replication
    c.sent.clear()
    c.tick()
    batch = entry_appends(c)
    assert [m.to for m in batch] == [trailing]
    assert [e.index for e in batch[0].entries] == [e1.index, e2.index]  # one append, one write
    assert c.nodes[trailing].log.last_index() == e2.last
    assert c.nodes[trailing].commit == e2.last


def test_when_the_fast_follower_stops_answering_the_next_tick_commits_through_the_other():
    c = thrifty_cluster()
    lead = c.nodes[1]
    fast = waited_on(c)
    other = 5 - fast
    c.isolate(fast)
    e = c.propose(1, b"b")
    assert lead.commit < e.last  # the entry went only to the follower that is gone
    c.tick()
    assert lead.commit == e.last  # the tick's batch reached the other, whose ack commits
    c.sent.clear()
    e2 = c.propose(1, b"c")
    assert lead.commit == e2.last  # and it now gets new entries at once
    assert {m.to for m in entry_appends(c)} == {other}  # the one cut off now trails
    c.heal()
    c.tick(2)
    assert c.nodes[fast].log.last_index() == e2.last


def test_a_backlog_of_a_batch_goes_at_once():
    c = thrifty_cluster(trailing_batch_bytes=100)
    trailing = 5 - waited_on(c, b"x" * 60)
    e = c.propose(1, b"y" * 60)  # 120 bytes are waiting for the trailing follower: a batch
    assert [len(m.entries) for m in entry_appends(c) if m.to == trailing] == [2]
    assert c.nodes[trailing].log.last_index() == e.last


def test_five_voters_send_at_once_to_two_followers():
    c = thrifty_cluster((1, 2, 3, 4, 5))
    lead = c.nodes[1]
    c.sent.clear()
    e = c.propose(1, b"a")
    assert lead.commit == e.last
    assert len({m.to for m in entry_appends(c)}) == 2
    c.tick()
    assert all(c.nodes[i].log.last_index() == e.last for i in c.nodes)


def test_learners_get_new_entries_at_once():
    c = Cluster((1, 2, 3), learners=(4,), thrifty=True, eager_commit=False)
    c.elect(1)
    c.tick()
    c.sent.clear()
    e = c.propose(1, b"a")
    assert 4 in {m.to for m in entry_appends(c)}
    assert c.nodes[4].log.last_index() == e.last
    assert len({m.to for m in entry_appends(c)} & {2, 3}) == 1


def test_a_follower_the_failure_detector_holds_down_is_not_the_one_waited_on():
    c = thrifty_cluster()
    lead = c.nodes[1]
    fast = waited_on(c)
    lead.peer_down(fast)
    c.sent.clear()
    e = c.propose(1, b"b")
    assert 5 - fast in {m.to for m in entry_appends(c)}
    assert lead.commit == e.last


def test_without_thrifty_every_follower_gets_a_new_entry_at_once():
    c = Cluster(eager_commit=False)
    c.elect(1)
    c.sent.clear()
    c.propose(1, b"a")
    assert sorted(m.to for m in entry_appends(c)) == [2, 3]
