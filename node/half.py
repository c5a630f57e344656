"""Half messages with check-back: their partition's state and the group's coordinator.

Storage (see docs/node.md "Half messages" for why): a half message is a record in
partition hash(producer_group) of `__half_messages`, written by the producer like any
idempotent send. What happens to it is written to the same partition by its leader, the
group's half coordinator, as HALF_OP control batches: CHECK (a check-back was made),
COMMIT (with the target partition, decided once), ABORT (with why), WRITTEN (copied to
its target, with the offset there). Every replica applies both kinds in log order into
`HalfShard`: the pending halves (with their payload), the relay sequence number of
each committed half per target partition, and the recently decided ones. The state is
snapshotted, never lost to retention, so a pending half survives anything its partition
survives.

Commit is exactly once: COMMIT fixes the target partition and, as it applies, takes the
next relay sequence number for it; the coordinator then writes the message with its own
producer id (node/relay.py) and records WRITTEN. A new leader rewrites whatever is
committed and not yet WRITTEN with the same sequence numbers, so the target's
idempotence drops what its predecessor already wrote.

Check-back: a half undecided `check_after` after it was sent gets a CHECK record and is
offered to a producer of its group that long-polls `PollHalfChecks`; the next check
waits twice as long (at most `MAX_CHECK_INTERVAL_MS`), and after `max_checks` checks the
coordinator aborts it, saying whether any producer of the group was polling.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from typing import Any

import msgspec
import trio

import segments
from client.conventions import (
    H_HALF_CHECK_AFTER,
    H_HALF_GROUP,
    H_HALF_MAX_CHECKS,
    H_HALF_PARTITION,
    H_HALF_TARGET,
    HALF_HEADERS,
    HALF_TOPIC,
    MAX_GROUP_NAME,
    half_partition,
)
from client.errors import (
    CoordinatorNotAvailableError,
    InvalidRequestError,
    LimitExceededError,
    RequestTimeoutError,
    TideMQError,
    UnknownTopicError,
)
from client.partitioner import partition_for_key
from client.protocol import (
    EndHalf,
    EndHalfResponse,
    HalfCheck,
    HalfChecks,
    HalfInfo,
    ListHalves,
    ListHalvesResponse,
    PollHalfChecks,
)
from node.context import NodeContext, now_ms
from node.metadata import TopicMeta
from node.partition import Partition, ShardFactory, SnapshotShard
from node.relay import relay
from node.runtime import Handlers, InternalTopic, Service
from raft.types import Entry, EntryKind

log = logging.getLogger(__name__)

HALF_PID_BASE = 1 << 41  # + the partition's Raft group id (delay schedulers use 1 << 40)
SNAPSHOT_EVERY = 10_000
MAX_CHECK_INTERVAL_MS = 60_000
MAX_PENDING_PER_GROUP = 10_000  # half messages of one producer group awaiting their outcome
MAX_RESOLVED = 1000  # recently decided halves kept for `half list --resolved`
MAX_MOVE = 500  # committed halves relayed in one round
CHECK_INTERVAL_S = 0.2  # how often a leader looks for halves due a check-back
WRITE_TIMEOUT_S = 10.0
COMMIT_WAIT_S = 20.0
MAX_POLL_WAIT_MS = 30_000
POLLER_ALIVE_S = 15.0
MAX_ASKS = 10_000  # check-backs queued per group for its pollers
SEGMENT_BYTES = 16 * 1024 * 1024

OP_CHECK, OP_COMMIT, OP_ABORT, OP_WRITTEN = range(4)


class Half(msgspec.Struct, array_like=True):
    offset: int
    group: str
    topic: str
    partition: int | None  # asked for by the producer
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    created_ms: int
    check_after_ms: int
    max_checks: int
    checks: int = 0
    last_check_ms: int = 0
    dest: int = -1  # target partition, once committed
    seq: int = -1  # relay sequence number there
    reason: str = ""  # why it was committed

    def next_check_ms(self) -> int:
        if self.checks == 0:
            return self.created_ms + self.check_after_ms
        return self.last_check_ms + min(self.check_after_ms << self.checks, MAX_CHECK_INTERVAL_MS)


class Resolved(msgspec.Struct, array_like=True):
    offset: int
    group: str
    topic: str
    key: bytes | None
    created_ms: int
    checks: int
    state: str  # committed | aborted | dropped
    reason: str
    dest: int = -1
    target_offset: int = -1


class Op(msgspec.Struct, array_like=True):
    kind: int
    offset: int
    at_ms: int
    reason: str = ""
    dest: int = -1
    target_offset: int = -1


class HalfState(msgspec.Struct, array_like=True):
    pending: list[Half]
    seqs: dict[str, int]
    resolved: list[Resolved]
    producers: list[tuple[int, int, list[tuple[int, int, int, int]]]]


_ops_enc = msgspec.msgpack.Encoder()
_ops_dec = msgspec.msgpack.Decoder(list[Op])
_state_dec = msgspec.msgpack.Decoder(HalfState)


def records_at(e: Entry, base_offset: int) -> list[tuple[int, Any]]:
    """(offset, record) for each record of an entry. Its bytes may not carry their
    offsets yet (the log stamps them as it writes, and a leader applies the entries it
    proposed): count from the entry's index, never from the bytes."""
    return [(e.index + rec.offset - base_offset, rec) for rec in segments.decode_records(e.data)]


def parse_half(rec: Any, offset: int = -1) -> Half:
    """The half message in a record of `__half_messages`; InvalidRequestError if the
    record is not one (its producer hears why; replicas skip it alike)."""
    headers = dict(rec.headers)
    try:
        group = headers[H_HALF_GROUP].decode()
        topic = headers[H_HALF_TARGET].decode()
        partition = int(headers[H_HALF_PARTITION]) if H_HALF_PARTITION in headers else None
        check_after = int(headers[H_HALF_CHECK_AFTER])
        max_checks = int(headers[H_HALF_MAX_CHECKS])
    except (KeyError, ValueError, AttributeError) as exc:
        raise InvalidRequestError(
            f"{HALF_TOPIC} takes only half messages (Producer.send_half); header {exc} is missing or malformed"
        ) from None
    if not 0 < len(group) <= MAX_GROUP_NAME or not topic or check_after <= 0 or max_checks < 1:
        raise InvalidRequestError(
            f"half message with bad settings: group {group!r}, target {topic!r}, "
            f"check_after {check_after} ms, max_checks {max_checks}"
        )
    user_headers = [h for h in rec.headers if h[0] not in HALF_HEADERS]
    return Half(
        offset, group, topic, partition, rec.key, rec.value, user_headers, rec.timestamp, check_after, max_checks
    )


class HalfShard(SnapshotShard):
    """A `__half_messages` partition's state on every replica: its half messages,
    pending, decided and recently resolved (snapshotted instead of retention)."""

    snapshot_every = SNAPSHOT_EVERY

    def __init__(self, part: Partition, partition_count: Callable[[], int]) -> None:
        super().__init__(part)
        self.pending: dict[int, Half] = {}
        self.to_write: dict[int, Half] = {}  # committed, not yet WRITTEN, in decision order
        self.seqs: dict[str, int] = {}
        self.resolved: OrderedDict[int, Resolved] = OrderedDict()
        self._partition_count = partition_count  # of the topic, as the cluster knows it
        self._changed = trio.Event()
        snap = part.storage.snapshot()
        if snap.data:
            self._load(snap.data)

    # -- state ----------------------------------------------------------------------------

    def apply(self, entries: list[Entry]) -> None:
        for e in entries:
            if e.kind != EntryKind.NORMAL:
                continue
            h = segments.parse_header(e.data)
            if h.is_control:
                if not h.is_transactional and segments.control_type_of(e.data) == segments.ControlType.HALF_OP:
                    for op in _ops_dec.decode(segments.decode_records(e.data)[0].value or b""):
                        self._apply_op(op)
                continue
            for offset, rec in records_at(e, h.base_offset):
                try:
                    self.pending[offset] = parse_half(rec, offset)
                except InvalidRequestError as exc:  # checked at produce; a replay skips alike
                    log.warning("%s@%d: %s", self.part.name, offset, exc.message)
        self._changed.set()
        self._changed = trio.Event()

    def _apply_op(self, op: Op) -> None:
        h = self.pending.get(op.offset)
        if h is None:
            return
        if op.kind == OP_WRITTEN:
            del self.pending[op.offset]
            self.to_write.pop(op.offset, None)
            state = "committed" if op.target_offset >= 0 or not op.reason else "dropped"
            self._remember(h, state, op.reason or h.reason, op.target_offset)
        elif h.dest >= 0:
            return  # decided to commit: nothing else applies
        elif op.kind == OP_CHECK:
            h.checks += 1
            h.last_check_ms = op.at_ms
        elif op.kind == OP_COMMIT:
            h.dest = op.dest
            h.reason = op.reason
            key = f"{h.topic}/{h.dest}"
            h.seq = self.seqs.get(key, 0)
            self.seqs[key] = h.seq + 1
            self.to_write[op.offset] = h
        elif op.kind == OP_ABORT:
            del self.pending[op.offset]
            self._remember(h, "aborted", op.reason)

    def _remember(self, h: Half, state: str, reason: str, target_offset: int = -1) -> None:
        self.resolved[h.offset] = Resolved(
            h.offset, h.group, h.topic, h.key, h.created_ms, h.checks, state, reason, h.dest, target_offset
        )
        while len(self.resolved) > MAX_RESOLVED:
            self.resolved.popitem(last=False)

    async def changed(self, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) for the next applied entry."""
        with trio.move_on_after(timeout_s):
            await self._changed.wait()

    def dump(self) -> bytes:
        return _ops_enc.encode(
            HalfState(
                list(self.pending.values()), self.seqs, list(self.resolved.values()), self.part.producers.export()
            )
        )

    def _load(self, data: bytes) -> None:
        st = _state_dec.decode(data)
        self.pending = {h.offset: h for h in st.pending}
        self.to_write = {
            h.offset: h for h in sorted((h for h in st.pending if h.dest >= 0), key=lambda h: (h.topic, h.dest, h.seq))
        }
        self.seqs = dict(st.seqs)
        self.resolved = OrderedDict((r.offset, r) for r in st.resolved)
        self.part.producers.load(st.producers)

    def restore(self, data: bytes) -> None:
        self.pending, self.to_write, self.seqs, self.resolved = {}, {}, {}, OrderedDict()
        if data:
            self._load(data)

    # -- writing --------------------------------------------------------------------------

    def check_produce(self, records: bytes) -> None:
        """A producer's batch here must hold half messages of groups this partition
        coordinates."""
        n = self._partition_count()
        incoming: Counter[str] = Counter()
        for rec in segments.decode_records(records):
            half = parse_half(rec)
            if n and half_partition(half.group, n) != self.part.partition:
                raise InvalidRequestError(
                    f"producer group {half.group!r} keeps its half messages in "
                    f"{HALF_TOPIC}-{half_partition(half.group, n)}, not {self.part.name}"
                )
            incoming[half.group] += 1
        for group, count in incoming.items():
            held = sum(1 for h in self.pending.values() if h.group == group)
            if held + count > MAX_PENDING_PER_GROUP:
                raise LimitExceededError(
                    f"producer group {group!r} has {held} half messages pending (the limit is {MAX_PENDING_PER_GROUP}); "
                    "commit or roll back some first"
                )

    async def write_ops(self, ops: list[Op]) -> None:
        part = self.part
        part.check_writable()
        data = segments.build_control_batch(segments.ControlType.HALF_OP, _ops_enc.encode(ops), timestamp=-1)
        await part.wait(part.propose(data, 1), WRITE_TIMEOUT_S)


class HalfCoordinator(Service):
    """Answers the half-message requests on every node (each for the `__half_messages`
    partitions it leads), and, on each such partition, relays committed halves and
    makes the check-backs."""

    purpose = "half"
    needs_client = True
    leads_partitions = True

    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx)
        self._asks: dict[str, deque[HalfCheck]] = {}  # group -> check-backs waiting for a poller
        self._asked = trio.Event()
        self._polled: dict[str, float] = {}  # group -> when a producer last polled

    def topics(self) -> list[InternalTopic]:
        return [InternalTopic(HALF_TOPIC, self.ctx.cfg.half_partitions, {"segment.bytes": str(SEGMENT_BYTES)})]

    def shard(self, meta: TopicMeta) -> ShardFactory | None:
        if meta.internal and meta.name == HALF_TOPIC:
            return lambda part: HalfShard(part, self._partition_count)
        return None

    def handlers(self) -> Handlers:
        return {EndHalf: self.end_half, PollHalfChecks: self.poll, ListHalves: self.list_halves}

    def _partition_count(self) -> int:
        meta = self.ctx.state.topics.get(HALF_TOPIC)
        return len(meta.replicas) if meta is not None else 0

    # -- requests --------------------------------------------------------------------------

    def _led(self, partition: int) -> HalfShard:
        """The `__half_messages` partition's state, if this node leads it and is caught
        up (NOT_LEADER with the leader's address otherwise, which the client follows)."""
        if HALF_TOPIC not in self.ctx.state.topics:
            raise CoordinatorNotAvailableError(f"{HALF_TOPIC} is not created yet; retry shortly")
        part = self.ctx.local_partition(HALF_TOPIC, partition)
        assert isinstance(part.shard, HalfShard)
        part.check_writable()
        return part.shard

    async def end_half(self, req: EndHalf) -> EndHalfResponse:
        shard = self._led(req.partition)
        h = shard.pending.get(req.offset)
        if h is not None and h.group != req.producer_group:
            raise InvalidRequestError(
                f"half {req.partition}:{req.offset} belongs to producer group {h.group!r}, not {req.producer_group!r}"
            )
        if h is not None and h.dest < 0:
            if req.commit:
                try:
                    dest = await self._destination(h)
                except UnknownTopicError:
                    assert self.cluster is not None
                    if await self.cluster.topic_exists(h.topic):  # only the node asked lags
                        raise CoordinatorNotAvailableError(
                            f"{h.topic!r} is not known to the node asked yet; retry"
                        ) from None
                    await shard.write_ops(
                        [Op(OP_ABORT, h.offset, now_ms(), f"target topic {h.topic!r} does not exist")]
                    )
                    raise UnknownTopicError(
                        f"half {req.partition}:{req.offset} was aborted: its target topic {h.topic!r} does not exist"
                    ) from None
                await shard.write_ops(
                    [Op(OP_COMMIT, h.offset, now_ms(), req.reason or "committed by the producer", dest=dest)]
                )
            else:
                await shard.write_ops([Op(OP_ABORT, h.offset, now_ms(), req.reason or "aborted by the producer")])
        return await self._outcome(shard, req)

    async def _outcome(self, shard: HalfShard, req: EndHalf) -> EndHalfResponse:
        """The half's decision once it is final: a commit answers when the message is
        in its topic."""
        with trio.move_on_after(COMMIT_WAIT_S):
            while True:
                r = shard.resolved.get(req.offset)
                h = shard.pending.get(req.offset)
                if r is not None:
                    break
                if h is None:
                    raise InvalidRequestError(
                        f"no half message at {HALF_TOPIC}-{req.partition} offset {req.offset} (or it was decided "
                        f"too long ago to remember); check the id send_half returned"
                    )
                if h.dest < 0 and req.commit is False:
                    raise RequestTimeoutError(f"half {req.partition}:{req.offset}: abort not applied yet; retry")
                if h.dest >= 0 and not req.commit:
                    raise InvalidRequestError(f"half {req.partition}:{req.offset} was already committed")
                await shard.changed(1.0)
                shard.part.check_writable()
        if r is None:
            raise RequestTimeoutError(
                f"half {req.partition}:{req.offset} is committed and still being written to "
                f"{shard.pending[req.offset].topic}; retry to learn where it landed"
            )
        if req.commit != (r.state == "committed"):
            raise InvalidRequestError(f"half {req.partition}:{req.offset} was already {r.state}: {r.reason}")
        return EndHalfResponse(r.state, r.topic, r.dest, r.target_offset, r.reason)

    async def _destination(self, h: Half) -> int:
        assert self.cluster is not None
        n = await self.cluster.partition_count(h.topic)
        if h.partition is not None:
            return h.partition % n
        if h.key is not None:
            return partition_for_key(h.key, n)
        return h.offset % n

    async def poll(self, req: PollHalfChecks) -> HalfChecks:
        if not isinstance(req.producer_group, str) or not 0 < len(req.producer_group) <= MAX_GROUP_NAME:
            raise InvalidRequestError(f"producer_group must be a string of 1-{MAX_GROUP_NAME} characters")
        n = self._partition_count()
        shard = self._led(half_partition(req.producer_group, n) if n else 0)
        group = req.producer_group
        self._polled[group] = trio.current_time()
        out: list[HalfCheck] = []
        with trio.move_on_after(max(0, min(req.max_wait_ms, MAX_POLL_WAIT_MS)) / 1000):
            while True:
                queue = self._asks.get(group)
                while queue and len(out) < max(1, req.limit):
                    c = queue.popleft()
                    h = shard.pending.get(c.offset)
                    if h is not None and h.dest < 0:  # still undecided
                        out.append(c)
                if out or not shard.part.is_leader:
                    break
                await self._asked.wait()
        self._polled[group] = trio.current_time()
        return HalfChecks(out)

    async def list_halves(self, req: ListHalves) -> ListHalvesResponse:
        now = now_ms()
        out: list[HalfInfo] = []
        for part in self.ctx.led_partitions(HALF_TOPIC):
            shard, p = part.shard, part.partition
            if not isinstance(shard, HalfShard):
                continue
            for h in shard.pending.values():
                if req.producer_group in (None, h.group):
                    out.append(
                        HalfInfo(
                            h.group,
                            p,
                            h.offset,
                            h.topic,
                            h.key,
                            h.created_ms,
                            h.checks,
                            "committing" if h.dest >= 0 else "pending",
                            "" if h.dest >= 0 else f"next check in {max(0, h.next_check_ms() - now)} ms",
                            h.dest,
                        )
                    )
            if req.resolved:
                for r in shard.resolved.values():
                    if req.producer_group in (None, r.group):
                        out.append(
                            HalfInfo(
                                r.group,
                                p,
                                r.offset,
                                r.topic,
                                r.key,
                                r.created_ms,
                                r.checks,
                                r.state,
                                r.reason,
                                r.dest,
                                r.target_offset,
                            )
                        )
        return ListHalvesResponse(out)

    # -- the leader's work ------------------------------------------------------------------

    async def lead(self, part: Partition) -> None:
        shard = part.shard
        assert isinstance(shard, HalfShard)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._relay_loop, shard)
            nursery.start_soon(self._check_loop, shard)

    async def _relay_loop(self, shard: HalfShard) -> None:
        """Copy committed halves to their targets, in decision order, then record it."""
        pid = HALF_PID_BASE + shard.part.group
        cluster = self.cluster
        assert cluster is not None  # connected before any leader task starts
        while shard.part.is_leader and not shard.part.closed:
            if not shard.to_write:
                await shard.changed(1.0)
                continue
            batch = list(shard.to_write.values())[:MAX_MOVE]
            by_dest: dict[tuple[str, int], list[Half]] = {}
            for h in batch:
                by_dest.setdefault((h.topic, h.dest), []).append(h)
            ops: list[Op] = []

            async def write(dest: tuple[str, int], halves: list[Half], ops: list[Op] = ops) -> None:
                items = [(h.seq, (h.key, h.value, tuple(h.headers), h.created_ms)) for h in halves]
                try:
                    offsets = await relay(cluster, pid, dest, items)
                except UnknownTopicError:
                    if await cluster.topic_exists(dest[0]):  # only the node asked lags: retried
                        raise
                    ops.extend(
                        Op(OP_WRITTEN, h.offset, now_ms(), f"target topic {dest[0]!r} was deleted; dropped")
                        for h in halves
                    )
                    return
                ops.extend(
                    Op(OP_WRITTEN, h.offset, now_ms(), dest=dest[1], target_offset=-1 if o is None else o)
                    for h, o in zip(halves, offsets)
                )

            try:
                async with trio.open_nursery() as nursery:
                    for dest, halves in by_dest.items():
                        nursery.start_soon(write, dest, halves)
            except* TideMQError as eg:  # written or not, retried: the relay is idempotent
                log.info("%s: relaying committed halves failed, retrying: %s", shard.part.name, eg.exceptions[0])
                await trio.sleep(0.5)
            if ops:
                await shard.write_ops(ops)

    async def _check_loop(self, shard: HalfShard) -> None:
        while shard.part.is_leader and not shard.part.closed:
            now = now_ms()
            ops: list[Op] = []
            asks: list[tuple[str, HalfCheck]] = []
            for h in list(shard.pending.values()):
                if h.dest >= 0 or h.next_check_ms() > now:
                    continue
                if h.checks >= h.max_checks:
                    ops.append(Op(OP_ABORT, h.offset, now, self._why_abort(h)))
                else:
                    ops.append(Op(OP_CHECK, h.offset, now))
                    asks.append(
                        (
                            h.group,
                            HalfCheck(
                                shard.part.partition,
                                h.offset,
                                h.topic,
                                h.key,
                                h.value,
                                list(h.headers),
                                h.created_ms,
                                h.checks + 1,
                            ),
                        )
                    )
            if ops:
                await shard.write_ops(ops)
                for group, c in asks:
                    self._asks.setdefault(group, deque(maxlen=MAX_ASKS)).append(c)
                self._asked.set()
                self._asked = trio.Event()
            await trio.sleep(CHECK_INTERVAL_S)

    def _why_abort(self, h: Half) -> str:
        polled = self._polled.get(h.group)
        if polled is None or trio.current_time() - polled > POLLER_ALIVE_S:
            return (
                f"no decision after {h.checks} check-backs: no live producer of group {h.group!r} "
                "was polling for check-backs (max_checks reached)"
            )
        return f"no decision after {h.checks} check-backs: the group's checker kept answering 'unknown' (max_checks reached)"
