"""Handlers on top of a Consumer and a Producer: what `Consumer.run()` does.

Two processing modes. Both commit only the lowest offset not yet finished in each
partition (the consumer keeps what is in flight, `Consumer.hold`), so a crash
redelivers unfinished messages and never skips one:
- serial: messages of one key are handled one at a time, in offset order; different keys
  run in parallel up to `concurrency`, so one slow key never blocks its partition
  (`order="partition"` handles a partition strictly one message at a time);
- concurrent: up to `concurrency` handlers in flight, in any order.

A handler that raises or runs past `timeout` (it is cancelled) is retried with
exponential backoff: in place in serial mode, through the delay tier and the group's
retry topic in concurrent mode. After the last attempt the message goes to the group's
dead-letter topic (without a group it is logged). With a transactional producer each
message is handled in a transaction of its own that also commits its offset
(exactly-once).

The instances of a broadcast group share the group's retry and dead-letter topics
(`notifier.retry`, `notifier.dlq`): every message an instance puts there names it in a
`tidemq.instance` header, and an instance handles only the retries addressed to it.
Instance ids come and go with hosts and pods; topics per instance would pile up two
topics for every instance that ever ran, while one dead-letter topic per group is where
an operator looks. Retries are rare, so reading past the others' costs little.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager, AsyncExitStack
from typing import Any, NamedTuple, Protocol

import anyio

from client.cluster import ClusterClient
from client.conventions import (
    H_ATTEMPT,
    H_DELAY_VIA,
    H_DLQ_ERROR,
    H_DLQ_TIME,
    H_INSTANCE,
    H_ORIGIN_OFFSET,
    H_ORIGIN_PARTITION,
    H_ORIGIN_TOPIC,
    H_REPLAYED_FROM,
    H_RUN_ERROR,
    H_RUN_GROUP,
    H_RUN_MEMBER,
    H_RUN_MS,
    H_RUN_OUTCOME,
    H_RUN_START,
    RUNS_TOPIC,
    dead_letter_topic,
    retry_topic,
    run_key,
)
from client.errors import (
    IllegalGenerationError,
    InvalidConfigError,
    ProducerFencedError,
    TideMQError,
    TopicExistsError,
    UnknownMemberError,
    UnknownTopicError,
)
from client.producer import Producer
from client.protocol import CreateTopic
from client.records import GroupMetadata, Message

log = logging.getLogger(__name__)

COMMIT_INTERVAL_S = 1.0
RUNS_FLUSH_S = 5.0  # the run records still queued get this long to go out when a run ends
REFUSED_RETRY_S = 0.2  # in a transaction: offsets refused, partition still held: try again after

Handler = Callable[[Message], Awaitable[Any]]


class Held(NamedTuple):
    """A message in flight: it holds its partition's commit point back until released.
    `state` is the consumer's own record of the partition (opaque here)."""

    msg: Message
    state: Any


class Source(Protocol):
    """What a processor needs of a consumer (a `client.Consumer` is one)."""

    group: str | None
    broadcast_group: str | None
    instance_id: str | None
    cluster: ClusterClient
    client_id: str
    rebalance_timeout: float

    @property
    def in_group(self) -> bool: ...

    def __aiter__(self) -> AsyncIterator[Message]: ...

    async def __anext__(self) -> Message: ...

    async def commit(self) -> None: ...

    def hold(self, msg: Message) -> Held | None: ...

    def release(self, held: Held) -> None: ...

    def holds(self, held: Held) -> bool: ...

    def position_after(self, held: Held) -> int: ...

    def handling(self) -> AbstractContextManager[None]: ...

    def commit_by_transactions(self) -> None: ...

    def retry_reader(self, topic: str) -> AbstractAsyncContextManager[Source]: ...

    def commit_points(self) -> dict[tuple[str, int], int]: ...

    def group_metadata(self) -> GroupMetadata: ...

    async def runs_producer(self) -> Producer: ...


async def run(
    consumer: Source,
    handler: Handler,
    *,
    mode: str = "serial",
    concurrency: int = 16,
    timeout: float | None = None,
    order: str = "key",
    retries: int = 3,
    backoff: float = 0.5,
    max_backoff: float = 60.0,
    dead_letter: bool = True,
    max_messages: int | None = None,
    producer: Producer | None = None,
    trace: bool = False,
) -> None:
    """Handle messages until cancelled (or `max_messages` are finished).

    With `trace`, each handler run is recorded (group, member, start, duration, outcome,
    error) in the internal topic `__handler_runs`, keyed by the message, which keeps
    them a week; `tidemq trace` and the console show them (client/trace.py).

    With `producer` (a transactional Producer; the handler sends through it), each
    message is handled in a transaction of its own that also commits the message's
    offset: its outputs and its consumption commit together or not at all, so a
    crash anywhere yields each output once (exactly-once). Messages are then handled
    one at a time, in order; a failed attempt is aborted and retried in place, and
    after the last one the dead letter (with `dead_letter`) is written in the
    transaction that commits the offset. Nothing else commits this consumer's
    offsets from then on (not `commit()`, not a revocation, not closing).

    A handler that raises or runs past `timeout` (it is cancelled) has failed. It is
    tried again up to `retries` times with exponential backoff and jitter
    (`backoff` * 2**n, at most `max_backoff` seconds):
    - serial mode retries in place, so the key's order holds while other keys flow;
    - concurrent mode (with a group) sends the message through the delay tier to the
      group's retry topic `<group>.retry`, which this group alone reads, so the
      partition keeps flowing; the attempt count travels in a header.
    After the last attempt the message goes to the group's dead-letter topic
    `<group>.dlq` (with `dead_letter`, and a group) with headers naming its origin,
    the attempts, the last error and the time; without a group it is logged.
    """
    if mode not in ("serial", "concurrent"):
        raise InvalidConfigError(f"mode must be 'serial' or 'concurrent', not {mode!r}")
    if order not in ("key", "partition"):
        raise InvalidConfigError(f"order must be 'key' or 'partition', not {order!r}")
    if concurrency < 1 or retries < 0 or backoff < 0:
        raise InvalidConfigError("concurrency must be >= 1, retries and backoff >= 0")
    family = consumer.broadcast_group or consumer.group  # names the retry and dead-letter topics; None: no group
    if trace:
        await _wait_for_runs_topic(consumer.cluster)
        runs = await consumer.runs_producer()  # (the consumer's: it outlives this run if cancelled)
        traced = recording(handler, runs, consumer.group or "", consumer)
        try:
            await run(
                consumer,
                traced,
                mode=mode,
                concurrency=concurrency,
                timeout=timeout,
                order=order,
                retries=retries,
                backoff=backoff,
                max_backoff=max_backoff,
                dead_letter=dead_letter,
                max_messages=max_messages,
                producer=producer,
            )
        finally:  # every run is recorded by the time this returns (bounded)
            with anyio.CancelScope(shield=True), anyio.move_on_after(RUNS_FLUSH_S):
                await runs.flush()
        return

    def policy_with(retry_producer: Producer | None, dlq_producer: Producer | None) -> RetryPolicy:
        return RetryPolicy(
            family, consumer.instance_id, handler, timeout, retries, backoff, max_backoff, retry_producer, dlq_producer
        )

    if producer is not None:
        if family is None or producer.transactional_id is None:
            raise InvalidConfigError("run(producer=...) needs a group and a transactional producer")
        if dead_letter:
            await ensure_topics(consumer.cluster, [dead_letter_topic(family)])
        policy = policy_with(None, producer if dead_letter else None)
        # From now on only transactions commit this consumer's offsets: a commit on
        # revocation or close would also cover messages whose transaction aborted.
        consumer.commit_by_transactions()
        await _run_transactional(consumer, producer, policy, max_messages)
        return
    via_topic = family is not None and mode == "concurrent" and retries > 0
    # A broadcast instance also reads the retry topic for its dead letters replayed
    # to it (`tidemq dlq replay`): the original topic would reach every instance.
    reads_retries = via_topic or (consumer.broadcast_group is not None and dead_letter)
    async with AsyncExitStack() as stack:
        retry_producer = None
        sources: list[Source] = [consumer]
        if family is not None and (reads_retries or dead_letter):
            await ensure_topics(
                consumer.cluster,
                ([retry_topic(family)] if reads_retries else []) + ([dead_letter_topic(family)] if dead_letter else []),
            )
            retry_producer = await stack.enter_async_context(
                Producer(
                    consumer.cluster.bootstrap,
                    token=consumer.cluster.token,
                    client_id=f"{consumer.client_id}-retry",
                )
            )
            if reads_retries:
                sources.append(await stack.enter_async_context(consumer.retry_reader(retry_topic(family))))
        policy = policy_with(retry_producer if via_topic else None, retry_producer if dead_letter else None)
        await _run(consumer, sources, policy, mode, concurrency, order, max_messages)


async def _run_transactional(
    consumer: Source, producer: Producer, policy: RetryPolicy, max_messages: int | None
) -> None:
    finished = 0
    while max_messages is None or finished < max_messages:
        msg = await consumer.__anext__()
        held = consumer.hold(msg)
        if held is None:
            continue
        try:
            with consumer.handling():
                await _handle_in_transaction(consumer, producer, policy, held)
        finally:
            consumer.release(held)
        finished += 1


async def _handle_in_transaction(consumer: Source, producer: Producer, policy: RetryPolicy, held: Held) -> None:
    """One message, one transaction: the handler's sends and the offset after the
    message (past any control batches right behind it) commit together. A message is
    left alone only once this consumer has given its partition up; until then it is
    tried again, so no later transaction of the partition commits past it."""
    msg = held.msg
    topic, partition, offset, attempts = origin_of(msg)
    error: Exception | None = None
    refused_at: float | None = None
    while True:
        if not consumer.holds(held):
            # The transaction aborted; the partition's new owner handles the message.
            log.warning("%s-%d@%d left to the partition's new owner", msg.topic, msg.partition, msg.offset)
            return
        dead = error is not None and attempts > policy.retries
        try:
            async with producer.transaction():
                if dead:
                    await policy._dead_letter(msg, topic, partition, offset, attempts, error)
                elif policy.timeout is None:
                    await policy.handler(msg)
                else:
                    with anyio.fail_after(policy.timeout):
                        await policy.handler(msg)
                if not consumer.holds(held):
                    # The handler ran long: the partition was revoked meanwhile (and
                    # maybe handed back as a new assignment). Its offsets must not commit.
                    raise IllegalGenerationError(
                        f"{msg.topic}-{msg.partition} was revoked while its message was handled"
                    )
                await producer.send_offsets(consumer, {(msg.topic, msg.partition): consumer.position_after(held)})
            return
        except ProducerFencedError:
            raise
        except (UnknownMemberError, IllegalGenerationError) as exc:
            # The group refused the offsets: this member was fenced or lost the
            # partition and hears of it at its next heartbeat. Until then the message
            # is still ours: try again (bounded: a refusal that outlasts a rebalance
            # timeout is a fault to surface, not to wait out).
            if not consumer.holds(held):
                continue
            now = anyio.current_time()
            refused_at = now if refused_at is None else refused_at
            if now - refused_at > consumer.rebalance_timeout:
                raise
            log.info(
                "%s-%d@%d: offsets refused (%s); trying again while the partition is held",
                msg.topic,
                msg.partition,
                msg.offset,
                exc.message,
            )
            await anyio.sleep(REFUSED_RETRY_S)
            continue
        except Exception as exc:
            if dead:
                raise
            error = exc if not isinstance(exc, TimeoutError) else TimeoutError(f"handler ran past {policy.timeout}s")
        attempts += 1
        if attempts <= policy.retries:
            await anyio.sleep(policy.delay(attempts))


async def _run(
    consumer: Source,
    sources: list[Source],
    policy: RetryPolicy,
    mode: str,
    concurrency: int,
    order: str,
    max_messages: int | None,
) -> None:
    slots = anyio.Semaphore(concurrency)
    finished = 0
    done_all = anyio.Event()
    lanes: dict[tuple, deque[tuple[Source, Held]]] = {}  # serial mode: (topic, partition, key) -> waiting

    async def handle(source: Source, held: Held) -> None:
        nonlocal finished
        with source.handling():
            await policy.handle(held.msg, in_place=mode == "serial")
        source.release(held)  # done: no longer holds the commit point back (a failure keeps it)
        finished += 1
        if max_messages is not None and finished >= max_messages:
            done_all.set()

    async def concurrent_worker(source: Source, held: Held) -> None:
        try:
            await handle(source, held)
        finally:
            slots.release()

    async def lane_worker(lane_key: tuple) -> None:
        queue = lanes[lane_key]
        try:
            while queue:
                await handle(*queue[0])
                queue.popleft()
        finally:
            del lanes[lane_key]
            slots.release()

    async def committer() -> None:
        while True:
            await anyio.sleep(COMMIT_INTERVAL_S)
            for source in sources:
                try:
                    await source.commit()
                except (TideMQError, TimeoutError) as exc:  # a later commit covers it
                    log.warning("periodic commit failed: %r", exc)

    async def feed(source: Source) -> None:
        async for msg in source:
            if source is not consumer and not policy.addressed_here(msg):
                continue  # another instance's retry: passed, and committed past
            held = source.hold(msg)
            if held is None:
                continue
            if mode == "concurrent":
                await slots.acquire()
                tg.start_soon(concurrent_worker, source, held)
                continue
            lane_key = (msg.topic, msg.partition) + ((msg.key,) if order == "key" else ())
            queue = lanes.get(lane_key)
            if queue is not None:
                queue.append((source, held))  # this key is busy: wait behind it, in order
                continue
            await slots.acquire()
            lanes[lane_key] = deque([(source, held)])
            tg.start_soon(lane_worker, lane_key)

    async with anyio.create_task_group() as tg:
        if consumer.in_group:
            tg.start_soon(committer)
        for source in sources:
            tg.start_soon(feed, source)
        await (done_all.wait() if max_messages is not None else anyio.sleep_forever())
        tg.cancel_scope.cancel()
    if consumer.in_group:
        for source in sources:
            await source.commit()


# -- failure handling -------------------------------------------------------------------------

_OURS = (
    H_ATTEMPT,
    H_ORIGIN_TOPIC,
    H_ORIGIN_PARTITION,
    H_ORIGIN_OFFSET,
    H_DLQ_ERROR,
    H_DLQ_TIME,
    H_INSTANCE,
    H_REPLAYED_FROM,
    H_DELAY_VIA,
)


async def _wait_for_runs_topic(cluster: ClusterClient, timeout: float = 30.0) -> None:
    """The nodes make RUNS_TOPIC soon after they start; a client cannot."""
    with anyio.move_on_after(timeout):
        while True:
            try:
                await cluster.partition_count(RUNS_TOPIC)
                return
            except UnknownTopicError:
                await anyio.sleep(0.2)
    raise InvalidConfigError(
        f"run(trace=True): the cluster has no {RUNS_TOPIC} topic after {timeout:g}s (are its nodes older than this client?)"
    )


def recording(handler: Handler, runs: Producer, group: str, consumer: Any) -> Handler:
    """`handler`, each of its runs recorded in RUNS_TOPIC under its message's origin
    (a retry's run counts for the message it retries)."""

    async def traced(msg: Message) -> None:
        topic, partition, offset, attempts = origin_of(msg)
        started, outcome, error = time.time(), "ok", ""
        try:
            await handler(msg)
        except BaseException as exc:
            outcome = "cancelled" if isinstance(exc, anyio.get_cancelled_exc_class()) else "failed"
            error = f"{type(exc).__name__}: {exc}"[:1000]
            raise
        finally:
            took = int((time.time() - started) * 1000)
            membership = getattr(consumer, "membership", None)  # (member id, epoch) in a group
            headers = [
                (H_RUN_GROUP, group.encode()),
                (H_RUN_MEMBER, (membership[0] if membership else "").encode()),
                (H_RUN_START, b"%d" % int(started * 1000)),
                (H_RUN_MS, b"%d" % took),
                (H_RUN_OUTCOME, outcome.encode()),
                (H_RUN_ERROR, error.encode()),
                (H_ATTEMPT, b"%d" % attempts),
            ]
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                try:
                    await runs.submit(RUNS_TOPIC, None, key=run_key(topic, partition, offset), headers=headers)
                except TideMQError as exc:  # a record lost is a gap in a trace, never a failed handler
                    log.warning("could not record a run of %s-%s@%s: %s", topic, partition, offset, exc)

    return traced


def origin_of(msg: Message) -> tuple[str, int, int, int]:
    """(topic, partition, offset, attempts so far) of a message, following retries. A
    message whose origin headers do not parse (anyone may write to a retry topic) is
    taken as its own origin."""
    h = dict(msg.headers)
    topic = h.get(H_ORIGIN_TOPIC)
    if topic is not None:
        try:
            return (
                topic.decode(),
                int(h.get(H_ORIGIN_PARTITION) or b""),
                int(h.get(H_ORIGIN_OFFSET) or b""),
                int(h.get(H_ATTEMPT) or b"0"),
            )
        except ValueError:
            pass
    return msg.topic, msg.partition, msg.offset, 0


def int_header(msg: Message, name: str) -> int:
    """A TideMQ header's integer value; 0 if absent or malformed."""
    try:
        return int(dict(msg.headers).get(name) or b"0")
    except ValueError:
        return 0


def user_headers(msg: Message) -> list[tuple[str, bytes | None]]:
    return [h for h in msg.headers if h[0] not in _OURS]


async def ensure_topics(cluster: ClusterClient, names: list[str], partitions: int = 3) -> None:
    """Create the group's retry/dead-letter topics if they do not exist yet."""
    for name in names:
        try:
            await cluster.topic(name)
            continue
        except UnknownTopicError:
            pass
        md = await cluster.refresh_metadata([])
        replication = min(3, sum(1 for n in md.nodes if n.alive))
        try:
            await cluster.controller_request(CreateTopic(name, partitions, replication))
        except TopicExistsError:
            pass
        await cluster.topic(name)


class RetryPolicy:
    def __init__(
        self, group, instance, handler, timeout, retries, backoff, max_backoff, retry_producer, dlq_producer
    ) -> None:
        self.group, self.handler, self.timeout = group, handler, timeout
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        self.retry_producer, self.dlq_producer = retry_producer, dlq_producer
        self.instance = None if instance is None else instance.encode()
        self._ours = [] if instance is None else [(H_INSTANCE, self.instance)]

    def addressed_here(self, msg: Message) -> bool:
        """Is a message of the retry topic this consumer's to handle? A broadcast
        instance takes those naming it; a plain group those naming no instance."""
        return dict(msg.headers).get(H_INSTANCE) == self.instance

    def delay(self, failures: int) -> float:
        return min(self.max_backoff, self.backoff * 2 ** (failures - 1)) * (0.5 + random.random())

    async def handle(self, msg: Message, in_place: bool) -> None:
        topic, partition, offset, attempts = origin_of(msg)
        while True:
            attempts += 1
            try:
                if self.timeout is None:
                    await self.handler(msg)
                else:
                    with anyio.fail_after(self.timeout):
                        await self.handler(msg)
                return
            except Exception as exc:
                error = exc if not isinstance(exc, TimeoutError) else TimeoutError(f"handler ran past {self.timeout}s")
            if attempts > self.retries:
                await self._dead_letter(msg, topic, partition, offset, attempts, error)
                return
            if in_place or self.retry_producer is None:
                await anyio.sleep(self.delay(attempts))
                continue
            headers = self._carried(msg, topic, partition, offset, attempts)
            await self.retry_producer.send(
                retry_topic(self.group), msg.value, key=msg.key, headers=headers, delay=self.delay(attempts)
            )
            return

    def _carried(self, msg, topic, partition, offset, attempts) -> list[tuple[str, bytes | None]]:
        """What a retried or dead message carries: the user's headers, where it came
        from, its attempts, and this instance's tag."""
        return (
            user_headers(msg)
            + [
                (H_ORIGIN_TOPIC, topic.encode()),
                (H_ORIGIN_PARTITION, b"%d" % partition),
                (H_ORIGIN_OFFSET, b"%d" % offset),
                (H_ATTEMPT, b"%d" % attempts),
            ]
            + self._ours
        )

    async def _dead_letter(self, msg, topic, partition, offset, attempts, error) -> None:
        text = f"{type(error).__name__}: {error}"
        if self.dlq_producer is None:
            log.error("handler failed on %s-%s@%s after %d attempt(s): %s", topic, partition, offset, attempts, text)
            return
        headers = self._carried(msg, topic, partition, offset, attempts) + [
            (H_DLQ_ERROR, text.encode()[:4096]),
            (H_DLQ_TIME, b"%d" % int(time.time() * 1000)),
        ]
        await self.dlq_producer.send(dead_letter_topic(self.group), msg.value, key=msg.key, headers=headers)
