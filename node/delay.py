"""The delay tier: schedulers that move delayed messages down the ladder and out.

See client/delay.py for the ladder and the headers. Here:

- `DelayService` creates the tier topics once (controller leader, like the offsets
  topic) and runs one `Scheduler` per delay partition this node leads.
- A scheduler reads its partition from the head, in log order. For each message it
  waits until `entered + tier` (entered = the record's timestamp), then routes it:
  `due - eligible >= smallest tier` goes to the largest tier that fits, stamped with the
  *planned* eligible time; otherwise it waits until `due` and writes the message to its
  target. Routing depends only on the message, never on when the scheduler got to it,
  so a replay after a failover makes exactly the same writes.
- Throughput: everything at the head that is due moves at once, one batch per
  destination partition, the destinations in parallel.
- Exactly once (node/relay.py): the scheduler of a delay partition writes with a producer
  id of its own (fixed for the partition, epoch 0), numbering records per destination
  partition in log order, so every record has the same sequence number however it is
  batched. Its progress (next offset, and the next sequence
  number per destination) is a DELAY_CHECKPOINT control batch in the delay partition
  itself, replicated with it; every replica keeps the latest in memory. A new leader
  resumes from the last checkpoint and replays: the destinations' idempotence answers
  DUPLICATE for what was already written (a batch straddling what was written is
  retried a record at a time), so nothing is lost and nothing doubles.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import msgspec
import trio

from client.conventions import (
    DEFAULT_TIERS_MS,
    DELAY_HEADERS,
    H_DELAY_DUE,
    H_DELAY_PARTITION,
    H_DELAY_TARGET,
    MAX_DELAY_MS,
    TIER_CONFIG,
    TIER_PREFIX,
    pick_tier,
    tier_name,
)
from client.errors import CoordinatorNotAvailableError, InvalidRequestError, TideMQError, UnknownTopicError
from client.partitioner import partition_for_key
from node.context import NodeContext, now_ms
from node.metadata import TOPIC_NAME, TopicMeta
from node.partition import Partition, Shard, ShardFactory
from node.relay import relay
from node.runtime import InternalTopic, Service
from raft.types import Entry
from segments import (
    ControlType,
    SegmentError,
    build_control_batch,
    control_type_of,
    decode_records,
    iter_batches,
    parse_header,
)

log = logging.getLogger(__name__)

DELAY_PID_BASE = 1 << 40  # + the partition's Raft group id; controller ids stay far below
CHECKPOINT_EVERY = 1000  # moved messages between checkpoints (at most)
MAX_MOVE = 2000  # records moved in one round (one batch per destination)
CHECKPOINT_INTERVAL_S = 0.5


class Checkpoint(msgspec.Struct, array_like=True):
    offset: int  # next offset of the delay partition to route
    seqs: dict[str, int] = {}  # "topic/partition" -> next sequence number


_ckpt_encoder = msgspec.msgpack.Encoder()
_ckpt_decoder = msgspec.msgpack.Decoder(Checkpoint)


class TierShard(Shard):
    """A partition of a tier topic: its tier, and its scheduler's latest committed
    checkpoint (on every replica, so a new leader resumes from it)."""

    def __init__(self, part: Partition, tier_ms: int) -> None:
        super().__init__(part)
        self.tier_ms = tier_ms
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
            if not e.data:
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


class Scheduler:
    def __init__(self, shard: TierShard, service: DelayService) -> None:
        self.shard = shard
        self.part = part = shard.part
        self.service = service
        self.pid = DELAY_PID_BASE + part.group
        self.moved = 0

    async def run(self) -> None:
        """Started once the partition's leader applied its no-op (node/leadership.py): the
        checkpoint is current."""
        part = self.part
        ckpt = self.shard.checkpoint or Checkpoint(part.storage.log.log_start_offset)
        pos, seqs = ckpt.offset, dict(ckpt.seqs)
        pending: list[_Move] = []  # read, in log order, not yet moved
        since, last_ckpt = 0, trio.current_time()
        while part.is_leader and not part.closed:
            if not pending:
                read = await self._read(pos)
                if read is None:
                    if since:
                        await self._checkpoint(pos, seqs)
                        since, last_ckpt = 0, trio.current_time()
                    continue
                pending, pos_after_read = read
                if not pending:  # only control batches (checkpoints)
                    pos = pos_after_read
                    continue
            head = pending[0]
            await trio.sleep(max(0.0, (head.send_at - now_ms()) / 1000))
            # Everything at the head that is due by now moves together, one batch per
            # destination, the destinations in parallel.
            now = now_ms()
            due = 0
            while due < len(pending) and due < MAX_MOVE and pending[due].send_at <= now:
                due += 1
            moves, pending = pending[:due], pending[due:]
            await self._move(moves, seqs)
            pos = pending[0].offset if pending else max(pos, moves[-1].offset + 1, pos_after_read)
            since += len(moves)
            if since >= CHECKPOINT_EVERY or trio.current_time() - last_ckpt > CHECKPOINT_INTERVAL_S:
                await self._checkpoint(pos, seqs)
                since, last_ckpt = 0, trio.current_time()

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
        if remaining >= tiers[0]:
            topic = tier_name(pick_tier(tiers, remaining))
            n = await cluster.partition_count(topic)
            return _Move(
                rec.offset, eligible, (topic, self.part.partition % n), (rec.key, rec.value, rec.headers, eligible)
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
        else:
            p = rec.offset % n
        out_headers = tuple(h for h in rec.headers if h[0] not in DELAY_HEADERS)
        return _Move(rec.offset, max(eligible, due), (target, p), (rec.key, rec.value, out_headers, due))

    async def _move(self, moves: list[_Move], seqs: dict[str, int]) -> None:
        """Write `moves` with sequence numbers assigned in log order per destination
        (so a replay numbers every record the same, however it is batched)."""
        by_dest: dict[tuple[str, int], list[tuple[int, tuple]]] = {}
        for m in moves:
            if m.dest is None:
                continue
            key = f"{m.dest[0]}/{m.dest[1]}"
            seq = seqs.get(key, 0)
            seqs[key] = seq + 1
            by_dest.setdefault(m.dest, []).append((seq, m.record))
        cluster = self.service.cluster
        assert cluster is not None
        async with trio.open_nursery() as nursery:
            for dest, items in by_dest.items():
                nursery.start_soon(relay, cluster, self.pid, dest, items)
        self.moved += len(moves)

    async def _checkpoint(self, pos: int, seqs: dict[str, int]) -> None:
        value = _ckpt_encoder.encode(Checkpoint(pos, dict(seqs)))
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
                {TIER_CONFIG: str(tier), "retention.ms": str(max(7 * 86_400_000, 3 * tier))},
            )
            for tier in self.tiers
        ]

    def shard(self, meta: TopicMeta) -> ShardFactory | None:
        if meta.internal and meta.name.startswith(TIER_PREFIX):
            tier_ms = int(meta.configs[TIER_CONFIG])
            return lambda part: TierShard(part, tier_ms)
        return None

    async def lead(self, part: Partition) -> None:
        """A tier partition's scheduler; a stopped one restarts from its checkpoint."""
        assert isinstance(part.shard, TierShard)
        await Scheduler(part.shard, self).run()
