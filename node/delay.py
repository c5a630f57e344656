"""The delay tier: schedulers that move delayed messages down the ladder and out.

See client/delay.py for the ladder and the headers. Here:

- `DelayService` creates the tier topics once (controller leader, like the offsets
  topic) and runs one `Scheduler` per delay partition this node leads.
- A scheduler reads its partition from the head, in log order, and routes each record
  from the record alone: it is eligible at `entered + tier` (entered = the record's
  timestamp); `due - eligible >= smallest tier` goes to the largest tier that fits,
  stamped with the *planned* eligible time, at that eligible time; otherwise it goes to
  its target at `due`. Routing never depends on when the scheduler got to a record, so
  a replay after a failover makes exactly the same writes.
- Queues: routed records wait in one queue per destination and *lane*, in log order.
  Moves to a tier leave at their eligible time, which grows along the log, so a FIFO
  suits them; a final move waits 0..smallest tier past its eligible time, so in one
  FIFO a record due late in that window would hold back the records behind it that are
  due earlier (that head-of-line wait, up to the whole smallest tier, was most of the
  lateness `scripts/bench delay` measured). Final moves are therefore split into LANES
  lanes by how long they wait past eligible; each lane writes as a producer id of its
  own, so it keeps sequence numbers of its own, and a record waits at most a lane's
  width (10 ms on the default ladder) behind another. Queues move independently and in
  parallel; everything at a queue's head that is due moves at once, as one batch.
- Exactly once (node/relay.py): the scheduler of a delay partition writes with a producer
  id of its own per lane (fixed for the partition, epoch 0), numbering records per
  destination and lane in log order as it routes them, so every record has the same
  sequence number however it is batched and whenever it moves. Its progress (the first
  offset not yet moved, the next sequence number per destination and lane as of that
  offset, and where lanes began) is a DELAY_CHECKPOINT control batch in the delay
  partition itself, replicated with it; every replica keeps the latest in memory. A new leader
  resumes from the last checkpoint and replays: the destinations' idempotence answers
  DUPLICATE for what was already written (a batch straddling what was written is
  retried a record at a time), so nothing is lost and nothing doubles. A tier created
  with lanes (LANES_CONFIG) lanes every record; in one created before, lanes begin at
  the offset the first leader of a build with lanes found at the log's end
  (`lanes_from`): a build before lanes numbered everything in lane 0, and one that
  takes over again (a mixed cluster, a downgrade) may write a lane's moves since the
  last checkpoint a second time, but never reuses a lane's sequence numbers, so it
  loses nothing.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import NamedTuple

import msgspec
import trio

from client.conventions import (
    DEFAULT_TIERS_MS,
    DELAY_HEADERS,
    H_DELAY_DUE,
    H_DELAY_PARTITION,
    H_DELAY_TARGET,
    H_DELAY_VIA,
    LADDER_CONFIG,
    MAX_DELAY_MS,
    TIER_CONFIG,
    TIER_PREFIX,
    delay_via,
    pick_tier,
    tier_name,
)
from client.errors import CoordinatorNotAvailableError, InvalidRequestError, TideMQError, UnknownTopicError
from client.partitioner import partition_for_key
from node.context import NodeContext, now_ms
from node.delay_intake import INTAKE_PID_BASE, relayed_records
from node.metadata import TOPIC_NAME, TopicMeta
from node.partition import Partition, Shard, ShardFactory
from node.relay import relay
from node.runtime import InternalTopic, Service
from raft.types import Entry, EntryKind
from segments import (
    ControlType,
    SegmentError,
    build_control_batch,
    control_type_of,
    decode_records,
    iter_batches,
    parse_header,
)
from segments import OffsetOutOfRangeError as SegmentsOffsetOutOfRange

log = logging.getLogger(__name__)

DELAY_PID_BASE = 1 << 40  # + the partition's Raft group id; controller ids stay far below
LANES = 10  # lanes of final moves, by how long they wait past eligible (smallest tier / LANES each)
LANE_PID_STRIDE = 1 << 32  # lane k writes as DELAY_PID_BASE + group + k * stride (below half.py's 1 << 41)
CHECKPOINT_EVERY = 1000  # moved messages between checkpoints (at most)
MAX_MOVE = 2000  # records moved in one round of a queue (one batch)
CHECKPOINT_INTERVAL_S = 0.5
READ_AHEAD_MS = 1000  # read on while the newest record read is eligible within this
MAX_WINDOW = 20_000  # records read and not yet moved, at most
STICKY_RUN = 256  # consecutive offsets whose unkeyed messages go to one target partition
#: A tier topic's config set by builds with lanes: every record of it takes lanes, even
#: those written before its scheduler first ran (without it, only those after).
LANES_CONFIG = "delay.lanes"


class Checkpoint(msgspec.Struct, array_like=True):
    offset: int  # the first offset of the delay partition not yet moved
    seqs: dict[str, int] = {}  # queue key ("topic/partition", "@lane" after it for lanes > 0) -> next sequence
    # Records from this offset on take lanes; below it everything is lane 0 (a build
    # before lanes may have moved them so). -1: written by such a build.
    lanes_from: int = -1


_ckpt_encoder = msgspec.msgpack.Encoder()
_ckpt_decoder = msgspec.msgpack.Decoder(Checkpoint)


class TierShard(Shard):
    """A partition of a tier topic: its tier, and its scheduler's latest committed
    checkpoint (on every replica, so a new leader resumes from it)."""

    def __init__(self, part: Partition, tier_ms: int, laned: bool) -> None:
        super().__init__(part)
        self.tier_ms = tier_ms
        self.laned = laned
        self.checkpoint: Checkpoint | None = None

    def check_produce(self, records: bytes) -> None:
        """Clients reach a tier only through the delay API's records: each names a target
        topic and a due time no further than MAX_DELAY_MS ahead (checked here, so the
        scheduler never meets a record it cannot route)."""
        name = self.part.name
        horizon = now_ms() + MAX_DELAY_MS
        for rec in decode_records(records):
            headers = dict(rec.headers)
            try:
                due = int(headers[H_DELAY_DUE] or b"")  # a null value: ValueError, refused below
                target = (headers[H_DELAY_TARGET] or b"").decode()
                partition = int(raw) if (raw := headers.get(H_DELAY_PARTITION)) is not None else 0
            except (KeyError, ValueError, UnicodeDecodeError):
                raise InvalidRequestError(
                    f"{name}: a delayed message needs {H_DELAY_TARGET} and an integer {H_DELAY_DUE} "
                    "header (send it with Producer.send(..., delay=...))"
                ) from None
            if not 0 <= due <= horizon:
                raise InvalidRequestError(
                    f"{name}: due time {due} is not within {MAX_DELAY_MS // 86_400_000} days from now"
                )
            if not TOPIC_NAME.match(target) or target.startswith("__") or partition < 0:
                raise InvalidRequestError(
                    f"{name}: {target!r} (partition {partition}) is not a topic a delayed message can go to"
                )

    def apply(self, entries: list[Entry]) -> None:
        for e in entries:
            if e.kind != EntryKind.NORMAL:  # (a no-op, a membership change: not a record batch of ours)
                continue
            h = parse_header(e.data)
            if h.is_control and not h.is_transactional and control_type_of(e.data) == ControlType.DELAY_CHECKPOINT:
                self.checkpoint = _ckpt_decoder.decode(decode_records(e.data)[0].value or b"")


class _Move(NamedTuple):
    """Where one delay record goes and when, decided from the record alone."""

    offset: int
    send_at: int  # wall ms: the planned eligible time, or the due time
    dest: tuple[str, int] | None  # None: the target is gone, drop it
    record: tuple  # (key, value, headers, timestamp) to write
    lane: int = 0  # 0 for moves to a tier; 1..LANES for final moves, by their wait past eligible


class _Routed:
    """A record read and routed, with its sequence number in its queue."""

    __slots__ = ("move", "key", "seq", "moved")

    def __init__(self, move: _Move, key: str | None, seq: int) -> None:
        self.move, self.key, self.seq = move, key, seq
        self.moved = key is None  # a drop writes nothing


def queue_key(dest: tuple[str, int], lane: int) -> str:
    """A queue's name in the checkpoint: lane 0 keeps the key of builds before lanes."""
    return f"{dest[0]}/{dest[1]}" if lane == 0 else f"{dest[0]}/{dest[1]}@{lane}"


def final_lane(wait_ms: int, smallest_tier_ms: int) -> int:
    """The lane (1..LANES) of a final move that waits `wait_ms` past its eligible time.
    Lane 0 is left to moves to a tier and to records from before lanes: a build without
    lanes that takes over numbers exactly those in lane 0, so it can never reuse a
    sequence number a lane wrote (at worst it writes a lane's latest moves again)."""
    return 1 + min(LANES - 1, max(0, wait_ms) * LANES // max(1, smallest_tier_ms))


class Scheduler:
    """Moves one delay partition's records (see the module docstring): a reader routes
    records in log order into queues; a task per non-empty queue moves its head when due;
    a checkpointer records progress."""

    def __init__(self, shard: TierShard, service: DelayService) -> None:
        self.shard = shard
        self.part = shard.part
        self.service = service
        self.pid = DELAY_PID_BASE + self.part.group
        self.moved = 0
        self.lanes_from = -1
        self.read_pos = 0  # next offset to read
        self.pos = 0  # first offset not yet moved
        self.next_seq: dict[str, int] = {}  # per queue key, the next sequence to hand out
        self.window: deque[_Routed] = deque()  # routed records from `pos` on, in log order
        self.in_window: dict[str, int] = {}  # per queue key, its records in the window
        self.queues: dict[str, deque[_Routed]] = {}  # per queue key, its records not moved yet
        self.horizon = 0  # when the newest record read moves (wall ms)
        self.since = 0  # records moved (or dropped) since the last checkpoint
        self._room = trio.Event()  # set when records leave the window
        self._many = trio.Event()  # set when CHECKPOINT_EVERY records moved since the last checkpoint

    async def run(self) -> None:
        """Started once the partition's leader applied its no-op (node/leadership.py): the
        checkpoint is current."""
        part = self.part
        ckpt = self.shard.checkpoint or Checkpoint(part.storage.log.log_start_offset)
        self.pos = self.read_pos = ckpt.offset
        self.next_seq = dict(ckpt.seqs)
        self.lanes_from = ckpt.lanes_from
        if self.lanes_from < 0:
            # What the log of a tier created before lanes holds may have been moved by a
            # build without them (all in lane 0): lanes start after it. Recorded before
            # anything moves.
            self.lanes_from = ckpt.offset if self.shard.laned else max(part.high_watermark, ckpt.offset)
            await self._checkpoint()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._checkpointer)
            await self._reader(nursery)
            nursery.cancel_scope.cancel()

    # -- reading and routing --------------------------------------------------------------

    async def _reader(self, nursery: trio.Nursery) -> None:
        part = self.part
        while part.is_leader and not part.closed:
            ahead = self.horizon - now_ms() - READ_AHEAD_MS
            if len(self.window) >= MAX_WINDOW or (self.window and ahead > 0):
                # Enough read: what follows is due later. Wait for room or for time.
                with trio.move_on_after(ahead / 1000 if ahead > 0 else CHECKPOINT_INTERVAL_S):
                    await self._room.wait()
                self._room = trio.Event()
                continue
            read = await self._read(self.read_pos)
            if read is None:
                continue
            moves, self.read_pos = read
            for m in moves:
                self._add(m, nursery)
            self._advance()

    def _add(self, m: _Move, nursery: trio.Nursery) -> None:
        self.horizon = m.send_at
        if m.dest is None:
            self.window.append(_Routed(m, None, -1))
            self.since += 1
            return
        key = queue_key(m.dest, m.lane)
        seq = self.next_seq.get(key, 0)
        self.next_seq[key] = seq + 1
        self.in_window[key] = self.in_window.get(key, 0) + 1
        routed = _Routed(m, key, seq)
        self.window.append(routed)
        queue = self.queues.get(key)
        if queue is None:
            queue = self.queues[key] = deque()
            nursery.start_soon(self._mover, key, m.dest, m.lane, queue)
        queue.append(routed)

    def _advance(self) -> None:
        """Drop moved records from the window's front: `pos` is the first not moved."""
        window, moved_any = self.window, False
        while window and window[0].moved:
            r = window.popleft()
            moved_any = True
            if r.key is not None:
                left = self.in_window[r.key] - 1
                if left:
                    self.in_window[r.key] = left
                else:
                    del self.in_window[r.key]
        self.pos = window[0].move.offset if window else self.read_pos
        if moved_any:
            self._room.set()

    async def _read(self, pos: int) -> tuple[list[_Move], int] | None:
        """The records from `pos` on, routed; None after waiting a while for more."""
        part = self.part
        try:
            data = part.read(pos, 1 << 20)
        except TideMQError:  # retention passed us: resume at the start
            return [], part.storage.log.log_start_offset
        if not data:
            event = trio.Event()
            part.add_hw_waiter(event)
            with trio.move_on_after(CHECKPOINT_INTERVAL_S):
                await event.wait()
            part.remove_hw_waiter(event)
            return None
        moves, end = [], pos
        for header, batch in iter_batches(data):
            end = max(end, header.last_offset + 1)
            if header.is_control:
                continue
            try:
                records = decode_records(batch)
            except SegmentError as exc:  # in the log before batches were validated, or bit rot
                log.warning(
                    "%s: skipping offsets %d-%d, which cannot be decoded: %s",
                    self.part.name,
                    header.base_offset,
                    header.last_offset,
                    exc,
                )
                continue
            for rec in records:
                if rec.offset >= pos:
                    moves.append(await self._route(rec))
        return moves, end

    async def _route(self, rec) -> _Move:
        headers = dict(rec.headers)
        eligible = rec.timestamp + self.shard.tier_ms
        try:
            due = int(headers[H_DELAY_DUE])
            target = headers[H_DELAY_TARGET].decode()
        except (KeyError, ValueError, AttributeError):
            log.warning("%s@%d carries no valid delay headers; dropped", self.part.name, rec.offset)
            return _Move(rec.offset, eligible, None, ())
        tiers = self.service.tiers
        cluster = self.service.cluster
        assert cluster is not None  # connected before any scheduler starts
        remaining = due - eligible
        via = (H_DELAY_VIA, delay_via(headers, self.part.topic, rec.timestamp))
        kept = tuple(h for h in rec.headers if h[0] != H_DELAY_VIA)
        if remaining >= tiers[0]:
            topic = tier_name(pick_tier(tiers, remaining))
            n = await cluster.partition_count(topic)
            return _Move(
                rec.offset, eligible, (topic, self.part.partition % n), (rec.key, rec.value, (*kept, via), eligible)
            )
        try:
            n = await cluster.partition_count(target)
        except UnknownTopicError:
            if await cluster.topic_exists(target):  # only the node asked lags: this scheduler starts over
                raise CoordinatorNotAvailableError(
                    f"{self.part.name}: {target!r} is not known to the node asked yet"
                ) from None
            log.warning("%s@%d: target topic %r is gone; message dropped", self.part.name, rec.offset, target)
            return _Move(rec.offset, max(eligible, due), None, ())
        if H_DELAY_PARTITION in headers:
            p = int(headers[H_DELAY_PARTITION]) % n
        elif rec.key is not None:
            p = partition_for_key(rec.key, n)
        elif rec.offset < self.lanes_from:
            p = rec.offset % n  # as builds before lanes routed it (a replay must write the same)
        else:
            # Runs of offsets to one partition: a lane's records due about together share
            # a queue, and so a batch, rather than spread over every partition.
            p = rec.offset // STICKY_RUN % n
        out_headers = (*(h for h in kept if h[0] not in DELAY_HEADERS), via)
        lane = 0 if rec.offset < self.lanes_from else final_lane(due - eligible, tiers[0])
        return _Move(rec.offset, max(eligible, due), (target, p), (rec.key, rec.value, out_headers, due), lane)

    # -- moving -----------------------------------------------------------------------------

    async def _mover(self, key: str, dest: tuple[str, int], lane: int, queue: deque[_Routed]) -> None:
        """Move one queue's records in order, each batch once its head is due; ends when
        the queue is empty (the next record routed to it starts another)."""
        cluster = self.service.cluster
        assert cluster is not None
        pid = self.pid + lane * LANE_PID_STRIDE
        while queue:
            wait = queue[0].move.send_at - now_ms()
            if wait > 0:
                await trio.sleep(wait / 1000)
                continue
            now = now_ms()
            batch: list[_Routed] = []
            while queue and len(batch) < MAX_MOVE and queue[0].move.send_at <= now:
                batch.append(queue.popleft())
            # Sequences of one queue are consecutive in log order: this batch continues the last.
            await relay(cluster, pid, dest, [(r.seq, r.move.record) for r in batch])
            for r in batch:
                r.moved = True
            self.moved += len(batch)
            self.since += len(batch)
            if self.since >= CHECKPOINT_EVERY:
                self._many.set()
            self._advance()
        del self.queues[key]

    # -- progress ---------------------------------------------------------------------------

    async def _checkpointer(self) -> None:
        while True:
            with trio.move_on_after(CHECKPOINT_INTERVAL_S):
                await self._many.wait()
            self._many = trio.Event()
            if self.since:
                await self._checkpoint()

    async def _checkpoint(self) -> None:
        """Record `pos` and, per queue, the next sequence as of `pos` (a replay from
        there routes the records after it again and numbers them the same)."""
        seqs = {k: n - self.in_window.get(k, 0) for k, n in self.next_seq.items()}
        self.since = 0
        value = _ckpt_encoder.encode(Checkpoint(self.pos, seqs, self.lanes_from))
        waiter = self.part.propose(build_control_batch(ControlType.DELAY_CHECKPOINT, value, timestamp=-1), 1)
        await self.part.wait(waiter, 10.0)


class DelayService(Service):
    """The delay tiers: their topics, and one scheduler per tier partition this node leads."""

    purpose = "delay"
    needs_client = True
    leads_partitions = True

    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx)
        self.tiers = sorted(ctx.cfg.delay_tiers_ms or DEFAULT_TIERS_MS)

    def topics(self) -> list[InternalTopic]:
        return [
            InternalTopic(
                tier_name(tier),
                self.ctx.cfg.delay_partitions,
                {
                    TIER_CONFIG: str(tier),
                    LADDER_CONFIG: ",".join(map(str, self.tiers)),
                    LANES_CONFIG: "1",
                    "retention.ms": str(max(7 * 86_400_000, 3 * tier)),
                },
            )
            for tier in self.tiers
        ]

    def shard(self, meta: TopicMeta) -> ShardFactory | None:
        if meta.internal and meta.name.startswith(TIER_PREFIX):
            tier_ms = int(meta.configs[TIER_CONFIG])
            laned = LANES_CONFIG in meta.configs
            return lambda part: TierShard(part, tier_ms, laned)
        return None

    async def relay_intake(self, part: object, offset: int, first_seq: int) -> None:
        """Copy the delayed messages a Kafka producer wrote into `part` at `offset` into
        the smallest tier, exactly once (node/delay_intake.py)."""
        assert isinstance(part, Partition)
        if self.cluster is None:
            raise CoordinatorNotAvailableError(f"node {self.ctx.id} is starting its delay tier")
        try:
            data = part.storage.log.read(offset, 1)  # (the whole batch at `offset`, whatever its size)
        except SegmentsOffsetOutOfRange:
            data = b""
        carrier = next((bytes(b) for h, b in iter_batches(data) if h.base_offset == offset), None)
        if carrier is None:  # retention took it: nothing left to relay
            log.warning("%s: the delayed messages at offset %d are gone from the log", part.name, offset)
            return
        records = relayed_records(carrier, part.topic, part.partition)
        tier = tier_name(self.tiers[0])
        n = await self.cluster.partition_count(tier)
        items = [(first_seq + i, r) for i, r in enumerate(records)]
        await relay(self.cluster, INTAKE_PID_BASE + part.group, (tier, part.partition % n), items)

    async def lead(self, part: Partition) -> None:
        """A tier partition's scheduler; a stopped one restarts from its checkpoint."""
        assert isinstance(part.shard, TierShard)
        await Scheduler(part.shard, self).run()
