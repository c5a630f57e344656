"""Workloads: what clients do to the cluster while the nemesis works on it.

`WORKLOADS` maps names to classes; `scripts/chaos --workloads` picks from it. A new kind
of traffic (delayed messages, transactions) is a new module here implementing
`Workload` (`base.py`), one line in `WORKLOADS`, and, if it needs them, new checks in
`scripts/chaoslib/checker.py` (the delayed and transactional checks are there already).
"""

from scripts.chaoslib.workloads.base import Context, Workload, read_final_logs
from scripts.chaoslib.workloads.queue import QueueWorkload

WORKLOADS: dict[str, type[Workload]] = {QueueWorkload.name: QueueWorkload}

__all__ = ["WORKLOADS", "Context", "QueueWorkload", "Workload", "read_final_logs"]
