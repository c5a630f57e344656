"""`/metrics` of the console: what operators alert on, for Prometheus, from the alert
watcher's latest snapshot (so only when the console watches: `--alert-user` or
`--alert-token`). The nodes' own endpoints have what each node knows of itself; these
need the whole cluster: lag per group and partition, dead letters, pending delayed
messages and halves, open transactions, partitions without a leader or under-replicated.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from client.console.alerts import Rules


class _Snapshot(Collector):
    def __init__(self, rules: Rules) -> None:
        self.rules = rules

    def collect(self) -> Iterator[Metric]:
        snap = self.rules.latest
        if snap is None:
            return
        lag = GaugeMetricFamily(
            "tidemq_group_lag", "Messages a group is behind", labels=["group", "topic", "partition"]
        )
        for (group, topic, p), n in sorted(snap.partition_lag.items()):
            lag.add_metric([group, topic, str(p)], n)
        yield lag
        dead = GaugeMetricFamily("tidemq_group_dead_letters", "Dead letters waiting per group", labels=["group"])
        for group, n in sorted(snap.dead_letters.items()):
            dead.add_metric([group], n)
        yield dead
        delayed = GaugeMetricFamily(
            "tidemq_delay_pending", "Delayed messages not yet moved on, per tier", labels=["tier"]
        )
        for tier, n in sorted(snap.delay_pending.items()):
            delayed.add_metric([tier], n)
        yield delayed
        for name, text, value in (
            ("tidemq_open_transactions", "Transactions ongoing or being decided", snap.open_transactions),
            ("tidemq_pending_halves", "Half messages nobody decided yet", snap.pending_halves),
            ("tidemq_partitions_leaderless", "Partitions without a leader", len(snap.leaderless)),
            ("tidemq_partitions_under_replicated", "Partitions with a replica out of sync", snap.under_replicated),
            ("tidemq_nodes_down", "Nodes that do not answer", len(snap.nodes_down)),
            ("tidemq_snapshot_time_seconds", "When these were taken (Unix time)", snap.time_s),
        ):
            yield GaugeMetricFamily(name, text, value=value)


def exposition(rules: Rules) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(rules))
    return generate_latest(registry)
