"""The group assignor as a pure function: valid, balanced, sticky, minimal movement."""

from hypothesis import given, settings
from hypothesis import strategies as st

from node.assignor import assign

TOPICS = ["a", "b", "c"]

partition_counts = st.fixed_dictionaries({t: st.integers(0, 12) for t in TOPICS})
member_ids = st.lists(st.text("mnopqrs", min_size=1, max_size=3), min_size=1, max_size=7, unique=True)


@st.composite
def groups(draw, homogeneous: bool = False):
    """(subscriptions, partition counts, previous) with an arbitrary, possibly
    conflicting or stale `previous`."""
    counts = draw(partition_counts)
    members = draw(member_ids)
    if homogeneous:
        topics = draw(st.sets(st.sampled_from(TOPICS), min_size=1))
        subs = {m: set(topics) for m in members}
    else:
        subs = {m: draw(st.sets(st.sampled_from(TOPICS), min_size=1)) for m in members}
    every = [(t, p) for t in TOPICS for p in range(14)]
    previous = {m: draw(st.sets(st.sampled_from(every), max_size=8)) for m in members + ["gone"]}
    return subs, counts, previous


def all_partitions(subs, counts):
    topics = set().union(*subs.values())
    return {(t, p) for t in topics for p in range(counts[t])}


def check_valid_and_balanced(result, subs, counts):
    assert set(result) == set(subs)
    owners: dict = {}
    for m, tps in result.items():
        for tp in tps:
            assert tp not in owners, f"{tp} owned by {owners[tp]} and {m}"
            assert tp[0] in subs[m], f"{m} got {tp} without subscribing to {tp[0]}"
            owners[tp] = m
    assert set(owners) == all_partitions(subs, counts)
    for x in result:
        for y in result:
            if len(result[x]) >= len(result[y]) + 2:
                assert not any(tp[0] in subs[y] for tp in result[x]), (
                    f"{x} has {len(result[x])}, {y} has {len(result[y])} and could take one"
                )


def moved(before, after):
    """Partitions that changed owner (a departed member's partitions do not count)."""
    return sum(len(tps - after.get(m, set())) for m, tps in before.items() if m in after)


@settings(max_examples=300, deadline=None)
@given(groups())
def test_any_input_gives_a_valid_balanced_assignment(case):
    subs, counts, previous = case
    result = assign(subs, counts, previous)
    check_valid_and_balanced(result, subs, counts)
    assert assign(subs, counts, result) == result, "nothing changed, so nothing moves"


@settings(max_examples=300, deadline=None)
@given(groups(homogeneous=True))
def test_identical_subscriptions_balance_within_one_with_minimal_moves(case):
    subs, counts, previous = case
    result = assign(subs, counts, previous)
    loads = [len(v) for v in result.values()]
    assert max(loads) - min(loads) <= 1
    # The fewest moves any balanced assignment needs: the quota ceil(T/n) goes to the
    # members that kept the most, and each member sheds what it kept beyond its quota.
    kept = {m: set() for m in subs}
    claimed = set()
    for m in sorted(subs):
        for tp in sorted(previous[m]):
            if tp in all_partitions(subs, counts) and tp not in claimed:
                kept[m].add(tp)
                claimed.add(tp)
    total, n = len(all_partitions(subs, counts)), len(subs)
    quotas = [total // n + (1 if i < total % n else 0) for i in range(n)]
    lower_bound = sum(max(0, len(k) - q) for k, q in zip(sorted(kept.values(), key=len, reverse=True), quotas))
    assert moved(kept, result) == lower_bound


@settings(max_examples=200, deadline=None)
@given(groups(homogeneous=True), st.data())
def test_join_and_leave_move_only_what_must_move(case, data):
    subs, counts, previous = case
    before = assign(subs, counts, previous)
    topics = next(iter(subs.values()))
    # Someone joins: only the partitions the newcomer needs move, all of them to it.
    joined = assign({**subs, "zz-new": topics}, counts, before)
    total = sum(len(v) for v in before.values())
    quota = total // (len(subs) + 1)
    assert len(joined["zz-new"]) in (quota, quota + 1)
    assert moved(before, joined) == len(joined["zz-new"])
    for m in subs:
        assert joined[m] <= before[m], "a join takes partitions away, it never shuffles the others"
    # Someone leaves: the others keep everything and share the leaver's partitions.
    if len(subs) > 1:
        leaver = data.draw(st.sampled_from(sorted(subs)))
        rest = {m: t for m, t in subs.items() if m != leaver}
        left = assign(rest, counts, before)
        check_valid_and_balanced(left, rest, counts)
        for m in rest:
            assert left[m] >= before[m]


def test_different_subscriptions_get_only_their_topics():
    subs = {"m1": {"a"}, "m2": {"a", "b"}, "m3": {"b"}}
    result = assign(subs, {"a": 4, "b": 4})
    check_valid_and_balanced(result, subs, {"a": 4, "b": 4})
    assert all(t == "a" for t, _ in result["m1"]) and all(t == "b" for t, _ in result["m3"])
    assert sorted(len(v) for v in result.values()) == [2, 3, 3]


def test_missing_topics_and_conflicting_history():
    assert assign({"m": {"nope"}}, {}) == {"m": set()}
    # Both claim a-0 (a coordinator rebuilt from reports could see that): one keeps it.
    result = assign({"x": {"a"}, "y": {"a"}}, {"a": 2}, {"x": {("a", 0)}, "y": {("a", 0)}})
    assert result == {"x": {("a", 0)}, "y": {("a", 1)}}
    # A shrunk topic and an unsubscribed topic drop out of the history.
    result = assign({"x": {"a"}}, {"a": 1, "b": 3}, {"x": {("a", 5), ("b", 0)}})
    assert result == {"x": {("a", 0)}}
