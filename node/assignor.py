"""Which member of a consumer group reads which partition: a pure, sticky, balanced
assignment (the coordinator's target assignment, KIP-848's server-side assignor).

`assign(subscriptions, partitions, previous)` returns, for every member, the set of
`(topic, partition)` it should own. The rules, in order of priority:

1. Disjoint and complete: every partition of every subscribed topic goes to exactly one
   member subscribed to that topic (none when nobody subscribes).
2. Sticky: a member keeps what it had (`previous`) unless balance needs it elsewhere, so a
   rebalance stops only the partitions that must move.
3. Balanced: no partition can move to a member subscribed to its topic that owns at least
   two fewer partitions than its current owner. With identical subscriptions this means
   the members' loads differ by at most one; with different subscriptions it is the best
   balance that moving single partitions can reach (Kafka's sticky-assignor criterion).

How: keep the valid part of `previous` (a partition claimed twice goes to the first member
by id), give the free partitions one by one to the least-loaded eligible member (the most
constrained topics first), then move partitions from the most-loaded member to the
least-loaded eligible one while that gap is two or more. Each move lowers the sum of the
squared loads, so the loop ends; moving only from the fullest to the emptiest member makes
the number of moved partitions minimal when subscriptions are identical.

Everything is deterministic (sorted iteration, ties by member id), so the same inputs
give the same answer on any node.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

TopicPartition = tuple[str, int]


def assign(
    subscriptions: Mapping[str, Collection[str]],
    partitions: Mapping[str, int],
    previous: Mapping[str, Collection[TopicPartition]] | None = None,
) -> dict[str, set[TopicPartition]]:
    """The target assignment: member id -> the partitions it should own.

    `subscriptions`: member id -> topics it reads. `partitions`: topic -> partition count
    (a topic missing here, or with 0 partitions, has nothing to assign). `previous`:
    member id -> what it owned or was targeted before (entries for departed members,
    unsubscribed topics or vanished partitions are ignored).
    """
    previous = previous or {}
    members = sorted(subscriptions)
    subs = {m: frozenset(t for t in subscriptions[m] if partitions.get(t, 0) > 0) for m in members}
    topics = sorted(set().union(*subs.values())) if members else []
    eligible = {t: [m for m in members if t in subs[m]] for t in topics}
    result: dict[str, set[TopicPartition]] = {m: set() for m in members}
    owner: dict[TopicPartition, str] = {}

    for m in members:
        for tp in sorted(previous.get(m, ())):
            topic, p = tp
            if topic in subs[m] and 0 <= p < partitions[topic] and tp not in owner:
                owner[tp] = m
                result[m].add(tp)

    free = [(t, p) for t in topics for p in range(partitions[t]) if (t, p) not in owner]
    free.sort(key=lambda tp: (len(eligible[tp[0]]), tp))
    for tp in free:
        m = min(eligible[tp[0]], key=lambda c: (len(result[c]), c))
        owner[tp] = m
        result[m].add(tp)

    _balance(result, eligible)
    return result


def _balance(result: dict[str, set[TopicPartition]], eligible: Mapping[str, list[str]]) -> None:
    """Move single partitions from the fullest donor that has a much emptier eligible
    receiver, until no such pair exists."""
    while True:
        moved = False
        for donor in sorted(result, key=lambda m: (-len(result[m]), m)):
            load = len(result[donor])
            best: tuple[int, str, str] | None = None  # (receiver load, receiver, topic)
            for topic in sorted({tp[0] for tp in result[donor]}):
                receiver = min(eligible[topic], key=lambda c: (len(result[c]), c))
                if len(result[receiver]) < load - 1:
                    cand = (len(result[receiver]), receiver, topic)
                    if best is None or cand < best:
                        best = cand
            if best is None:
                continue
            _, receiver, topic = best
            # The donor's highest partition of that topic: deterministic, and it leaves
            # low partition numbers where they were.
            tp = max(tp for tp in result[donor] if tp[0] == topic)
            result[donor].remove(tp)
            result[receiver].add(tp)
            moved = True
            break
        if not moved:
            return
