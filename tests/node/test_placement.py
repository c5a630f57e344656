"""Where replicas go (node/placement.py): pure functions of the controller's state."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from node.metadata import ClusterState, CreateTopicCmd, NodeEntry, ReassignCmd
from node.placement import assign_replicas, drain_moves, placeable, rebalance_moves


def cluster(nodes: list[int], topics: dict[str, tuple[int, int]], on: list[int] | None = None) -> ClusterState:
    """A state with `nodes` in its roster and `topics` (name -> partitions, replication)
    placed on the nodes `on` (default: all)."""
    s = ClusterState(members={n: NodeEntry(f"p{n}", f"c{n}") for n in nodes})
    for name, (partitions, replication) in topics.items():
        s.apply(CreateTopicCmd(name, assign_replicas(s, on or nodes, partitions, replication)))
    return s


def after(s: ClusterState, moves) -> dict[tuple[str, int], list[int]]:
    placed = {(m.name, p): r for m in s.topics.values() for p, r in enumerate(m.replicas)}
    placed.update({(t, p): target for t, p, target in moves})
    return placed


def spread(placed: dict[tuple[str, int], list[int]], nodes: list[int]) -> tuple[Counter[int], Counter[int]]:
    host = Counter({n: 0 for n in nodes})
    lead = Counter({n: 0 for n in nodes})
    for replicas in placed.values():
        host.update(replicas)
        lead[replicas[0]] += 1
    return host, lead


def test_a_drained_node_hosts_nothing_after_its_moves_and_the_others_keep_their_order():
    s = cluster([1, 2, 3, 4], {"a": (6, 3), "b": (2, 2)})
    moves = drain_moves(s, 2, [1, 3, 4])
    placed = after(s, moves)
    assert all(2 not in r for r in placed.values())
    for t, p, target in moves:
        before = s.topics[t].replicas[p]
        assert [r for r in target if r in before] == [r for r in before if r != 2]  # order kept, 2 gone
        assert len(target) == len(before)
    host, _ = spread(placed, [1, 3, 4])
    assert max(host.values()) - min(host.values()) <= 1


def test_a_drain_no_node_can_absorb_is_refused():
    s = cluster([1, 2, 3], {"a": (1, 3)})
    try:
        drain_moves(s, 3, [1, 2])
    except ValueError as exc:
        assert "add a node first" in str(exc)
    else:
        raise AssertionError("a partition of 3 replicas cannot leave one of 3 nodes")


def test_rebalance_spreads_replicas_and_leaders_onto_new_nodes_and_then_has_nothing_to_do():
    s = cluster([1, 2, 3, 4, 5], {"a": (8, 3), "b": (4, 3)}, on=[1, 2, 3])
    moves = rebalance_moves(s, [1, 2, 3, 4, 5])
    placed = after(s, moves)
    host, lead = spread(placed, [1, 2, 3, 4, 5])
    assert max(host.values()) - min(host.values()) <= 1, host
    assert max(lead.values()) - min(lead.values()) <= 1, lead
    s.apply(ReassignCmd(moves))
    for t, p, target in moves:  # a new set of nodes moves; the same set reordered is at once
        meta = s.topics[t]
        assert (meta.moving[p].target if p in meta.moving else meta.replicas[p]) == target
    assert rebalance_moves(s, [1, 2, 3, 4, 5]) == []  # (moving ones count where they go)


def test_a_leaving_node_takes_no_new_replicas():
    s = cluster([1, 2, 3], {})
    s.members[2] = NodeEntry("p2", "c2", draining=True)
    assert placeable(s, [1, 2, 3]) == [1, 3]


@settings(max_examples=60, deadline=None)
@given(
    old=st.integers(1, 4),
    new=st.integers(1, 3),
    replication=st.integers(1, 3),
    topics=st.lists(st.integers(1, 6), min_size=1, max_size=4),
)
def test_rebalance_keeps_each_partitions_replication_and_evens_the_load(old, new, replication, topics):
    """With one replication factor throughout (mixed ones can pin leaders: a partition
    of one replica is led where it lives)."""
    nodes = list(range(1, old + new + 1))
    specs = {f"t{i}": (p, min(replication, old)) for i, p in enumerate(topics)}
    s = cluster(nodes, specs, on=nodes[:old])
    moves = rebalance_moves(s, nodes)
    placed = after(s, moves)
    for (t, p), replicas in placed.items():
        assert len(set(replicas)) == len(replicas) == len(s.topics[t].replicas[p])
        assert set(replicas) <= set(nodes)
    host, lead = spread(placed, nodes)
    assert max(host.values()) - min(host.values()) <= 1
    assert max(lead.values()) - min(lead.values()) <= 1
