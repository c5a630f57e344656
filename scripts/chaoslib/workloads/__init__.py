"""Workloads: what clients do to the cluster while the nemesis works on it.

`WORKLOADS` maps names to classes; `scripts/chaos --workloads` picks from it (all of
them by default). A new kind of traffic is a new module here implementing `Workload`
(`base.py`), one line in `WORKLOADS`, and, if it needs them, new checks in
`scripts/chaoslib/checker.py`. `queue.py` is the base; `delayed.py` (the queue workload
with delays) and `transactions.py` (transactional writers over two topics, a
read_committed group) and `halves.py` (half messages with check-back from services with
a local database) and `pipeline.py` (consume-process-produce in transactions, with
zombies) and `broadcast.py` (two instances of a broadcast group, one restarting) and
`kafka.py` (the queue's traffic through the Kafka listeners, with librdkafka) were added
that way.

`DEFAULT_WORKLOADS` are the ones a run picks when not told: the native ones. The kafka
workload needs the nodes' Kafka listeners (`Workload.needs_kafka`; the runner starts them
only then) and a Kafka client library, so it runs when asked for (`scripts/chaos --kafka`).
"""

from scripts.chaoslib.workloads.base import Context, Workload, read_final_logs
from scripts.chaoslib.workloads.broadcast import BroadcastWorkload
from scripts.chaoslib.workloads.delayed import DelayedWorkload
from scripts.chaoslib.workloads.halves import HalvesWorkload
from scripts.chaoslib.workloads.kafka import KafkaWorkload
from scripts.chaoslib.workloads.pipeline import PipelineWorkload
from scripts.chaoslib.workloads.queue import QueueWorkload
from scripts.chaoslib.workloads.transactions import TransactionsWorkload

WORKLOADS: dict[str, type[Workload]] = {
    w.name: w
    for w in (
        QueueWorkload,
        DelayedWorkload,
        TransactionsWorkload,
        HalvesWorkload,
        PipelineWorkload,
        BroadcastWorkload,
        KafkaWorkload,
    )
}
DEFAULT_WORKLOADS: list[str] = [name for name, w in WORKLOADS.items() if not w.needs_kafka]

__all__ = [
    "DEFAULT_WORKLOADS",
    "WORKLOADS",
    "BroadcastWorkload",
    "Context",
    "DelayedWorkload",
    "HalvesWorkload",
    "KafkaWorkload",
    "PipelineWorkload",
    "QueueWorkload",
    "TransactionsWorkload",
    "Workload",
    "read_final_logs",
]
