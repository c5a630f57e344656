"""The delayed workload: the queue workload's writers and consumer group, with every
message delayed by a random 0.1-15 s (`deliver_at`), so it goes through the delay tiers
(and down the ladder for the longer delays) before it reaches `chaos-delayed`.

What changes from the queue workload, and why:
- each send records `deliver_at` (epoch ms, exactly what the producer computes), and the
  checker flags any delivery whose `wall_ms` is earlier;
- the acknowledgement names the delay tier where the message waits (`tier`); its
  partition and offset in the target topic are decided when it moves, so the send event
  leaves them empty and the checker finds the message by value;
- before the final read the workload waits past the last due time and then until every
  acknowledged message has landed (bounded by `land_timeout`): one that never lands is
  then reported lost, not merely late;
- the checker exempts delayed messages from per-key order (delays reorder on purpose);
  everything else (lost, duplicates, group offsets, dirty reads) holds as for the queue.
"""

from __future__ import annotations

import random
import time

import trio

from client.producer import Delivery, RecordMetadata
from scripts.chaoslib.workloads.base import Context, wait_landed
from scripts.chaoslib.workloads.queue import Message, Pending, QueueWorkload


class DelayedWorkload(QueueWorkload):
    name = "delayed"
    topic = "chaos-delayed"
    group = "chaos-delayed-group"
    writer_prefix = "d"
    member_prefix = "dc"

    def __init__(
        self,
        ctx: Context,
        *,
        writers: int = 2,
        rate: float = 5.0,
        consumers: int = 2,
        delay: tuple[float, float] = (0.1, 15.0),
        land_timeout: float = 60.0,
        **kwargs,
    ) -> None:
        super().__init__(ctx, writers=writers, rate=rate, consumers=consumers, **kwargs)
        self.delay = delay
        self.land_timeout = land_timeout
        self._last_due_ms = 0
        self._acked: set[str] = set()

    def _compose(self, writer: str, rng: random.Random, seqs: dict[str, int]) -> Message:
        m = super()._compose(writer, rng, seqs)
        at = time.time() + rng.uniform(*self.delay)
        due = int(at * 1000)  # what the producer computes from deliver_at
        self._last_due_ms = max(self._last_due_ms, due)
        return m._replace(submit={"deliver_at": at}, extra={"deliver_at": due})

    def _partition_of(self, d: Delivery) -> int | None:
        return None  # chosen when the message leaves the delay tier

    def _acked_at(self, p: Pending, md: RecordMetadata) -> dict:
        self._acked.add(p.value)
        return {"offset": None, "tier": f"{md.topic}-{md.partition}@{md.offset}"}

    async def _before_final_read(self) -> None:
        """Past the last due time, until every acknowledged message is in the target."""
        await trio.sleep(max(0.0, self._last_due_ms / 1000 - time.time()) + 0.5)
        missing = await wait_landed(self.ctx, self.topics, self._acked, self.land_timeout)
        if missing:
            self.ctx.say(
                f"[red]{self.name}: {missing} acknowledged delayed message(s) not in {self.topic} "
                f"{self.land_timeout:.0f}s after the last was due[/]"
            )
