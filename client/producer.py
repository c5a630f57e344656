"""Producer: send messages, get them acknowledged, never twice.

`send()` returns once the message is acknowledged (acks="all" by default: committed on
a majority). Underneath, messages to the same partition are gathered into record
batches, and `linger` is paid only while a request is outstanding (a Nagle-like rule):

- a partition with no batch in flight sends at once, so a caller awaiting one send at a
  time pays a round trip and no timer (the messages queued in the same turn of the
  event loop still share that batch);
- while a batch to the partition is in flight, new messages gather behind it and go as
  one batch as soon as every request in flight there has settled, the batch reaches
  `batch_bytes`, or `linger` has passed since its first message, whichever comes first.

So many concurrent sends to one partition share a batch and one round trip (and the
broker commits them with one fsync), and a quiet partition never waits on a timer. A
batch sealed by size or linger goes while others are still in flight, up to
`max_in_flight` per partition (an idempotent producer: 1..5, the broker's window of
recent batches per producer); with `max_in_flight=1` batches go strictly one at a time.

Idempotence (on by default): the producer gets a producer id from the cluster and
numbers the records of each partition; a batch retried after a timeout, a lost
connection or a leader change is recognised by the leader and not written again. A
batch that reaches a new leader before the one ahead of it (OUT_OF_ORDER_SEQUENCE) waits
for its predecessor and is retried, so order holds per partition.

A batch that fails for good (its delivery timed out with the outcome unknown, or the
leader refused it) leaves a gap in its partition's sequence numbers: every later batch
would be refused as OUT_OF_ORDER_SEQUENCE, forever. So, as Kafka's producer does since
KIP-360, that partition then starts a new sequence line: once its in-flight batches have
settled, it takes a fresh producer id and numbers its unsent batches from 0 again. The
failed batch is never sent again (it may or may not have been written once), so nothing
acknowledged is duplicated. A transactional producer does not do this on its own: its
producer id and epoch belong to the transaction, so the failure fails the transaction
(commit raises it) and `abort()` starts the new epoch.

Partitioning: a key hashes with Kafka's murmur2 (serial messages: one key, one
partition, in order); no key spreads whole batches over partitions (sticky).

Timeouts: `request_timeout` bounds each request, `delivery_timeout` the whole send
including retries; a send that cannot be acknowledged in time raises
`RequestTimeoutError` (its outcome is unknown: it may still have been written once).

Transactions (`transactional_id="..."`, Kafka's model): every send happens inside a
transaction, and the messages of one transaction, over any partitions, become visible
to read_committed consumers all together on commit, or never (abort):

    async with Producer(bootstrap, transactional_id="billing-1") as producer:
        async with producer.transaction():      # commit on normal exit, abort on exception
            await producer.send("orders", b"...")
            await producer.send_offsets(consumer)   # the consumer's offsets, committed with it

Starting a producer with a transactional id fences every older producer with the same
id (their sends and commits fail with `ProducerFencedError`) and aborts a transaction
they left open. Before the first send to a partition in a transaction the producer
registers it with the transaction coordinator, which writes the commit or abort markers
there when the transaction ends.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_right
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime
from itertools import islice
from typing import Protocol, overload

import anyio

from client.cluster import ClusterClient
from client.conventions import (
    H_DELAY_DUE,
    H_DELAY_PARTITION,
    H_DELAY_TARGET,
    H_HALF_CHECK_AFTER,
    H_HALF_GROUP,
    H_HALF_MAX_CHECKS,
    H_HALF_PARTITION,
    H_HALF_TARGET,
    HALF_TOPIC,
    LADDER_CONFIG,
    TIER_CONFIG,
    TIER_PREFIX,
    half_partition,
    pick_tier,
    tier_name,
)
from client.delay import due_ms as delay_due_ms
from client.errors import (
    ConnectionClosedError,
    IllegalGenerationError,
    InvalidConfigError,
    InvalidTxnStateError,
    MessageTooLargeError,
    NotLeaderError,
    OutOfOrderSequenceError,
    ProducerFencedError,
    RequestTimeoutError,
    TideMQError,
    UnknownProducerError,
    UnknownTopicError,
)
from client.half import (
    DEFAULT_CHECK_AFTER_S,
    DEFAULT_MAX_CHECKS,
    Checker,
    HalfMessage,
    check_settings,
    end_half,
    parse_half_id,
    run_checker,
)
from client.partitioner import StickyPartitioner, partition_for_key
from client.protocol import (
    ACKS_ALL,
    ACKS_LEADER,
    ACKS_NONE,
    AddPartitionsToTxn,
    EndTxn,
    InitProducerId,
    Produce,
    ProduceResponse,
    R,
    Request,
    TopicPartition,
    TxnOffsetCommit,
)
from client.records import GroupMetadata, RecordMetadata
from segments.batch import build_batch, codec_in_use
from segments.compression import Compression

log = logging.getLogger(__name__)


class GroupPosition(Protocol):
    """What `send_offsets` may take instead of a `GroupMetadata` value (a `Consumer` is
    one): where it stands in its group, and its group metadata."""

    def commit_points(self) -> dict[tuple[str, int], int]: ...

    def group_metadata(self) -> GroupMetadata: ...


Headers = Mapping[str, bytes | None] | Sequence[tuple[str, bytes | None]] | None

_ACKS = {
    "all": ACKS_ALL,
    -1: ACKS_ALL,
    1: ACKS_LEADER,
    "1": ACKS_LEADER,
    "leader": ACKS_LEADER,
    0: ACKS_NONE,
    "0": ACKS_NONE,
    "none": ACKS_NONE,
}
_RECORD_OVERHEAD = 24  # varints and attributes per record, near enough for sizing
_PLAIN_MAX = 512 * 1024  # submit_many's list path takes values below this (no size check each)


def _checked(value: object, key: object, headers: Headers) -> tuple:
    """The message's headers as a tuple, once its parts are checked for type."""
    if value is not None and not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"value must be bytes or None, not {type(value).__name__}")
    if key is not None and not isinstance(key, (bytes, bytearray, memoryview)):
        raise TypeError(f"key must be bytes or None, not {type(key).__name__}")
    if not headers:
        return ()
    hdrs = tuple(headers.items()) if isinstance(headers, Mapping) else tuple(headers)
    for h in hdrs:
        if not (isinstance(h[0], str) and (h[1] is None or isinstance(h[1], (bytes, bytearray)))):
            raise TypeError("headers map str names to bytes values")
    return hdrs


def _cancellation(exc: BaseException) -> bool:
    """Whether `exc` is a cancellation (or a group of nothing else)."""
    cancelled = anyio.get_cancelled_exc_class()
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(cancelled)[1] is None
    return isinstance(exc, cancelled)


class _Transaction:
    """One open transaction of a transactional producer: where it has written, what is
    being registered with the coordinator, and what went wrong (after a failed send or
    registration it can only be aborted)."""

    def __init__(self, number: int) -> None:
        self.number = number  # the producer's transactions so far: the coordinator refuses late requests of ended ones
        self.partitions: set[tuple[str, int]] = set()  # registered with the coordinator
        self.wanted: set[tuple[str, int]] = set()  # to register, in the next AddPartitionsToTxn
        self.registering: set[tuple[str, int]] = set()  # in the AddPartitionsToTxn on its way
        self.round = anyio.Event()  # set when a registration round ends
        self.enlisting = False  # the registering task is running
        self.offsets = False  # consumer offsets were sent with it
        self.error: BaseException | None = None  # a send or registration of it failed
        self.abort_failed: TideMQError | None = None  # its abort was refused or lost: outcome unknown

    def fail(self, exc: BaseException) -> None:
        self.error = self.error or exc


class _Batch:
    """Messages gathered for one partition; every send in it waits on `done`."""

    __slots__ = ("records", "size", "created", "done", "sent", "error", "base_offset", "sequence", "data", "acked_at")

    def __init__(self) -> None:
        self.records: list[
            tuple[bytes | bytearray | memoryview | None, bytes | bytearray | memoryview | None, tuple, int]
        ] = []
        self.size = 61
        self.created = time.monotonic()
        self.done = anyio.Event()
        self.sent = anyio.Event()  # first written to a socket: the next batch may follow
        self.error: BaseException | None = None
        self.base_offset = -1
        self.sequence = -1
        self.data = b""
        self.acked_at: float | None = None


class Delivery:
    """The pending acknowledgement of one submitted message: `await` it for its
    RecordMetadata (or the error that made the send fail)."""

    __slots__ = ("topic", "partition", "_batch", "_index")

    def __init__(self, topic: str, partition: int, batch: _Batch, index: int) -> None:
        self.topic, self.partition, self._batch, self._index = topic, partition, batch, index

    @property
    def done(self) -> bool:
        return self._batch.done.is_set()

    @property
    def acked_at(self) -> float | None:
        """time.monotonic() when the acknowledgement arrived (for latency measurements)."""
        return self._batch.acked_at

    def result(self) -> RecordMetadata:
        batch = self._batch
        if not batch.done.is_set():
            raise RuntimeError("not acknowledged yet: await the delivery first")
        if batch.error is not None:
            raise batch.error
        offset = batch.base_offset + self._index if batch.base_offset >= 0 else -1
        return RecordMetadata(self.topic, self.partition, offset, batch.records[self._index][3])

    def __await__(self):
        # An acknowledged delivery answers at once, as a finished asyncio Future does:
        # collecting a million deliveries must not cost a million trips through the
        # scheduler (that was a fifth of a produce benchmark's client time).
        if not self._batch.done.is_set():
            yield from self._batch.done.wait().__await__()
        return self.result()


class Deliveries(Sequence[Delivery]):
    """The pending acknowledgements of the messages given to `submit_many`, in their
    order: `await` it for their RecordMetadata (it raises the first error among them),
    or index it for one message's `Delivery`. Holds one entry per batch the messages
    landed in, not one object per message."""

    __slots__ = ("_spans", "_starts", "_count")

    def __init__(self, spans: list[tuple[str, int, _Batch, int, int]]) -> None:
        self._spans = spans  # (topic, partition, batch, first index in it, how many)
        self._starts: list[int] = []
        n = 0
        for span in spans:
            self._starts.append(n)
            n += span[4]
        self._count = n

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, i: int) -> Delivery: ...
    @overload
    def __getitem__(self, i: slice) -> list[Delivery]: ...
    def __getitem__(self, i: int | slice) -> Delivery | list[Delivery]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._count))]
        if i < 0:
            i += self._count
        if not 0 <= i < self._count:
            raise IndexError("delivery index out of range")
        at = bisect_right(self._starts, i) - 1
        topic, p, batch, first, _ = self._spans[at]
        return Delivery(topic, p, batch, first + i - self._starts[at])

    def __iter__(self) -> Iterator[Delivery]:
        for topic, p, batch, first, count in self._spans:
            for i in range(first, first + count):
                yield Delivery(topic, p, batch, i)

    @property
    def done(self) -> bool:
        return all(span[2].done.is_set() for span in self._spans)

    def __await__(self):
        results: list[RecordMetadata] = []
        for topic, p, batch, first, count in self._spans:
            if not batch.done.is_set():
                yield from batch.done.wait().__await__()
            if batch.error is not None:
                raise batch.error
            base = batch.base_offset
            records = batch.records
            results.extend(
                RecordMetadata(topic, p, base + i if base >= 0 else -1, records[i][3])
                for i in range(first, first + count)
            )
        return results


class _PartitionQueue:
    """One partition's batches: the open one gathering records, the sealed ones waiting
    to be sent, and those sent and not yet settled; one sender task works it."""

    def __init__(self, producer_id: int, producer_epoch: int, partitions: int) -> None:
        self.open: _Batch | None = None
        self.sealed: deque[_Batch] = deque()
        self.inflight: deque[_Batch] = deque()  # sent, in order; the sender drops settled ones from the head
        self.wakeup = anyio.Event()  # set when the sender has something to look at
        self.partitions = partitions  # the topic's partition count (the sticky partitioner's)
        self.last_sent: _Batch | None = None  # the latest batch sent on this sequence line
        # The sequence line of this partition: (producer id, epoch) and the next number.
        self.producer_id = producer_id
        self.producer_epoch = producer_epoch
        self.next_sequence = 0
        self.line_broken = False  # a batch failed: start a new line before sending more
        self.running = False
        self.retired = False  # dropped by the producer: the sender ends once nothing is left


class Producer:
    """Sends messages (see the module docstring). The batching knobs: `linger` is the
    longest a message waits in an open batch while a request to its partition is
    outstanding (an idle partition sends at once, so it costs a lone send nothing);
    `batch_bytes` seals a batch early (1 MiB, librdkafka's size: each request costs the
    brokers a fixed share of Python, so a pipelined publish ran 20% faster than with
    256 KiB batches); `max_in_flight` bounds the batches sent and not yet settled per
    partition."""

    def __init__(
        self,
        bootstrap: str | list[str] | None = None,
        *,
        token: str | None = None,
        acks: str | int = "all",
        idempotent: bool = True,
        linger: float = 0.005,
        batch_bytes: int = 1024 * 1024,
        max_in_flight: int = 5,
        buffer_bytes: int = 32 * 1024 * 1024,
        compression: str = "none",
        request_timeout: float = 30.0,
        delivery_timeout: float = 120.0,
        client_id: str = "tidemq-producer",
        transactional_id: str | None = None,
        transaction_timeout: float = 60.0,
        producer_group: str | None = None,
        transaction_checker: Checker | None = None,
        check_after: float = DEFAULT_CHECK_AFTER_S,
        max_checks: int = DEFAULT_MAX_CHECKS,
        checker_timeout: float = 30.0,
        tls: bool | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        if acks not in _ACKS:
            raise InvalidConfigError(f"acks must be 'all', 1 or 0, not {acks!r}")
        self.acks = _ACKS[acks]
        if idempotent and self.acks != ACKS_ALL:
            raise InvalidConfigError("an idempotent producer needs acks='all' (pass idempotent=False for acks 0 or 1)")
        try:
            self.compression = Compression[compression.upper()]
        except KeyError:
            raise InvalidConfigError(f"compression must be none, gzip or zstd, not {compression!r}") from None
        if max_in_flight < 1:
            raise InvalidConfigError("max_in_flight must be at least 1 (a batch in flight per partition)")
        if not 1 <= max_in_flight <= 5 and idempotent:
            raise InvalidConfigError("an idempotent producer keeps 1..5 batches in flight per partition")
        if linger < 0:
            raise InvalidConfigError("linger must be 0 or more seconds")
        if transactional_id is not None and not idempotent:
            raise InvalidConfigError("a transactional producer is idempotent (leave idempotent=True)")
        if transactional_id is not None and not 0.1 <= transaction_timeout <= 900:
            raise InvalidConfigError("transaction_timeout must be 0.1..900 seconds")
        check_settings(producer_group, check_after, max_checks)
        if transaction_checker is not None and producer_group is None:
            raise InvalidConfigError("a transaction_checker answers for a producer_group: pass producer_group=...")
        self.producer_group = producer_group
        self.transaction_checker = transaction_checker
        self.check_after = check_after
        self.max_checks = max_checks
        self.checker_timeout = checker_timeout
        self.idempotent = idempotent
        self.transactional_id = transactional_id
        self.transaction_timeout = transaction_timeout
        self._txn: _Transaction | None = None  # the open transaction
        self._txn_count = 0
        self._fenced: ProducerFencedError | None = None
        self.linger = linger
        self.batch_bytes = batch_bytes
        self.max_in_flight = max_in_flight
        self.buffer_bytes = buffer_bytes
        self._buffered = 0
        self._space = anyio.Event()
        self.request_timeout = request_timeout
        self.delivery_timeout = delivery_timeout
        self.cluster = ClusterClient(
            bootstrap,
            token=token,
            client_id=client_id,
            request_timeout=request_timeout,
            tls=tls,
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
            username=username,
            password=password,
        )
        self.producer_id = -1
        self.producer_epoch = -1
        self._queues: dict[tuple[str, int], _PartitionQueue] = {}
        self._sticky = StickyPartitioner()
        self._tier_list: list[int] = []
        self._tg: anyio.abc.TaskGroup | None = None
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Producer:
        # Load the record codec now (the compiled one's import takes ~0.15 s), in a worker
        # thread, rather than inside the first send.
        await anyio.to_thread.run_sync(codec_in_use)
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            await stack.enter_async_context(self.cluster)
            if self.idempotent:
                await self._init_producer_id()
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(self._tg.cancel_scope.cancel)
            if self.transaction_checker is not None:
                assert self.producer_group is not None  # (the constructor insists on one)
                self._tg.start_soon(
                    run_checker, self.cluster, self.producer_group, self.transaction_checker, self.checker_timeout
                )
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        # A clean exit delivers what is queued; any exit unwinds every task group in
        # order even if one raises (a cancellation must not leave a nursery open).
        try:
            if exc_type is None:
                await self.flush()
            if self._txn is not None and self._fenced is None:
                # Left open: abort now rather than hold back read_committed consumers
                # until the transaction times out.
                with anyio.move_on_after(self.request_timeout, shield=True):
                    try:
                        await self.abort()
                    except TideMQError as exc:
                        log.warning("aborting the open transaction on close failed: %s", exc)
        finally:
            self._closed = True
            await self._stack.aclose()

    async def _init_producer_id(self) -> None:
        """A fresh producer id (idempotent), or, with a transactional id, the id's
        producer id with a new epoch: older producers of that id are fenced from now on."""
        with anyio.fail_after(self.delivery_timeout):
            if self.transactional_id is None:
                resp = await self.cluster.controller_request(InitProducerId())
            else:
                resp = await self.cluster.transaction_coordinator_request(
                    self.transactional_id, InitProducerId(self.transactional_id, int(self.transaction_timeout * 1000))
                )
        self.producer_id, self.producer_epoch = resp.producer_id, resp.producer_epoch

    # -- sending ---------------------------------------------------------------------------------

    async def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Headers = None,
        partition: int | None = None,
        timestamp: int | None = None,
        delay: float | None = None,
        deliver_at: datetime | float | None = None,
    ) -> RecordMetadata:
        """Send one message and wait until it is acknowledged.

        With `delay` (seconds) or `deliver_at` (a datetime or epoch seconds) the message
        becomes visible in `topic`, with a fresh offset there, no earlier than its due
        time; it is acknowledged once durably stored in the delay tier, and the metadata
        returned says where (the tier topic).
        """
        if delay is None and deliver_at is None:
            at_once = self._send_at_once(topic, value, key, headers, partition, timestamp)
            if at_once is not None:
                batch, p, q, predecessor = at_once
                await self._deliver(topic, p, q, batch, predecessor, caller=True)
                return Delivery(topic, p, batch, 0).result()
        delivery = await self.submit(
            topic,
            value,
            key=key,
            headers=headers,
            partition=partition,
            timestamp=timestamp,
            delay=delay,
            deliver_at=deliver_at,
        )
        return await delivery

    async def submit(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Headers = None,
        partition: int | None = None,
        timestamp: int | None = None,
        delay: float | None = None,
        deliver_at: datetime | float | None = None,
    ) -> Delivery:
        """Queue one message and return at once with a `Delivery` to await later.

        For high rates from one task: no task per message, and a thousand deliveries
        of one batch resolve together. Waits only while `buffer_bytes` of messages are
        already queued and unacknowledged (backpressure).
        """
        while self._buffered >= self.buffer_bytes:
            await self._space.wait()
        due = delay_due_ms(delay, deliver_at)
        if due is not None and self.transactional_id is not None:
            raise InvalidConfigError("delayed messages cannot be part of a transaction")
        if due is not None:
            topic, headers, partition = await self._delayed(topic, headers, partition, due)
        batch, index, p = await self._append(topic, value, key, headers, partition, timestamp)
        return Delivery(topic, p, batch, index)

    async def submit_many(
        self,
        topic: str,
        values: Sequence[bytes | None],
        *,
        keys: Sequence[bytes | None] | None = None,
        headers: Sequence[Headers] | None = None,
        partition: int | None = None,
        timestamp: int | None = None,
        delay: float | None = None,
        deliver_at: datetime | float | None = None,
    ) -> Deliveries:
        """Queue many messages to one topic at once: `submit` for each, without a call,
        a check of the topic and a `Delivery` per message. `keys` and `headers`, when
        given, have one entry per value (None for none). Returns `Deliveries`: await it
        for the RecordMetadata of all, in order. Backpressure as `submit`'s, message by
        message, so a long list waits for room rather than overfilling the buffer; a
        message refused (a wrong type, too large) raises, and the ones before it stay queued.
        """
        count = len(values)
        for name, given in (("keys", keys), ("headers", headers)):
            if given is not None and len(given) != count:
                raise ValueError(f"{name} has {len(given)} entries for {count} values")
        if delay is not None or deliver_at is not None:
            # Each goes through the delay ladder (a tier chosen by its due time).
            singles = [
                await self.submit(
                    topic,
                    values[i],
                    key=None if keys is None else keys[i],
                    headers=None if headers is None else headers[i],
                    partition=partition,
                    timestamp=timestamp,
                    delay=delay,
                    deliver_at=deliver_at,
                )
                for i in range(count)
            ]
            return Deliveries([(d.topic, d.partition, d._batch, d._index, 1) for d in singles])
        n = await self._partition_count(topic)
        spans: list[tuple[str, int, _Batch, int, int]] = []
        if keys is None and headers is None and all(type(v) is bytes and len(v) < _PLAIN_MAX for v in values):
            if partition is not None and not 0 <= partition < n:
                raise InvalidConfigError(f"topic {topic!r} has partitions 0..{n - 1}, not {partition}")
            i = 0
            while i < count:
                while self._buffered >= self.buffer_bytes:
                    await self._space.wait()
                p = self._sticky.partition(topic, n) if partition is None else partition
                if self.transactional_id is not None:
                    self._want_enlisted(self._check_open(), (topic, p))
                batch, index, taken = self._place_run(topic, n, p, values, i, timestamp)
                spans.append((topic, p, batch, index, taken))
                i += taken
            return Deliveries(spans)
        last: _Batch | None = None
        place = self._place
        for i in range(count):
            while self._buffered >= self.buffer_bytes:
                await self._space.wait()
            value, key = values[i], None if keys is None else keys[i]
            hdrs = _checked(value, key, None if headers is None else headers[i])
            batch, index, p = place(topic, n, value, key, hdrs, partition, timestamp)
            if batch is last:
                t, tp, b, first, c = spans[-1]
                spans[-1] = (t, tp, b, first, c + 1)
            else:
                spans.append((topic, p, batch, index, 1))
                last = batch
        return Deliveries(spans)

    async def send_batch(
        self,
        topic: str,
        values: Sequence[bytes | None],
        *,
        keys: Sequence[bytes | None] | None = None,
        headers: Sequence[Headers] | None = None,
        partition: int | None = None,
        timestamp: int | None = None,
        delay: float | None = None,
        deliver_at: datetime | float | None = None,
    ) -> list[RecordMetadata]:
        """`submit_many` and wait until every message is acknowledged."""
        deliveries = await self.submit_many(
            topic,
            values,
            keys=keys,
            headers=headers,
            partition=partition,
            timestamp=timestamp,
            delay=delay,
            deliver_at=deliver_at,
        )
        return await deliveries

    async def send_half(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Headers = None,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> HalfMessage:
        """Store a half message: durable and replicated once this returns, visible to
        no consumer until `commit()`ed on the returned HalfMessage (`abort()` drops it).
        If nobody decides within `check_after` seconds, the cluster asks a live producer
        of this `producer_group` through its `transaction_checker` (client/half.py)."""
        if self.producer_group is None:
            raise InvalidConfigError("send_half needs a producer group: Producer(..., producer_group='my-service')")
        if self.transactional_id is not None:
            raise InvalidConfigError(
                "half messages cannot be part of a transaction; use a producer without transactional_id"
            )
        n = await self.cluster.partition_count(topic)  # an unknown target fails now, not at commit
        if partition is not None and not 0 <= partition < n:
            raise InvalidConfigError(f"topic {topic!r} has partitions 0..{n - 1}, not {partition}")
        base = list(headers.items()) if isinstance(headers, Mapping) else list(headers or ())
        extra: list[tuple[str, bytes | None]] = [
            (H_HALF_TARGET, topic.encode()),
            (H_HALF_GROUP, self.producer_group.encode()),
            (H_HALF_CHECK_AFTER, str(int(self.check_after * 1000)).encode()),
            (H_HALF_MAX_CHECKS, str(self.max_checks).encode()),
        ]
        if partition is not None:
            extra.append((H_HALF_PARTITION, str(partition).encode()))
        hp = half_partition(self.producer_group, await self._half_partitions())
        md = await self.send(HALF_TOPIC, value, key=key, headers=base + extra, partition=hp, timestamp=timestamp)
        return HalfMessage(
            self.cluster,
            self.producer_group,
            md.partition,
            md.offset,
            topic,
            key,
            value,
            tuple(base),
            md.timestamp,
            timeout=self.delivery_timeout,
        )

    async def commit_half(self, half_id: str) -> RecordMetadata:
        """Commit a half message by its id (`HalfMessage.id`), e.g. from another process
        of the same producer group; where it landed."""
        p, offset = parse_half_id(half_id)
        resp = await end_half(self.cluster, self._group_for_halves(), p, offset, True, timeout=self.delivery_timeout)
        return RecordMetadata(resp.topic, resp.partition, resp.offset, -1)

    async def abort_half(self, half_id: str, reason: str = "aborted by the producer") -> None:
        p, offset = parse_half_id(half_id)
        await end_half(self.cluster, self._group_for_halves(), p, offset, False, reason, timeout=self.delivery_timeout)

    def _group_for_halves(self) -> str:
        if self.producer_group is None:
            raise InvalidConfigError("deciding half messages needs Producer(..., producer_group=...)")
        return self.producer_group

    async def _half_partitions(self) -> int:
        """Partitions of `__half_messages`, waiting a little for a starting cluster's
        controller to create it."""
        with anyio.move_on_after(self.request_timeout):
            while True:
                try:
                    return await self.cluster.partition_count(HALF_TOPIC)
                except UnknownTopicError:
                    await anyio.sleep(0.1)
        raise InvalidConfigError(
            f"the cluster has no {HALF_TOPIC} topic yet (its controller creates it at start); retry"
        )

    async def _delayed(self, topic: str, headers: Headers, partition: int | None, due: int):
        """Route a delayed message to the delay tier that fits, its target in headers."""
        n = await self.cluster.partition_count(topic)  # an unknown target fails now, not later
        if partition is not None and not 0 <= partition < n:
            raise InvalidConfigError(f"topic {topic!r} has partitions 0..{n - 1}, not {partition}")
        tiers = await self._tiers()
        tier = pick_tier(tiers, due - int(time.time() * 1000))
        extra = [(H_DELAY_TARGET, topic.encode()), (H_DELAY_DUE, str(due).encode())]
        if partition is not None:
            extra.append((H_DELAY_PARTITION, str(partition).encode()))
        base = list(headers.items()) if isinstance(headers, Mapping) else list(headers or ())
        return tier_name(tier), base + extra, None

    async def _tiers(self) -> list[int]:
        """The cluster's delay ladder, once every tier of it exists: read while the
        controller was still creating them, it could lack the small tiers, and a message
        put in too large a tier arrives that tier late (a tier holds each message its
        whole length). Each tier topic names the ladder (LADDER_CONFIG); a cluster whose
        tiers do not gets the tiers found, as does one whose ladder is still incomplete
        after the request timeout (late beats never)."""
        if not self._tier_list:
            found: list[int] = []
            with anyio.move_on_after(self.request_timeout):
                while True:
                    md = await self.cluster.refresh_metadata()
                    tiers = [t for t in md.topics if t.internal and t.name.startswith(TIER_PREFIX)]
                    found = sorted(int(t.configs[TIER_CONFIG]) for t in tiers if TIER_CONFIG in t.configs)
                    named = {int(ms) for t in tiers for ms in t.configs.get(LADDER_CONFIG, "").split(",") if ms}
                    if found and named <= set(found):
                        self._tier_list = found
                        break
                    await anyio.sleep(0.1)
            if not self._tier_list and found:  # some tier never came: late beats never
                log.warning("delay tiers %s exist, the ladder names more; sending through these", found)
                self._tier_list = found
            if not self._tier_list:
                raise InvalidConfigError(
                    "the cluster's delay tiers are not all there yet (its controller creates them at start); retry"
                )
        return self._tier_list

    async def _append(self, topic, value, key, headers, partition, timestamp) -> tuple[_Batch, int, int]:
        hdrs = _checked(value, key, headers)
        n = await self._partition_count(topic)
        return self._place(topic, n, value, key, hdrs, partition, timestamp)

    async def _partition_count(self, topic: str) -> int:
        if self._closed or self._tg is None:
            raise RuntimeError("use the producer inside `async with Producer(...)`")
        info = self.cluster.topics.get(topic)
        return len(info.partitions) if info is not None else await self.cluster.partition_count(topic)

    def _send_at_once(
        self, topic, value, key, headers, partition, timestamp
    ) -> tuple[_Batch, int, _PartitionQueue, _Batch | None] | None:
        """`send()` to a partition with nothing open, queued or in flight: the message
        becomes a batch of its own, numbered and registered in flight here, for the
        caller to deliver from its own task (`_deliver(caller=True)`). Without the
        partition's sender and a delivery task, a lone send skips two scheduler passes
        before its request leaves and one after its answer comes. None where that does
        not hold (the usual path then): a transaction, acks=0, a producer that is not
        idempotent (a cancelled caller's batch is sent again, see `_deliver`), metadata
        not known yet, a full buffer, or anything of the partition's not settled."""
        info = self.cluster.topics.get(topic)
        if (
            info is None
            or not self.idempotent
            or self.transactional_id is not None
            or self.acks == ACKS_NONE
            or self._buffered >= self.buffer_bytes
            or self._closed
            or self._tg is None
        ):
            return None
        hdrs = _checked(value, key, headers)
        n = len(info.partitions)
        p = self._partition_of(topic, n, key, partition)
        q = self._queues.get((topic, p))
        if q is not None:
            while q.inflight and q.inflight[0].done.is_set():  # (settled: no longer in flight, as the sender has it)
                q.inflight.popleft()
            if q.open is not None or q.sealed or q.inflight or q.line_broken or q.retired:
                return None
        if q is None:
            q = self._queues[(topic, p)] = _PartitionQueue(self.producer_id, self.producer_epoch, n)
        size = self._record_size(value, key, hdrs)
        batch = _Batch()
        batch.records.append((key, value, hdrs, timestamp if timestamp is not None else int(time.time() * 1000)))
        batch.size += size
        self._buffered += size
        self._number(q, batch)
        if key is None:
            self._sticky.next_batch(topic, n)
        predecessor, q.last_sent = q.last_sent, batch
        q.inflight.append(batch)
        return batch, p, q, predecessor

    def _partition_of(self, topic: str, n: int, key, partition: int | None) -> int:
        if partition is None:
            return partition_for_key(bytes(key), n) if key is not None else self._sticky.partition(topic, n)
        if not 0 <= partition < n:
            raise InvalidConfigError(f"topic {topic!r} has partitions 0..{n - 1}, not {partition}")
        return partition

    def _record_size(self, value, key, hdrs) -> int:
        size = _RECORD_OVERHEAD + (len(key) if key else 0) + (len(value) if value else 0)
        if hdrs:
            size += sum(len(k) + len(v or b"") for k, v in hdrs)
        if size + 61 > self.batch_bytes * 4 and size > 1024 * 1024:
            raise MessageTooLargeError(f"message of {size} bytes exceeds the 1 MiB batch limit")
        return size

    def _place(self, topic, n, value, key, hdrs, partition, timestamp) -> tuple[_Batch, int, int]:
        """Put one checked message in its partition's open batch: (batch, index in it,
        partition)."""
        p = self._partition_of(topic, n, key, partition)
        if self.transactional_id is not None:
            self._want_enlisted(self._check_open(), (topic, p))
        size = self._record_size(value, key, hdrs)
        q, batch = self._open_batch(topic, p, n, size)
        ts = timestamp if timestamp is not None else int(time.time() * 1000)
        batch.records.append((key, value, hdrs, ts))
        batch.size += size
        self._buffered += size
        return batch, len(batch.records) - 1, p

    def _place_run(
        self, topic: str, n: int, p: int, values: Sequence[bytes | None], start: int, timestamp
    ) -> tuple[_Batch, int, int]:
        """Put unkeyed, header-less values from `start` on into partition p's open
        batch, as many as it has room for and at least one: (batch, index of the
        first, how many). `submit_many`'s path for a list of plain values."""
        first = _RECORD_OVERHEAD + len(values[start] or b"")
        q, batch = self._open_batch(topic, p, n, first)
        room = max(self.batch_bytes - batch.size, first)
        end, total = start, 0
        for v in islice(values, start, None):
            size = _RECORD_OVERHEAD + (len(v) if v else 0)
            if total + size > room:
                break
            total += size
            end += 1
        ts = timestamp if timestamp is not None else int(time.time() * 1000)
        index = len(batch.records)
        batch.records.extend([(None, v, (), ts) for v in islice(values, start, end)])
        batch.size += total
        self._buffered += total
        return batch, index, end - start

    def _open_batch(self, topic: str, p: int, n: int, size: int) -> tuple[_PartitionQueue, _Batch]:
        """The partition's queue and its open batch with room for `size` bytes (a
        full one is sealed and a new one opened); starts the partition's sender."""
        q = self._queues.get((topic, p))
        if q is None:
            q = self._queues[(topic, p)] = _PartitionQueue(self.producer_id, self.producer_epoch, n)
        q.partitions = n
        batch = q.open
        if batch is not None and batch.size + size > self.batch_bytes and batch.records:
            self._seal(topic, p, q, n)
            batch = None
        if batch is None:
            batch = q.open = _Batch()
            q.wakeup.set()  # the sender sends it at once if nothing is in flight, else times its linger
        if not q.running:
            q.running = True
            self._tg.start_soon(self._sender, topic, p, q)  # type: ignore[union-attr]
        return q, batch

    def _seal(self, topic: str, p: int, q: _PartitionQueue, n: int) -> None:
        batch = q.open
        assert batch is not None
        q.open = None
        self._number(q, batch)
        q.sealed.append(batch)
        q.wakeup.set()
        if batch.records[0][0] is None:
            self._sticky.next_batch(topic, n)

    def _number(self, q: _PartitionQueue, batch: _Batch) -> None:
        """Give the batch the next sequence numbers of its partition's line and build it."""
        if self.idempotent:
            batch.sequence = q.next_sequence
            q.next_sequence += len(batch.records)
        batch.data = build_batch(
            batch.records,
            compression=self.compression,
            producer_id=q.producer_id,
            producer_epoch=q.producer_epoch,
            base_sequence=batch.sequence,
            transactional=self.transactional_id is not None,
        )

    async def _new_sequence_line(self, topic: str, p: int, q: _PartitionQueue) -> None:
        """After a failed batch (see the module docstring): wait until every batch in
        flight on the old line has settled, take a fresh producer id, and renumber the
        batches not sent yet from 0. While no id can be had, unsent batches past their
        delivery timeout fail (they were never sent, so they were not written)."""
        for batch in list(q.inflight):
            await batch.done.wait()
        q.inflight.clear()
        q.last_sent = None
        backoff = 0.05
        while True:
            now = time.monotonic()
            while q.sealed and q.sealed[0].created + self.delivery_timeout <= now:
                batch = q.sealed.popleft()
                batch.error = RequestTimeoutError(
                    f"{len(batch.records)} message(s) to {topic}-{p} not sent within delivery_timeout="
                    f"{self.delivery_timeout}s (no new producer id); they were not written"
                )
                self._settle(topic, p, batch)
            if not q.sealed:
                return  # nothing to renumber: the next batch starts the line again
            budget = min(self.request_timeout, q.sealed[0].created + self.delivery_timeout - now)
            with anyio.move_on_after(max(budget, 0.001)):
                try:
                    resp = await self.cluster.controller_request(InitProducerId())
                except TideMQError as exc:
                    log.warning("%s-%s: no new producer id yet: %s", topic, p, exc)
                    await anyio.sleep(backoff)
                    backoff = min(backoff * 2, 1.0)
                    continue
                log.info(
                    "%s-%s: a batch failed; new sequence line with producer id %s (was %s)",
                    topic,
                    p,
                    resp.producer_id,
                    q.producer_id,
                )
                q.producer_id, q.producer_epoch = resp.producer_id, resp.producer_epoch
                q.next_sequence = 0
                for batch in q.sealed:
                    self._number(q, batch)
                q.line_broken = False
                return

    async def _sender(self, topic: str, p: int, q: _PartitionQueue) -> None:
        """Send the partition's batches in order, at most `max_in_flight` at a time.

        The open batch is sealed and sent at once when nothing is in flight to the
        partition: a caller awaiting a lone send pays no linger. While a request is
        outstanding it lingers, gathering records, until the last request in flight has
        settled, it fills (`_append` seals it), or `linger` has passed since its first
        record, whichever comes first. So concurrent sends to one partition ride behind
        the first in one batch (the broker's group commit rewards it), and a partition
        never waits on a timer while idle. Sealing happens here, when this task runs,
        so the records appended in the same turn of the event loop share the batch.
        """
        try:
            await self._send_batches(topic, p, q)
        finally:
            q.running = False

    async def _send_batches(self, topic: str, p: int, q: _PartitionQueue) -> None:
        async with anyio.create_task_group() as tg:
            while True:
                # A settled batch at the head no longer counts against max_in_flight;
                # after this, the queue has a request outstanding iff `inflight` is not
                # empty (its head has not settled). A batch settled behind an unsettled
                # one still holds its place: the broker's window of the last five batches
                # per producer must cover every batch that may still be retried.
                while q.inflight and q.inflight[0].done.is_set():
                    q.inflight.popleft()
                linger_left: float | None = None
                batch = q.open
                if not q.sealed and batch is not None and batch.records:
                    linger_left = batch.created + self.linger - time.monotonic()
                    if not q.inflight or linger_left <= 0:
                        self._seal(topic, p, q, q.partitions)
                        linger_left = None
                if not q.sealed or len(q.inflight) >= self.max_in_flight:
                    if q.retired and not q.sealed and not q.inflight and q.open is None:
                        return
                    if linger_left is None:
                        if not q.wakeup.is_set():  # (a set event's wait() still yields a loop iteration)
                            await q.wakeup.wait()
                    else:
                        with anyio.move_on_after(linger_left):
                            await q.wakeup.wait()
                    if q.wakeup.is_set():
                        q.wakeup = anyio.Event()
                    continue
                if q.line_broken:
                    await self._new_sequence_line(topic, p, q)
                    continue
                batch = q.sealed.popleft()
                predecessor, q.last_sent = q.last_sent, batch
                q.inflight.append(batch)
                tg.start_soon(self._deliver, topic, p, q, batch, predecessor)

    async def _deliver(
        self,
        topic: str,
        p: int,
        q: _PartitionQueue,
        batch: _Batch,
        predecessor: _Batch | None,
        *,
        caller: bool = False,
    ) -> None:
        """Deliver one batch, retrying until acknowledged or failed for good, then settle
        it. From a delivery task, or (`caller`) from the task of the `send()` that made
        it: cancelled there, the send's caller gave up waiting, not the producer, so a
        delivery task takes the batch over (a resend is recognised by its sequence
        numbers) and the cancellation goes on."""
        handed_over = False
        request = Produce(topic, p, batch.data, self.acks, int(self.request_timeout * 1000), self.transactional_id)
        try:
            remaining = batch.created + self.delivery_timeout - time.monotonic()
            if caller:  # a lone send (`_send_at_once`): nothing ahead of it to wait for
                batch.base_offset = (
                    await self.cluster.leader_request(topic, p, request, batch.sent, within=remaining)
                ).base_offset
                return
            with anyio.fail_after(max(remaining, 0.001)):
                if self.acks == ACKS_NONE:
                    info = await self.cluster.topic(topic)
                    leader = info.partitions[p].leader
                    if leader is None or leader not in self.cluster.nodes:
                        raise NotLeaderError(f"{topic}-{p} has no leader now")
                    conn = await self.cluster.connection(self.cluster.nodes[leader])
                    await conn.send_only(request)
                else:
                    if self.transactional_id is not None:
                        await self._enlisted((topic, p))
                    if predecessor is not None and not predecessor.sent.is_set():
                        await predecessor.sent.wait()  # keep the wire order of the sequence numbers
                    while True:
                        try:
                            resp: ProduceResponse = await self.cluster.leader_request(topic, p, request, batch.sent)
                            batch.base_offset = resp.base_offset
                            break
                        except (OutOfOrderSequenceError, UnknownProducerError):
                            # The batch ahead of us has not landed yet (it is being
                            # retried): wait for it, then go again.
                            if predecessor is None:
                                raise
                            await predecessor.done.wait()
                            if predecessor.error is not None:
                                raise
                            predecessor = None
        except TimeoutError:
            batch.error = RequestTimeoutError(
                f"{len(batch.records)} message(s) to {topic}-{p} not acknowledged within delivery_timeout="
                f"{self.delivery_timeout}s; they may or may not have been written"
            )
        except (TideMQError, OSError) as exc:
            batch.error = exc
        except BaseException as exc:
            if caller and _cancellation(exc) and not self._closed and self._tg is not None:
                handed_over = True
                self._tg.start_soon(self._deliver, topic, p, q, batch, predecessor)
                raise
            # Cancelled (the producer is closing on an error): the outcome is unknown,
            # and a waiting send must not read that as an acknowledgement.
            batch.error = ConnectionClosedError(
                f"{len(batch.records)} message(s) to {topic}-{p}: the producer closed before an acknowledgement; "
                "they may or may not have been written"
            )
            raise
        finally:
            if not handed_over:
                if batch.error is not None and self.idempotent and self.transactional_id is None:
                    q.line_broken = True
                self._settle(topic, p, batch)
                q.wakeup.set()  # the sender may send the next batch, or the lingering one

    def _settle(self, topic: str, p: int, batch: _Batch) -> None:
        """The batch is done, acknowledged or failed: wake its sends, free its buffer."""
        if batch.error is not None and self.transactional_id is not None:
            if self._txn is not None:
                self._txn.fail(batch.error)
            if isinstance(batch.error, ProducerFencedError):
                self._fenced = batch.error
        batch.sent.set()
        batch.acked_at = time.monotonic()
        self._buffered -= batch.size - 61
        if self._buffered < self.buffer_bytes:
            self._space.set()
            self._space = anyio.Event()
        batch.done.set()

    async def flush(self) -> None:
        """Send everything gathered so far and wait until all of it is acknowledged."""
        batches = []
        for (topic, p), q in self._queues.items():
            if q.open is not None and q.open.records:
                batches.append(q.open)
                self._seal(topic, p, q, await self.cluster.partition_count(topic))
            batches.extend(q.sealed)
            batches.extend(q.inflight)
        for b in batches:
            await b.done.wait()

    # -- transactions ----------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self.transactional_id is None:
            raise RuntimeError("transactions need a transactional producer: Producer(..., transactional_id='...')")
        if self._fenced is not None:
            raise ProducerFencedError(f"this producer was fenced and can write nothing more: {self._fenced.message}")
        if self._tg is None or self._closed:
            raise RuntimeError("use the producer inside `async with Producer(...)`")

    def _check_open(self) -> _Transaction:
        self._check_usable()
        if self._txn is None:
            raise RuntimeError(
                "no transaction is open: call begin_transaction() or use `async with producer.transaction()`"
            )
        return self._txn

    @property
    def _txn_id(self) -> str:
        if self.transactional_id is None:
            raise InvalidConfigError("transactions need Producer(..., transactional_id='...')")
        return self.transactional_id

    async def _txn_request(self, body: Request[R]) -> R:
        assert self.transactional_id is not None
        try:
            with anyio.fail_after(self.delivery_timeout):
                return await self.cluster.transaction_coordinator_request(self.transactional_id, body)
        except ProducerFencedError as exc:
            self._fenced = exc
            raise
        except TimeoutError:
            raise RequestTimeoutError(
                f"transaction coordinator of {self.transactional_id!r} did not answer within {self.delivery_timeout}s"
            ) from None

    # A partition joins the transaction (AddPartitionsToTxn) before the transaction's first
    # batch there is sent. Sends only note the partition; one task registers what is noted
    # in a single request, as Kafka's sender does, so a transaction over three partitions
    # costs one coordinator round trip, not three in a row. The rule is the batches' own:
    # with no registration outstanding the task asks at once (when it first runs, so the
    # partitions noted in the same turn of the event loop go together); partitions noted
    # while one is outstanding go together in the next, as soon as it returns. No timer:
    # a transaction's first send to a partition waits one coordinator round trip, not a
    # linger on top.

    def _want_enlisted(self, txn: _Transaction, tp: tuple[str, int]) -> None:
        if tp in txn.partitions or tp in txn.wanted or tp in txn.registering:
            return
        txn.wanted.add(tp)
        if not txn.enlisting:
            assert self._tg is not None
            txn.enlisting = True
            self._tg.start_soon(self._enlister, txn)

    async def _enlister(self, txn: _Transaction) -> None:
        try:
            while txn.wanted and self._txn is txn:
                wanted, txn.wanted = txn.wanted, set()
                txn.registering = wanted
                try:
                    await self._txn_request(
                        AddPartitionsToTxn(
                            self._txn_id,
                            self.producer_id,
                            self.producer_epoch,
                            [TopicPartition(t, p) for t, p in sorted(wanted)],
                            txn.number,
                        )
                    )
                    txn.partitions |= wanted
                except Exception as exc:  # every batch waiting on it fails with this, and so does commit
                    txn.fail(exc)
                finally:
                    txn.registering = set()
                    done, txn.round = txn.round, anyio.Event()
                    done.set()
        finally:
            txn.enlisting = False
            txn.round.set()  # a waiter of a transaction that ended meanwhile looks again

    async def _enlisted(self, tp: tuple[str, int]) -> None:
        """Wait until the partition is part of the transaction (or registering failed)."""
        txn = self._txn
        while txn is None or tp not in txn.partitions:
            if txn is None or self._txn is not txn:
                raise InvalidTxnStateError(f"{tp[0]}-{tp[1]}: the transaction ended before this batch could be sent")
            if txn.error is not None:
                raise txn.error
            round_ended = txn.round
            self._want_enlisted(txn, tp)
            await round_ended.wait()

    async def begin_transaction(self) -> None:
        """Open a transaction: every send until commit or abort belongs to it."""
        self._check_usable()
        if self._txn is not None and self._txn.abort_failed is not None:
            raise InvalidTxnStateError(
                f"transactional id {self.transactional_id!r}: the previous transaction is still open here, its "
                f"outcome unknown (aborting it failed: {self._txn.abort_failed}); call abort() again, or close this "
                "producer and open a new one with the same transactional_id, which fences this one and ends it"
            )
        if self._txn is not None:
            raise RuntimeError("a transaction is already open; commit or abort it first")
        self._txn_count += 1
        self._txn = _Transaction(self._txn_count)

    async def send_offsets(
        self, consumer: GroupPosition | GroupMetadata, offsets: Mapping[tuple[str, int], int] | None = None
    ) -> None:
        """Commit a consumer group's offsets with this transaction: they become the
        group's committed offsets exactly when it commits, and never if it aborts.
        `consumer` is a `Consumer` (by default its current commit points: what it handed
        out and finished) or its `group_metadata()` (then `offsets` is required);
        `offsets` maps (topic, partition) to the next offset to consume."""
        txn = self._check_open()
        if isinstance(consumer, GroupMetadata):
            if offsets is None:
                raise InvalidConfigError("send_offsets(group_metadata, offsets): name the offsets to commit")
            meta, points = consumer, dict(offsets)
        else:
            meta = consumer.group_metadata()
            points = consumer.commit_points() if offsets is None else dict(offsets)
        if not points:
            return
        try:
            tps = sorted(points)
            if meta.member_id:
                stray = [tp for tp in tps if tp not in meta.assigned_epochs]
                if stray:
                    t, p = stray[0]
                    raise IllegalGenerationError(f"{t}-{p} is not assigned to this consumer (any more)")
            await self._txn_request(
                TxnOffsetCommit(
                    self._txn_id,
                    self.producer_id,
                    self.producer_epoch,
                    meta.group,
                    [(t, p, points[t, p]) for t, p in tps],
                    txn.number,
                    meta.member_id,
                    [meta.assigned_epochs[tp] for tp in tps] if meta.member_id else [],
                )
            )
        except BaseException as exc:
            # The offsets may or may not be in the transaction (or the member lost the
            # partitions): it must not commit now.
            txn.fail(exc)
            raise
        txn.offsets = True

    async def commit_transaction(self) -> None:
        """Deliver every send of the transaction, then commit it: when this returns, all
        of it is visible to read_committed consumers. If a send failed, this raises its
        error and the transaction stays open: abort it."""
        txn = self._check_open()
        await self.flush()
        if txn.error is not None:
            raise txn.error
        await self._end(txn, commit=True)

    async def abort(self) -> None:
        """Abort the open transaction: none of its messages or offsets ever become
        visible to read_committed consumers."""
        txn = self._check_open()
        try:
            try:
                await self.flush()  # wait for what is in flight; its outcome no longer matters
            except TideMQError:
                pass
            await self._end(txn, commit=False)
        except BaseException as exc:
            # Refused, unanswered or interrupted: the outcome is unknown and the
            # transaction still open here; the next begin says so.
            txn.abort_failed = (
                exc
                if isinstance(exc, TideMQError)
                else RequestTimeoutError("the abort was interrupted before an answer")
            )
            raise
        if txn.error is not None:
            # A failed send leaves the partition's sequence numbers unknown: start a new
            # epoch (the transaction is complete, so this fences no one but ourselves).
            await self._init_producer_id()
            for q in self._queues.values():
                q.retired = True
                q.wakeup.set()
            self._queues.clear()

    async def _end(self, txn: _Transaction, commit: bool) -> None:
        if txn.partitions or txn.offsets:
            await self._txn_request(EndTxn(self._txn_id, self.producer_id, self.producer_epoch, commit))
        self._txn = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Producer]:
        """`async with producer.transaction():` commits on normal exit and aborts when
        the body raises (or is cancelled), re-raising its exception."""
        await self.begin_transaction()
        try:
            yield self
        except BaseException:
            await self._abort_quietly()
            raise
        try:
            await self.commit_transaction()
        except BaseException:
            await self._abort_quietly()
            raise

    async def _abort_quietly(self) -> None:
        if self._txn is None or self._fenced is not None:
            return
        with anyio.move_on_after(self.request_timeout, shield=True):
            try:
                await self.abort()
            except TideMQError as exc:  # the coordinator aborts it at its timeout
                log.warning("aborting transaction of %r failed: %s", self.transactional_id, exc)
