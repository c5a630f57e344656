"""The alert rules on hand-made snapshots: each fires once when its condition starts
and resolves when it ends; lag only after it lasted; dead letters on each arrival."""

from __future__ import annotations

from client.console.alerts import Rules, Snapshot


def states(events: list[dict]) -> list[tuple[str, str, str]]:
    return [(e["state"], e["rule"], e["subject"]) for e in events]


def test_a_node_down_and_a_leaderless_partition_fire_once_then_resolve():
    rules = Rules()
    assert rules.evaluate(Snapshot(0.0)) == []
    down = Snapshot(10.0, frozenset({2}), frozenset({"orders-1"}))
    assert states(rules.evaluate(down)) == [
        ("firing", "node down", "node 2"),
        ("firing", "partition without a leader", "orders-1"),
    ]
    assert rules.evaluate(Snapshot(20.0, frozenset({2}), frozenset({"orders-1"}))) == []  # still: nothing new
    events = rules.evaluate(Snapshot(30.0))
    assert states(events) == [
        ("resolved", "node down", "node 2"),
        ("resolved", "partition without a leader", "orders-1"),
    ]
    assert events[0]["since"] == 10.0 and events[0]["time"] == 30.0


def test_lag_alerts_only_once_it_lasted():
    rules = Rules(lag=100, lag_for=60.0)
    assert rules.evaluate(Snapshot(0.0, lag={"billing": 500})) == []
    assert rules.evaluate(Snapshot(30.0, lag={"billing": 500})) == []
    assert rules.evaluate(Snapshot(40.0, lag={"billing": 50})) == []  # dipped: the clock starts again
    assert rules.evaluate(Snapshot(50.0, lag={"billing": 500})) == []
    fired = rules.evaluate(Snapshot(110.0, lag={"billing": 700}))
    assert states(fired) == [("firing", "lag", "billing")] and "700 behind" in fired[0]["message"]
    assert states(rules.evaluate(Snapshot(120.0, lag={"billing": 0}))) == [("resolved", "lag", "billing")]


def test_dead_letters_alert_on_each_arrival():
    rules = Rules()
    assert rules.evaluate(Snapshot(0.0, dead_letters={"billing": 3})) == []  # what was there before: no news
    fired = rules.evaluate(Snapshot(10.0, dead_letters={"billing": 5}))
    assert states(fired) == [("firing", "dead letters", "billing")] and fired[0]["message"].startswith("2 new")
    assert rules.evaluate(Snapshot(20.0, dead_letters={"billing": 5})) == []
    assert rules.evaluate(Snapshot(30.0, dead_letters={"billing": 0})) == []  # replayed: fine


def test_an_unreachable_cluster_fires_once_and_resolves_with_the_next_snapshot():
    rules = Rules()
    assert states(rules.unreachable(5.0, "ConnectionClosedError")) == [("firing", "cluster unreachable", "cluster")]
    assert rules.unreachable(6.0, "again") == []
    assert states(rules.evaluate(Snapshot(7.0))) == [("resolved", "cluster unreachable", "cluster")]


def test_the_metrics_show_the_latest_snapshot():
    from client.console.metrics import exposition

    rules = Rules()
    assert exposition(rules) == b""  # nothing watched yet
    rules.evaluate(
        Snapshot(
            5.0,
            frozenset({3}),
            frozenset({"orders-1"}),
            {"billing": 2},
            {"billing": 7},
            {("billing", "orders", 0): 7},
            1,
            {"__delay_1s": 4},
            1,
            2,
        )
    )
    text = exposition(rules).decode()
    for line in (
        'tidemq_group_lag{group="billing",partition="0",topic="orders"} 7.0',
        'tidemq_group_dead_letters{group="billing"} 2.0',
        'tidemq_delay_pending{tier="__delay_1s"} 4.0',
        "tidemq_open_transactions 1.0",
        "tidemq_pending_halves 2.0",
        "tidemq_partitions_leaderless 1.0",
        "tidemq_partitions_under_replicated 1.0",
        "tidemq_nodes_down 1.0",
    ):
        assert line in text, text
