"""Idempotent-producer state of one partition: who wrote which sequence numbers.

A producer stamps each batch with (producer id, epoch, base sequence); sequences count
records per partition from 0. The leader keeps, for every producer, the last five
batches it wrote (Kafka's window: a producer has at most five requests in flight), so:

- a retry of one of those batches is a duplicate: answer with its original offsets,
  write nothing;
- a batch that skips sequence numbers is refused (OUT_OF_ORDER_SEQUENCE), so a lost
  batch can never be silently overtaken by a later one;
- a batch from an older epoch is refused (PRODUCER_FENCED).

Transaction markers carry an epoch too: a marker written with a bumped epoch (the
coordinator aborting for a new producer or a timeout) raises the partition's epoch for
that producer, so a zombie's late batch is refused instead of opening a transaction
that no marker would ever close (`fence` at proposal, `apply_marker` once committed).

The state is derived only from committed entries, in log order, on every replica, so it
is the same everywhere and survives leader changes: a new leader replays its log before
it takes writes. In-flight (proposed, not yet committed) batches of the current leader
sit in `pending` on top, and are dropped when it loses leadership.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import msgspec

from client.errors import (
    DuplicateSequenceError,
    OutOfOrderSequenceError,
    ProducerFencedError,
    RequestTimeoutError,
    UnknownProducerError,
)

WINDOW = 5
PRODUCER_EXPIRATION_MS = 7 * 24 * 3600 * 1000
MAX_EXPIRED_REMEMBERED = 100_000


@dataclass(frozen=True)
class BatchRef:
    first_seq: int
    last_seq: int
    base_offset: int
    last_offset: int


class ProducerSnapshot(msgspec.Struct, array_like=True):
    """The committed state whole, as `ProducerState.snapshot` takes it: what a restart
    loads instead of replaying the log (`node.partition.StateCheckpoint`)."""

    #: (producer id, epoch, newest batch time, [(first seq, last seq, base, last offset)]),
    #: least recently written first
    producers: list[tuple[int, int, int, list[tuple[int, int, int, int]]]]
    clock: int = -1
    expired: list[int] = []


@dataclass
class _Producer:
    epoch: int
    batches: deque = field(default_factory=lambda: deque(maxlen=WINDOW))
    last_ts: int = -1  # newest batch time (ms); -1: not known yet (loaded from a snapshot)

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else -1


class ProducerState:
    """`expiration_ms`: a producer with no batch for that long (by the log's own batch
    times, so every replica expires alike) is forgotten (Kafka's
    `producer.id.expiration.ms`): producer ids a client can mint are otherwise state
    kept forever. Its next batch is taken as a fresh start, whatever its sequence."""

    def __init__(self, expiration_ms: int = PRODUCER_EXPIRATION_MS) -> None:
        self.expiration_ms = expiration_ms
        self._committed: dict[int, _Producer] = {}  # least recently written first
        self._pending: dict[int, _Producer] = {}
        self._expired: dict[int, None] = {}  # recently forgotten ids, bounded
        self._clock = -1  # newest batch time applied

    def __len__(self) -> int:
        return len(self._committed)

    def export(self) -> list[tuple[int, int, list[tuple[int, int, int, int]]]]:
        """The committed state, for a partition that snapshots instead of keeping its log."""
        return [
            (pid, p.epoch, [(b.first_seq, b.last_seq, b.base_offset, b.last_offset) for b in p.batches])
            for pid, p in self._committed.items()
        ]

    def load(self, exported: list[tuple[int, int, list[tuple[int, int, int, int]]]]) -> None:
        self._committed = {
            pid: _Producer(epoch, deque((BatchRef(*b) for b in batches), maxlen=WINDOW))
            for pid, epoch, batches in exported
        }
        self._pending.clear()

    def snapshot(self) -> ProducerSnapshot:
        """Everything `apply` built, batch times and forgotten ids included, so a state
        restored from it goes on exactly as one that replayed the log."""
        return ProducerSnapshot(
            [
                (pid, p.epoch, p.last_ts, [(b.first_seq, b.last_seq, b.base_offset, b.last_offset) for b in p.batches])
                for pid, p in self._committed.items()
            ],
            self._clock,
            list(self._expired),
        )

    def restore(self, snap: ProducerSnapshot) -> None:
        self._committed = {
            pid: _Producer(epoch, deque((BatchRef(*b) for b in batches), maxlen=WINDOW), last_ts)
            for pid, epoch, last_ts, batches in snap.producers
        }
        self._clock = snap.clock
        self._expired = dict.fromkeys(snap.expired)
        self._pending.clear()

    def active(self) -> list[tuple[int, int, int, int]]:
        """(producer id, epoch, last sequence, newest batch time) of every producer the
        committed state holds, for DescribeProducers."""
        return [(pid, p.epoch, p.last_seq, p.last_ts) for pid, p in self._committed.items()]

    def _current(self, pid: int) -> _Producer | None:
        return self._pending.get(pid) or self._committed.get(pid)

    def check(self, pid: int, epoch: int, first_seq: int, count: int) -> BatchRef | None:
        """Validate a new batch: None if it may be appended, its BatchRef if it is a
        duplicate; raises if it must be refused."""
        last_seq = first_seq + count - 1
        cur = self._current(pid)
        if cur is None:
            if first_seq != 0 and pid not in self._expired:
                raise UnknownProducerError(
                    f"producer {pid} has no state here and its batch starts at sequence {first_seq}, not 0"
                )
            return None
        if epoch < cur.epoch:
            raise ProducerFencedError(f"producer {pid} epoch {epoch} is fenced by epoch {cur.epoch}")
        if epoch > cur.epoch:
            if first_seq != 0:
                raise OutOfOrderSequenceError(
                    f"producer {pid} new epoch {epoch} must start at sequence 0, not {first_seq}"
                )
            return None
        for ref in cur.batches:
            if ref.first_seq == first_seq and ref.last_seq == last_seq:
                return ref
        if last_seq <= cur.last_seq:
            committed = self._committed.get(pid)
            if committed is None or committed.epoch != epoch or last_seq > committed.last_seq:
                # Covered only by batches still in flight here, which a leader change may
                # yet discard: calling it written now could lose it (found by a chaos run:
                # a relay replaying record by record was told "written", then the batch
                # holding it was overwritten). Their fate decides; ask again.
                raise RequestTimeoutError(
                    f"producer {pid} epoch {epoch}: sequences {first_seq}-{last_seq} are in a batch not committed "
                    "yet; retry shortly"
                )
            # Every record is already written, in batches cut differently or older than
            # the window: a duplicate whose offsets are not known (Kafka's
            # DUPLICATE_SEQUENCE_NUMBER). The delay and half relays rely on this.
            raise DuplicateSequenceError(
                f"producer {pid} epoch {epoch}: sequences {first_seq}-{last_seq} were already written"
            )
        if first_seq != cur.last_seq + 1:
            raise OutOfOrderSequenceError(
                f"producer {pid} epoch {epoch}: expected sequence {cur.last_seq + 1}, got {first_seq}"
            )
        return None

    def add_pending(self, pid: int, epoch: int, ref: BatchRef) -> None:
        cur = self._current(pid)
        entry = _Producer(epoch, deque(cur.batches if cur and cur.epoch == epoch else (), maxlen=WINDOW))
        entry.batches.append(ref)
        self._pending[pid] = entry

    def clear_pending(self) -> None:
        self._pending.clear()

    def apply(self, pid: int, epoch: int, ref: BatchRef, timestamp: int = -1) -> None:
        """A committed batch, in log order (every replica calls this identically)."""
        cur = self._committed.pop(pid, None)
        if cur is None or epoch != cur.epoch:
            cur = _Producer(epoch)
        self._committed[pid] = cur  # now the most recently written
        self._expired.pop(pid, None)
        if not cur.batches or ref.base_offset > cur.batches[-1].last_offset:
            cur.batches.append(ref)
        self._clock = max(self._clock, timestamp)
        cur.last_ts = max(cur.last_ts, timestamp, self._clock)
        self._expire()
        pend = self._pending.get(pid)
        if pend is not None and pend.batches and pend.batches[-1].last_offset <= ref.last_offset:
            del self._pending[pid]

    def _expire(self) -> None:
        if self._clock < 0:
            return  # no batch time seen yet
        horizon = self._clock - self.expiration_ms
        while self._committed:
            pid, oldest = next(iter(self._committed.items()))
            if oldest.last_ts == -1:  # loaded: its clock starts now
                oldest.last_ts = self._clock
                self._committed[pid] = self._committed.pop(pid)
                continue
            if oldest.last_ts >= horizon or self._pending.get(pid) is not None:
                return
            del self._committed[pid]
            self._expired[pid] = None
            if len(self._expired) > MAX_EXPIRED_REMEMBERED:
                del self._expired[next(iter(self._expired))]

    def fence(self, pid: int, epoch: int) -> None:
        """A marker of `epoch` was proposed: refuse older epochs from now on, before it
        commits (a batch slipping in after the marker would stay open forever)."""
        cur = self._current(pid)
        if cur is not None and epoch < cur.epoch:
            raise ProducerFencedError(f"marker for producer {pid} epoch {epoch} is fenced by epoch {cur.epoch}")
        if cur is None or epoch > cur.epoch:
            self._pending[pid] = _Producer(epoch)

    def apply_marker(self, pid: int, epoch: int) -> None:
        """A committed marker: a higher epoch starts the producer afresh (sequence 0)."""
        cur = self._committed.get(pid)
        if cur is None or epoch > cur.epoch:
            self._committed[pid] = _Producer(epoch)
        pend = self._pending.get(pid)
        if pend is not None and not pend.batches and pend.epoch <= epoch:
            del self._pending[pid]
