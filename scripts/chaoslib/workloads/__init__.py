"""Workloads: what clients do to the cluster while the nemesis works on it.

`WORKLOADS` maps names to classes; `scripts/chaos --workloads` picks from it (all of
them by default). A new kind of traffic is a new module here implementing `Workload`
(`base.py`), one line in `WORKLOADS`, and, if it needs them, new checks in
`scripts/chaoslib/checker.py`: `delayed.py` is one (the queue workload with delays), and
the transactional checks are already there for the transactional workload to come.
"""

from scripts.chaoslib.workloads.base import Context, Workload, read_final_logs
from scripts.chaoslib.workloads.delayed import DelayedWorkload
from scripts.chaoslib.workloads.queue import QueueWorkload

WORKLOADS: dict[str, type[Workload]] = {QueueWorkload.name: QueueWorkload, DelayedWorkload.name: DelayedWorkload}

__all__ = ["WORKLOADS", "Context", "DelayedWorkload", "QueueWorkload", "Workload", "read_final_logs"]
