"""The kafka workload: the queue workload's traffic through the nodes' Kafka listeners,
with librdkafka (confluent-kafka) as the client, so the Kafka front door is held to the
same checks as the native one.

Writers. `kw1, kw2` send values `kwN-kK-S` with key `kK`, as the queue's writers do, with
a librdkafka idempotent producer (acks=all, enable.idempotence, partitioner
murmur2_random: the Java client's and ours, so a key lands where a native producer would
put it). A send's outcome comes from its delivery report: acked with the partition and
offset the broker gave; unknown for any error in a report (librdkafka retries whatever
it can within `message.timeout.ms`, so an error that reaches us may follow an attempt
that was written, and the Python client does not expose librdkafka's persisted status);
failed only when `produce()` itself refused the message (it was never queued). After any
error the writer finishes that producer's sends and starts a new session with a new
producer (a new producer id), and never resends.

Epoch bumps. librdkafka's idempotence has one hole of its own: after a message times out
(or a request that is not the first in flight gets OUT_OF_ORDER_SEQUENCE_NUMBER) it
drains, bumps the producer epoch, and sends what it still holds again under the new
epoch from sequence 0, including messages it had sent and the broker had written but not
yet acknowledged. No broker can tell those apart from new messages (librdkafka issue
4953; chaos seeds 102 and 103 showed it: the copies are in the log under two epochs;
with a long message timeout, a NOT_LEADER on the first request in flight and
OUT_OF_ORDER on the next still bump). So the writer watches librdkafka's own account
of bumps (its "eos,msg" debug log, `RdLog`), records each as an `epoch_bump` event,
and records every send outstanding across one with
`idempotent: false` (and why): the duplicates check does not hold those, every other
check does. `message.timeout.ms` is 120 s, as librdkafka advises (a long one), so the
partition waits of 20 s that faults cause here do not time messages out and bump epochs
as a matter of course.

Consumers. Two members `kc1, kc2` of the classic group `chaos-kafka-group`, read_committed,
from the earliest offset, no auto-commit: each records every message handed to it and
commits what it was handed (an asynchronous commit, one at a time) about every second;
each leaves after a seeded lifetime and a fresh instance takes the slot, as the queue's
members do. The group's offsets are the same records as a native group's, so the queue
workload's observer and drain (native `OffsetFetch` through the native client proxies)
watch this group too.

Threads. librdkafka blocks (flush, consume, close), so those calls run in
`trio.to_thread` with short timeouts; its callbacks (delivery reports, commit results,
errors, logs) fire in whichever thread serves them and only append to queues that the
trio task reads and records, so the history is written from one thread. Every wait is
bounded: a producer gets `delivery_timeout` plus a margin to report its sends, then is
purged (what is left is unknown); a consumer's close is bounded by its session timeout.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict, deque
from typing import Any, NamedTuple

import trio
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from scripts.chaoslib.history import describe_error, text
from scripts.chaoslib.workloads.base import Context
from scripts.chaoslib.workloads.queue import (
    COMMIT_EVERY_S,
    MAX_PENDING,
    POLL_S,
    REJOIN_AFTER_FAILED_COMMITS,
    QueueWorkload,
)

log = logging.getLogger(__name__)

FLUSH_SLICE_S = 0.5  # one blocking librdkafka call: how late a cancellation can be noticed
CONSUME_BATCH = 500
CONSUME_WAIT_S = 0.25
REPORT_MARGIN_S = 10.0  # past message.timeout.ms, before the rest is purged
MESSAGE_TIMEOUT_S = 120.0  # librdkafka's message.timeout.ms: long, so faults rarely bump epochs
BUMPED = "bumped epoch to"  # librdkafka's eos debug line once a drain ends in a new epoch
BUMPING = "epoch bump for"  # ... and the one that says why it drains
# librdkafka debug lines worth the clients' log: its idempotence decisions, and produce
# errors with what it concluded about them ("actions Retry,MsgPossiblyPersisted").
KEPT_DEBUG = {"DRAIN", "ERRSEQ", "DUPSEQ", "UNKPID", "ERRPID", "NEWPID", "TIMEOUT", "REQTMOUT", "GETPID"}
UNGUARDED = "outstanding when librdkafka bumped the producer epoch (it re-sends those under new sequence numbers)"


class Report(NamedTuple):
    """A delivery report, as the callback saw it."""

    value: str
    error: KafkaError | None
    partition: int | None  # None (or -1) before librdkafka picked one
    offset: int | None
    at: float  # time.monotonic() when it arrived


class Sent(NamedTuple):
    """A queued send waiting for its report."""

    key: str
    seq: int
    t: float


class Bump(NamedTuple):
    """A producer epoch bump, as librdkafka told it."""

    at: float  # time.monotonic() when the line was served
    line: str
    reason: str  # librdkafka's line saying why it drained for the bump


class RdLog:
    """librdkafka's `logger` (with debug "eos,msg"): its warnings, its idempotence
    decisions and its produce errors go to the clients' log, the rest of the debug
    chatter is dropped; the epoch bumps are also kept for the writer to record (see the
    module docstring)."""

    def __init__(self, logger: logging.Logger, bumps: deque[Bump]) -> None:
        self.logger = logger
        self.bumps = bumps
        self.reason = ""

    def log(self, level: int, fmt: str, *args: object) -> None:
        fac = str(args[0]) if args else ""
        if level < logging.INFO and fac not in KEPT_DEBUG and not (fac == "MSGSET" and "error" in str(args[-1])):
            return
        line = fmt % args
        if BUMPING in line:
            self.reason = line
        if BUMPED in line:
            self.bumps.append(Bump(time.monotonic(), line, self.reason))
        self.logger.log(max(level, logging.INFO), "%s", line)


class KafkaWorkload(QueueWorkload):
    name = "kafka"
    topic = "chaos-kafka"
    group = "chaos-kafka-group"
    writer_prefix = "kw"
    member_prefix = "kc"
    needs_kafka = True

    def __init__(
        self,
        ctx: Context,
        *,
        writers: int = 2,
        rate: float = 20.0,
        consumers: int = 2,
        delivery_timeout: float = MESSAGE_TIMEOUT_S,
        **kwargs: Any,
    ) -> None:
        if not ctx.kafka_bootstrap:
            raise ValueError("the kafka workload needs nodes with Kafka listeners (Context.kafka_bootstrap)")
        super().__init__(
            ctx, writers=writers, rate=rate, consumers=consumers, delivery_timeout=delivery_timeout, **kwargs
        )
        self._bumps: dict[tuple[str, int], list[float]] = defaultdict(list)  # (writer, session) -> run-clock times

    # -- writers ---------------------------------------------------------------------------------

    def _producer_config(self, client_id: str) -> dict[str, Any]:
        """librdkafka's settings (its `logger` and callbacks are added per session)."""
        return {
            "bootstrap.servers": self.ctx.kafka_bootstrap,
            **self.ctx.kafka_security,
            "client.id": client_id,
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": "murmur2_random",
            "linger.ms": 5,
            "request.timeout.ms": int(self.request_timeout * 1000),
            "message.timeout.ms": int(self.delivery_timeout * 1000),
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 1000,
            "debug": "eos,msg",  # where epoch bumps and produce errors are told (RdLog keeps those)
        }

    async def _write(self, writer: str, stop: trio.Event) -> None:
        h = self.ctx.history
        rng = self.ctx.rng(f"{self.name}-{writer}")
        seqs: dict[str, int] = defaultdict(int)
        session = 0
        while not stop.is_set():
            session += 1
            client_id = f"{writer}.{session}"
            reports: deque[Report] = deque()
            bumps: deque[Bump] = deque()
            fatal: list[KafkaError] = []

            def on_error(err: KafkaError, fatal: list[KafkaError] = fatal, client_id: str = client_id) -> None:
                # Connection trouble is expected under faults; only a fatal error ends the producer.
                if err.fatal():
                    fatal.append(err)
                log.info("%s: %s", client_id, err)

            def on_delivery(err: KafkaError | None, msg: Message, reports: deque[Report] = reports) -> None:
                value = msg.value()  # every send of ours has one
                report = Report(value.decode() if value else "", err, msg.partition(), msg.offset(), time.monotonic())
                reports.append(report)

            rdlog = RdLog(logging.getLogger(f"{__name__}.{client_id}"), bumps)
            producer = Producer({**self._producer_config(client_id), "error_cb": on_error, "logger": rdlog})
            pending: dict[str, Sent] = {}
            h.record("session", writer=writer, session=session, client_id=client_id, producer_id=None)
            try:
                broken = False
                next_at = time.monotonic()
                while not stop.is_set() and not broken:
                    producer.poll(0)  # serves the callbacks; never blocks
                    broken = self._resolve_reports(writer, session, pending, reports, bumps) or bool(fatal)
                    if broken:
                        break
                    if len(pending) >= MAX_PENDING:
                        await trio.sleep(POLL_S)
                        continue
                    m = self._compose(writer, rng, seqs)
                    t = h.now()
                    try:
                        producer.produce(
                            self.topic, value=m.value.encode(), key=m.key.encode(), on_delivery=on_delivery
                        )
                    except (BufferError, KafkaException) as exc:  # refused before it was queued: never sent
                        self._record_send(writer, session, m.value, Sent(m.key, m.seq, t), "failed", error=repr(exc))
                        broken = True
                        break
                    pending[m.value] = Sent(m.key, m.seq, t)
                    next_at = max(next_at + 1 / self.rate, time.monotonic() - 1.0)
                    await trio.sleep(max(0.0, next_at - time.monotonic()))
                # Every queued send reports within message.timeout.ms (librdkafka's promise).
                with trio.move_on_after(self.delivery_timeout + REPORT_MARGIN_S):
                    while pending:
                        await trio.to_thread.run_sync(producer.flush, FLUSH_SLICE_S)
                        self._resolve_reports(writer, session, pending, reports, bumps)
            finally:
                with trio.CancelScope(shield=True):
                    await self._close_producer(producer, writer, session, pending, reports, bumps)
            if fatal:
                h.record("session_error", writer=writer, session=session, error=f"KafkaError({fatal[0]})")
            await trio.sleep(0.5 if broken else 0.0)

    async def _close_producer(
        self,
        producer: Producer,
        writer: str,
        session: int,
        pending: dict[str, Sent],
        reports: deque[Report],
        bumps: deque[Bump],
    ) -> None:
        """Purge what has not reported (bounded: this also runs when the run cancels the
        writer), record those sends as unknown, and destroy the producer."""
        if pending:
            producer.purge(in_queue=True, in_flight=True, blocking=False)
            await trio.to_thread.run_sync(producer.flush, FLUSH_SLICE_S)  # the purge's reports
        self._resolve_reports(writer, session, pending, reports, bumps)
        for value, sent in pending.items():
            self._record_send(writer, session, value, sent, "unknown", error="the producer closed before a report")
        pending.clear()
        await trio.to_thread.run_sync(producer.close)

    def _resolve_reports(
        self,
        writer: str,
        session: int,
        pending: dict[str, Sent],
        reports: deque[Report],
        bumps: deque[Bump],
    ) -> bool:
        """Record the epoch bumps librdkafka told of, then every delivery report that has
        come; True if any report was an error."""
        h = self.ctx.history
        while bumps:
            bump = bumps.popleft()
            self._bumps[(writer, session)].append(h.at(bump.at))
            h.record(
                "epoch_bump",
                t=h.at(bump.at),
                writer=writer,
                session=session,
                detail=bump.line[:300],
                reason=bump.reason[:300],
            )
        broken = False
        while reports:
            r = reports.popleft()
            sent = pending.pop(r.value, None)
            if sent is None:
                log.warning("%s.%d: a report for %s, which is not pending", writer, session, r.value)
                continue
            at = self.ctx.history.at(r.at)
            partition = r.partition if r.partition is not None and r.partition >= 0 else None
            if r.error is None:
                self._record_send(
                    writer, session, r.value, sent, "acked", partition=partition, offset=r.offset, t_end=at
                )
            else:
                self._record_send(
                    writer, session, r.value, sent, "unknown", partition=partition, t_end=at, error=_describe(r.error)
                )
                broken = True
        return broken

    def _record_send(
        self,
        writer: str,
        session: int,
        value: str,
        sent: Sent,
        outcome: str,
        *,
        partition: int | None = None,
        offset: int | None = None,
        t_end: float | None = None,
        error: str | None = None,
    ) -> None:
        h = self.ctx.history
        t_end = h.now() if t_end is None else t_end
        # librdkafka may have sent it twice if it bumped the epoch while this was outstanding.
        guarded = not any(sent.t < bump <= t_end for bump in self._bumps[(writer, session)])
        h.record(
            "send",
            t=sent.t,
            t_end=t_end,
            writer=writer,
            session=session,
            topic=self.topic,
            partition=partition,
            key=sent.key,
            seq=sent.seq,
            value=value,
            outcome=outcome,
            offset=offset,
            idempotent=guarded,
            **({"error": error[:300]} if error else {}),
            **({} if guarded else {"unguarded": UNGUARDED}),
        )

    # -- consumers -------------------------------------------------------------------------------

    def _consumer_config(self, client_id: str) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.ctx.kafka_bootstrap,
            **self.ctx.kafka_security,
            "client.id": client_id,
            "group.id": self.group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
            "max.poll.interval.ms": 60000,
            "socket.timeout.ms": int(self.request_timeout * 1000),
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 1000,
            "logger": logging.getLogger(f"{__name__}.{client_id}"),
        }

    async def _consume(self, slot: int, stop: trio.Event, done: trio.Event) -> None:
        h = self.ctx.history
        rng = self.ctx.rng(f"{self.name}-consumer-{slot}")
        instance = 0
        while not done.is_set():
            instance += 1
            cid = f"{self.member_prefix}{slot}.{instance}"
            leave_at = time.monotonic() + self._lifetime(slot, rng)
            commits: deque[tuple[KafkaError | None, list[TopicPartition], float]] = deque()
            fatal: list[KafkaError] = []

            def on_error(err: KafkaError, fatal: list[KafkaError] = fatal, cid: str = cid) -> None:
                if err.fatal():
                    fatal.append(err)
                log.info("%s: %s", cid, err)

            def on_commit(err: KafkaError | None, partitions: list[TopicPartition], commits: deque = commits) -> None:
                commits.append((err, partitions, time.monotonic()))

            consumer = Consumer({**self._consumer_config(cid), "error_cb": on_error, "on_commit": on_commit})
            asked: float | None = None  # when the commit in flight was asked for
            try:
                consumer.subscribe([self.topic])
                h.record("member", consumer=cid, event="joined")
                last_commit = time.monotonic()
                failed_commits = 0
                while not done.is_set() and (stop.is_set() or time.monotonic() < leave_at):
                    if fatal:
                        h.record("member", consumer=cid, event="error", error=f"KafkaError({fatal[0]})")
                        break
                    if failed_commits >= REJOIN_AFTER_FAILED_COMMITS:
                        h.record("member", consumer=cid, event="rejoin", reason=f"{failed_commits} commits failed")
                        break
                    for msg in await trio.to_thread.run_sync(consumer.consume, CONSUME_BATCH, CONSUME_WAIT_S):
                        if msg.error() is not None:
                            log.info("%s: %s", cid, msg.error())
                            continue
                        h.record(
                            "delivery",
                            consumer=cid,
                            group=self.group,
                            isolation="read_committed",
                            topic=msg.topic(),
                            partition=msg.partition(),
                            offset=msg.offset(),
                            key=text(msg.key()),
                            value=text(msg.value()),
                            wall_ms=int(time.time() * 1000),
                        )
                    for ok in self._record_commits(cid, commits, asked):
                        asked = None
                        failed_commits = 0 if ok else failed_commits + 1
                    if asked is None and time.monotonic() - last_commit >= COMMIT_EVERY_S:
                        last_commit = time.monotonic()
                        asked = h.now()
                        try:
                            consumer.commit(asynchronous=True)  # what it was handed: the stored offsets
                        except KafkaException as exc:
                            commits.append((exc.args[0], [], time.monotonic()))
                h.record("member", consumer=cid, event="left")
            except Exception as exc:  # noqa: BLE001 - as the queue's members: recorded, and a fresh member takes the slot
                h.record("member", consumer=cid, event="error", error=describe_error(exc))
            finally:
                with trio.CancelScope(shield=True):
                    # Leaves the group; bounded by the session timeout (librdkafka's promise).
                    await trio.to_thread.run_sync(consumer.close)
                    self._record_commits(cid, commits, asked)
            if not stop.is_set():
                with trio.move_on_after(self._downtime(slot, rng)):
                    await stop.wait()
            if fatal:
                await trio.sleep(0.5)

    def _record_commits(
        self, cid: str, commits: deque[tuple[KafkaError | None, list[TopicPartition], float]], asked: float | None
    ) -> list[bool]:
        """Record the commit results that have come; whether each succeeded. Nothing new
        to commit (`_NO_OFFSET`) is not a failure and is not recorded."""
        h = self.ctx.history
        results = []
        while commits:
            err, partitions, at = commits.popleft()
            if err is not None and err.code() == KafkaError._NO_OFFSET:
                results.append(True)
                continue
            failed = [p for p in partitions if p.error is not None]
            ok = err is None and not failed
            h.record(
                "commit",
                t=asked if asked is not None else h.at(at),
                t_end=h.at(at),
                consumer=cid,
                group=self.group,
                partitions=sorted([p.topic, p.partition, p.offset] for p in partitions),
                outcome="ok" if ok else "failed",
                **({} if ok else {"error": _describe(err if err is not None else failed[0].error)}),
            )
            results.append(ok)
        return results


def _describe(err: KafkaError | None) -> str:
    return "no error given" if err is None else f"{err.name()}: {err.str()}"[:300]
