"""The cluster metadata: the controller's replicated state machine (Raft group 0).

Every node applies the same committed commands in the same order and so holds the same
`ClusterState`. Anything non-deterministic (which nodes get which replicas) is decided
by the proposer and written into the command, so applying stays a pure function. The
state is small and is snapshotted whole (msgpack) so group 0's log can be compacted.
"""

from __future__ import annotations

import logging
import re
from typing import overload

import msgspec

from client.errors import (
    InvalidConfigError,
    InvalidRequestError,
    NotEnoughReplicasError,
    TopicExistsError,
    UnknownTopicError,
)
from client.protocol import AclBinding
from client.scram import UserCredential

TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
MAX_PARTITIONS = 10_000
PRODUCER_ID_BLOCK = 1000

log = logging.getLogger(__name__)


class Move(msgspec.Struct, array_like=True):
    """A partition's replicas on their way to `target` (the preferred leader first):
    its leader adds the new ones as learners, promotes them once caught up, then
    removes the old ones, sending to a learner at most `throttle` bytes/s (0: no limit)."""

    target: list[int]
    throttle: int = 0
    started_ms: int = 0


class NodeEntry(msgspec.Struct, array_like=True):
    """A node of the cluster as the controller knows it: where its peers and its clients
    reach it, and whether it is being drained to leave."""

    peer: str
    client: str
    draining: bool = False
    drain_throttle: int = 0  # bytes/s to each replica taking one of its places (0: no limit)


class TopicMeta(msgspec.Struct):
    name: str
    first_group: int  # Raft group id of partition 0; partition p is first_group + p
    replicas: list[list[int]]  # per partition, the preferred leader first
    configs: dict[str, str] = {}
    internal: bool = False
    added_groups: list[int] = []  # the Raft groups of partitions added after creation, in order
    #: Partitions whose replicas are moving: partition -> where to (node/moves.py).
    moving: dict[int, Move] = {}

    def group(self, partition: int) -> int:
        created = len(self.replicas) - len(self.added_groups)
        return self.first_group + partition if partition < created else self.added_groups[partition - created]

    def hosts(self, partition: int) -> list[int]:
        """Every node that keeps a replica of `partition`: its replicas and, while it
        moves, the replicas it is moving to."""
        move = self.moving.get(partition)
        replicas = self.replicas[partition]
        return replicas if move is None else [*replicas, *(n for n in move.target if n not in replicas)]


class _Cmd(msgspec.Struct, tag=True, array_like=True):
    pass


class CreateTopicCmd(_Cmd):
    name: str
    replicas: list[list[int]]
    configs: dict[str, str] = {}
    internal: bool = False


class DeleteTopicCmd(_Cmd):
    name: str


class AllocateProducerIds(_Cmd):
    node_id: int


class AlterTopicConfigsCmd(_Cmd):
    """Set some configs of a topic and remove others (back to their defaults)."""

    name: str
    set: dict[str, str] = {}
    delete: list[str] = []


class AddPartitionsCmd(_Cmd):
    """More partitions for a topic (only ever more), placed by the proposer."""

    name: str
    replicas: list[list[int]]  # of the new partitions


class RegisterNodeCmd(_Cmd):
    """A node joins the roster (or a founding node is written into it)."""

    node_id: int
    peer: str
    client: str


class DrainNodeCmd(_Cmd):
    """Move every replica off a node, then remove it (node/roster.py)."""

    node_id: int
    throttle: int = 0


class ForgetNodeCmd(_Cmd):
    """A drained node left the controller group: it is removed for good."""

    node_id: int


class ReassignCmd(_Cmd):
    """Move some partitions' replicas: (topic, partition, target) each. A target that
    is the same nodes in another order changes the preferred leader at once. `cancel`:
    each of them, moving, goes back to its replicas instead (the targets are ignored)."""

    moves: list[tuple[str, int, list[int]]]
    throttle: int = 0
    now_ms: int = 0
    cancel: bool = False


class ReassignDoneCmd(_Cmd):
    """A partition's leader finished a move: its Raft group's voters are the target."""

    topic: str
    partition: int
    group: int
    replicas: list[int]


class PutUserCmd(_Cmd):
    """Create a user or change its password (`create_only`: refused if it exists)."""

    name: str
    credential: UserCredential
    create_only: bool = False
    must_exist: bool = False


class DeleteUserCmd(_Cmd):
    name: str


class AddAclsCmd(_Cmd):
    acls: list[AclBinding]


class RemoveAclsCmd(_Cmd):
    """Remove these exact bindings (the proposer resolved a filter into them)."""

    acls: list[AclBinding]


class SetQuotasCmd(_Cmd):
    """Set some of a principal's quotas and remove others (client/quotas.py)."""

    principal: str
    set: dict[str, float] = {}
    delete: list[str] = []


Command = (
    CreateTopicCmd
    | DeleteTopicCmd
    | AllocateProducerIds
    | AlterTopicConfigsCmd
    | PutUserCmd
    | DeleteUserCmd
    | AddAclsCmd
    | RemoveAclsCmd
    | SetQuotasCmd
    | AddPartitionsCmd
    | RegisterNodeCmd
    | DrainNodeCmd
    | ForgetNodeCmd
    | ReassignCmd
    | ReassignDoneCmd
)
_cmd_encoder = msgspec.msgpack.Encoder()
_cmd_decoder = msgspec.msgpack.Decoder(Command)


def encode_command(cmd: _Cmd) -> bytes:
    return _cmd_encoder.encode(cmd)


def decode_command(data: bytes) -> _Cmd:
    return _cmd_decoder.decode(data)


class ClusterState(msgspec.Struct):
    #: The roster: every node of the cluster (node/roster.py). Empty until the controller's
    #: first leader writes the founding nodes (`--peers`) into it.
    members: dict[int, NodeEntry] = {}
    removed: list[int] = []  # nodes that left: never members again
    topics: dict[str, TopicMeta] = {}
    next_group: int = 1
    next_producer_id: int = 1
    applied: int = -1  # last applied offset of group 0
    users: dict[str, UserCredential] = {}  # SCRAM credentials (client/scram.py), never passwords
    acls: list[AclBinding] = []  # replaced, never changed in place: node/acl.py caches by identity
    quotas: dict[str, dict[str, float]] = {}  # principal -> quota -> rate (node/quotas.py)

    def apply(self, cmd: _Cmd) -> object:
        """Apply one committed command; returns its result, or the error it deserved.

        Errors are returned, not raised: a command that lost a race (two creates of one
        name) still commits, and every node must come to the same verdict.
        """
        if isinstance(cmd, CreateTopicCmd):
            if cmd.name in self.topics:
                return TopicExistsError(f"topic {cmd.name!r} already exists")
            meta = TopicMeta(cmd.name, self.next_group, cmd.replicas, dict(cmd.configs), cmd.internal)
            self.next_group += len(cmd.replicas)
            self.topics[cmd.name] = meta
            return meta
        if isinstance(cmd, DeleteTopicCmd):
            if self.topics.pop(cmd.name, None) is None:
                return UnknownTopicError(f"topic {cmd.name!r} does not exist")
            return None
        if isinstance(cmd, AlterTopicConfigsCmd):
            old = self.topics.get(cmd.name)
            if old is None:
                return UnknownTopicError(f"topic {cmd.name!r} does not exist")
            configs = {k: v for k, v in old.configs.items() if k not in cmd.delete}
            configs.update(cmd.set)
            new = self.topics[cmd.name] = msgspec.structs.replace(old, configs=configs)
            return new
        if isinstance(cmd, AddPartitionsCmd):
            old = self.topics.get(cmd.name)
            if old is None:
                return UnknownTopicError(f"topic {cmd.name!r} does not exist")
            if not cmd.replicas or len(old.replicas) + len(cmd.replicas) > MAX_PARTITIONS:
                return InvalidRequestError(f"a topic has 1..{MAX_PARTITIONS} partitions")
            groups = list(range(self.next_group, self.next_group + len(cmd.replicas)))
            self.next_group += len(cmd.replicas)
            new = self.topics[cmd.name] = msgspec.structs.replace(
                old, replicas=[*old.replicas, *cmd.replicas], added_groups=[*old.added_groups, *groups]
            )
            return new
        if isinstance(cmd, (RegisterNodeCmd, DrainNodeCmd, ForgetNodeCmd)):
            return self._apply_roster(cmd)
        if isinstance(cmd, (ReassignCmd, ReassignDoneCmd)):
            return self._apply_move(cmd)
        if isinstance(cmd, PutUserCmd):
            if cmd.create_only and cmd.name in self.users:
                return InvalidRequestError(f"user {cmd.name!r} exists; change its password instead")
            if cmd.must_exist and cmd.name not in self.users:
                return InvalidRequestError(f"there is no user {cmd.name!r}")
            self.users[cmd.name] = cmd.credential
            return None
        if isinstance(cmd, DeleteUserCmd):
            if self.users.pop(cmd.name, None) is None:
                return InvalidRequestError(f"there is no user {cmd.name!r}")
            return None
        if isinstance(cmd, AddAclsCmd):
            have = {msgspec.structs.astuple(b) for b in self.acls}
            added = list(
                {msgspec.structs.astuple(b): b for b in cmd.acls if msgspec.structs.astuple(b) not in have}.values()
            )
            self.acls = [*self.acls, *added]
            return len(added)
        if isinstance(cmd, RemoveAclsCmd):
            gone = {msgspec.structs.astuple(b) for b in cmd.acls}
            kept = [b for b in self.acls if msgspec.structs.astuple(b) not in gone]
            removed = len(self.acls) - len(kept)
            self.acls = kept
            return removed
        if isinstance(cmd, SetQuotasCmd):
            rates = {k: v for k, v in self.quotas.get(cmd.principal, {}).items() if k not in cmd.delete}
            rates.update(cmd.set)
            if rates:
                self.quotas[cmd.principal] = rates
            else:
                self.quotas.pop(cmd.principal, None)
            return None
        if isinstance(cmd, AllocateProducerIds):
            first = self.next_producer_id
            self.next_producer_id += PRODUCER_ID_BLOCK
            return range(first, first + PRODUCER_ID_BLOCK)
        raise TypeError(f"unknown command {cmd!r}")

    def _apply_roster(self, cmd: RegisterNodeCmd | DrainNodeCmd | ForgetNodeCmd) -> object:
        nid = cmd.node_id
        if nid in self.removed:
            return InvalidRequestError(f"node {nid} was removed from the cluster; a new node needs a new id")
        if isinstance(cmd, RegisterNodeCmd):
            if nid < 1:
                return InvalidRequestError(f"node ids are positive, not {nid}")
            self.members = {**self.members, nid: NodeEntry(cmd.peer, cmd.client)}
            return None
        entry = self.members.get(nid)
        if entry is None:
            return InvalidRequestError(f"node {nid} is not a member of the cluster")
        if isinstance(cmd, DrainNodeCmd):
            self.members = {
                **self.members,
                nid: msgspec.structs.replace(entry, draining=True, drain_throttle=cmd.throttle),
            }
            return None
        if not entry.draining or any(
            nid in meta.hosts(p) for meta in self.topics.values() for p in range(len(meta.replicas))
        ):
            return InvalidRequestError(f"node {nid} still hosts replicas; drain it first")
        self.members = {n: e for n, e in self.members.items() if n != nid}
        self.removed = [*self.removed, nid]
        return None

    def _apply_move(self, cmd: ReassignCmd | ReassignDoneCmd) -> object:
        if isinstance(cmd, ReassignDoneCmd):
            meta = self.topics.get(cmd.topic)
            move = meta.moving.get(cmd.partition) if meta is not None else None
            if meta is None or move is None or meta.group(cmd.partition) != cmd.group:
                return InvalidRequestError(f"{cmd.topic}-{cmd.partition} is not moving")
            if sorted(cmd.replicas) != sorted(move.target):
                return InvalidRequestError(
                    f"{cmd.topic}-{cmd.partition} is moving to {move.target}, not {cmd.replicas}"
                )
            replicas = list(meta.replicas)
            replicas[cmd.partition] = list(move.target)
            moving = {p: m for p, m in meta.moving.items() if p != cmd.partition}
            self.topics[cmd.topic] = msgspec.structs.replace(meta, replicas=replicas, moving=moving)
            return self.topics[cmd.topic]
        changed: dict[str, TopicMeta] = {}
        started = 0
        for topic, p, target in cmd.moves:
            meta = changed.get(topic) or self.topics.get(topic)
            if meta is None:
                return UnknownTopicError(f"topic {topic!r} does not exist")
            if not 0 <= p < len(meta.replicas):
                return UnknownTopicError(f"topic {topic!r} has no partition {p}")
            if cmd.cancel:
                if p not in meta.moving:
                    return InvalidRequestError(f"{topic}-{p} is not moving")
                back = Move(list(meta.replicas[p]), cmd.throttle, cmd.now_ms)
                meta = msgspec.structs.replace(meta, moving={**meta.moving, p: back})
                changed[topic] = meta
                continue
            if p in meta.moving:
                return InvalidRequestError(f"{topic}-{p} is already moving to {meta.moving[p].target}")
            if (
                not target
                or len(set(target)) != len(target)
                or any(n not in self.members or self.members[n].draining for n in target)
            ):
                return InvalidRequestError(f"{topic}-{p}: {target} must be distinct nodes of the cluster, none leaving")
            if sorted(target) == sorted(meta.replicas[p]):
                replicas = list(meta.replicas)
                replicas[p] = list(target)
                meta = msgspec.structs.replace(meta, replicas=replicas)
            else:
                meta = msgspec.structs.replace(
                    meta, moving={**meta.moving, p: Move(list(target), cmd.throttle, cmd.now_ms)}
                )
                started += 1
            changed[topic] = meta
        self.topics.update(changed)
        return started

    def partitions_of(self, node_id: int):
        """(topic meta, partition) of every replica this node hosts (or is moving to)."""
        for meta in self.topics.values():
            for p in range(len(meta.replicas)):
                if node_id in meta.hosts(p):
                    yield meta, p


_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(ClusterState)


def encode_state(state: ClusterState) -> bytes:
    return _state_encoder.encode(state)


def decode_state(data: bytes) -> ClusterState:
    return _state_decoder.decode(data)


DAY_MS = 24 * 3600 * 1000
#: What a client may set on a topic: meaning, least and most value. The least values keep
#: a careless config from rolling a segment per batch (a file descriptor each); the most
#: keep segment positions inside the 32-bit index.
TOPIC_CONFIGS: dict[str, tuple[str, int, int]] = {
    "retention.ms": ("delete segments whose newest record is older (ms)", 1, 1 << 62),
    "retention.bytes": ("delete the oldest segments while the partition is larger (bytes)", 1, 1 << 62),
    "segment.bytes": ("roll the active segment at this size (bytes)", 1 << 20, (1 << 31) - 1),
    "segment.ms": ("roll the active segment when its records span this long (ms)", 60_000, 1 << 62),
}


@overload
def topic_config(configs: dict[str, str], key: str, default: int, least: dict[str, int] | None = None) -> int: ...
@overload
def topic_config(
    configs: dict[str, str], key: str, default: int | None, least: dict[str, int] | None = None
) -> int | None: ...
def topic_config(
    configs: dict[str, str], key: str, default: int | None, least: dict[str, int] | None = None
) -> int | None:
    """A topic config as the log will use it. What is in the controller's log is data
    that may predate a check (or be bad): out of range is clamped, garbage is the
    default; never an exception on apply. `least` overrides the least values (the
    node's own minimums)."""
    raw = configs.get(key)
    if raw is None:
        return default
    _, least_v, most = TOPIC_CONFIGS[key]
    least_v = (least or {}).get(key, least_v)
    return _clamp(key, raw, least_v, most, default)


def _clamp(key: str, raw: str, least: int, most: int, default: int | None) -> int | None:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        log.warning("topic config %s=%r is not an integer; using the default %s", key, raw, default)
        return default
    if not least <= value <= most:
        log.warning("topic config %s=%s is outside %d..%d; clamped", key, value, least, most)
    return min(max(value, least), most)


def validate_configs(configs: dict[str, str], least: dict[str, int] | None = None) -> None:
    """Refuse a topic config a client may not set, or a value out of its range."""
    for key, value in configs.items():
        if key not in TOPIC_CONFIGS:
            raise InvalidConfigError(f"unknown topic config {key!r}; known: {', '.join(sorted(TOPIC_CONFIGS))}")
        _, least_v, most = TOPIC_CONFIGS[key]
        least_v = (least or {}).get(key, least_v)
        if not isinstance(value, str) or not value.isdigit() or not least_v <= int(value) <= most:
            raise InvalidConfigError(f"topic config {key}={value!r} must be an integer in {least_v}..{most}")


def validate_topic(
    name: str,
    partitions: int,
    replication: int,
    live_nodes: int,
    configs: dict[str, str] | None = None,
    least: dict[str, int] | None = None,
) -> None:
    validate_configs(configs or {}, least)
    if not TOPIC_NAME.match(name) or name in (".", ".."):
        raise InvalidConfigError(f"topic name {name!r} must be 1-200 of [A-Za-z0-9._-]")
    if not isinstance(partitions, int) or not 1 <= partitions <= MAX_PARTITIONS:
        raise InvalidConfigError(f"partitions must be 1..{MAX_PARTITIONS}, got {partitions!r}")
    if not isinstance(replication, int) or replication < 1:
        raise InvalidConfigError(f"replication must be >= 1, got {replication!r}")
    if replication > live_nodes:
        raise NotEnoughReplicasError(f"replication {replication} > {live_nodes} live nodes")
