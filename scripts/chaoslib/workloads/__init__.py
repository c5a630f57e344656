"""Workloads: what clients do to the cluster while the nemesis works on it.

`WORKLOADS` maps names to classes; `scripts/chaos --workloads` picks from it (all of
them by default). A new kind of traffic is a new module here implementing `Workload`
(`base.py`), one line in `WORKLOADS`, and, if it needs them, new checks in
`scripts/chaoslib/checker.py`. `queue.py` is the base; `delayed.py` (the queue workload
with delays) and `transactions.py` (transactional writers over two topics, a
read_committed group) and `halves.py` (half messages with check-back from services with
a local database) and `pipeline.py` (consume-process-produce in transactions, with
zombies) and `broadcast.py` (two instances of a broadcast group, one restarting) were
added that way.
"""

from scripts.chaoslib.workloads.base import Context, Workload, read_final_logs
from scripts.chaoslib.workloads.broadcast import BroadcastWorkload
from scripts.chaoslib.workloads.delayed import DelayedWorkload
from scripts.chaoslib.workloads.halves import HalvesWorkload
from scripts.chaoslib.workloads.pipeline import PipelineWorkload
from scripts.chaoslib.workloads.queue import QueueWorkload
from scripts.chaoslib.workloads.transactions import TransactionsWorkload

WORKLOADS: dict[str, type[Workload]] = {
    w.name: w
    for w in (QueueWorkload, DelayedWorkload, TransactionsWorkload, HalvesWorkload, PipelineWorkload, BroadcastWorkload)
}

__all__ = [
    "WORKLOADS",
    "BroadcastWorkload",
    "Context",
    "DelayedWorkload",
    "HalvesWorkload",
    "PipelineWorkload",
    "QueueWorkload",
    "TransactionsWorkload",
    "Workload",
    "read_final_logs",
]
