"""A data partition: a Replica whose entries are producers' record batches.

Produce validates a batch once (CRC, size, not a control batch), checks idempotence
against the producer state, and proposes the bytes unchanged; the log stamps offsets and
epoch. Fetch reads whole batches up to the high watermark, so a consumer never sees an
uncommitted (and possibly later overwritten) batch.

Transactions: every replica derives from committed batches, in log order, which
producers have a transaction open here (the offset of its first transactional batch)
and which transactions were aborted (producer, first offset, marker offset). So a new
leader or a restarted node (it replays its log) answers exactly as the old one did:
read_committed fetches stop at the last stable offset (the first offset of the oldest
open transaction, or the high watermark) and carry the aborted transactions overlapping
the range read, which the consumer drops.

A partition of an internal topic keeps a state machine besides its log (a `Shard`:
group offsets and members, transaction states, half messages, a delay tier's
checkpoint), given by the service that owns the topic and applied after the
partition's own producer state, on every replica alike.

A restart does not replay the log to rebuild the producer state and the transaction
index: a checkpoint of both (`StateCheckpoint`, the file `partition-state` beside the
log) is written every `STATE_CHECKPOINT_EVERY` applied entries, at the retention timer
when anything was applied since, and on a graceful close; a restarted replica loads it
and replays only the entries after it (Kafka's producer snapshots do the same).
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Coroutine
from typing import NamedTuple

import msgspec
import trio

import segments
from client.errors import (
    CoordinatorNotAvailableError,
    CorruptBatchError,
    InvalidRequestError,
    InvalidTimestampError,
    InvalidTxnStateError,
    MessageTooLargeError,
    OffsetOutOfRangeError,
    ProducerFencedError,
    RequestTimeoutError,
    ShuttingDownError,
    TideMQError,
    UnsupportedCompressionError,
)
from client.protocol import ACKS_LEADER, ACKS_NONE, READ_COMMITTED, AbortedTxn, Ok, ProduceResponse
from node.delay_intake import DelayHeaderError, IntakeState, Relayer, delayed_records
from node.diskspace import DiskSpace
from node.producers import PRODUCER_EXPIRATION_MS, BatchRef, ProducerSnapshot, ProducerState
from node.replica import Replica, _in_thread
from node.sendfile import Region
from node.storage import LogStorage
from raft.types import Entry, EntryKind, Snapshot

log = logging.getLogger(__name__)


class Aborted(NamedTuple):
    marker_offset: int
    producer_id: int
    first_offset: int


class TxnIndex:
    """Open and aborted transactions of one partition, from its committed batches."""

    def __init__(self) -> None:
        self.open: dict[int, int] = {}  # producer id -> first offset of its open transaction
        self.aborted: list[Aborted] = []  # in marker order (log order)
        self.coordinator_epochs: dict[int, int] = {}

    def data(self, pid: int, offset: int) -> None:
        self.open.setdefault(pid, offset)

    def marker(self, pid: int, commit: bool, offset: int, coordinator_epoch: int) -> None:
        first = self.open.pop(pid, None)
        if first is not None and not commit:
            self.aborted.append(Aborted(offset, pid, first))
        self.coordinator_epochs[pid] = max(coordinator_epoch, self.coordinator_epochs.get(pid, -1))

    def first_open(self) -> int | None:
        return min(self.open.values()) if self.open else None

    def aborted_in(self, start: int, end: int) -> list[AbortedTxn]:
        """Aborted transactions with data in [start, end): their marker is at or after
        `start` and their first offset before `end`."""
        i = bisect_left(self.aborted, (start,))
        return [AbortedTxn(a.producer_id, a.first_offset) for a in self.aborted[i:] if a.first_offset < end]

    def forget_before(self, offset: int) -> None:
        """Retention dropped the log before `offset`: aborted transactions wholly before
        it can no longer be read."""
        i = bisect_left(self.aborted, (offset,))
        if i:
            del self.aborted[:i]


#: A partition's state is checkpointed after this many applied entries: a restart after a
#: crash replays at most about this many per partition (after a graceful stop, none).
STATE_CHECKPOINT_EVERY = 1000
#: At the retention timer and on close, a checkpoint is written if the producer state or
#: the transaction index changed since the last, or this many entries were applied (a
#: partition that only ever applied its leaders' no-ops has nothing worth writing).
STATE_CHECKPOINT_MIN = 100
STATE_FILE = "partition-state"
_STATE_MAGIC = b"TPS1"


class StateCheckpoint(msgspec.Struct, array_like=True):
    """`partition-state`: what a partition derived from its log through `offset` (the
    producer state and the transaction index), so a restart replays only what follows."""

    offset: int
    producers: ProducerSnapshot
    txn_open: dict[int, int]
    txn_aborted: list[tuple[int, int, int]]
    coordinator_epochs: dict[int, int]
    deleted_before: int = 0  # a DeleteRecords' new log start, which retention may not have reached yet
    intake_pending: dict[int, int] = {}  # delayed messages from Kafka clients not yet in their tier
    intake_next_seq: int = 0

    def encode(self) -> bytes:
        return _STATE_MAGIC + _state_enc.encode(self)

    @staticmethod
    def read(storage: LogStorage) -> StateCheckpoint | None:
        """The partition's checkpoint, or None (none yet, or unreadable: then the log is
        replayed, as before there were checkpoints)."""
        raw = storage.read_file(STATE_FILE)
        if raw is None or not raw.startswith(_STATE_MAGIC):
            return None
        try:
            return _state_dec.decode(raw[len(_STATE_MAGIC) :])
        except msgspec.DecodeError:
            log.warning("%s: ignoring a malformed %s; replaying the log instead", storage.path, STATE_FILE)
            return None


_state_enc = msgspec.msgpack.Encoder()
_state_dec = msgspec.msgpack.Decoder(StateCheckpoint)


# Asks the transactional id's coordinator whether (topic, partition) is in the ongoing
# transaction of (producer id, epoch); raises a TideMQError if not.
TxnVerifier = Callable[[str, int, int, str, int], Awaitable[object]]
VERIFY_TIMEOUT_S = 10.0


class _Held:
    """A transactional batch waiting for its transaction to be verified."""

    __slots__ = ("records", "acks", "timeout_s", "done", "answer", "error", "abandoned")

    def __init__(self, records: bytes, acks: int, timeout_s: float) -> None:
        self.records, self.acks, self.timeout_s = records, acks, timeout_s
        self.done = trio.Event()
        self.answer: Coroutine[object, None, ProduceResponse | None] | None = None
        self.error: TideMQError | None = None
        self.abandoned = False  # its request gave up waiting: nobody will await the answer

    async def wait(self) -> ProduceResponse | None:
        try:
            with trio.move_on_after(self.timeout_s):
                await self.done.wait()
        finally:
            self.abandoned = not self.done.is_set()
        if self.abandoned:
            raise RequestTimeoutError(f"the transaction was not verified within {self.timeout_s:.1f}s; retry")
        if self.error is not None:
            raise self.error
        assert self.answer is not None
        return await self.answer


class _Verification:
    """One producer's batches held while its coordinator is asked (arrival order), and
    whether a marker for it was written meanwhile."""

    __slots__ = ("held", "ended")

    def __init__(self) -> None:
        self.held: list[_Held] = []
        self.ended = False


@dataclasses.dataclass(frozen=True)
class BatchLimits:
    """What a producer's batch must fit before it is proposed (see `segments.validate`)."""

    max_batch_bytes: int = 8 * 1024 * 1024
    max_records_bytes: int = 32 * 1024 * 1024  # decompressed
    timestamp_before_max_ms: int | None = None  # how old a create time may be (None: any)
    timestamp_after_max_ms: int | None = 3_600_000  # how far in the future (None: any)


class Shard:
    """The state machine of one partition of an internal topic, on every replica: what
    its service derives from the committed log. The defaults keep nothing."""

    def __init__(self, part: Partition) -> None:
        self.part = part

    def apply(self, entries: list[Entry]) -> None:
        """Committed entries, in log order (after the partition's producer state)."""

    def restore(self, data: bytes) -> None:
        """A snapshot replaced the log: rebuild from its data (a `SnapshotShard`'s
        `dump()`, or b"")."""

    def check_produce(self, records: bytes) -> None:
        """Refuse a client's batch (already validated) that this state cannot take."""

    def role_changed(self) -> None:
        """Leadership or term changed: drop what was live for the last term."""


class SnapshotShard(Shard, abc.ABC):
    """A shard whose state is kept until overwritten (offsets, transactions, halves):
    every `snapshot_every` entries the partition snapshots `dump()` and drops the log
    before it, instead of deleting segments by age or size as the topic's retention."""

    snapshot_every: int

    @abc.abstractmethod
    def dump(self) -> bytes:
        """The state at the applied index, for the snapshot."""


ShardFactory = Callable[["Partition"], Shard]


class Partition(Replica):
    def __init__(
        self,
        *args,
        topic: str,
        partition: int,
        limits: BatchLimits = BatchLimits(),
        disk: DiskSpace | None = None,
        txn_verifier: TxnVerifier | None = None,
        producer_expiration_ms: int = PRODUCER_EXPIRATION_MS,
        shard: ShardFactory | None = None,
        saved: StateCheckpoint | None = None,
        intake_relayer: Relayer | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, apply=Partition._apply_entries, **kwargs)
        self.topic = topic
        self.partition = partition
        self.limits = limits
        self.disk = disk
        self.producers = ProducerState(producer_expiration_ms)
        self.txns = TxnIndex()
        self.deleted_before = 0  # the log start DeleteRecords asked for (committed)
        self.intake = IntakeState()  # node/delay_intake.py
        self._intake_relayer = intake_relayer
        self._relaying = False
        self._pending_coordinator_epochs: dict[int, int] = {}
        self._txn_verifier = txn_verifier
        self._txn_verified: dict[int, int] = {}  # producer id -> epoch verified for its open transaction
        self._verifying: dict[int, _Verification] = {}
        self._tasks: trio.Nursery | None = None
        self.shard = shard(self) if shard is not None else None
        #: Producer state and transaction index hold the log through here already: the
        #: entries up to it that are applied again after a restart leave them alone.
        self.state_at = -1
        self._checkpointed = -1  # the offset of the last checkpoint written or loaded
        self._since_checkpoint = 0  # entries applied since
        self._checkpointing = False
        self._checkpoint_due = False
        self._state_changed = False  # producer state or transaction index, since the checkpoint
        # (A shard that snapshots its state restores the producers from its snapshot,
        # if it keeps them: a checkpoint older than that snapshot would set them back.)
        if saved is not None and (self.shard is None or saved.offset >= self.storage.first_index()):
            self._load_checkpoint(saved)

    # -- the state checkpoint -----------------------------------------------------------------

    def _load_checkpoint(self, saved: StateCheckpoint) -> None:
        self.producers.restore(saved.producers)
        self.txns.open = dict(saved.txn_open)
        self.txns.aborted = [Aborted(*a) for a in saved.txn_aborted]
        self.txns.coordinator_epochs = dict(saved.coordinator_epochs)
        self.deleted_before = saved.deleted_before
        self.intake = IntakeState(dict(saved.intake_pending), saved.intake_next_seq)
        self.state_at = self._checkpointed = saved.offset

    def state_checkpoint(self) -> StateCheckpoint:
        """The producer state and transaction index as they stand (at `applied`)."""
        return StateCheckpoint(
            max(self.applied, self.state_at),
            self.producers.snapshot(),
            dict(self.txns.open),
            [(a.marker_offset, a.producer_id, a.first_offset) for a in self.txns.aborted],
            dict(self.txns.coordinator_epochs),
            self.deleted_before,
            dict(self.intake.pending),
            self.intake.next_seq,
        )

    async def checkpoint_state(self, *, every: int = STATE_CHECKPOINT_MIN) -> None:
        """Write the state checkpoint if the state changed or `every` entries were
        applied since the last (under the io lock, so no Ready applies meanwhile; the
        write in a worker thread)."""
        if self._checkpointing or not (self._state_changed or self._since_checkpoint >= every):
            return
        self._checkpointing = True
        try:
            async with self.io_lock:
                if self.closed or self.offline is not None or max(self.applied, self.state_at) <= self._checkpointed:
                    return
                cp = self.state_checkpoint()
                try:
                    await _in_thread(self.storage.write_file, STATE_FILE, cp.encode())
                except OSError as exc:  # only slower restarts: the log is replayed instead
                    log.warning("%s: could not write its state checkpoint: %s", self.name, exc)
                    return
                self._checkpointed = cp.offset
                self._since_checkpoint = 0
                self._state_changed = False
        finally:
            self._checkpointing = False

    async def _due_checkpoint(self) -> None:
        try:
            await self.checkpoint_state(every=STATE_CHECKPOINT_EVERY)
        finally:
            self._checkpoint_due = False

    async def close(self) -> None:
        if not self.closed and self.offline is None:
            await self.checkpoint_state()
        await super().close()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._tasks = nursery
            try:
                await super().run()
            finally:
                nursery.cancel_scope.cancel()

    # -- producing ------------------------------------------------------------------------

    def produce(
        self,
        records: bytes,
        acks: int,
        timeout_s: float,
        transactional_id: str | None = None,
        *,
        delay_headers: bool = False,
    ) -> Awaitable[ProduceResponse | None]:
        """Synchronous up to the proposal (so pipelined batches keep their order), then
        an awaitable for the acknowledgement. The first batch of a transaction here
        waits for its coordinator's word first, and the producer's later batches queue
        behind it in arrival order."""
        self.check_writable()
        header = self.validate(records)
        if self.shard is not None:
            self.shard.check_produce(records)
        count = header.last_offset_delta + 1
        pid = header.producer_id
        if delay_headers:
            records = self._intake_of(records, header, count)
        unverified = (
            header.is_transactional
            and self._txn_verifier is not None
            and self._txn_verified.get(pid) != header.producer_epoch
        )
        if pid >= 0 and pid not in self._verifying:  # else: checked once the batches ahead are in
            dup = self.producers.check(pid, header.producer_epoch, header.base_sequence, count)
            if dup is not None:
                return self._answer_duplicate(dup, timeout_s)
        if unverified or pid in self._verifying:
            if transactional_id is None:
                raise InvalidRequestError(
                    f"{self.name}: a transactional batch needs its producer's transactional_id in the Produce request"
                )
            return self._hold(pid, header.producer_epoch, transactional_id, records, acks, timeout_s)
        waiter = self.propose(records, count, durable_only=acks == ACKS_LEADER)
        if pid >= 0:
            first_seq = header.base_sequence
            self.producers.add_pending(
                pid,
                header.producer_epoch,
                BatchRef(first_seq, first_seq + count - 1, waiter.entry.index, waiter.entry.last),
            )
        if acks == ACKS_NONE:
            return _nothing()
        return self._answer(waiter, timeout_s)

    def _intake_of(self, records: bytes, header: segments.BatchHeader, count: int) -> bytes:
        """The bytes to store for a Kafka producer's batch: itself, or, where a record
        has a delay header, a DELAY_INTAKE carrier of it (node/delay_intake.py)."""
        try:
            delayed = self.shard is None and delayed_records(records, int(time.time() * 1000))
        except DelayHeaderError as exc:
            raise InvalidRequestError(f"{self.name}: {exc}") from None
        if not delayed:
            return records
        if header.is_transactional:
            raise InvalidRequestError(f"{self.name}: a delayed message cannot be part of a transaction")
        if self._intake_relayer is None:
            raise InvalidRequestError(f"{self.name}: this node has no delay tier to take delayed messages")
        return segments.build_carrier(
            segments.ControlType.DELAY_INTAKE,
            records,
            producer_id=header.producer_id,
            producer_epoch=header.producer_epoch,
            base_sequence=header.base_sequence,
            span=count,
        )

    def validate(self, records: bytes) -> segments.BatchHeader:
        """Everything a producer's batch must be before it is proposed: once in the log
        it is replayed on every replica and read by every consumer, so what cannot be
        decoded, or carries a time far off, is refused here with a typed error."""
        lim = self.limits
        if len(records) > lim.max_batch_bytes:
            raise MessageTooLargeError(
                f"batch of {len(records)} bytes exceeds the limit of {lim.max_batch_bytes}; send smaller batches"
            )
        if self.disk is not None:
            self.disk.check(len(records))
        now = int(time.time() * 1000)
        try:
            header = segments.validate(
                records,
                max_records_bytes=lim.max_records_bytes,
                min_timestamp=None if lim.timestamp_before_max_ms is None else now - lim.timestamp_before_max_ms,
                max_timestamp=None if lim.timestamp_after_max_ms is None else now + lim.timestamp_after_max_ms,
            )
        except segments.UnsupportedCompressionError as exc:
            raise UnsupportedCompressionError(f"{self.name}: {exc}") from None
        except segments.InvalidTimestampError as exc:
            raise InvalidTimestampError(f"{self.name}: {exc}") from None
        except segments.CorruptBatchError as exc:
            raise CorruptBatchError(f"{self.name}: {exc}") from None
        if header.is_control:
            raise InvalidRequestError("producers may not write control batches")
        return header

    def _hold(
        self, pid: int, epoch: int, tid: str, records: bytes, acks: int, timeout_s: float
    ) -> Awaitable[ProduceResponse | None]:
        """Hold a transactional batch until the coordinator confirms that this partition
        is in the producer's ongoing transaction. Unverified, a batch from a producer
        that never added the partition, or a late one of a transaction that already
        ended, would open a transaction here that no marker closes, holding back every
        read_committed reader (Kafka's hanging transaction, KIP-890 part 1)."""
        if self._tasks is None:
            raise CoordinatorNotAvailableError(f"{self.name} is starting on node {self.core.id}; retry")
        held = _Held(records, acks, timeout_s)
        verification = self._verifying.get(pid)
        if verification is None:
            verification = self._verifying[pid] = _Verification()
            self._tasks.start_soon(self._verify, pid, epoch, tid)
        verification.held.append(held)
        return held.wait()

    async def _verify(self, pid: int, epoch: int, tid: str) -> None:
        error: TideMQError | None = ShuttingDownError(f"{self.name} closed on node {self.core.id}; retry")
        try:
            assert self._txn_verifier is not None  # (verifying starts only with a verifier)
            with trio.fail_after(VERIFY_TIMEOUT_S):
                await self._txn_verifier(tid, pid, epoch, self.topic, self.partition)
            error = None
            if self._verifying[pid].ended:  # a marker meanwhile: these batches are late
                error = InvalidTxnStateError(f"{self.name}: the transaction of {tid!r} ended while its batch waited")
        except trio.TooSlowError:
            error = CoordinatorNotAvailableError(
                f"{self.name}: the coordinator of transactional id {tid!r} did not confirm the transaction in time"
            )
        except TideMQError as exc:
            error = (
                exc
                if not exc.retriable
                else CoordinatorNotAvailableError(  # it moves: the producer retries
                    f"{self.name}: could not verify the transaction of {tid!r} with its coordinator: {exc.message}"
                )
            )
        except (OSError, TimeoutError) as exc:  # the coordinator's node is unreachable: never take this node down
            error = CoordinatorNotAvailableError(
                f"{self.name}: could not reach the coordinator of transactional id {tid!r}: {exc!r}"
            )
        finally:
            queue = self._verifying.pop(pid).held
            if error is None:
                self._txn_verified[pid] = epoch
            for held in queue:  # in arrival order, synchronously: they keep their order in the log
                if error is not None:
                    held.error = error
                else:
                    try:
                        answer = self.produce(held.records, held.acks, held.timeout_s, tid)
                    except TideMQError as exc:
                        held.error = exc
                    else:
                        held.answer = answer  # type: ignore[assignment]   # produce's awaitable is a coroutine
                        if held.abandoned:
                            answer.close()  # type: ignore[attr-defined]   # proposed all the same: a retry is answered DUPLICATE
                held.done.set()

    async def _answer(self, waiter, timeout_s: float) -> ProduceResponse:
        entry = await self.wait(waiter, timeout_s)
        return ProduceResponse(entry.index, entry.last, self.storage.log.log_start_offset)

    async def _answer_duplicate(self, dup: BatchRef, timeout_s: float) -> ProduceResponse:
        """A retry of a batch already in the log: answer once the original is committed."""
        waiters = self._waiters.get(dup.last_offset)
        if waiters:
            await self.wait(waiters[0], timeout_s)
        return ProduceResponse(dup.base_offset, dup.last_offset, self.storage.log.log_start_offset, duplicate=True)

    def write_marker(
        self, producer_id: int, producer_epoch: int, commit: bool, coordinator_epoch: int, timeout_s: float
    ) -> Awaitable[Ok]:
        """Append a transaction marker (synchronously up to the proposal). Always
        written, even if no open transaction is known here: a transactional batch may
        still be in flight, and a marker that closes nothing is harmless. A marker from
        an older coordinator epoch than one already seen for the producer is a zombie
        coordinator's and is refused; a higher producer epoch fences older batches."""
        self.check_writable()
        seen = max(
            self.txns.coordinator_epochs.get(producer_id, -1), self._pending_coordinator_epochs.get(producer_id, -1)
        )
        if coordinator_epoch < seen:
            raise ProducerFencedError(
                f"{self.name}: marker from coordinator epoch {coordinator_epoch}, but {seen} was already seen"
            )
        self.producers.fence(producer_id, producer_epoch)
        self._pending_coordinator_epochs[producer_id] = coordinator_epoch
        self._txn_verified.pop(producer_id, None)  # the next transaction is verified afresh
        if producer_id in self._verifying:
            self._verifying[producer_id].ended = True
        data = segments.build_transaction_marker(
            commit, producer_id=producer_id, producer_epoch=producer_epoch, coordinator_epoch=coordinator_epoch
        )
        return self._marker_written(self.propose(data, 1), timeout_s)

    async def _marker_written(self, waiter, timeout_s: float) -> Ok:
        await self.wait(waiter, timeout_s)
        return Ok()

    def _apply_entries(self, entries: list[Entry]) -> None:
        self._since_checkpoint += len(entries)
        if self._since_checkpoint >= STATE_CHECKPOINT_EVERY and self._tasks is not None and not self._checkpoint_due:
            self._checkpoint_due = True
            self._tasks.start_soon(self._due_checkpoint)
        for e in entries:
            if e.kind != EntryKind.NORMAL or e.last <= self.state_at:
                continue
            h = segments.parse_header(e.data)
            ours = self._ours(e) if h.is_control and not h.is_transactional else None
            if h.producer_id < 0 or (ours is not None and ours != segments.ControlType.DELAY_INTAKE):
                continue
            self._state_changed = True
            if h.is_control and ours is None:
                if h.is_transactional:
                    kind, coordinator_epoch = segments.transaction_marker_of(e.data)
                    self.txns.marker(h.producer_id, kind == segments.ControlType.COMMIT, e.index, coordinator_epoch)
                    self.producers.apply_marker(h.producer_id, h.producer_epoch)
                continue
            self.producers.apply(
                h.producer_id,
                h.producer_epoch,
                BatchRef(h.base_sequence, h.base_sequence + e.last - e.index, e.index, e.last),
                h.max_timestamp,
            )
            if h.is_transactional:
                self.txns.data(h.producer_id, e.index)
        if self.shard is not None:
            self.shard.apply(entries)

    def restore(self, snap: Snapshot) -> None:
        if self.shard is not None:
            self.shard.restore(snap.data)
        super().restore(snap)

    def role_changed(self) -> None:
        if self.shard is not None:
            self.shard.role_changed()
        # In-flight batches of a past leadership are resolved by the log, not by memory.
        self.producers.clear_pending()
        self._pending_coordinator_epochs.clear()
        self._txn_verified.clear()
        super().role_changed()
        self._relay_intakes_soon()

    async def apply_retention(self, now_ms: int, log_start_at_least: int = 0) -> None:
        await self.checkpoint_state()
        if isinstance(self.shard, SnapshotShard):
            await self.snapshot_state(self.shard.snapshot_every, self.shard.dump)
            return
        await super().apply_retention(now_ms, max(log_start_at_least, self.deleted_before))
        self.txns.forget_before(self.storage.log.log_start_offset)

    # -- deleting records ---------------------------------------------------------------------

    def delete_records(self, offset: int, timeout_s: float) -> Awaitable[int]:
        """Move the log start up to `offset` (-1: the high watermark) on every replica,
        as Kafka's DeleteRecords does: a committed DELETE_RECORDS control batch, which
        each replica applies by trimming its log (through whole segments, like retention;
        nothing below the offset is served any more). Returns the new log start here."""
        hw = self.high_watermark
        offset = hw if offset == -1 else offset
        if not 0 <= offset <= hw:
            raise OffsetOutOfRangeError(
                f"{self.name}: records are deleted below an offset up to the high watermark {hw}, not {offset}"
            )
        if self.shard is not None:
            raise InvalidRequestError(f"{self.name} is a partition of an internal topic; its records stay")
        value = offset.to_bytes(8, "big")
        waiter = self.propose(segments.build_control_batch(segments.ControlType.DELETE_RECORDS, value), 1)
        return self._records_deleted(waiter, offset, timeout_s)

    async def _records_deleted(self, waiter, offset: int, timeout_s: float) -> int:
        await self.wait(waiter, timeout_s)
        await self.apply_retention(int(time.time() * 1000), offset)
        return self.storage.log.log_start_offset

    def _ours(self, e: Entry) -> segments.ControlType | None:
        """Apply one of this module's control batches (DELETE_RECORDS, DELAY_INTAKE,
        DELAY_INTAKE_DONE) and say which it was; None for any other (a marker, the Raft
        layer's, a shard's). Never raises: it is in the log."""
        kind = segments.ControlType
        try:
            control = segments.control_type_of(e.data)
            if control not in (kind.DELETE_RECORDS, kind.DELAY_INTAKE, kind.DELAY_INTAKE_DONE):
                return None
            value = segments.decode_records(e.data)[0].value or b""
        except (ValueError, segments.SegmentError) as exc:
            log.warning("%s: skipping a control batch that does not decode: %s", self.name, exc)
            return None
        self._state_changed = True
        if control == kind.DELAY_INTAKE:
            self.intake.taken(e.index, e.last - e.index + 1)
            self._relay_intakes_soon()
        elif len(value) != 8:
            log.warning("%s: a %s batch without an offset; skipped", self.name, control.name)
        elif control == kind.DELAY_INTAKE_DONE:
            self.intake.done(int.from_bytes(value, "big"))
        else:
            self._deleted_before(int.from_bytes(value, "big"))
        return control

    def _relay_intakes_soon(self) -> None:
        """On the leader: start moving the pending intakes into their tier, unless that
        is under way."""
        if self._relaying or self._tasks is None or self._intake_relayer is None:
            return
        if self.is_leader and not self.closed and self.intake.pending:
            self._relaying = True
            self._tasks.start_soon(self._relay_intakes)

    async def _relay_intakes(self) -> None:
        """Oldest first, each relayed then marked done in the log (a new leader relays
        what is not marked again, and the tier's idempotence drops the repeats)."""
        assert self._intake_relayer is not None
        try:
            while self.is_leader and not self.closed and self.intake.pending:
                if not self.ready_for_writes():
                    await trio.sleep(0.05)
                    continue
                offset, first_seq = min(self.intake.pending.items())
                try:
                    await self._intake_relayer(self, offset, first_seq)
                    done = segments.build_control_batch(
                        segments.ControlType.DELAY_INTAKE_DONE, offset.to_bytes(8, "big")
                    )
                    await self.wait(self.propose(done, 1), 10.0)
                    with trio.move_on_after(1.0):  # (applied just after the commit)
                        while offset in self.intake.pending:
                            await trio.sleep(0.005)
                except (TideMQError, OSError, trio.TooSlowError) as exc:
                    log.warning("%s: delayed messages at offset %d wait for their tier: %s", self.name, offset, exc)
                    await trio.sleep(1.0)
        finally:
            self._relaying = False

    def _deleted_before(self, offset: int) -> None:
        if offset > self.deleted_before:
            self.deleted_before = offset
            self._state_changed = True
            if self._tasks is not None and not self.is_leader:  # (the leader trims as it answers)
                self._tasks.start_soon(self._trim)

    async def _trim(self) -> None:
        await self.apply_retention(int(time.time() * 1000))

    # -- consuming ------------------------------------------------------------------------

    @property
    def last_stable_offset(self) -> int:
        """The first offset a read_committed consumer may not read yet: the start of the
        oldest open transaction, or the high watermark."""
        hw = self.high_watermark
        first = self.txns.first_open()
        return hw if first is None else min(first, hw)

    def read(self, offset: int, max_bytes: int) -> bytes:
        """Committed batches from `offset` (read_uncommitted: up to the high watermark)."""
        data = self.read_isolated(offset, max_bytes, 0)[0]
        assert isinstance(data, bytes)  # (no slices asked for)
        return data

    def read_isolated(
        self, offset: int, max_bytes: int, isolation: int, *, slice_from: int | None = None
    ) -> tuple[bytes | Region, int, list[AbortedTxn]]:
        """(batches, last stable offset, aborted transactions in what was read). A
        read_committed read stops at the last stable offset. With `slice_from`, a read
        of at least that many bytes comes as a `Region` of the segment file instead, for
        the answer to send from the file (`node.sendfile`); the caller closes it."""
        log = self.storage.log
        hw = self.high_watermark
        if not log.log_start_offset <= offset <= max(hw, log.next_offset):
            raise OffsetOutOfRangeError(
                f"{self.name}: offset {offset} outside [{log.log_start_offset}, {hw}]",
                log_start_offset=log.log_start_offset,
                high_watermark=hw,
            )
        lso = self.last_stable_offset
        if offset >= hw:
            # In the log but not known committed here yet (Kafka's rule: out of range is
            # beyond the log end). A new leader learns the commit its predecessor had
            # told a consumer only as it commits its own first entry; until then this
            # consumer waits, where an error would have sent it back to its reset point.
            return b"", lso, []
        if isolation != READ_COMMITTED:
            return self._read_log(offset, max_bytes, hw, slice_from), lso, []
        if offset >= lso:
            return b"", lso, []
        data = self._read_log(offset, max_bytes, lso, slice_from)
        if isinstance(data, Region):
            end = data.next_offset
        else:
            end = offset
            for header, _ in segments.iter_batches(data, check_crc=False):
                end = header.last_offset + 1
        return data, lso, self.txns.aborted_in(offset, end)

    def _read_log(self, offset: int, max_bytes: int, max_offset: int, slice_from: int | None) -> bytes | Region:
        log = self.storage.log
        if slice_from is None or max_bytes < slice_from or not Region.available():
            return log.read(offset, max_bytes, max_offset)
        try:
            part = log.read_slice(offset, max_bytes, max_offset)
        except OSError:  # no descriptor to spare: from memory, as always
            return log.read(offset, max_bytes, max_offset)
        if part is None:
            return b""
        if len(part) < slice_from:
            with part:
                return part.read()
        return Region(part)


async def _nothing() -> None:
    return None
