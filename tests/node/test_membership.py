"""A group's membership as a pure state machine: revocation before reassignment,
expiry, failover, and a randomized simulation that no partition is ever held twice."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.errors import UnknownMemberError
from node.membership import PENDING_HEARTBEAT_MS, Group

SESSION_MS, REBALANCE_MS = 3000, 60_000


def counts_of(table):
    return lambda topic: table.get(topic, 0)


def joined(g, mid, now, count, topics=("t",), owned=()):
    m = g.join(mid, "c", list(topics), list(owned), SESSION_MS, REBALANCE_MS, now, count)
    g.mark_persisted(mid, now, count)
    return m


def beat(g, mid, owned, now, count, topics=("t",)):
    return g.answer(g.heartbeat(mid, list(topics), owned, now, count), now)


def test_a_partition_moves_only_after_its_owner_releases_it():
    count = counts_of({"t": 4})
    g = Group("g")
    a, epoch, _ = g.answer(joined(g, "a", 0, count), 0)
    assert a == {("t", p) for p in range(4)} and epoch == 1
    b, _, interval = g.answer(joined(g, "b", 0, count), 0)
    assert b == set() and interval == PENDING_HEARTBEAT_MS, "b waits for a to let go"
    assert g.state == "reconciling"
    a2, epoch_a, _ = beat(g, "a", a, 1, count)
    assert a2 < a and len(a2) == 2
    assert epoch_a == 1, "a is not reconciled to epoch 2 while it still holds what it must give back"
    b2, _, _ = beat(g, "b", set(), 1.1, count)
    assert b2 == set(), "a has not reported the release yet"
    a3, epoch_a, _ = beat(g, "a", a2, 1.2, count)
    assert a3 == a2 and epoch_a == g.epoch == 2
    b3, _, _ = beat(g, "b", set(), 1.3, count)
    assert b3 == a - a2
    beat(g, "b", b3, 1.4, count)
    assert g.state == "stable"


def test_what_was_sent_counts_as_held_until_the_member_reports():
    """A partition handed out a moment ago may be in use before the next heartbeat says
    so: it must not go to anyone else meanwhile."""
    count = counts_of({"t": 2})
    g = Group("g")
    a, _, _ = g.answer(joined(g, "a", 0, count), 0)
    joined(g, "b", 0.1, count)
    # a never reports (its next heartbeat is not due yet): what it was sent stays taken.
    assert g.answer(g.members["b"], 0.2)[0] == set()
    assert beat(g, "a", set(), 0.3, count)[0] == {("t", 0)}, (
        "a reported it dropped nothing it had... it keeps its target"
    )


def test_leave_expiry_and_rebalance_timeout():
    count = counts_of({"t": 2})
    g = Group("g")
    joined(g, "a", 0, count)
    g.answer(g.members["a"], 0)
    joined(g, "b", 0, count)
    assert g.leave("b", 0.5, count) and not g.leave("b", 0.5, count)
    joined(g, "c", 1, count)
    assert g.expire(SESSION_MS / 1000 - 0.01, count) == []
    gone = g.expire(SESSION_MS / 1000 + 0.01, count)
    assert [mid for mid, _ in gone] == ["a"], "a was last heard at 0, c at 1"
    with pytest.raises(UnknownMemberError):
        g.heartbeat("a", ["t"], [], 5, count)
    # c now holds everything; d joins; c keeps holding what it must give back: fenced.
    c, _, _ = beat(g, "c", set(), 4, count)
    beat(g, "c", c, 4, count)
    g.members["c"].rebalance_timeout_ms = 1000
    joined(g, "d", 4, count)  # from now on c must give one back
    beat(g, "c", c, 4.5, count)
    beat(g, "c", c, 4.9, count)
    assert g.expire(4.9, count) == []
    gone = g.expire(5.1, count)
    assert gone and gone[0][0] == "c" and "rebalance" in gone[0][1]


def test_after_failover_nothing_moves_until_every_known_member_reported():
    count = counts_of({"t": 4})
    g = Group("g", epoch=7)
    g.load("a", ("c", SESSION_MS, REBALANCE_MS), 0)
    g.load("b", ("c", SESSION_MS, REBALANCE_MS), 0)
    # A newcomer gets nothing: a or b may hold anything.
    new, _, _ = g.answer(joined(g, "n", 0, count), 0)
    assert new == set() and g.state == "reconciling"
    a, _, _ = beat(g, "a", {("t", 0), ("t", 1), ("t", 2)}, 0.1, count)
    assert a == {("t", 0), ("t", 1), ("t", 2)}, "keeps what it reports, nothing is taken yet"
    assert g.targets is None
    b, _, _ = beat(g, "b", {("t", 3)}, 0.2, count)
    assert g.targets is not None and g.epoch == 8
    assert g.targets["a"] <= a and g.targets["b"] == {("t", 3)}, "sticky to what members reported"
    assert b == {("t", 3)}
    # The newcomer gets a's surplus once a lets it go.
    a2, _, _ = beat(g, "a", a, 0.3, count)
    beat(g, "a", a2, 0.4, count)
    assert beat(g, "n", set(), 0.5, count)[0] == a - a2 and len(a2) == 2


def test_an_unknown_owner_that_never_reports_expires():
    count = counts_of({"t": 2})
    g = Group("g")
    g.load("ghost", ("c", SESSION_MS, REBALANCE_MS), 10)
    n, _, _ = g.answer(joined(g, "n", 10, count), 10)
    assert n == set()
    beat(g, "n", set(), 12, count)
    assert [mid for mid, _ in g.expire(10 + SESSION_MS / 1000 + 0.1, count)] == ["ghost"]
    assert g.answer(g.heartbeat("n", ["t"], [], 14, count), 14)[0] == {("t", 0), ("t", 1)}


def test_partition_count_and_subscription_changes_bump_the_epoch():
    table = {"t": 1}
    count = counts_of(table)
    g = Group("g")
    joined(g, "a", 0, count, topics=("t", "u"))
    e = g.epoch
    table["u"] = 2
    assert g.refresh(1, count) and g.epoch == e + 1
    assert g.targets["a"] == {("t", 0), ("u", 0), ("u", 1)}
    assert not g.refresh(1, count)
    beat(g, "a", [], 2, count, topics=("u",))
    assert g.epoch == e + 2 and g.targets["a"] == {("u", 0), ("u", 1)}


class _Client:
    def __init__(self, mid):
        self.mid = mid
        self.held: set = set()
        self.assignment: set = set()
        self.alive = True
        self.last_ok = 0.0


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_simulated_honest_clients_never_share_a_partition(data):
    """Clients that behave as client.group.GroupMember does (claim what they are given at
    once, release revoked partitions later, drop everything when they lose contact for
    2/3 of the session), under joins, leaves, crashes, partition-count changes and
    coordinator failovers: no two live clients ever hold the same partition."""
    table = {"t": 3, "u": 2}
    count = counts_of(table)
    g = Group("g")
    clients: dict[str, _Client] = {}
    now = 0.0
    names = iter(f"m{i}" for i in range(1000))

    def heartbeat(c):
        try:
            if c.mid in g.members:
                m = g.heartbeat(c.mid, ["t", "u"], sorted(c.held), now, count)
            else:
                m = g.join(c.mid, "c", ["t", "u"], sorted(c.held), SESSION_MS, REBALANCE_MS, now, count)
        except UnknownMemberError:
            return
        assignment, _, _ = g.answer(m, now)
        c.held |= assignment  # taken on at once
        c.assignment = set(assignment)
        c.last_ok = now

    for _ in range(data.draw(st.integers(5, 60))):
        op = data.draw(
            st.sampled_from(
                ["join", "beat", "beat", "beat", "release", "leave", "crash", "time", "persist", "failover", "grow"]
            )
        )
        live = [c for c in clients.values() if c.alive]
        if op == "join" or not live:
            c = clients.setdefault(mid := next(names), _Client(mid))
            c.last_ok = now
            heartbeat(c)
        elif op == "beat":
            heartbeat(data.draw(st.sampled_from(live)))
        elif op == "release":
            c = data.draw(st.sampled_from(live))
            c.held &= c.assignment
        elif op == "leave":
            c = data.draw(st.sampled_from(live))
            c.held.clear()
            c.alive = False
            g.leave(c.mid, now, count)
        elif op == "crash":
            data.draw(st.sampled_from(live)).alive = False
        elif op == "time":
            now += data.draw(st.floats(0.1, 2 * SESSION_MS / 1000))
            for c in live:
                if now - c.last_ok >= SESSION_MS / 1000 * 2 / 3:
                    c.held.clear()  # lost contact: give everything up before the coordinator expires it
            g.expire(now, count)
        elif op == "persist":
            for m in list(g.members.values()):
                g.mark_persisted(m.member_id, now, count)
        elif op == "failover":
            persisted = [(m.member_id, m.meta) for m in g.members.values() if m.persisted]
            g = Group("g", g.epoch)
            for mid, meta in persisted:
                g.load(mid, meta, now)
        elif op == "grow":
            table["u"] += 1
            g.refresh(now, count)
        holders: dict = {}
        for c in clients.values():
            if c.alive:
                for tp in c.held:
                    assert tp not in holders, f"{tp} held by {holders[tp]} and {c.mid} after {op}"
                    holders[tp] = c.mid


def test_a_partition_given_back_is_sent_at_a_later_epoch():
    """A handler of an earlier holding of a partition may still be running when its member
    gets the partition back; the epoch that handler names must compare as stale
    (`Member.since`, KIP-447 fencing of transactional offsets)."""
    count = counts_of({"t": 2})
    g = Group("g")
    both, e1, _ = g.answer(joined(g, "a", 0, count), 0)
    a = g.members["a"]
    assert len(both) == 2 and a.since == {tp: e1 for tp in both}
    beat(g, "a", both, 0, count)
    joined(g, "b", 1, count)
    (kept,), _, _ = beat(g, "a", both, 1, count)  # a is told to give one up
    a.committed.update({tp: 10 for tp in both})  # (what the coordinator notes on commits)
    beat(g, "a", [kept], 1, count)
    (moved,), _, _ = beat(g, "b", [], 1, count)
    assert a.since == {kept: e1}, "what a gave up is forgotten"
    assert moved not in a.committed
    g.leave("b", 2, count)
    again, e2, _ = beat(g, "a", [kept], 2, count)
    assert again == both and e2 > e1
    assert a.since == {kept: e1, moved: e2}, "given back: sent at a later epoch; kept: unchanged"
    # A rejoin (same id, epoch 0, having given everything up): every partition is new.
    g.join("a", "c", ["t"], [], SESSION_MS, REBALANCE_MS, 3, count)
    assert a.since == {}
    back, e3, _ = g.answer(a, 3)
    assert back == both and e3 > e2 and a.since == {tp: e3 for tp in both}
    # After a failover nobody knows when a got what it reports owning: no epoch is stale.
    g2 = Group("g", g.epoch)
    g2.load("a", a.meta, 4)
    beat(g2, "a", both, 4, count)
    assert g2.members["a"].since == {tp: 0 for tp in both}


def test_a_group_takes_at_most_max_members(monkeypatch):
    import node.membership
    from client.errors import LimitExceededError

    monkeypatch.setattr(node.membership, "MAX_MEMBERS", 3)
    count = counts_of({"t": 4})
    g = Group("g")
    for mid in ("a", "b", "c"):
        joined(g, mid, 0, count)
    with pytest.raises(LimitExceededError):
        joined(g, "d", 0, count)
    joined(g, "a", 1, count)  # a known member may still rejoin
