"""The queue workload: idempotent producers writing keyed sequences, a consumer group
reading them and committing offsets.

Writers. Each writer `wN` sends values `wN-kK-S` with key `kK` (S counts per writer and
key from 0), paced at `rate` messages a second, up to `MAX_PENDING` unacknowledged, with
the client's idempotent `Producer` (acks=all). Every send ends in the history as acked
(with its offset), failed (the broker refused it outright) or unknown (a timeout or lost
connection: it may or may not be in the log). After any failed or unknown outcome the
writer drops the producer and starts a new session with a new producer id, as an
application would after a fatal send error; it never resends (so a message can appear
at most once and any duplicate is the system's). The checker holds order per session
strictly and across sessions by real time.

Consumers. `consumers` members of one group read the topic from the earliest offset,
record every message handed to them, and commit what they handed out about every second.
Each member leaves and a fresh instance rejoins after a seeded lifetime (`churn`), so
partitions move between members while faults run, and sooner if its commits keep failing
(its membership is gone). An observer reads the group's
committed offsets twice a second (through the client proxies, as any client would); the
checker requires them never to go backwards.

Drain. Once `stop` is set the writers finish their sends, the final logs are read, the
members keep consuming (no more churn) until the group has committed past the last record
of every partition, then leave; the group's final offsets are recorded last.
"""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from typing import NamedTuple

import trio

from client import Consumer, Producer
from client.cluster import ClusterClient
from client.errors import (
    AuthFailedError,
    CorruptBatchError,
    InvalidConfigError,
    InvalidRequestError,
    MessageTooLargeError,
    TideMQError,
    UnknownTopicError,
)
from client.group import fetch_offsets
from client.producer import Delivery, RecordMetadata
from scripts.chaoslib.history import describe_error, text
from scripts.chaoslib.workloads.base import Context, Workload, read_final_logs

MAX_PENDING = 200  # unacknowledged sends per writer: a stalled partition must not stall the rest
POLL_S = 0.01
COMMIT_EVERY_S = 1.0
OBSERVE_EVERY_S = 0.5
REJOIN_AFTER_FAILED_COMMITS = 8  # in a row, about a second apart
# The broker refused these before proposing anything: the message is certainly not written.
DEFINITE = (
    AuthFailedError,
    CorruptBatchError,
    InvalidConfigError,
    InvalidRequestError,
    MessageTooLargeError,
    UnknownTopicError,
)


class Pending(NamedTuple):
    """A submitted send waiting for its outcome."""

    delivery: Delivery
    value: str
    key: str
    seq: int
    t: float
    extra: dict  # fields of the send event that the workload adds (deliver_at, ...)


class Message(NamedTuple):
    """One message a writer is about to send: what it is, how to send it, what to record."""

    value: str
    key: str
    seq: int
    submit: dict  # extra keyword arguments for Producer.submit
    extra: dict  # extra fields for the send event


class QueueWorkload(Workload):
    name = "queue"
    topic = "chaos-queue"
    group = "chaos-queue-group"
    writer_prefix = "w"
    member_prefix = "c"

    def __init__(
        self,
        ctx: Context,
        *,
        writers: int = 4,
        keys: int = 12,
        rate: float = 20.0,
        consumers: int = 3,
        churn: tuple[float, float] | None = (15.0, 45.0),
        request_timeout: float = 5.0,
        delivery_timeout: float = 20.0,
        drain_timeout: float = 90.0,
    ) -> None:
        super().__init__(ctx)
        self.writers = writers
        self.keys = keys
        self.rate = rate
        self.consumers = consumers
        self.churn = churn
        self.request_timeout = request_timeout
        self.delivery_timeout = delivery_timeout
        self.drain_timeout = drain_timeout

    @property
    def topics(self) -> list[str]:
        return [self.topic]

    @property
    def groups(self) -> list[str]:
        """The consumer groups that read the topic (each observed and drained)."""
        return [self.group]

    async def run(self, stop: trio.Event) -> None:
        h = self.ctx.history
        done_reading = trio.Event()
        async with trio.open_nursery() as readers:
            for slot in range(1, self.consumers + 1):
                readers.start_soon(self._consume, slot, stop, done_reading)
            readers.start_soon(self._observe, done_reading)
            async with trio.open_nursery() as writers:
                for n in range(1, self.writers + 1):
                    writers.start_soon(self._write, f"{self.writer_prefix}{n}", stop)
            await self._before_final_read()
            try:
                ends = await read_final_logs(self.ctx, self.topics)
            except trio.TooSlowError:
                caught_up, detail = False, "the final read of the logs timed out"
            else:
                caught_up, detail = await self._wait_group(ends)
            h.record("drain", workload=self.name, ok=caught_up, detail=detail)
            if not caught_up:
                self.ctx.say(f"[red]{self.name}: the group did not catch up: {detail}[/]")
            done_reading.set()
        await self._record_final_offsets()

    # -- writers -------------------------------------------------------------------------------

    async def _write(self, writer: str, stop: trio.Event) -> None:
        h = self.ctx.history
        rng = self.ctx.rng(f"{self.name}-{writer}")
        seqs: dict[str, int] = defaultdict(int)
        session = 0
        while not stop.is_set():
            session += 1
            pending: list[Pending] = []
            try:
                async with Producer(
                    self.ctx.bootstrap,
                    request_timeout=self.request_timeout,
                    delivery_timeout=self.delivery_timeout,
                    client_id=f"{writer}.{session}",
                ) as producer:
                    h.record("session", writer=writer, session=session, producer_id=producer.producer_id)
                    broken = False
                    next_at = time.monotonic()
                    while not stop.is_set() and not broken:
                        broken = self._resolve_done(writer, session, pending)
                        if broken:
                            break
                        if len(pending) >= MAX_PENDING:
                            await trio.sleep(POLL_S)
                            continue
                        m = self._compose(writer, rng, seqs)
                        t = h.now()
                        delivery = await producer.submit(self.topic, m.value.encode(), key=m.key.encode(), **m.submit)
                        pending.append(Pending(delivery, m.value, m.key, m.seq, t, m.extra))
                        next_at = max(next_at + 1 / self.rate, time.monotonic() - 1.0)
                        await trio.sleep(max(0.0, next_at - time.monotonic()))
                    while pending:  # every outcome arrives within the producer's delivery timeout
                        self._resolve_done(writer, session, pending)
                        await trio.sleep(POLL_S)
            except Exception as exc:  # noqa: BLE001 - as for consumers: recorded, and a new session starts
                h.record("session_error", writer=writer, session=session, error=describe_error(exc))
                await trio.sleep(0.5)
            finally:
                # Deliveries the producer never resolved (it failed to open, or was cancelled).
                self._resolve_done(writer, session, pending)
                for p in pending:
                    h.record(
                        "send",
                        t=p.t,
                        t_end=h.now(),
                        writer=writer,
                        session=session,
                        topic=self.topic,
                        partition=self._partition_of(p.delivery),
                        key=p.key,
                        seq=p.seq,
                        value=p.value,
                        outcome="unknown",
                        offset=None,
                        idempotent=True,
                        error="the producer closed before an outcome",
                        **p.extra,
                    )
                pending.clear()

    def _resolve_done(self, writer: str, session: int, pending: list[Pending]) -> bool:
        """Record and remove every send that has its outcome (in any order: a stalled
        partition must not hold back the others); True if any of them failed."""
        broken = False
        still = []
        for p in pending:
            if p.delivery.done:
                broken |= self._resolve(writer, session, p)
            else:
                still.append(p)
        pending[:] = still
        return broken

    def _resolve(self, writer: str, session: int, p: Pending) -> bool:
        """Record one send's outcome; True if the session must end (any error)."""
        h = self.ctx.history
        d = p.delivery
        t_end = h.at(d.acked_at) if d.acked_at is not None else h.now()
        fields = dict(
            t=p.t,
            t_end=t_end,
            writer=writer,
            session=session,
            topic=self.topic,
            partition=self._partition_of(d),
            key=p.key,
            seq=p.seq,
            value=p.value,
            idempotent=True,
            **p.extra,
        )
        try:
            md = d.result()
        except DEFINITE as exc:
            h.record("send", **fields, outcome="failed", offset=None, error=repr(exc)[:300])
            return True
        except (TideMQError, OSError) as exc:
            h.record("send", **fields, outcome="unknown", offset=None, error=repr(exc)[:300])
            return True
        h.record("send", **fields, outcome="acked", **self._acked_at(p, md))
        return False

    # -- what a subclass changes -------------------------------------------------------------------

    def _compose(self, writer: str, rng: random.Random, seqs: dict[str, int]) -> Message:
        """The next message of `writer`: a random key, the next number for that key."""
        key = f"k{rng.randrange(self.keys)}"
        seq = seqs[key]
        seqs[key] += 1
        return Message(f"{writer}-{key}-{seq}", key, seq, {}, {})

    def _partition_of(self, d: Delivery) -> int | None:
        """The partition of `self.topic` a send goes to."""
        return d.partition

    def _acked_at(self, p: Pending, md: RecordMetadata) -> dict:
        """Where the acknowledgement says the message is, as send-event fields."""
        return {"offset": md.offset}

    async def _before_final_read(self) -> None:
        """Once every send has its outcome: wait for whatever must land before the final
        read (nothing here: an acknowledged message is in the log)."""

    # -- consumers -------------------------------------------------------------------------------

    async def _consume(self, slot: int, stop: trio.Event, done: trio.Event) -> None:
        h = self.ctx.history
        rng = self.ctx.rng(f"{self.name}-consumer-{slot}")
        instance = 0
        while not done.is_set():
            instance += 1
            cid = f"{self.member_prefix}{slot}.{instance}"
            leave_at = time.monotonic() + self._lifetime(slot, rng)
            try:
                async with self._consumer(slot, cid) as consumer:
                    h.record("member", consumer=cid, event="joined")
                    last_commit = time.monotonic()
                    failed_commits = 0
                    while not done.is_set() and (stop.is_set() or time.monotonic() < leave_at):
                        if failed_commits >= REJOIN_AFTER_FAILED_COMMITS:
                            # What an application does when its member is gone (fenced, or its
                            # GroupMember failed while the Consumer goes on fetching): start over.
                            h.record("member", consumer=cid, event="rejoin", reason=f"{failed_commits} commits failed")
                            break
                        with trio.move_on_after(0.25):
                            msg = await consumer.__anext__()
                            h.record(
                                "delivery",
                                consumer=cid,
                                group=consumer.group,
                                isolation="read_committed",
                                topic=msg.topic,
                                partition=msg.partition,
                                offset=msg.offset,
                                key=text(msg.key),
                                value=text(msg.value),
                                wall_ms=int(time.time() * 1000),
                            )
                        if time.monotonic() - last_commit >= COMMIT_EVERY_S:
                            last_commit = time.monotonic()
                            failed_commits = 0 if await self._commit(consumer, cid) else failed_commits + 1
                h.record("member", consumer=cid, event="left")
                if not stop.is_set():
                    with trio.move_on_after(self._downtime(slot, rng)):
                        await stop.wait()
            except Exception as exc:  # noqa: BLE001 - a client failure is a finding to record, not the run's end
                # The client library is under test too: whatever escapes a Consumer (even
                # an exception group) is recorded, and a fresh member takes the slot.
                h.record("member", consumer=cid, event="error", error=describe_error(exc))
                await trio.sleep(0.5)

    def _lifetime(self, slot: int, rng: random.Random) -> float:
        """How long slot `slot`'s next consumer stays before it leaves (seeded)."""
        return rng.uniform(*self.churn) if self.churn else math.inf

    def _downtime(self, slot: int, rng: random.Random) -> float:
        """How long the slot stays empty after a consumer left (until `stop`)."""
        return 0.0

    def _consumer(self, slot: int, cid: str) -> Consumer:
        """The consumer slot `slot` runs for its next lifetime."""
        return Consumer(
            self.ctx.bootstrap,
            group=self.group,
            topics=self.topics,
            offset_reset="earliest",
            session_timeout=6.0,
            rebalance_timeout=10.0,
            request_timeout=self.request_timeout,
            client_id=cid,
        )

    async def _commit(self, consumer: Consumer, cid: str) -> bool:
        h = self.ctx.history
        t = h.now()
        partitions = sorted(consumer.assignment)
        try:
            await consumer.commit()
        except (TideMQError, TimeoutError) as exc:
            h.record(
                "commit",
                t=t,
                t_end=h.now(),
                consumer=cid,
                group=consumer.group,
                partitions=partitions,
                outcome="failed",
                error=repr(exc)[:300],
            )
            return False
        h.record("commit", t=t, t_end=h.now(), consumer=cid, group=consumer.group, partitions=partitions, outcome="ok")
        return True

    # -- the group's committed offsets -----------------------------------------------------------

    async def _observe(self, done: trio.Event) -> None:
        async with ClusterClient(self.ctx.bootstrap, request_timeout=3.0, client_id="chaos-observer") as cluster:
            while not done.is_set():
                await self._observe_once(cluster)
                with trio.move_on_after(OBSERVE_EVERY_S):
                    await done.wait()

    async def _observe_once(self, cluster: ClusterClient, final: bool = False) -> bool:
        """Record every group's committed offsets; False if any could not be read."""
        h = self.ctx.history
        ok = True
        for group in self.groups:
            t = h.now()
            try:
                offsets = await fetch_offsets(cluster, group)
            except (TideMQError, TimeoutError, OSError):
                ok = False
                continue
            h.record(
                "offsets",
                t=t,
                t_end=h.now(),
                group=group,
                final=final,
                offsets=sorted([t_, p, o] for (t_, p), o in offsets.items() if o is not None),
            )
        return ok

    async def _wait_group(self, ends: dict[tuple[str, int], int]) -> tuple[bool, str]:
        """Wait until every group has committed every partition's last record."""
        behind: dict[tuple[str, str, int], tuple[int | None, int]] = {}
        async with ClusterClient(self.ctx.bootstrap, request_timeout=3.0, client_id="chaos-drain") as cluster:
            with trio.move_on_after(self.drain_timeout):
                while True:
                    behind = {}
                    for group in self.groups:
                        try:
                            committed = await fetch_offsets(cluster, group, list(ends))
                        except (TideMQError, TimeoutError, OSError):
                            committed = {}
                        behind.update(
                            {
                                (group, *tp): (committed.get(tp), end)
                                for tp, end in ends.items()
                                if end > 0 and (committed.get(tp) or 0) < end
                            }
                        )
                    if not behind:
                        return True, ""
                    await trio.sleep(0.5)
        return False, "; ".join(f"{g}: {t}-{p} committed {c} of {e}" for (g, t, p), (c, e) in sorted(behind.items()))

    async def _record_final_offsets(self) -> None:
        async with ClusterClient(self.ctx.bootstrap, request_timeout=3.0, client_id="chaos-final-offsets") as cluster:
            with trio.move_on_after(30):
                while not await self._observe_once(cluster, final=True):
                    await trio.sleep(0.5)
