"""The pipeline workload: consume-process-produce, exactly once (Kafka's read-process-write
with KIP-447's member fencing), under faults.

Feeder. One writer `f1` writes `chaos-pipe-in` as the queue workload's writers do
(idempotent, keyed, 5 messages/s, every outcome a `send` event), so the inputs are held
to the same checks as any other message.

Workers. `pw1..pw3` each run sessions of one `Consumer` of `chaos-pipe-group` and one
transactional `Producer` (`chaos-pipe-pwN`, the same id every session, so a new session
fences the one before, as a restarted instance would), handling messages with
`consumer.run(handler, producer=producer)`: the handler sends `out:<input value>` (same
key) to `chaos-pipe-out`, and the run commits the input's offset in the same
transaction. Whatever escapes `run` (a fenced producer, a lost coordinator) is recorded
as the queue workload records a member's error, and a new session starts 0.5 s later.
A handler that keeps failing is retried in place with backoff (8 times, about 25 s),
then dead-lettered to `chaos-pipe-group.dlq` in the transaction that commits its
offset: the library's promise is one result per input, its output or its dead letter.

Zombies. A process that stalls past its session timeout wakes up with its member
expired and its partition given to another worker, then finishes the message it held:
its transaction must abort and the new owner process the message. Heartbeats here run in
a task of their own, so a sleeping handler alone expires nothing; a zombie (about one
handler call in 150, seeded per worker) sleeps a session timeout, has the coordinator
remove its member (the leave an expiry amounts to), sleeps another session timeout, and
sends. Each is recorded as a `zombie` event.

Drain. Once `stop` is set the feeder finishes its sends, the input log is read, the
workers go on until the group has committed every input partition's end, then stop
(an open transaction is aborted); the output and dead-letter logs are read after that,
the group's final offsets last. The `pipeline` event (first) tells the checker which
topics are outputs, which it judges on its own (docs/chaos.md).
"""

from __future__ import annotations

import random
import time
from functools import partial

import trio

from client import Consumer, Message, Producer
from client.cluster import ClusterClient
from client.conventions import dead_letter_topic
from client.errors import TideMQError
from client.protocol import GroupHeartbeat
from scripts.chaoslib.history import describe_error, text
from scripts.chaoslib.workloads.base import Context, read_final_logs
from scripts.chaoslib.workloads.queue import QueueWorkload

PREFIX = "out:"  # an output's value: PREFIX + the input's value


class PipelineWorkload(QueueWorkload):
    name = "pipeline"
    partitions = 3
    topic = "chaos-pipe-in"
    out_topic = "chaos-pipe-out"
    group = "chaos-pipe-group"
    writer_prefix = "f"
    member_prefix = "pw"

    def __init__(
        self,
        ctx: Context,
        *,
        writers: int = 1,
        rate: float = 5.0,
        consumers: int = 3,
        zombie: float = 1 / 150,
        session_timeout: float = 3.0,
        rebalance_timeout: float = 10.0,
        transaction_timeout: float = 10.0,
        retries: int = 8,
        **kwargs,
    ) -> None:
        super().__init__(ctx, writers=writers, rate=rate, consumers=consumers, churn=None, **kwargs)
        self.zombie = zombie
        self.session_timeout = session_timeout
        self.rebalance_timeout = rebalance_timeout
        self.transaction_timeout = transaction_timeout
        self.retries = retries
        self.dlq_topic = dead_letter_topic(self.group)

    @property
    def topics(self) -> list[str]:
        return [self.topic, self.out_topic, self.dlq_topic]

    async def run(self, stop: trio.Event) -> None:
        h = self.ctx.history
        h.record(
            "pipeline",
            workload=self.name,
            input=self.topic,
            outputs=[self.out_topic],
            dead_letters=[self.dlq_topic],
            prefix=PREFIX,
            group=self.group,
        )
        done_reading = trio.Event()
        async with trio.open_nursery() as readers:
            readers.start_soon(self._observe, done_reading)
            async with trio.open_nursery() as workers:
                for slot in range(1, self.consumers + 1):
                    workers.start_soon(self._work, f"{self.member_prefix}{slot}")
                async with trio.open_nursery() as writers:
                    for n in range(1, self.writers + 1):
                        writers.start_soon(self._write, f"{self.writer_prefix}{n}", stop)
                try:
                    ends = await read_final_logs(self.ctx, [self.topic])
                except trio.TooSlowError:
                    caught_up, detail = False, "the final read of the input log timed out"
                else:
                    caught_up, detail = await self._wait_group(ends)
                workers.cancel_scope.cancel()  # outputs are read once no worker can add any
            try:
                await read_final_logs(self.ctx, [self.out_topic, self.dlq_topic])
            except trio.TooSlowError:
                caught_up, detail = False, (detail + "; " if detail else "") + "the final read of the outputs timed out"
            h.record("drain", workload=self.name, ok=caught_up, detail=detail)
            if not caught_up:
                self.ctx.say(f"[red]{self.name}: the workers did not finish the inputs: {detail}[/]")
            done_reading.set()
        await self._record_final_offsets()

    # -- workers ---------------------------------------------------------------------------------

    async def _work(self, worker: str) -> None:
        """Sessions until cancelled; each a consumer and a producer of the same
        transactional id, so the new one fences whatever the last one left behind."""
        h = self.ctx.history
        rng = self.ctx.rng(f"{self.name}-{worker}")
        session = 0
        while True:
            session += 1
            cid = f"{worker}.{session}"
            try:
                async with (
                    Consumer(
                        self.ctx.bootstrap,
                        group=self.group,
                        topics=[self.topic],
                        offset_reset="earliest",
                        session_timeout=self.session_timeout,
                        rebalance_timeout=self.rebalance_timeout,
                        request_timeout=self.request_timeout,
                        client_id=cid,
                    ) as consumer,
                    Producer(
                        self.ctx.bootstrap,
                        transactional_id=f"chaos-pipe-{worker}",
                        transaction_timeout=self.transaction_timeout,
                        request_timeout=self.request_timeout,
                        delivery_timeout=self.delivery_timeout,
                        client_id=f"{cid}.txn",
                    ) as producer,
                ):
                    h.record(
                        "member",
                        consumer=cid,
                        event="joined",
                        transactional_id=f"chaos-pipe-{worker}",
                        producer_id=producer.producer_id,
                    )
                    await consumer.run(
                        partial(self._handle, consumer, producer, cid, rng),
                        producer=producer,
                        retries=self.retries,
                        backoff=0.5,
                        max_backoff=4.0,
                    )
            except Exception as exc:  # noqa: BLE001 - recorded; the next session fences this one
                h.record("member", consumer=cid, event="error", error=describe_error(exc))
                await trio.sleep(0.5)

    async def _handle(self, consumer: Consumer, producer: Producer, cid: str, rng: random.Random, msg: Message) -> None:
        """One input, one output, inside the transaction `run` opened for it."""
        value = text(msg.value)
        self.ctx.history.record(
            "delivery",
            consumer=cid,
            group=self.group,
            isolation="read_committed",
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            key=text(msg.key),
            value=value,
            wall_ms=int(time.time() * 1000),
        )
        if rng.random() < self.zombie:
            await self._stall(consumer, cid, msg)
        await producer.send(self.out_topic, f"{PREFIX}{value}".encode(), key=msg.key)

    async def _stall(self, consumer: Consumer, cid: str, msg: Message) -> None:
        """Play a process stalled past its session timeout (see the module docstring)."""
        h = self.ctx.history
        t = h.now()
        removed, error = False, None
        try:
            await trio.sleep(self.session_timeout)
            removed, error = await self._expire(consumer)
            await trio.sleep(self.session_timeout)
        finally:
            h.record(
                "zombie",
                t=t,
                t_end=h.now(),
                consumer=cid,
                group=self.group,
                topic=msg.topic,
                partition=msg.partition,
                offset=msg.offset,
                value=text(msg.value),
                removed=removed,
                error=error,
            )

    async def _expire(self, consumer: Consumer) -> tuple[bool, str | None]:
        """Have the coordinator drop `consumer`'s member now, as its session's expiry
        would; (whether it did, the error if not)."""
        membership = consumer.membership
        if membership is None:
            return False, "not a member"
        leave = GroupHeartbeat(
            self.group,
            membership[0],
            -1,
            [self.topic],
            [],
            "chaos-pipe-expirer",
            int(self.session_timeout * 1000),
            int(self.rebalance_timeout * 1000),
        )
        try:
            with trio.fail_after(self.request_timeout):
                async with ClusterClient(
                    self.ctx.bootstrap, request_timeout=self.request_timeout, client_id="chaos-pipe-expirer"
                ) as cluster:
                    await cluster.coordinator_request(self.group, leave)
        except (TideMQError, TimeoutError, OSError, trio.TooSlowError) as exc:
            return False, repr(exc)[:300]
        return True, None
