"""Where replicas go: a new topic's, a leaving node's, and a cluster's after it grew.

Pure functions of the controller's state and the nodes that may take replicas, so the
controller leader decides and writes the result into a command (node/metadata.py), and
every rule is tested without a cluster. A partition that is moving counts where it is
going, and is never moved again before it arrives.
"""

from __future__ import annotations

from collections import Counter

from node.metadata import ClusterState, TopicMeta

Moves = list[tuple[str, int, list[int]]]  # (topic, partition, target replicas, preferred leader first)


def _load(state: ClusterState, nodes: list[int]) -> tuple[Counter[int], Counter[int]]:
    """(replicas hosted, partitions preferred-led) per node, moves counted as arrived."""
    lead = Counter({n: 0 for n in nodes})
    host = Counter({n: 0 for n in nodes})
    for meta in state.topics.values():
        for p in range(len(meta.replicas)):
            replicas = _destination(meta, p)
            if replicas and replicas[0] in lead:
                lead[replicas[0]] += 1
            for r in replicas:
                if r in host:
                    host[r] += 1
    return host, lead


def _destination(meta: TopicMeta, p: int) -> list[int]:
    move = meta.moving.get(p)
    return move.target if move is not None else meta.replicas[p]


def placeable(state: ClusterState, nodes: list[int]) -> list[int]:
    """Of `nodes`, those that may take new replicas: none that is leaving."""
    return [n for n in nodes if not (n in state.members and state.members[n].draining)]


def assign_replicas(state: ClusterState, nodes: list[int], partitions: int, replication: int) -> list[list[int]]:
    """Spread replicas and preferred leaders evenly, counting what nodes already host.

    Each partition goes to the nodes hosting fewest replicas so far (so disk and
    replication load stay within one partition of each other), and among those the one
    leading fewest partitions is its preferred leader; topics created one after another
    still even out across the cluster.
    """
    host, lead = _load(state, nodes)
    result = []
    for _ in range(partitions):
        # The least hosted nodes take it; where more are tied than it needs, the one
        # leading least leads it and those leading most follow, so that the nodes leading
        # least stay among the least hosted and lead what comes next (a topic of one
        # replica can only go to the least hosted node).
        bar = sorted(host[n] for n in nodes)[replication - 1]
        below = [n for n in nodes if host[n] < bar]
        tied = [n for n in nodes if host[n] == bar]
        leader = min(below + tied, key=lambda n: (lead[n], host[n], n))
        others = [n for n in below if n != leader]
        others += sorted((n for n in tied if n != leader), key=lambda n: (-lead[n], n))[: replication - 1 - len(others)]
        replicas = [leader, *sorted(others, key=lambda n: (host[n], n))]
        lead[leader] += 1
        for r in replicas:
            host[r] += 1
        result.append(replicas)
    return result


def drain_moves(state: ClusterState, leaving: int, nodes: list[int]) -> Moves:
    """Moves that take every replica off `leaving`, each to the node hosting fewest of
    those that may take it (`nodes`: the members not leaving). The partition's other
    replicas keep their order, so its preferred leader stays where it was unless it was
    `leaving`. Raises ValueError naming a partition no node can take."""
    host, _ = _load(state, nodes)
    moves: Moves = []
    for meta in state.topics.values():
        for p, replicas in enumerate(meta.replicas):
            if p in meta.moving or leaving not in replicas:
                continue
            free = [n for n in nodes if n not in replicas]
            if not free:
                raise ValueError(
                    f"{meta.name}-{p} has {len(replicas)} replicas and no other node can take one from node "
                    f"{leaving}; add a node first"
                )
            to = min(free, key=lambda n: (host[n], n))
            host[to] += 1
            moves.append((meta.name, p, [r for r in replicas if r != leaving] + [to]))
    return moves


def rebalance_moves(state: ClusterState, nodes: list[int]) -> Moves:
    """Moves that even out replicas per node (within one of each other) and then
    preferred leaders, moving as few replicas as it can: each step takes one replica
    from a node hosting most to one hosting fewest. Partitions already moving stay."""
    host, lead = _load(state, nodes)
    plan: dict[tuple[str, int], list[int]] = {}
    movable = [
        (meta.name, p) for meta in state.topics.values() for p in range(len(meta.replicas)) if p not in meta.moving
    ]
    current = {(meta.name, p): meta.replicas[p] for meta in state.topics.values() for p in range(len(meta.replicas))}
    if not nodes:
        return []
    for _ in range(sum(host.values()) + 1):
        hi = max(nodes, key=lambda n: (host[n], lead[n], -n))
        lo = min(nodes, key=lambda n: (host[n], lead[n], n))
        if host[hi] - host[lo] <= 1:
            break
        # A partition on `hi` that `lo` does not host yet. The new replica takes the old
        # one's place, leadership included: take a led one only while `hi` leads two
        # more than `lo` (leaders even out with the replicas), else a follower (the
        # leader's replica is the one clients are busy with).
        options = [tp for tp in movable if hi in plan.get(tp, current[tp]) and lo not in plan.get(tp, current[tp])]
        if not options:
            break
        give_lead = lead[hi] - lead[lo] >= 2
        tp = min(options, key=lambda tp: (plan.get(tp, current[tp])[0] == hi) != give_lead)
        replicas = plan.get(tp, current[tp])
        if replicas[0] == hi:
            lead[hi] -= 1
            lead[lo] += 1
        plan[tp] = [lo if r == hi else r for r in replicas]
        host[hi] -= 1
        host[lo] += 1
    _even_leaders(plan, current, movable, state, nodes)
    return [(t, p, target) for (t, p), target in plan.items() if target != current[(t, p)]]


def _even_leaders(
    plan: dict[tuple[str, int], list[int]],
    current: dict[tuple[str, int], list[int]],
    movable: list[tuple[str, int]],
    state: ClusterState,
    nodes: list[int],
) -> None:
    """Hand preferred leaderships along chains (A gives one to B, B one to C, ...) from
    the node leading most to one leading at least two fewer, until no chain is left:
    each hand-over only reorders a partition's replicas, and the first is its leader."""
    lead = Counter({n: 0 for n in nodes})
    for meta in state.topics.values():
        for p in range(len(meta.replicas)):
            lead[_destination(meta, p)[0] if (meta.name, p) not in plan else plan[(meta.name, p)][0]] += 1
    for _ in range(len(movable) * len(nodes) + 1):
        hi = max(nodes, key=lambda n: (lead[n], -n))
        came_from: dict[int, tuple[int, tuple[str, int]] | None] = {hi: None}
        queue, found = [hi], None
        while queue and found is None:
            n = queue.pop(0)
            for tp in movable:
                replicas = plan.get(tp, current[tp])
                if replicas[0] != n:
                    continue
                for x in replicas[1:]:
                    if x in lead and x not in came_from:
                        came_from[x] = (n, tp)
                        if lead[x] <= lead[hi] - 2:
                            found = x
                            break
                        queue.append(x)
                if found is not None:
                    break
        if found is None:
            return
        x = found
        while (step := came_from[x]) is not None:
            n, tp = step
            replicas = plan.get(tp, current[tp])
            plan[tp] = [x, *(r for r in replicas if r != x)]
            x = n
        lead[hi] -= 1
        lead[found] += 1
