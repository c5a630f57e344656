"""The broadcast workload: the queue workload's writers, read by two instances of one
broadcast group (`Consumer(broadcast=True, group=..., instance_id=...)`), each its own
consumer group `chaos-broadcast@a` / `@b`.

What changes from the queue workload, and why:
- instance `a` stays for the whole run; instance `b` leaves after a seeded lifetime,
  stays away a few seconds while the writers go on, and comes back with the same
  instance id, again and again: it must resume after what it committed;
- the history says which groups are the instances of the broadcast topic (a
  `broadcast` event), and the checker requires every instance to have been handed
  every acknowledged message; the queue's checks (nothing committed past without
  delivery, offsets never backwards, no dirty reads) hold per instance;
- the drain waits until both instances have committed every partition's end.
"""

from __future__ import annotations

import math
import random

import trio

from client import Consumer
from client.consumer import instance_group
from scripts.chaoslib.workloads.base import Context
from scripts.chaoslib.workloads.queue import QueueWorkload

INSTANCES = ("a", "b")  # slot 1 stays, slot 2 restarts


class BroadcastWorkload(QueueWorkload):
    name = "broadcast"
    topic = "chaos-broadcast"
    group = "chaos-broadcast"  # the broadcast group: its instances are the consumer groups
    writer_prefix = "bw"
    member_prefix = "bc"
    partitions = 3

    def __init__(
        self,
        ctx: Context,
        *,
        writers: int = 2,
        rate: float = 15.0,
        churn: tuple[float, float] | None = (8.0, 25.0),
        downtime: tuple[float, float] = (2.0, 8.0),
        **kwargs,
    ) -> None:
        super().__init__(ctx, writers=writers, rate=rate, consumers=len(INSTANCES), churn=churn, **kwargs)
        self.downtime = downtime

    @property
    def groups(self) -> list[str]:
        return [instance_group(self.group, i) for i in INSTANCES]

    async def run(self, stop: trio.Event) -> None:
        self.ctx.history.record("broadcast", topic=self.topic, group=self.group, instances=self.groups)
        await super().run(stop)

    def _lifetime(self, slot: int, rng: random.Random) -> float:
        return super()._lifetime(slot, rng) if slot > 1 else math.inf

    def _downtime(self, slot: int, rng: random.Random) -> float:
        return rng.uniform(*self.downtime)

    def _consumer(self, slot: int, cid: str) -> Consumer:
        return Consumer(
            self.ctx.bootstrap,
            broadcast=True,
            group=self.group,
            instance_id=INSTANCES[slot - 1],
            topics=self.topics,
            offset_reset="earliest",
            session_timeout=6.0,
            rebalance_timeout=10.0,
            request_timeout=self.request_timeout,
            client_id=cid,
        )
