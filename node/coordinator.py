"""Consumer groups on the broker: the `__consumer_offsets` topic, its state machine, and
the coordinator that answers the group requests.

Where a group lives: partition `murmur2(group) % n` of `__consumer_offsets` (n = 8 by
default, `NodeConfig.offsets_partitions`); the leader of that partition is the group's
coordinator. The controller leader creates the topic as soon as it is elected
(replication min(3, nodes), spread over every configured node).

What is replicated (the log of that partition, applied on every replica by its
`GroupShard`): committed offsets, and which members exist (id, client id,
timeouts) plus the group epoch. Offsets make a failover lose no commit; the member list
makes a failover safe: a new coordinator knows who may still hold partitions and hands
nothing out until each of them has reported what it owns or expired (see
`node.membership`), so no partition is ever read by two members, even across a
failover, and members keep their partitions through it instead of rejoining.

What is not replicated: heartbeats, owned partitions, targets. They live in a
`Coordination` (this node's live state for one offsets partition while it leads it, for
one Raft term) and are rebuilt from the members' next heartbeats.

Records (msgpack key -> msgpack value; a None value deletes):
    (0, group, topic, partition) -> next offset to consume
    (1, group, member id)        -> (client id, session timeout ms, rebalance timeout ms)
    (2, group)                   -> group epoch
    (3, group, topic, partition) -> (transactional id, transaction, expiry ms): a transaction
                                    will commit this offset (Kafka's KIP-447, see `pend_txn_offsets`)

The log does not grow without bound: instead of time/size retention, an offsets partition
snapshots its state into the Raft snapshot every `SNAPSHOT_EVERY` entries and drops the
log before it (a follower that falls behind installs that snapshot).

Requests that change state propose synchronously in `Api.dispatch` (in arrival order) and
then wait for the commit, as produce does: two commits pipelined on one connection reach
the log in the order sent, so a later offset is never overwritten by an earlier one.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
import trio

import segments
from client.conventions import OFFSETS_TOPIC, RUNS_RETENTION_MS, RUNS_TOPIC
from client.errors import (
    GroupNotEmptyError,
    GroupNotFoundError,
    GroupSubscribedError,
    IllegalGenerationError,
    InvalidRequestError,
    InvalidTxnStateError,
    NotCoordinatorError,
    NotLeaderError,
    TideMQError,
    UnknownMemberError,
    UnknownTopicError,
    UnstableOffsetCommitError,
)
from client.protocol import (
    CoordinatorResponse,
    DeleteGroup,
    DeleteOffsets,
    DescribeGroup,
    DescribeGroupResponse,
    FindCoordinator,
    GroupHeartbeat,
    GroupHeartbeatResponse,
    ListGroups,
    ListGroupsResponse,
    MemberInfo,
    OffsetCommit,
    OffsetFetch,
    OffsetFetchResponse,
    Ok,
)
from client.protocol import (
    TopicPartition as WireTopicPartition,
)
from node.assignor import TopicPartition
from node.context import NodeContext, check_name, now_ms
from node.membership import Group, Member
from node.metadata import TopicMeta
from node.partition import Partition, ShardFactory, SnapshotShard
from node.peerprotocol import EndTxnOffsets, PendTxnOffsets
from node.runtime import CoordinatorShard, Handlers, InternalTopic, Service
from raft.types import Entry, EntryKind

log = logging.getLogger(__name__)

OFFSETS_SEGMENT_BYTES = 16 * 1024 * 1024
SNAPSHOT_EVERY = 10_000  # offsets-partition entries between snapshots
DELETED_TOPIC_GRACE_MS = 10 * 60 * 1000  # offsets of a topic not known here go after this much quiet
EXPIRY_CHECK_S = 60.0
WRITE_TIMEOUT_S = 10.0
MAX_COMMIT_PARTITIONS = 10_000
MIN_TIMEOUT_MS, MAX_TIMEOUT_MS = 100, 3_600_000

PENDING_MARGIN_MS = 60_000  # a pending transactional offset outlives its transaction's timeout by this

_OFFSET, _MEMBER, _EPOCH, _PENDING = 0, 1, 2, 3
MemberMeta = tuple[str, int, int]
Pending = tuple[str, int, int]  # (transactional id, transaction number, expiry in wall-clock ms)
Record = tuple[bytes, bytes | None]

_enc = msgspec.msgpack.Encoder()
_key_dec = msgspec.msgpack.Decoder()
_int_dec = msgspec.msgpack.Decoder(int)
_meta_dec = msgspec.msgpack.Decoder(tuple[str, int, int])
_pending_dec = msgspec.msgpack.Decoder(tuple[str, int, int])


def offset_record(group: str, topic: str, partition: int, offset: int | None) -> Record:
    return _enc.encode((_OFFSET, group, topic, partition)), None if offset is None else _enc.encode(offset)


def member_record(group: str, member_id: str, meta: MemberMeta | None) -> Record:
    return _enc.encode((_MEMBER, group, member_id)), None if meta is None else _enc.encode(meta)


def epoch_record(group: str, epoch: int) -> Record:
    return _enc.encode((_EPOCH, group)), _enc.encode(epoch)


def pending_record(group: str, topic: str, partition: int, pending: Pending | None) -> Record:
    return _enc.encode((_PENDING, group, topic, partition)), None if pending is None else _enc.encode(pending)


def _put(table: dict, key: object, value: bytes | None, decoder: msgspec.msgpack.Decoder) -> None:
    """Apply one record to its table: a None value deletes."""
    if value is None:
        table.pop(key, None)
    else:
        table[key] = decoder.decode(value)


# -- the replicated state ---------------------------------------------------------------


@dataclass
class GroupData:
    epoch: int = 0
    members: dict[str, MemberMeta] = field(default_factory=dict)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    pending: dict[TopicPartition, Pending] = field(default_factory=dict)
    last_write_ms: int = -1  # newest record of this group in the log (its batch time)

    @property
    def empty(self) -> bool:
        return not (self.members or self.offsets or self.pending)

    def pending_on(self, tp: TopicPartition, now_ms: int) -> Pending | None:
        """The undecided transaction that will commit `tp`'s offset, if any."""
        p = self.pending.get(tp)
        return p if p is not None and p[2] > now_ms else None


class _GroupSnap(msgspec.Struct, array_like=True):
    epoch: int
    members: dict[str, tuple[str, int, int]]
    offsets: list[tuple[str, int, int]]
    pending: list[tuple[str, int, str, int, int]] = []
    last_write_ms: int = -1


class _Snapshot(msgspec.Struct, array_like=True):
    groups: dict[str, _GroupSnap]


class OffsetsState:
    """What one `__consumer_offsets` partition's log says: per group, its committed
    offsets, its members and its epoch. Every replica applies the same records in the
    same order, so every replica holds the same state."""

    def __init__(self) -> None:
        self.groups: dict[str, GroupData] = {}

    def apply(self, key: bytes, value: bytes | None, timestamp: int = -1) -> None:
        try:
            k = _key_dec.decode(key)
            if isinstance(k, list) and len(k) > 1 and isinstance(k[1], str):
                data = self._group(k[1])
                data.last_write_ms = max(data.last_write_ms, timestamp)
            match k:
                case [0, str() as group, str() as topic, int() as partition]:
                    _put(self._group(group).offsets, (topic, partition), value, _int_dec)
                case [1, str() as group, str() as member_id]:
                    _put(self._group(group).members, member_id, value, _meta_dec)
                case [2, str() as group] if value is not None:
                    data = self._group(group)
                    data.epoch = max(data.epoch, _int_dec.decode(value))
                case [3, str() as group, str() as topic, int() as partition]:
                    _put(self._group(group).pending, (topic, partition), value, _pending_dec)
                case _:
                    log.warning("%s: skipping a record with an unknown key %r", OFFSETS_TOPIC, k)
            if value is None and isinstance(k, list) and len(k) > 1 and isinstance(k[1], str):
                if (left := self.groups.get(k[1])) is not None and left.empty:
                    del self.groups[k[1]]  # nothing left of it (its offsets expired or were reset)
        except msgspec.DecodeError as exc:  # deterministic: every replica skips it alike
            log.warning("%s: skipping a malformed record: %s", OFFSETS_TOPIC, exc)

    def expired(self, now_ms: int, retention_ms: int, topic_exists: Callable[[str], bool] | None) -> list[Record]:
        """Tombstones for what a group no longer needs: every offset of a group with no
        members and nothing written for `retention_ms` (Kafka's
        `offsets.retention.minutes`), and, with `topic_exists`, offsets of deleted topics
        in groups idle for a while (a topic this node has not heard of yet is not
        deleted: its group just wrote)."""
        out: list[Record] = []
        for name, data in self.groups.items():
            idle = now_ms - data.last_write_ms
            if data.last_write_ms < 0 or idle < min(retention_ms, DELETED_TOPIC_GRACE_MS):
                continue
            for topic, p in data.offsets:
                if (not data.members and not data.pending and idle >= retention_ms) or (
                    topic_exists is not None and not topic_exists(topic)
                ):
                    out.append(offset_record(name, topic, p, None))
        return out

    def _group(self, name: str) -> GroupData:
        data = self.groups.get(name)
        if data is None:
            data = self.groups[name] = GroupData()
        return data

    def encode(self) -> bytes:
        return _enc.encode(
            _Snapshot(
                {
                    name: _GroupSnap(
                        d.epoch,
                        dict(d.members),
                        [(t, p, o) for (t, p), o in sorted(d.offsets.items())],
                        [(t, p, *pend) for (t, p), pend in sorted(d.pending.items())],
                        d.last_write_ms,
                    )
                    for name, d in self.groups.items()
                }
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> OffsetsState:
        state = cls()
        for name, g in msgspec.msgpack.decode(data, type=_Snapshot).groups.items():
            state.groups[name] = GroupData(
                g.epoch,
                dict(g.members),
                {(t, p): o for t, p, o in g.offsets},
                {(t, p): (tid, n, exp) for t, p, tid, n, exp in g.pending},
                g.last_write_ms,
            )
        return state


class GroupShard(CoordinatorShard["Coordination"], SnapshotShard):
    """A `__consumer_offsets` partition's state: its records applied into `OffsetsState`
    on every replica, snapshotted instead of retention, and, while this node leads it,
    the live group state (`coordination`)."""

    snapshot_every = SNAPSHOT_EVERY

    def __init__(self, part: Partition) -> None:
        super().__init__(part)
        snap = part.storage.snapshot()
        self.offsets = OffsetsState.decode(snap.data) if snap.data else OffsetsState()
        self.persist_lock = trio.Lock()

    def apply(self, entries: list[Entry]) -> None:
        # Only the coordinator writes here (clients may not produce to internal topics).
        for e in entries:
            if e.kind != EntryKind.NORMAL or segments.parse_header(e.data).is_control:
                continue
            for rec in segments.decode_records(e.data):
                if rec.key is not None:
                    self.offsets.apply(rec.key, rec.value, rec.timestamp)

    def restore(self, data: bytes) -> None:
        self.offsets = OffsetsState.decode(data) if data else OffsetsState()

    def dump(self) -> bytes:
        return self.offsets.encode()

    def new_live(self, term: int) -> Coordination:
        return Coordination(self, term, trio.current_time())

    def propose_records(self, records: list[Record]):
        """Propose now (synchronously, so proposals keep arrival order); wait with `wait`."""
        self.part.check_writable()
        data = segments.build_batch([(k, v, (), None) for k, v in records])
        return self.part.propose(data, len(records))


class _Decided(Protocol):
    """A proposal's waiter (`Replica.propose`): its event is set once the log decided
    the entry, committed or lost."""

    event: trio.Event


class Coordination:
    """The live groups of one offsets partition while this node leads it, for one term:
    the shard a request works on, from its arrival to its answer."""

    def __init__(self, shard: GroupShard, term: int, now: float) -> None:
        self.shard = shard
        self.term = term
        state = shard.offsets
        self.groups: dict[str, Group] = {}
        # (group, partition) -> offset and pending-offset writes proposed and not yet
        # known to be committed or lost: a stable fetch must not read past them
        self._pending_writes: dict[tuple[str, TopicPartition], int] = {}
        self._undecided: list[tuple[_Decided, set[tuple[str, TopicPartition]]]] = []
        for name, data in state.groups.items():
            if data.members:
                g = self.groups[name] = Group(name, data.epoch)
                for member_id, meta in data.members.items():
                    g.load(member_id, meta, now)

    def pend(self, keys: set[tuple[str, TopicPartition]]) -> None:
        for key in keys:
            self._pending_writes[key] = self._pending_writes.get(key, 0) + 1

    def answered(self, waiter: _Decided, keys: set[tuple[str, TopicPartition]]) -> None:
        """A write's request is answered (or gave up). Its keys stop counting once the
        write is decided: one whose answer timed out, or whose request was cancelled,
        is still in the log and may commit yet, so it counts until then."""
        if waiter.event.is_set():
            self._release(keys)
        elif keys:
            self._undecided.append((waiter, keys))

    def is_pending(self, key: tuple[str, TopicPartition]) -> bool:
        if self._undecided:
            undecided = []
            for waiter, keys in self._undecided:
                if waiter.event.is_set():
                    self._release(keys)
                else:
                    undecided.append((waiter, keys))
            self._undecided = undecided
        return key in self._pending_writes

    def _release(self, keys: set[tuple[str, TopicPartition]]) -> None:
        for key in keys:
            left = self._pending_writes.pop(key) - 1
            if left:
                self._pending_writes[key] = left

    def group(self, name: str, state: OffsetsState) -> Group:
        g = self.groups.get(name)
        if g is None:
            data = state.groups.get(name)
            g = self.groups[name] = Group(name, data.epoch if data else 0)
        return g

    def diff(self, state: OffsetsState) -> list[Record]:
        """The records that make the log's member lists and epochs match this state."""
        records: list[Record] = []
        for name, g in self.groups.items():
            data = state.groups.get(name) or GroupData()
            for member_id, m in g.members.items():
                if data.members.get(member_id) != m.meta:
                    records.append(member_record(name, member_id, m.meta))
            records += [member_record(name, mid, None) for mid in data.members if mid not in g.members]
            if g.epoch > data.epoch:
                records.append(epoch_record(name, g.epoch))
        for name, data in state.groups.items():
            if name not in self.groups:
                records += [member_record(name, mid, None) for mid in data.members]
        return records

    def mark_persisted(self, state: OffsetsState, now: float, count: Callable[[str], int]) -> None:
        for name, g in self.groups.items():
            data = state.groups.get(name)
            for m in list(g.members.values()):
                if not m.persisted and data is not None and m.member_id in data.members:
                    g.mark_persisted(m.member_id, now, count)

    def drop_idle(self, state: OffsetsState) -> None:
        """Forget live groups with no members once the log agrees (offsets stay)."""
        for name, g in list(self.groups.items()):
            data = state.groups.get(name)
            if not g.members and (data is None or (not data.members and data.epoch >= g.epoch)):
                del self.groups[name]


# -- the coordinator ----------------------------------------------------------------------


def _check_timeout(what: str, value: int) -> int:
    if not MIN_TIMEOUT_MS <= value <= MAX_TIMEOUT_MS:
        raise InvalidRequestError(f"{what} must be {MIN_TIMEOUT_MS}..{MAX_TIMEOUT_MS} ms, got {value}")
    return value


def _check_holder(
    coord: Coordination,
    group: str,
    member_id: str,
    tps: set[TopicPartition],
    what: str,
    assigned: Mapping[TopicPartition, int] | None = None,
) -> Member:
    """A member's commit: it must exist and may hold every partition it commits; with
    `assigned` (the epoch the member says it got each one at), not on the strength of
    an earlier holding of a partition it gave up and got back since."""
    g = coord.groups.get(group)
    m = g.members.get(member_id) if g is not None else None
    if m is None:
        raise UnknownMemberError(
            f"group {group!r} has no member {member_id!r} (expired or fenced); its {what} is refused"
        )
    if m.owned is not None:
        stray = sorted(tps - m.may_hold())
        if stray:
            raise IllegalGenerationError(
                f"member {member_id!r} of {group!r} does not hold {stray}; they were reassigned"
            )
    stale = sorted(tp for tp, epoch in (assigned or {}).items() if 0 <= epoch < m.since.get(tp, 0))
    if stale:
        raise IllegalGenerationError(
            f"member {member_id!r} of {group!r} was given {stale} again since the epoch its {what} names; it is stale"
        )
    return m


def _wire(tps: frozenset[TopicPartition] | set[TopicPartition]) -> list[WireTopicPartition]:
    return [WireTopicPartition(t, p) for t, p in sorted(tps)]


async def _value(v: Any) -> Any:
    """An answer known at dispatch, as the awaitable `Api.dispatch` hands the server."""
    return v


def _not_coordinator(exc: NotLeaderError) -> NotCoordinatorError:
    """A lost offsets-partition leadership is, to a group client, a moved coordinator."""
    return NotCoordinatorError(exc.message, **exc.details)


class GroupCoordinator(Service):
    """Serves the group requests on every node (each answers for the groups whose
    offsets partition it leads); its janitor sweep expires members and offsets and
    persists membership changes in the background."""

    purpose = "groups"

    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx)
        self._expiry_checked = 0.0
        #: Whether a member joining (group, member id) must be refused because the group
        #: has members of a Kafka protocol that the joiner does not speak (set by the Kafka
        #: listener): a group is one kind or the other, never both at once.
        self.kafka_members: Callable[[str, str], bool] = lambda group, member_id: False

    def topics(self) -> list[InternalTopic]:
        segment = {"segment.bytes": str(OFFSETS_SEGMENT_BYTES)}
        runs = {**segment, "retention.ms": str(RUNS_RETENTION_MS)}  # (a plain log: its records age out)
        return [
            InternalTopic(OFFSETS_TOPIC, self.ctx.cfg.offsets_partitions, segment),
            InternalTopic(RUNS_TOPIC, self.ctx.cfg.offsets_partitions, runs),
        ]

    def shard(self, meta: TopicMeta) -> ShardFactory | None:
        return GroupShard if meta.internal and meta.name == OFFSETS_TOPIC else None

    def handlers(self) -> Handlers:
        return {
            FindCoordinator: self.find_coordinator,
            GroupHeartbeat: self.heartbeat,
            OffsetCommit: self.offset_commit,
            OffsetFetch: self.offset_fetch,
            ListGroups: self.list_groups,
            DescribeGroup: self.describe_group,
            DeleteGroup: self.delete_group,
            DeleteOffsets: self.delete_offsets,
            PendTxnOffsets: self.pend_txn_offsets,
            EndTxnOffsets: self.end_txn_offsets,
        }

    # -- routing ---------------------------------------------------------------------------

    def partition_count(self, topic: str) -> int:
        meta = self.ctx.state.topics.get(topic)
        return len(meta.replicas) if meta is not None else 0

    def _local(self, group: str) -> Coordination:
        """The live state of a group this node coordinates (its offsets partition's
        shard for this term), or the error that sends the client elsewhere (or back
        later)."""
        check_name("group", group)
        part = self.ctx.coordinating_partition(OFFSETS_TOPIC, group, f"group {group!r}")
        assert isinstance(part.shard, GroupShard)
        return part.shard.coordination()

    def has_members(self, group: str) -> bool:
        """Whether a native group of this name has members (on its coordinator)."""
        return bool(self.member_ids(group))

    def member_ids(self, group: str) -> set[str]:
        """The members of a native group of this name (on its coordinator)."""
        g = self._local(group).groups.get(group)
        return set(g.members) if g is not None else set()

    def find_coordinator(self, req: FindCoordinator) -> Awaitable[CoordinatorResponse]:
        check_name("group", req.group)
        return _value(self.ctx.find_coordinator(OFFSETS_TOPIC, req.group, f"group {req.group!r}"))

    # -- membership ------------------------------------------------------------------------

    def heartbeat(self, req: GroupHeartbeat) -> Awaitable[GroupHeartbeatResponse]:
        """Join (epoch 0), leave (-1) or heartbeat; state changes happen here, in arrival
        order; a join or leave then waits until the log knows about it."""
        if req.member_epoch < -1:
            raise InvalidRequestError(
                f"member_epoch {req.member_epoch}: use 0 to join, -1 to leave, or the epoch you were given"
            )
        if req.member_id or req.member_epoch != 0:
            check_name("member_id", req.member_id)
        for t in req.topics:
            check_name("topic", t)
        if req.member_epoch == 0 and not req.topics:
            raise InvalidRequestError("a member joins with at least one topic")
        for tp in req.owned:
            if tp.partition < 0:
                raise InvalidRequestError(f"owned partition {tp.topic}-{tp.partition} is negative")
        _check_timeout("session_timeout_ms", req.session_timeout_ms)
        _check_timeout("rebalance_timeout_ms", req.rebalance_timeout_ms)
        coord = self._local(req.group)
        now = trio.current_time()
        count = self.partition_count
        g = coord.group(req.group, coord.shard.offsets)
        g.refresh(now, count)
        owned = [(tp.topic, tp.partition) for tp in req.owned]
        if req.member_epoch == -1:
            if g.leave(req.member_id, now, count):
                log.info("group %s: member %s left", req.group, req.member_id)
            return self._after_leave(coord, req.member_id)
        if req.member_epoch == 0:
            if self.kafka_members(req.group, req.member_id):
                raise InvalidRequestError(
                    f"group {req.group!r} has members of Kafka's group protocol; a group is one kind or the other"
                )
            m = g.join(
                req.member_id or uuid.uuid4().hex,
                req.client_id,
                req.topics,
                owned,
                req.session_timeout_ms,
                req.rebalance_timeout_ms,
                now,
                count,
            )
            return self._after_join(coord, g, m)
        m = g.heartbeat(req.member_id, req.topics, owned, now, count)
        return _value(self._answer(g, m))

    def _answer(self, g: Group, m: Member) -> GroupHeartbeatResponse:
        assignment, epoch, interval = g.answer(m, trio.current_time())
        return GroupHeartbeatResponse(m.member_id, epoch, _wire(assignment), interval)

    async def _after_join(self, coord: Coordination, g: Group, m: Member) -> GroupHeartbeatResponse:
        if not m.persisted:
            log.info("group %s: member %s (%s) joins", g.name, m.member_id, m.client_id)
            await self.persist(coord)
        if g.members.get(m.member_id) is not m:
            raise UnknownMemberError(f"member {m.member_id!r} was removed from group {g.name!r} while joining; rejoin")
        return self._answer(g, m)

    async def _after_leave(self, coord: Coordination, member_id: str) -> GroupHeartbeatResponse:
        await self.persist(coord)
        return GroupHeartbeatResponse(member_id, -1, [], 0)

    async def persist(self, coord: Coordination) -> None:
        """Write what the log lacks of the live membership, wait for the commit, then let
        the newly durable members in."""
        shard = coord.shard
        async with shard.persist_lock:
            if not shard.is_coordinating(coord):
                raise NotCoordinatorError(f"node {self.ctx.id} no longer coordinates {shard.part.name}")
            records = coord.diff(shard.offsets)
            if records:
                try:
                    await shard.part.wait(shard.propose_records(records), WRITE_TIMEOUT_S)
                except NotLeaderError as exc:
                    raise _not_coordinator(exc) from None
            if shard.is_coordinating(coord):
                coord.mark_persisted(shard.offsets, trio.current_time(), self.partition_count)

    # -- offsets ---------------------------------------------------------------------------

    def offset_commit(self, req: OffsetCommit) -> Awaitable[Ok]:
        if len(req.offsets) > MAX_COMMIT_PARTITIONS:
            raise InvalidRequestError(f"at most {MAX_COMMIT_PARTITIONS} partitions per commit, got {len(req.offsets)}")
        for topic, p, offset in req.offsets:
            check_name("topic", topic)
            if p < 0 or offset < 0:
                raise InvalidRequestError(f"commit of {topic}-{p} at {offset}: partition and offset must be >= 0")
            if not p < self.partition_count(topic):
                raise UnknownTopicError(f"cannot commit {topic}-{p}: no such topic or partition")
        coord = self._local(req.group)
        offsets = req.offsets
        if req.member_id:
            m = _check_holder(coord, req.group, req.member_id, {(t, p) for t, p, _ in offsets}, "commit")
            # A member's commit points only move forward, so a lower one from the same
            # member is a late copy of an earlier request (resent after a timeout, or
            # overtaken by the commit on revoke): writing it would move the offset back.
            offsets = [(t, p, o) for t, p, o in offsets if o >= m.committed.get((t, p), 0)]
            m.committed.update({(t, p): o for t, p, o in offsets})
        # Pending until committed: the partition may move to another member meanwhile,
        # and its first (stable) fetch must not read the offset from before this write.
        records = [offset_record(req.group, t, p, o) for t, p, o in offsets]
        return self._write(coord, records, {(req.group, (t, p)) for t, p, _ in offsets})

    def _write(
        self,
        coord: Coordination,
        records: list[Record],
        pending: set[tuple[str, TopicPartition]] | None = None,
    ) -> Awaitable[Ok]:
        """Propose now (arrival order), answer once committed. `pending` names the
        (group, partition)s these records make pending, counted as such from now on."""
        if not records:
            return _value(Ok())
        try:
            waiter = coord.shard.propose_records(records)
        except NotLeaderError as exc:
            raise _not_coordinator(exc) from None
        pending = pending or set()
        coord.pend(pending)
        return self._committed(coord, waiter, pending)

    async def _committed(self, coord: Coordination, waiter, pending: set[tuple[str, TopicPartition]]) -> Ok:
        try:
            await coord.shard.part.wait(waiter, WRITE_TIMEOUT_S)
        except NotLeaderError as exc:
            raise _not_coordinator(exc) from None
        finally:
            coord.answered(waiter, pending)
        return Ok()

    def offset_fetch(self, req: OffsetFetch) -> Awaitable[OffsetFetchResponse]:
        coord = self._local(req.group)
        data = coord.shard.offsets.groups.get(req.group) or GroupData()
        offsets = data.offsets
        if req.partitions is None:
            wanted = sorted(offsets)
        else:
            wanted = [(tp.topic, tp.partition) for tp in req.partitions]
        if req.require_stable:
            now = now_ms()
            for tp in wanted:
                pend = data.pending_on(tp, now)
                if pend is not None:
                    raise UnstableOffsetCommitError(
                        f"group {req.group!r}: transaction {pend[0]!r} will commit the offset of {tp[0]}-{tp[1]} "
                        "and is not decided yet; retry shortly"
                    )
                if coord.is_pending((req.group, tp)):
                    raise UnstableOffsetCommitError(
                        f"group {req.group!r}: a write of the offset of {tp[0]}-{tp[1]} is not committed yet; "
                        "retry shortly"
                    )
        return _value(OffsetFetchResponse([(t, p, offsets[(t, p)]) for t, p in wanted if (t, p) in offsets]))

    # -- transactional offsets (Kafka's KIP-447) -----------------------------------------------
    # A transaction's offsets are committed when it commits, by its coordinator. Between
    # `send_offsets` and that, the member that sent them may be fenced and its partition
    # handed to another member; were that one to start from the old committed offset, it
    # would process again inputs whose outputs the transaction is about to commit. So the
    # transaction coordinator first has the group check that the member still holds the
    # partitions (refused otherwise: the transaction must abort) and record them as
    # pending, replicated; a consumer starting on a pending partition waits
    # (`require_stable`) until the transaction is decided and its offsets written.

    def pend_txn_offsets(self, req: PendTxnOffsets) -> Awaitable[Ok]:
        if len(req.partitions) > MAX_COMMIT_PARTITIONS:
            raise InvalidRequestError(f"at most {MAX_COMMIT_PARTITIONS} partitions per request")
        if req.assigned_epochs and len(req.assigned_epochs) != len(req.partitions):
            raise InvalidRequestError(
                f"{len(req.assigned_epochs)} assigned epochs for {len(req.partitions)} partitions"
            )
        tps = {(tp.topic, tp.partition) for tp in req.partitions}
        coord = self._local(req.group)
        if req.member_id:
            epochs = {(tp.topic, tp.partition): e for tp, e in zip(req.partitions, req.assigned_epochs)}
            _check_holder(coord, req.group, req.member_id, tps, "transactional commit", epochs)
        data = coord.shard.offsets.groups.get(req.group) or GroupData()
        now, tid = now_ms(), req.transactional_id
        expires = now + max(0, min(req.timeout_ms, MAX_TIMEOUT_MS)) + PENDING_MARGIN_MS
        records = []
        for t, p in sorted(tps):
            other = data.pending_on((t, p), now)
            if other is not None and other[0] != tid:
                raise InvalidTxnStateError(
                    f"group {req.group!r}: transaction {other[0]!r} is still committing the offset of {t}-{p}"
                )
            if other is None or other[1] != req.transaction:
                records.append(pending_record(req.group, t, p, (tid, req.transaction, expires)))
        return self._write(coord, records, {(req.group, tp) for tp in tps})

    def end_txn_offsets(self, req: EndTxnOffsets) -> Awaitable[Ok]:
        if req.commit:
            for topic, p, _ in req.offsets:
                if not p < self.partition_count(topic):
                    raise UnknownTopicError(f"cannot commit {topic}-{p}: no such topic or partition")
        coord = self._local(req.group)
        data = coord.shard.offsets.groups.get(req.group) or GroupData()
        now, records = now_ms(), []
        for t, p, o in req.offsets:
            pend = data.pending.get((t, p))
            if pend is None or pend[:2] != (req.transactional_id, req.transaction):
                continue  # done already (a redo must not move a later commit back), or never pended
            if req.commit and pend[2] > now:
                records.append(offset_record(req.group, t, p, o))
            records.append(pending_record(req.group, t, p, None))
        return self._write(coord, records)

    # -- inspection ------------------------------------------------------------------------

    def _shards(self) -> list[GroupShard]:
        """The offsets partitions this node leads and has caught up on."""
        return [p.shard for p in self.ctx.led_partitions(OFFSETS_TOPIC) if isinstance(p.shard, GroupShard)]

    def list_groups(self, req: ListGroups) -> Awaitable[ListGroupsResponse]:
        """The groups this node coordinates (with members or committed offsets); a client
        asks every node and merges."""
        names: set[str] = set()
        for shard in self._shards():
            names |= {n for n, g in shard.coordination().groups.items() if g.members}
            names |= {n for n, d in shard.offsets.groups.items() if d.members or d.offsets}
        return _value(ListGroupsResponse(sorted(names)))

    def _idle_group(self, coord: Coordination, group: str) -> GroupData:
        """A group's data, if the group exists and has no members of either protocol."""
        data = coord.shard.offsets.groups.get(group)
        if data is None or not (data.offsets or data.pending or data.members):
            raise GroupNotFoundError(f"group {group!r} does not exist: it has no members and no committed offsets")
        g = coord.groups.get(group)
        # (The Kafka listener's hook: would it refuse a joiner it does not know? Then
        # the group has members of a Kafka protocol.)
        if (g is not None and g.members) or data.members or self.kafka_members(group, ""):
            raise GroupNotEmptyError(f"group {group!r} has members; stop them (or wait for them to expire) first")
        return data

    def delete_group(self, req: DeleteGroup) -> Awaitable[Ok]:
        """Tombstones for every offset of an idle group (refused while a transaction
        that carries offsets for it is undecided: its end would write them again)."""
        check_name("group", req.group)
        coord = self._local(req.group)
        data = self._idle_group(coord, req.group)
        now = now_ms()
        if any(data.pending_on(tp, now) for tp in data.pending):
            raise GroupNotEmptyError(f"group {req.group!r} has offsets of an undecided transaction; retry once it ends")
        records = [offset_record(req.group, t, p, None) for t, p in data.offsets]
        records += [pending_record(req.group, t, p, None) for t, p in data.pending]
        return self._write(coord, records)

    def delete_offsets(self, req: DeleteOffsets) -> Awaitable[Ok]:
        check_name("group", req.group)
        if len(req.partitions) > MAX_COMMIT_PARTITIONS:
            raise InvalidRequestError(f"at most {MAX_COMMIT_PARTITIONS} partitions per request")
        coord = self._local(req.group)
        data = coord.shard.offsets.groups.get(req.group)
        if data is None:
            raise GroupNotFoundError(f"group {req.group!r} does not exist: it has no members and no committed offsets")
        g = coord.groups.get(req.group)
        subscribed = {t for m in (g.members.values() if g is not None else ()) for t in (m.topics or ())}
        if self.kafka_members(req.group, ""):
            subscribed |= {tp.topic for tp in req.partitions}  # (a classic group's subscriptions are its own)
        busy = sorted({tp.topic for tp in req.partitions} & subscribed)
        if busy:
            raise GroupSubscribedError(f"group {req.group!r} has members subscribed to {busy[0]!r}; its offsets stay")
        records = [
            offset_record(req.group, tp.topic, tp.partition, None)
            for tp in req.partitions
            if (tp.topic, tp.partition) in data.offsets
        ]
        return self._write(coord, records)

    def describe_group(self, req: DescribeGroup) -> Awaitable[DescribeGroupResponse]:
        coord = self._local(req.group)
        g = coord.groups.get(req.group)
        data = coord.shard.offsets.groups.get(req.group)
        offsets = [(t, p, o) for (t, p), o in sorted(data.offsets.items())] if data else []
        now = now_ms()
        pending = (
            [(t, p, pend[0]) for (t, p) in sorted(data.pending) if (pend := data.pending_on((t, p), now)) is not None]
            if data
            else []
        )
        written, retention = (data.last_write_ms if data else -1), self.ctx.cfg.offsets_retention_ms
        if g is None:
            return _value(
                DescribeGroupResponse(
                    req.group, "empty", data.epoch if data else 0, [], offsets, pending, written, retention
                )
            )
        members = [
            MemberInfo(m.member_id, m.client_id, m.epoch, _wire(m.owned or frozenset()), sorted(m.topics or ()))
            for m in sorted(g.members.values(), key=lambda m: m.member_id)
        ]
        return _value(DescribeGroupResponse(req.group, g.state, g.epoch, members, offsets, pending, written, retention))

    # -- the janitor -------------------------------------------------------------------------

    def sweep(self, led: list[Partition], nursery: trio.Nursery) -> None:
        now = trio.current_time()
        count = self.partition_count
        shards = [p.shard for p in led if isinstance(p.shard, GroupShard)]
        for shard in shards:
            coord = shard.coordination()
            for g in coord.groups.values():
                g.refresh(now, count)
                for member_id, why in g.expire(now, count):
                    log.info("group %s: member %s removed: %s", g.name, member_id, why)
            coord.drop_idle(shard.offsets)
            if not shard.persist_lock.locked() and coord.diff(shard.offsets):
                nursery.start_soon(self._persist_quietly, coord)
        # (checked at least twice per retention, so a short one set for tests or
        # broadcast instances is honoured within half of itself)
        if now - self._expiry_checked >= min(EXPIRY_CHECK_S, self.ctx.cfg.offsets_retention_ms / 2000):
            self._expiry_checked = now
            self._expire_offsets(shards, nursery)

    def _expire_offsets(self, shards: list[GroupShard], nursery: trio.Nursery) -> None:
        """Tombstones for dead groups' offsets and deleted topics' offsets (on the
        partitions this node leads; the log carries them to every replica)."""
        ctx = self.ctx
        topic_exists = (lambda t: t in ctx.state.topics) if ctx.metadata_loaded() else None
        now = now_ms()
        for shard in shards:
            coord = shard.coordination()
            live = {name for name, g in coord.groups.items() if g.members}
            records = [
                r
                for r in shard.offsets.expired(now, ctx.cfg.offsets_retention_ms, topic_exists)
                if _key_dec.decode(r[0])[1] not in live
            ]
            if records:
                nursery.start_soon(self._write_quietly, shard, records)

    async def _write_quietly(self, shard: GroupShard, records: list[Record]) -> None:
        name = shard.part.name
        try:
            await shard.part.wait(shard.propose_records(records), 10.0)
            log.info("%s: expired %d committed offsets (dead groups, deleted topics)", name, len(records))
        except TideMQError as exc:  # the next check tries again
            log.info("%s: offsets not expired yet: %s", name, exc.message)

    async def _persist_quietly(self, coord: Coordination) -> None:
        try:
            await self.persist(coord)
        except TideMQError as exc:  # the next sweep retries (or a new leader takes over)
            log.info("%s: membership not persisted yet: %s", coord.shard.part.name, exc.message)
