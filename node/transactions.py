"""Transactions on the broker: the `__transaction_state` topic, its state machine, and the
transaction coordinator (Kafka's model).

Where a transactional id lives: partition `murmur2(id) % n` of `__transaction_state`
(n = `NodeConfig.txn_partitions`); its leader is the id's coordinator. The controller
leader creates the topic as soon as it is elected, as it does `__consumer_offsets`.

What is replicated: one record per transactional id (key: the id, value: `TxnMeta`),
applied into memory on every replica by `TxnStatePartition`: the producer id kept for
the id, its current epoch, the transaction's status, its partitions and the group
offsets sent with it. Each change is written and committed before it is acted upon, so
a new coordinator (after a failover) knows every decision taken and finishes it.

The life of a transaction:

    EMPTY/COMPLETE_* --AddPartitionsToTxn/TxnOffsetCommit--> ONGOING
    ONGOING --EndTxn(commit)--> PREPARE_COMMIT --offsets, markers--> COMPLETE_COMMIT
    ONGOING --EndTxn(abort), timeout, new producer--> PREPARE_ABORT --markers--> COMPLETE_ABORT

Once PREPARE_* is committed the outcome is decided: the coordinator (or, after a
failover, the next one: its janitor finishes every PREPARE_* it finds) commits the
group offsets through the group coordinator's ordinary commit path (on commit only),
then appends a COMMIT/ABORT marker to every partition of the transaction, and only then
writes COMPLETE_*. `EndTxn` answers after that, so a returned commit is visible.

Offsets are committed before the markers, not after: a consumer restarting between the
two resumes after inputs whose outputs are decided but not yet visible (they become
visible when the markers land); the reverse order would let it reprocess inputs whose
outputs are already visible, duplicating them. Redoing either step is harmless (the
same offsets again; a marker for a producer with no open transaction closes nothing).

Fencing: `InitProducerId` for an id bumps its epoch (aborting, with the new epoch, a
transaction left open), so the previous producer's requests to the coordinator get
PRODUCER_FENCED, and the abort markers raise each partition's epoch for the producer id
so its late batches are refused too. A transaction open past its timeout is aborted the
same way (epoch bumped), which fences its producer as well. Markers carry the
coordinator epoch (the Raft term of the state partition); a partition refuses a marker
older than one it has seen for that producer, so a deposed coordinator cannot abort a
later transaction.
"""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager

import msgspec
import trio

import segments
from client.conventions import TXN_TOPIC
from client.errors import (
    CoordinatorNotAvailableError,
    InvalidRequestError,
    InvalidTxnStateError,
    NotCoordinatorError,
    NotLeaderError,
    ProducerFencedError,
    RequestTimeoutError,
    TideMQError,
    UnknownTopicError,
)
from client.protocol import (
    AddPartitionsToTxn,
    CoordinatorResponse,
    DescribeTransaction,
    EndTxn,
    FindTransactionCoordinator,
    InitProducerId,
    ListTransactions,
    ListTransactionsResponse,
    Ok,
    ProducerIdResponse,
    TopicPartition,
    TxnInfo,
    TxnOffsetCommit,
)
from node.context import NodeContext, check_name, now_ms
from node.metadata import TopicMeta
from node.partition import Partition, ShardFactory, SnapshotShard
from node.peerprotocol import EndTxnOffsets, PendTxnOffsets, WriteTxnMarker
from node.runtime import CoordinatorShard, Handlers, InternalTopic, Service
from raft.types import Entry, EntryKind

log = logging.getLogger(__name__)

TXN_SEGMENT_BYTES = 16 * 1024 * 1024
SNAPSHOT_EVERY = 10_000
WRITE_TIMEOUT_S = 10.0
COMPLETE_TIMEOUT_S = 20.0  # one attempt at writing every marker; the janitor retries
MAX_EPOCH = 32767  # the batch header's producer epoch is an int16
MIN_TIMEOUT_MS, MAX_TIMEOUT_MS = 100, 15 * 60_000
MAX_TXN_PARTITIONS = 10_000
# Test hook: while the file this names exists, a decided transaction waits after its
# PREPARE_* record and before its offsets and markers (see `_hold_before_markers`).
HOLD_MARKERS_ENV = "TIDEMQ_TEST_HOLD_MARKERS"


class TxnStatus(enum.IntEnum):
    EMPTY = 0
    ONGOING = 1
    PREPARE_COMMIT = 2
    PREPARE_ABORT = 3
    COMPLETE_COMMIT = 4
    COMPLETE_ABORT = 5


PREPARED = (TxnStatus.PREPARE_COMMIT, TxnStatus.PREPARE_ABORT)


class TxnMeta(msgspec.Struct, array_like=True, frozen=True):
    producer_id: int
    producer_epoch: int
    status: int
    timeout_ms: int
    started_ms: int = 0  # wall clock: replicas agree on it
    partitions: list[tuple[str, int]] = []
    offsets: dict[str, list[tuple[str, int, int]]] = {}  # group -> (topic, partition, offset)
    updated_ms: int = 0  # wall clock of the write (stamped by _write)
    number: int = 0  # the producer's count of the transaction


_enc = msgspec.msgpack.Encoder()
_meta_dec = msgspec.msgpack.Decoder(TxnMeta)
_snap_dec = msgspec.msgpack.Decoder(dict[str, TxnMeta])


class TxnShard(CoordinatorShard["TxnCoordination"], SnapshotShard):
    """A `__transaction_state` partition's state: its records applied into `txn_meta` on
    every replica, snapshotted instead of retention, and, while this node leads it, the
    per-term coordination (locks, running completions)."""

    snapshot_every = SNAPSHOT_EVERY

    def __init__(self, part: Partition) -> None:
        super().__init__(part)
        snap = part.storage.snapshot()
        self.txn_meta: dict[str, TxnMeta] = _snap_dec.decode(snap.data) if snap.data else {}

    def apply(self, entries: list[Entry]) -> None:
        # Only the coordinator writes here (clients may not produce to internal topics).
        for e in entries:
            if e.kind != EntryKind.NORMAL or segments.parse_header(e.data).is_control:
                continue
            for rec in segments.decode_records(e.data):
                if rec.key is None:
                    continue
                tid = bytes(rec.key).decode()
                if rec.value is None:
                    self.txn_meta.pop(tid, None)
                    continue
                try:
                    self.txn_meta[tid] = _meta_dec.decode(rec.value)
                except msgspec.DecodeError as exc:  # deterministic: every replica skips it alike
                    log.warning("%s: skipping a malformed record for %r: %s", TXN_TOPIC, tid, exc)

    def restore(self, data: bytes) -> None:
        self.txn_meta = _snap_dec.decode(data) if data else {}

    def dump(self) -> bytes:
        return _enc.encode(self.txn_meta)

    def new_live(self, term: int) -> TxnCoordination:
        return TxnCoordination(self, term)

    def propose_meta(self, tid: str, meta: TxnMeta):
        self.part.check_writable()
        data = segments.build_batch([(tid.encode(), _enc.encode(meta), (), None)])
        return self.part.propose(data, 1)


class TxnCoordination:
    """This node's live state for one transaction-state partition while it leads it, for
    one Raft term (the shard a request works on, from its arrival to its answer): one
    lock per transactional id (its requests, completions and timeout aborts run one at a
    time), and which ids have a janitor task running."""

    def __init__(self, shard: TxnShard, term: int) -> None:
        self.shard = shard
        self.term = term
        self._locks: dict[str, trio.Lock] = {}
        self.busy: set[str] = set()

    def lock(self, tid: str) -> trio.Lock:
        lock = self._locks.get(tid)
        if lock is None:
            lock = self._locks[tid] = trio.Lock()
        return lock


def _check_producer(tid: str, meta: TxnMeta | None, pid: int, epoch: int) -> TxnMeta:
    if meta is None:
        raise InvalidRequestError(f"transactional id {tid!r} is unknown here; call InitProducerId first")
    if pid != meta.producer_id or epoch < meta.producer_epoch:
        raise ProducerFencedError(
            f"transactional id {tid!r}: producer {pid} epoch {epoch} is fenced by producer {meta.producer_id} "
            f"epoch {meta.producer_epoch}"
        )
    if epoch > meta.producer_epoch:
        raise InvalidRequestError(f"transactional id {tid!r}: epoch {epoch} was never issued")
    return meta


class TransactionCoordinator(Service):
    """Answers the transaction requests on every node (each for the ids whose state
    partition it leads); its janitor sweep aborts timed-out transactions and finishes
    decided ones after a failover."""

    purpose = "txn"
    needs_client = True

    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx)
        self._hold_path = os.environ.get(HOLD_MARKERS_ENV) or None

    def topics(self) -> list[InternalTopic]:
        segment = {"segment.bytes": str(TXN_SEGMENT_BYTES)}
        return [InternalTopic(TXN_TOPIC, self.ctx.cfg.txn_partitions, segment)]

    def shard(self, meta: TopicMeta) -> ShardFactory | None:
        return TxnShard if meta.internal and meta.name == TXN_TOPIC else None

    def handlers(self) -> Handlers:
        return {
            FindTransactionCoordinator: self.find_coordinator,
            AddPartitionsToTxn: self.add_partitions,
            TxnOffsetCommit: self.txn_offset_commit,
            EndTxn: self.end_txn,
            ListTransactions: self.list_transactions,
            DescribeTransaction: self.describe_transaction,
        }

    # -- routing ---------------------------------------------------------------------------

    def _local(self, tid: str) -> TxnCoordination:
        """The live state of the partition coordinating `tid` (its shard for this term),
        or the error that sends the client elsewhere (or back later)."""
        check_name("transactional_id", tid)
        part = self.ctx.coordinating_partition(TXN_TOPIC, tid, f"transactional id {tid!r}")
        assert isinstance(part.shard, TxnShard)
        if self.cluster is None:
            raise CoordinatorNotAvailableError(f"node {self.ctx.id} is starting its transaction coordinator")
        return part.shard.coordination()

    async def find_coordinator(self, req: FindTransactionCoordinator) -> CoordinatorResponse:
        check_name("transactional_id", req.transactional_id)
        return self.ctx.find_coordinator(TXN_TOPIC, req.transactional_id, f"transactional id {req.transactional_id!r}")

    # -- state changes -----------------------------------------------------------------------

    async def _write(self, coord: TxnCoordination, tid: str, meta: TxnMeta) -> TxnMeta:
        """Replicate the new state of `tid` and return it once committed and applied."""
        if not coord.shard.is_coordinating(coord):
            raise NotCoordinatorError(f"node {self.ctx.id} no longer coordinates {coord.shard.part.name}")
        meta = msgspec.structs.replace(meta, updated_ms=now_ms())
        try:
            await coord.shard.part.wait(coord.shard.propose_meta(tid, meta), WRITE_TIMEOUT_S)
        except NotLeaderError as exc:
            raise NotCoordinatorError(exc.message, **exc.details) from None
        return meta

    async def _complete(self, coord: TxnCoordination, tid: str, meta: TxnMeta) -> TxnMeta:
        """Carry out a decided (PREPARE_*) transaction: offsets (commit only), markers on
        every partition, then COMPLETE_*. Every step may be redone."""
        assert self.cluster is not None
        commit = meta.status == TxnStatus.PREPARE_COMMIT
        if self._hold_path is not None:
            await self._hold_before_markers(tid)
        try:
            with trio.fail_after(COMPLETE_TIMEOUT_S):
                for group, offsets in sorted(meta.offsets.items()):
                    await self._end_offsets(tid, meta.number, group, offsets, commit)
                async with trio.open_nursery() as nursery:
                    for topic, p in meta.partitions:
                        nursery.start_soon(self._write_marker, coord, topic, p, meta, commit)
        except trio.TooSlowError:
            raise RequestTimeoutError(
                f"transaction {tid!r}: markers not all written within {COMPLETE_TIMEOUT_S:.0f}s; it will be completed, retry"
            ) from None
        done = TxnMeta(
            meta.producer_id,
            meta.producer_epoch,
            TxnStatus.COMPLETE_COMMIT if commit else TxnStatus.COMPLETE_ABORT,
            meta.timeout_ms,
            number=meta.number,
        )
        log.info(
            "transaction %r (producer %d epoch %d) %s over %d partition(s)",
            tid,
            meta.producer_id,
            meta.producer_epoch,
            "committed" if commit else "aborted",
            len(meta.partitions),
        )
        return await self._write(coord, tid, done)

    async def _end_offsets(
        self, tid: str, number: int, group: str, offsets: list[tuple[str, int, int]], commit: bool
    ) -> None:
        """The group offsets of a decided transaction: written on commit, and either way
        no longer pending. Offsets of a topic deleted meanwhile are dropped; a topic the
        group's coordinator does not know merely yet (it lags the controller log) is
        retried, never skipped."""
        assert self.cluster is not None
        try:
            await self.cluster.coordinator_request(group, EndTxnOffsets(group, tid, number, commit, offsets))
        except UnknownTopicError as exc:
            kept = [o for o in offsets if await self.cluster.topic_exists(o[0])]
            if kept == offsets:
                raise RequestTimeoutError(
                    f"transaction {tid!r}: group {group}'s coordinator does not know its "
                    f"topics yet ({exc.message}); retrying"
                ) from None
            log.warning(
                "transaction %r: offsets of deleted topics not committed for group %s: %s",
                tid,
                group,
                sorted({t for t, _, _ in offsets} - {t for t, _, _ in kept}),
            )
            if kept:
                await self.cluster.coordinator_request(group, EndTxnOffsets(group, tid, number, commit, kept))

    async def _hold_before_markers(self, tid: str) -> None:
        """A test hook, off unless $TIDEMQ_TEST_HOLD_MARKERS is set when the node starts:
        while that file exists, wait here, with the outcome decided and nothing written
        anywhere else. A test can then SIGKILL a real coordinator process at exactly
        this point (between prepare and markers), which no signal timed from outside
        hits reliably."""
        assert self._hold_path is not None
        if os.path.exists(self._hold_path):
            log.warning("transaction %r held before its markers while %s exists (test hook)", tid, self._hold_path)
        while os.path.exists(self._hold_path):
            await trio.sleep(0.02)

    async def _write_marker(self, coord: TxnCoordination, topic: str, p: int, meta: TxnMeta, commit: bool) -> None:
        assert self.cluster is not None
        if not coord.shard.is_coordinating(coord):
            raise NotCoordinatorError(f"node {self.ctx.id} no longer coordinates {coord.shard.part.name}")
        req = WriteTxnMarker(topic, p, meta.producer_id, meta.producer_epoch, commit, coord.term)
        try:
            await self.cluster.leader_request(topic, p, req)
        except UnknownTopicError:
            if await self.cluster.topic_exists(topic):  # only the node asked lags: never skip a marker then
                raise RequestTimeoutError(
                    f"{topic}-{p} is not known to the node asked yet; the marker is retried"
                ) from None
            log.warning("%s-%d is gone; no marker written there", topic, p)
        except ProducerFencedError as exc:  # a newer coordinator wrote there: we are deposed
            raise NotCoordinatorError(exc.message) from None

    async def _abort_fenced(self, coord: TxnCoordination, tid: str, meta: TxnMeta) -> TxnMeta:
        """Abort an open transaction with a bumped epoch, fencing its producer."""
        prepared = msgspec.structs.replace(
            meta, producer_epoch=min(meta.producer_epoch + 1, MAX_EPOCH), status=TxnStatus.PREPARE_ABORT
        )
        await self._write(coord, tid, prepared)
        return await self._complete(coord, tid, prepared)

    # -- requests --------------------------------------------------------------------------

    def init_producer_id(self, req: InitProducerId) -> Awaitable[ProducerIdResponse]:
        assert req.transactional_id is not None
        if not MIN_TIMEOUT_MS <= req.timeout_ms <= MAX_TIMEOUT_MS:
            raise InvalidRequestError(
                f"transaction timeout must be {MIN_TIMEOUT_MS}..{MAX_TIMEOUT_MS} ms, got {req.timeout_ms}"
            )
        coord = self._local(req.transactional_id)
        return self._init(coord, req.transactional_id, req.timeout_ms)

    async def _init(self, coord: TxnCoordination, tid: str, timeout_ms: int) -> ProducerIdResponse:
        assert self.cluster is not None
        async with coord.lock(tid):
            meta = coord.shard.txn_meta.get(tid)
            if meta is not None and meta.status == TxnStatus.ONGOING:
                meta = await self._abort_fenced(coord, tid, meta)
            elif meta is not None and meta.status in PREPARED:
                meta = await self._complete(coord, tid, meta)
            if meta is None or meta.producer_epoch >= MAX_EPOCH:
                resp: ProducerIdResponse = await self.cluster.controller_request(InitProducerId())
                pid, epoch = resp.producer_id, 0
            else:
                pid, epoch = meta.producer_id, meta.producer_epoch + 1
            await self._write(coord, tid, TxnMeta(pid, epoch, TxnStatus.EMPTY, timeout_ms))
            log.info("transactional id %r: producer %d epoch %d", tid, pid, epoch)
            return ProducerIdResponse(pid, epoch)

    @asynccontextmanager
    async def _ongoing(
        self, coord: TxnCoordination, tid: str, pid: int, epoch: int, number: int
    ) -> AsyncIterator[tuple[TxnMeta, bool]]:
        """The shared prologue of the requests that add to a transaction
        (AddPartitionsToTxn, TxnOffsetCommit): hold the id's lock for the whole request,
        refuse a fenced producer, finish a decided (PREPARE_*) transaction first (the
        producer's retried request may arrive before the janitor got to it), and yield
        the ONGOING state to extend, with whether this request is the one that began it
        (the caller writes the state then, even if it adds nothing). One helper, so the
        two requests cannot drift apart in how they check and begin. A request numbered for
        a transaction that already ended is a late duplicate (its connection dropped, the
        node ran it anyway) and is refused: it must not begin a transaction nobody ends."""
        async with coord.lock(tid):
            meta = _check_producer(tid, coord.shard.txn_meta.get(tid), pid, epoch)
            if meta.status in PREPARED:
                meta = await self._complete(coord, tid, meta)
            open_ = meta.status == TxnStatus.ONGOING
            if number and (number < meta.number or (number == meta.number and not open_)):
                raise InvalidRequestError(
                    f"transactional id {tid!r}: a late request for transaction {number}, which already ended; ignored"
                )
            if open_:
                yield meta, False
            else:
                yield (
                    TxnMeta(
                        meta.producer_id,
                        meta.producer_epoch,
                        TxnStatus.ONGOING,
                        meta.timeout_ms,
                        now_ms(),
                        number=number,
                    ),
                    True,
                )

    def add_partitions(self, req: AddPartitionsToTxn) -> Awaitable[Ok]:
        if req.verify_only:
            return self._verify(req)
        if len(req.partitions) > MAX_TXN_PARTITIONS:
            raise InvalidRequestError(f"at most {MAX_TXN_PARTITIONS} partitions per request")
        for tp in req.partitions:
            meta = self.ctx.state.topics.get(tp.topic)
            if meta is None or not 0 <= tp.partition < len(meta.replicas):
                raise UnknownTopicError(f"cannot add {tp.topic}-{tp.partition} to a transaction: no such partition")
            if meta.internal:
                raise InvalidRequestError(f"{tp.topic} is an internal topic; it cannot be written in a transaction")
        coord = self._local(req.transactional_id)
        return self._add(coord, req)

    async def _add(self, coord: TxnCoordination, req: AddPartitionsToTxn) -> Ok:
        tid = req.transactional_id
        async with self._ongoing(coord, tid, req.producer_id, req.producer_epoch, req.transaction) as (
            new,
            began,
        ):
            parts = sorted(set(new.partitions) | {(tp.topic, tp.partition) for tp in req.partitions})
            if began or parts != new.partitions:
                await self._write(coord, tid, msgspec.structs.replace(new, partitions=parts))
            return Ok()

    async def _verify(self, req: AddPartitionsToTxn) -> Ok:
        """A partition leader asks before it accepts the first batch of a transaction."""
        if len(req.partitions) != 1:
            raise InvalidRequestError("verify_only checks exactly one partition")
        tid, (tp,) = req.transactional_id, req.partitions
        coord = self._local(tid)
        meta = _check_producer(tid, coord.shard.txn_meta.get(tid), req.producer_id, req.producer_epoch)
        if meta.status != TxnStatus.ONGOING or (tp.topic, tp.partition) not in meta.partitions:
            raise InvalidTxnStateError(
                f"transactional id {tid!r}: {tp.topic}-{tp.partition} is not in an ongoing transaction of producer "
                f"{req.producer_id} epoch {req.producer_epoch} (state {TxnStatus(meta.status).name.lower()}); "
                "add the partition first (AddPartitionsToTxn)"
            )
        return Ok()

    async def verify_partition(self, tid: str, pid: int, epoch: int, topic: str, partition: int) -> None:
        """For this node's partition leaders: is `topic-partition` in the ongoing
        transaction of (pid, epoch)? Raises if not (see `Partition._hold`)."""
        if self.cluster is None:
            raise CoordinatorNotAvailableError(f"node {self.ctx.id} is starting its transaction coordinator")
        await self.cluster.transaction_coordinator_request(
            tid, AddPartitionsToTxn(tid, pid, epoch, [TopicPartition(topic, partition)], verify_only=True)
        )

    def txn_offset_commit(self, req: TxnOffsetCommit) -> Awaitable[Ok]:
        check_name("group", req.group)
        for topic, p, offset in req.offsets:
            check_name("topic", topic)
            if p < 0 or offset < 0:
                raise InvalidRequestError(f"offset of {topic}-{p} at {offset}: partition and offset must be >= 0")
        if req.assigned_epochs and len(req.assigned_epochs) != len(req.offsets):
            raise InvalidRequestError(f"{len(req.assigned_epochs)} assigned epochs for {len(req.offsets)} offsets")
        coord = self._local(req.transactional_id)
        return self._offsets(coord, req)

    async def _offsets(self, coord: TxnCoordination, req: TxnOffsetCommit) -> Ok:
        """Record the offsets with the transaction, then have the group check the member
        and hold them pending (node/coordinator.py, KIP-447). In this order, whatever the
        group holds pending is in the transaction's state, so its end clears it; a refusal
        reaches the producer, whose transaction then cannot commit."""
        assert self.cluster is not None
        tid = req.transactional_id
        async with self._ongoing(coord, tid, req.producer_id, req.producer_epoch, req.transaction) as (new, _):
            offsets = {g: list(o) for g, o in new.offsets.items()}
            merged = {(t, p): o for t, p, o in offsets.get(req.group, [])}
            merged.update({(t, p): o for t, p, o in req.offsets})
            offsets[req.group] = [(t, p, o) for (t, p), o in sorted(merged.items())]
            new = await self._write(coord, tid, msgspec.structs.replace(new, offsets=offsets))
            pend = PendTxnOffsets(
                req.group,
                tid,
                new.number,
                [TopicPartition(t, p) for t, p, _ in req.offsets],
                req.member_id,
                req.assigned_epochs,
                new.timeout_ms,
            )
            try:
                with trio.fail_after(WRITE_TIMEOUT_S):
                    await self.cluster.coordinator_request(req.group, pend)
            except trio.TooSlowError:
                raise RequestTimeoutError(
                    f"group {req.group!r}: its coordinator did not take the transaction's offsets in time; retry"
                ) from None
            return Ok()

    def end_txn(self, req: EndTxn) -> Awaitable[Ok]:
        coord = self._local(req.transactional_id)
        return self._end(coord, req)

    async def _end(self, coord: TxnCoordination, req: EndTxn) -> Ok:
        tid = req.transactional_id
        wanted = TxnStatus.PREPARE_COMMIT if req.commit else TxnStatus.PREPARE_ABORT
        done = TxnStatus.COMPLETE_COMMIT if req.commit else TxnStatus.COMPLETE_ABORT
        async with coord.lock(tid):
            meta = _check_producer(tid, coord.shard.txn_meta.get(tid), req.producer_id, req.producer_epoch)
            if meta.status == TxnStatus.ONGOING:
                meta = await self._write(coord, tid, msgspec.structs.replace(meta, status=wanted))
            if meta.status == wanted:
                meta = await self._complete(coord, tid, meta)
            if meta.status not in (done, TxnStatus.EMPTY):
                raise InvalidRequestError(
                    f"transactional id {tid!r}: cannot {'commit' if req.commit else 'abort'}, "
                    f"the transaction is {TxnStatus(meta.status).name}"
                )
            return Ok()

    # -- looking at transactions ---------------------------------------------------------------

    def _info(self, tid: str, meta: TxnMeta) -> TxnInfo:
        status = TxnStatus(meta.status)
        is_open = status in (TxnStatus.ONGOING, *PREPARED)
        return TxnInfo(
            tid,
            meta.producer_id,
            meta.producer_epoch,
            status.name.lower(),
            [TopicPartition(t, p) for t, p in meta.partitions],
            sorted(meta.offsets),
            started_ms=meta.started_ms if is_open else 0,
            updated_ms=meta.updated_ms,
            timeout_ms=meta.timeout_ms,
            coordinator=self.ctx.id,
        )

    async def list_transactions(self, req: ListTransactions) -> ListTransactionsResponse:
        """The ids of every state partition this node leads and has caught up on. Each
        id has one coordinator, so a caller asking every node sees each id once; a
        partition whose leader is just being elected is missing until it is."""
        found: list[TxnInfo] = []
        for part in sorted(self.ctx.led_partitions(TXN_TOPIC), key=lambda p: p.partition):
            if isinstance(part.shard, TxnShard):
                found.extend(self._info(tid, meta) for tid, meta in sorted(part.shard.txn_meta.items()))
        return ListTransactionsResponse(found)

    async def describe_transaction(self, req: DescribeTransaction) -> TxnInfo:
        """The id's state as its coordinator knows it (read without the id's lock: a
        transaction stuck completing must still be visible)."""
        meta = self._local(req.transactional_id).shard.txn_meta.get(req.transactional_id)
        if meta is None:
            raise InvalidRequestError(f"transactional id {req.transactional_id!r} is unknown: no producer has used it")
        return self._info(req.transactional_id, meta)

    # -- the janitor -------------------------------------------------------------------------

    def sweep(self, led: list[Partition], nursery: trio.Nursery) -> None:
        now = now_ms()
        for part in led:
            if not isinstance(part.shard, TxnShard):
                continue
            coord = part.shard.coordination()
            for tid, meta in list(part.shard.txn_meta.items()):
                if tid in coord.busy:
                    continue
                if meta.status in PREPARED or (
                    meta.status == TxnStatus.ONGOING and now - meta.started_ms > meta.timeout_ms
                ):
                    coord.busy.add(tid)
                    nursery.start_soon(self._finish, coord, tid)

    async def _finish(self, coord: TxnCoordination, tid: str) -> None:
        """Finish a decided transaction (after a failover), or abort a timed-out one."""
        try:
            async with coord.lock(tid):
                meta = coord.shard.txn_meta.get(tid)
                if meta is None or not coord.shard.is_coordinating(coord):
                    return
                if meta.status in PREPARED:
                    await self._complete(coord, tid, meta)
                elif meta.status == TxnStatus.ONGOING and now_ms() - meta.started_ms > meta.timeout_ms:
                    log.info("transaction %r timed out after %d ms; aborting", tid, meta.timeout_ms)
                    await self._abort_fenced(coord, tid, meta)
        except* TideMQError as group:  # the next sweep retries (or a new coordinator takes over)
            log.info("transaction %r not finished yet: %s", tid, group.exceptions[0])
        finally:
            coord.busy.discard(tid)
