"""The TideMQ wire protocol: frames and the typed messages they carry.

A frame is `u32 length | u8 version | payload`, big-endian; `length` counts the version
byte and the payload. The payload is a msgpack-encoded `Envelope(id, body)` where `body`
is one of the tagged msgspec Structs below, and `version` is the version of it the body is
written at. The request id lets one connection carry many requests in flight; responses
carry the id (and the version) of their request and may arrive in any order.

The first frame on every connection is `Hello`: it names the handshake version
(`PROTOCOL_VERSION`), who is connecting (a client, or a peer node), the cluster token, if
the cluster has one, and the versions of each request the sender speaks; `HelloOk`
answers with the node's. Each request then goes at the highest version both sides speak
(Kafka's ApiVersions, folded into the handshake). How a message evolves without breaking
older peers: `WireMessage`, `CLIENT_VERSIONS`, and docs/architecture.md.

`FrameDecoder` is sans-I/O (like h11): feed it bytes, take whole frames out. It refuses a
length above `max_frame_bytes` before buffering anything, so a hostile 2 GB length costs
the server nothing; it raises `RemoteProtocolError` and the caller closes that connection.

The protocol lives in the client package (as Kafka keeps its protocol in `clients/`), so
the client installs and runs without the broker. Broker-to-broker (Raft) messages ride the
same frames; their bodies are defined by the broker and carried here as opaque bytes.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Generic, TypeVar, cast, get_args

import msgspec

from client.errors import LocalProtocolError, RemoteProtocolError, UnknownMessageError

#: The version of the framing and of the handshake (`Hello`, `HelloOk`, `PeerChallenge`,
#: `PeerProof`). It changes only for a change no older node could read at all; every
#: other change is a new version of one request (`CLIENT_VERSIONS`).
PROTOCOL_VERSION = 1
MAX_MESSAGE_VERSION = 255  # the frame's version byte
DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024
_HEADER = struct.Struct(">IB")
HEADER_SIZE = _HEADER.size

# acks values, as Kafka spells them on the wire.
ACKS_NONE, ACKS_LEADER, ACKS_ALL = 0, 1, -1
# isolation levels for Fetch.
READ_UNCOMMITTED, READ_COMMITTED = 0, 1
# ListOffsets special timestamps.
LATEST, EARLIEST = -1, -2


class WireMessage(msgspec.Struct, tag=True, array_like=True, omit_defaults=False):
    """Base of every frame body: tagged by class name, encoded as a compact array.

    A message evolves only by appending fields with defaults, each named in `added` with
    the version of its request that brought it (checked at import by `check_evolution`):
    encoding at an older version drops those trailing fields, and an older (shorter)
    array decodes with their defaults, while a newer (longer) one decodes with its extra
    trailing fields ignored. So never set `forbid_unknown_fields` on a message.
    """

    #: Fields appended after version 1: name -> the version that added it.
    added: ClassVar[Mapping[str, int]] = {}


R = TypeVar("R", bound=WireMessage)


class Request(WireMessage, Generic[R]):
    """A body that asks for an answer of type `R` (the type parameter is for readers and
    type checkers: `await conn.request(Metadata())` is a `MetadataResponse`; the wire
    carries only the body's own tag and fields)."""


# --- connection set-up -------------------------------------------------------------


# The handshake is outside per-request versions: it is always sent whole at frame version
# PROTOCOL_VERSION, and it evolves only by appending fields with defaults, which an older
# build reads past (so a newer peer's longer Hello is still accepted).


class Hello(WireMessage):
    version: int  # PROTOCOL_VERSION
    client_id: str = ""
    token: str | None = None
    peer_node: int | None = None  # set when another broker connects (peer listener only)
    nonce: bytes | None = None  # a peer's challenge to the node it dials
    versions: dict[str, tuple[int, int]] = {}  # the requests the sender speaks: name -> (min, max)
    user: str | None = None  # a user logging in with SCRAM-SHA-256 (client/scram.py)
    scram: str | None = None  # its client-first message


class HelloOk(WireMessage):
    node_id: int
    version: int = PROTOCOL_VERSION
    versions: dict[str, tuple[int, int]] = {}  # the requests this listener serves: name -> (min, max)
    scram: str | None = None  # the server-final message, where a user logged in: the node's proof


class ScramChallenge(WireMessage):
    """The client listener's answer to a Hello with a user: SCRAM's server-first message."""

    message: str


class ScramProof(WireMessage):
    """The client's SCRAM client-final message: its proof of the password."""

    message: str


class PeerChallenge(WireMessage):
    """The peer listener's answer to a peer's Hello: its own challenge, and its proof
    that it holds the peer secret (so a node never talks Raft to an impostor either)."""

    node_id: int
    nonce: bytes
    proof: bytes


class PeerProof(WireMessage):
    """The dialing peer's proof that it holds the peer secret."""

    proof: bytes


# --- errors --------------------------------------------------------------------------


class ErrorResponse(WireMessage):
    code: int
    message: str = ""
    leader_id: int | None = None
    leader_addr: str | None = None


class Ok(WireMessage):
    pass


# --- metadata and admin ------------------------------------------------------------


class NodeInfo(WireMessage):
    node_id: int
    addr: str
    alive: bool = True
    #: In the controller group: "voter", "learner" (joining, catching up), "draining"
    #: (its replicas are moving off before it leaves), or "" (not in it yet).
    state: str = ""
    peer: str = ""  # its peer listener (only in answers to nodes)

    added = {"state": 3, "peer": 3}


class PartitionInfo(WireMessage):
    partition: int
    leader: int | None
    replicas: list[int]
    in_sync: list[int] = []
    high_watermark: int = 0
    log_start_offset: int = 0
    size_bytes: int = -1  # the leader's log on disk (-1: not the leader's answer)
    #: While the replicas move: where to (the preferred leader first), and, in the
    #: leader's answer, how many offsets each new replica still lacks.
    target: list[int] = []
    behind: dict[int, int] = {}

    added = {"size_bytes": 2, "target": 3, "behind": 3}


class TopicInfo(WireMessage):
    name: str
    partitions: list[PartitionInfo]
    configs: dict[str, str] = {}
    internal: bool = False


class Metadata(Request["MetadataResponse"]):
    topics: list[str] | None = None  # None: every topic
    # Only the controller leader answers (NOT_CONTROLLER elsewhere): its "missing" is
    # the truth, where any other node may merely lag. Asked before treating a topic as
    # deleted and acting on it (dropping a delayed message, skipping a marker).
    authoritative: bool = False


class MetadataResponse(WireMessage):
    nodes: list[NodeInfo]
    topics: list[TopicInfo]
    controller: int | None = None
    missing: list[str] = []


class CreateTopic(Request["Ok"]):
    name: str
    partitions: int = 1
    replication: int = 1
    configs: dict[str, str] = {}


class DeleteTopic(Request["Ok"]):
    name: str


class PutUser(Request["Ok"]):
    """Create a user (`create_only`) or change its password: the SCRAM-SHA-256
    credential the client derived from the password (client/scram.py); the password
    itself never leaves the client."""

    name: str
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes
    create_only: bool = False
    must_exist: bool = False  # change a password only: refused if there is no such user

    added = {"must_exist": 2}


class DeleteUser(Request["Ok"]):
    name: str


class ListUsers(Request["ListUsersResponse"]):
    pass


class ListUsersResponse(WireMessage):
    users: list[tuple[str, int]]  # (name, SCRAM iterations)


class AclBinding(WireMessage):
    """One access rule (client/acls.py has the words): `principal` may (or, `deny`, may
    not) do `operation` on the resource of `resource_type` named `name`, literally or
    every name starting with it (`pattern` prefixed)."""

    principal: str  # User:NAME, or User:* for every user
    resource_type: str  # topic | group | transactional-id | cluster
    name: str
    operation: str
    pattern: str = "literal"
    permission: str = "allow"


class AclFilter(WireMessage):
    """Picks bindings: each field set must be equal; None matches anything."""

    principal: str | None = None
    resource_type: str | None = None
    name: str | None = None
    operation: str | None = None
    pattern: str | None = None
    permission: str | None = None


class CreateAcls(Request["Ok"]):
    acls: list[AclBinding]


class DescribeAcls(Request["AclsResponse"]):
    filter: AclFilter = msgspec.field(default_factory=AclFilter)


class DeleteAcls(Request["AclsResponse"]):
    """Remove every binding a filter picks; the answer lists what was removed."""

    filters: list[AclFilter]


class AclsResponse(WireMessage):
    acls: list[AclBinding]


class AlterQuotas(Request["Ok"]):
    """Set some of a principal's quotas (`User:NAME`, or `User:*` for every user without
    their own) and remove others; keys in client/quotas.py."""

    principal: str
    set: dict[str, float] = {}
    delete: list[str] = []


class DescribeQuotas(Request["QuotasResponse"]):
    principal: str | None = None  # None: every principal with a quota


class QuotasResponse(WireMessage):
    quotas: dict[str, dict[str, float]]


class AddPartitions(Request["Ok"]):
    """Grow a topic to `count` partitions (only ever more: keys map to partitions anew)."""

    name: str
    count: int
    validate_only: bool = False


class AddNode(Request["Ok"]):
    """Admit a node started with `--join`: it catches up on the controller's log as a
    learner and then votes. `peer` is its peer listener, as it announced itself."""

    node_id: int
    peer: str


class RemoveNode(Request["Ok"]):
    """Move every replica off a node, take it out of the controller group, forget it."""

    node_id: int
    throttle: int = 0  # bytes/s to each new replica while it catches up (0: no limit)


class Reassign(Request["Ok"]):
    """Move a partition's replicas to `replicas` (the preferred leader first); with
    `cancel`, a move under way goes back to where it started (`replicas` unused)."""

    topic: str
    partition: int
    replicas: list[int]
    throttle: int = 0
    cancel: bool = False

    added = {"cancel": 2}


class Rebalance(Request["RebalanceResponse"]):
    """Even out replicas and preferred leaders across the nodes."""

    throttle: int = 0
    dry_run: bool = False


class PlannedMove(WireMessage):
    topic: str
    partition: int
    replicas: list[int]
    target: list[int]


class RebalanceResponse(WireMessage):
    moves: list[PlannedMove]


class AlterTopicConfigs(Request["Ok"]):
    """Set some of a topic's configs and return others to their defaults, live."""

    name: str
    set: dict[str, str] = {}
    delete: list[str] = []
    validate_only: bool = False


# --- producing -----------------------------------------------------------------------


class InitProducerId(Request["ProducerIdResponse"]):
    transactional_id: str | None = None
    timeout_ms: int = 60_000


class ProducerIdResponse(WireMessage):
    producer_id: int
    producer_epoch: int


class Produce(Request["ProduceResponse"]):
    topic: str
    partition: int
    records: bytes  # one RecordBatch v2, built by the producer
    acks: int = ACKS_ALL
    timeout_ms: int = 30_000
    # Set by a transactional producer: the partition leader verifies with the id's
    # coordinator that this partition is in the producer's ongoing transaction before it
    # accepts the transaction's first batch here (Kafka's KIP-890 part 1).
    transactional_id: str | None = None


class ProduceResponse(WireMessage):
    base_offset: int
    last_offset: int
    log_start_offset: int = 0
    duplicate: bool = False  # a retried idempotent batch: these are its original offsets
    throttle_ms: int = 0  # over a quota: the node reads this connection's next request that much later

    added = {"throttle_ms": 2}


# --- consuming -----------------------------------------------------------------------


class FetchPartition(WireMessage):
    topic: str
    partition: int
    offset: int
    max_bytes: int = 1024 * 1024


class Fetch(Request["FetchResponse"]):
    partitions: list[FetchPartition]
    max_wait_ms: int = 500
    min_bytes: int = 1
    max_bytes: int = 16 * 1024 * 1024
    isolation: int = READ_COMMITTED


class AbortedTxn(WireMessage):
    producer_id: int
    first_offset: int


class FetchResult(WireMessage):
    topic: str
    partition: int
    error: int = 0
    error_message: str = ""
    high_watermark: int = 0
    last_stable_offset: int = 0
    log_start_offset: int = 0
    records: bytes = b""
    aborted: list[AbortedTxn] = []
    leader_id: int | None = None


class FetchResponse(WireMessage):
    results: list[FetchResult]
    throttle_ms: int = 0  # as in ProduceResponse

    added = {"throttle_ms": 2}


class ListOffsets(Request["ListOffsetsResponse"]):
    topic: str
    partition: int
    timestamp: int = LATEST  # LATEST, EARLIEST or a time in ms
    # READ_COMMITTED caps the answer at the last stable offset (Kafka's rule): a
    # read_committed consumer starting at "latest" must not skip past the start of a
    # transaction that is still open and may yet commit.
    isolation: int = READ_UNCOMMITTED


class ListOffsetsResponse(WireMessage):
    offset: int
    timestamp: int = -1


class DeleteRecords(Request["ListOffsetsResponse"]):
    """Delete a partition's records below `offset` (-1: the high watermark), on every
    replica; sent to its leader, answered with the new log start."""

    topic: str
    partition: int
    offset: int
    timeout_ms: int = 30_000


# --- consumer groups ---------------------------------------------------------------
# The coordinator of a group is the leader of partition hash(group) of the internal
# `__consumer_offsets` topic. Membership follows Kafka's KIP-848 shape: the member
# heartbeats the partitions it owns; the coordinator answers with its target assignment
# (sticky, computed on the broker), handing out a partition only once its previous owner
# has reported it released, so a rebalance moves only what must move.


class TopicPartition(WireMessage):
    topic: str
    partition: int


class FindCoordinator(Request["CoordinatorResponse"]):
    group: str


class CoordinatorResponse(WireMessage):
    node_id: int
    addr: str


class GroupHeartbeat(Request["GroupHeartbeatResponse"]):
    group: str
    member_id: str = ""  # "" to join; the coordinator assigns one
    member_epoch: int = 0  # 0 to join, -1 to leave
    topics: list[str] = []
    owned: list[TopicPartition] = []  # what the member holds right now
    client_id: str = ""
    session_timeout_ms: int = 10_000
    rebalance_timeout_ms: int = 30_000


class GroupHeartbeatResponse(WireMessage):
    member_id: str
    member_epoch: int
    assignment: list[TopicPartition]  # what the member should hold now
    heartbeat_interval_ms: int = 1000


class OffsetCommit(Request["Ok"]):
    group: str
    offsets: list[tuple[str, int, int]]  # (topic, partition, next offset to consume)
    member_id: str = ""  # "" for simple (group-less) commits
    member_epoch: int = -1


class OffsetFetch(Request["OffsetFetchResponse"]):
    group: str
    partitions: list[TopicPartition] | None = None  # None: all the group has
    # A consumer about to start from these offsets: refused (UNSTABLE_OFFSET_COMMIT,
    # retriable) while a transaction that carries offsets for one of them is undecided,
    # since its commit would move the offset past inputs the consumer is about to read.
    require_stable: bool = False


class OffsetFetchResponse(WireMessage):
    offsets: list[tuple[str, int, int]]


class ListGroups(Request["ListGroupsResponse"]):
    pass


class ListGroupsResponse(WireMessage):
    groups: list[str]


class DeleteGroup(Request["Ok"]):
    """Remove a group with no members: its committed offsets go."""

    group: str


class DeleteOffsets(Request["Ok"]):
    """Remove a group's committed offsets of some partitions (none of them of a topic
    its members subscribe to)."""

    group: str
    partitions: list[TopicPartition]


class DescribeGroup(Request["DescribeGroupResponse"]):
    group: str


class MemberInfo(WireMessage):
    member_id: str
    client_id: str
    member_epoch: int
    assignment: list[TopicPartition]
    topics: list[str] = []


class DescribeGroupResponse(WireMessage):
    group: str
    state: str  # empty | stable | reconciling
    epoch: int
    members: list[MemberInfo]
    offsets: list[tuple[str, int, int]]
    pending: list[tuple[str, int, str]] = []  # (topic, partition, transactional id) about to commit its offset
    last_write_ms: int = -1  # the group's newest commit or membership change (wall clock); -1: none
    retention_ms: int = 0  # how long it keeps its offsets once it has no members


# --- transactions ---------------------------------------------------------------------
# The coordinator of a transactional id is the leader of partition hash(id) of the
# internal `__transaction_state` topic. `InitProducerId(transactional_id=...)` goes there
# and returns the id kept for that transactional id with a bumped epoch (fencing older
# producers). A producer registers each partition (`AddPartitionsToTxn`) before its first
# transactional write there, and the group offsets it wants committed with the
# transaction (`TxnOffsetCommit`); `EndTxn` answers once the outcome is complete: markers
# written to every partition of the transaction and the offsets committed.


class FindTransactionCoordinator(Request["CoordinatorResponse"]):
    transactional_id: str


class AddPartitionsToTxn(Request["Ok"]):
    transactional_id: str
    producer_id: int
    producer_epoch: int
    partitions: list[TopicPartition] = []
    # The producer's count of its transactions (1, 2, ...; 0: unchecked): a request that
    # arrives after its transaction ended (a late duplicate) is refused, instead of
    # beginning a transaction nobody will end.
    transaction: int = 0
    # Sent by a partition leader, not a producer: only check that the (one) partition is
    # in the producer's ongoing transaction; change nothing.
    verify_only: bool = False


class TxnOffsetCommit(Request["Ok"]):
    transactional_id: str
    producer_id: int
    producer_epoch: int
    group: str
    offsets: list[tuple[str, int, int]] = []  # (topic, partition, next offset to consume)
    transaction: int = 0  # as in AddPartitionsToTxn
    # The consumer's membership (KIP-447): refused unless that member still holds each
    # partition, given to it no later than the epoch listed for it (the member epoch it
    # was assigned at, in the order of `offsets`; empty: unchecked). "" outside a group.
    member_id: str = ""
    assigned_epochs: list[int] = []


class EndTxn(Request["Ok"]):
    transactional_id: str
    producer_id: int
    producer_epoch: int
    commit: bool = True


class ListTransactions(Request["ListTransactionsResponse"]):
    """Ask one node for the transactional ids it coordinates (send to every node)."""


class TxnInfo(WireMessage):
    transactional_id: str
    producer_id: int
    producer_epoch: int
    state: str  # empty | ongoing | prepare_commit | prepare_abort |
    #                                             complete_commit | complete_abort
    partitions: list[TopicPartition] = []
    groups: list[str] = []
    started_ms: int = 0  # when the open transaction began (0: none open)
    updated_ms: int = 0  # last state change
    timeout_ms: int = 0
    coordinator: int = -1  # node answering


class ListTransactionsResponse(WireMessage):
    transactions: list[TxnInfo]


class DescribeTransaction(Request["TxnInfo"]):
    """Sent to the id's coordinator; answered with a `TxnInfo`."""

    transactional_id: str


# --- half messages (check-back transactions, RocketMQ's model) --------------------------
# A half message is produced into partition hash(producer_group) of the internal
# `__half_messages` topic: durable and replicated, but in no consumer's topic. That
# partition's leader is the group's half coordinator: `EndHalf` decides it (commit copies
# it to its target topic exactly once, abort drops it), and `PollHalfChecks` is how live
# producers of the group are asked about halves nobody decided in time.


class EndHalf(Request["EndHalfResponse"]):
    producer_group: str
    partition: int  # of __half_messages
    offset: int
    commit: bool
    reason: str = ""


class EndHalfResponse(WireMessage):
    outcome: str  # committed | aborted
    topic: str = ""
    partition: int = -1  # where a committed half landed
    offset: int = -1
    reason: str = ""


class PollHalfChecks(Request["HalfChecks"]):
    producer_group: str
    max_wait_ms: int = 1000
    limit: int = 100


class HalfCheck(WireMessage):
    partition: int
    offset: int
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    timestamp: int
    check: int  # 1 for the first check-back of this half


class HalfChecks(WireMessage):
    checks: list[HalfCheck]


class ListHalves(Request["ListHalvesResponse"]):
    producer_group: str | None = None
    resolved: bool = False  # also recently decided halves, with why


class HalfInfo(WireMessage):
    producer_group: str
    partition: int
    offset: int
    topic: str
    key: bytes | None
    created_ms: int
    checks: int
    state: str  # pending | committing | committed | aborted
    reason: str = ""
    target_partition: int = -1
    target_offset: int = -1


class ListHalvesResponse(WireMessage):
    halves: list[HalfInfo]


Body = (
    Hello
    | HelloOk
    | PeerChallenge
    | PeerProof
    | ScramChallenge
    | ScramProof
    | ErrorResponse
    | Ok
    | Metadata
    | MetadataResponse
    | CreateTopic
    | DeleteTopic
    | AlterTopicConfigs
    | AddPartitions
    | AddNode
    | RemoveNode
    | Reassign
    | Rebalance
    | PlannedMove
    | RebalanceResponse
    | PutUser
    | DeleteUser
    | ListUsers
    | ListUsersResponse
    | AclBinding
    | AclFilter
    | CreateAcls
    | DescribeAcls
    | DeleteAcls
    | AclsResponse
    | AlterQuotas
    | DescribeQuotas
    | QuotasResponse
    | InitProducerId
    | ProducerIdResponse
    | Produce
    | ProduceResponse
    | Fetch
    | FetchResponse
    | ListOffsets
    | ListOffsetsResponse
    | DeleteRecords
    | FindCoordinator
    | CoordinatorResponse
    | GroupHeartbeat
    | GroupHeartbeatResponse
    | OffsetCommit
    | OffsetFetch
    | OffsetFetchResponse
    | ListGroups
    | ListGroupsResponse
    | DescribeGroup
    | DeleteGroup
    | DeleteOffsets
    | DescribeGroupResponse
    | FindTransactionCoordinator
    | AddPartitionsToTxn
    | TxnOffsetCommit
    | EndTxn
    | ListTransactions
    | TxnInfo
    | ListTransactionsResponse
    | DescribeTransaction
    | EndHalf
    | EndHalfResponse
    | PollHalfChecks
    | HalfCheck
    | HalfChecks
    | ListHalves
    | HalfInfo
    | ListHalvesResponse
)


#: The requests a client may send, each with the versions of it this build speaks
#: (min, max). A request's answer (its response or an `ErrorResponse`) goes back at the
#: request's version, and so does every message nested in either. To evolve one, append
#: the field with a default, name it in the class's `added` with the new version, raise
#: max here and record the new version in tests/client/wire_versions.json
#: (docs/architecture.md, "Evolving the protocol"). Bodies only nodes send each other are
#: in `node.peerprotocol.PEER_VERSIONS`.
CLIENT_VERSIONS: dict[str, tuple[int, int]] = {
    "Metadata": (1, 3),
    "CreateTopic": (1, 1),
    "DeleteTopic": (1, 1),
    "AlterTopicConfigs": (1, 1),
    "AddPartitions": (1, 1),
    "AddNode": (1, 1),
    "RemoveNode": (1, 1),
    "Reassign": (1, 2),
    "Rebalance": (1, 1),
    "PutUser": (1, 2),
    "DeleteUser": (1, 1),
    "ListUsers": (1, 1),
    "CreateAcls": (1, 1),
    "DescribeAcls": (1, 1),
    "DeleteAcls": (1, 1),
    "AlterQuotas": (1, 1),
    "DescribeQuotas": (1, 1),
    "InitProducerId": (1, 1),
    "Produce": (1, 2),
    "Fetch": (1, 2),
    "ListOffsets": (1, 1),
    "DeleteRecords": (1, 1),
    "FindCoordinator": (1, 1),
    "GroupHeartbeat": (1, 1),
    "OffsetCommit": (1, 1),
    "OffsetFetch": (1, 1),
    "ListGroups": (1, 1),
    "DescribeGroup": (1, 1),
    "DeleteGroup": (1, 1),
    "DeleteOffsets": (1, 1),
    "FindTransactionCoordinator": (1, 1),
    "AddPartitionsToTxn": (1, 1),
    "TxnOffsetCommit": (1, 1),
    "EndTxn": (1, 1),
    "ListTransactions": (1, 1),
    "DescribeTransaction": (1, 1),
    "EndHalf": (1, 1),
    "PollHalfChecks": (1, 1),
    "ListHalves": (1, 1),
}


class Envelope(msgspec.Struct, array_like=True):
    id: int
    body: Body


E = TypeVar("E", bound=msgspec.Struct)


def tag_of(cls: type[WireMessage]) -> str:
    """The name a message travels under."""
    return str(cls.__struct_config__.tag)


def _nested(cls: type[WireMessage]) -> set[type[WireMessage]]:
    """Every message type reachable from `cls`'s fields, `cls` included."""
    seen: set[type[WireMessage]] = set()
    todo: list[Any] = [cls]
    while todo:
        t = todo.pop()
        if isinstance(t, type) and issubclass(t, WireMessage):
            if t in seen:
                continue
            seen.add(t)
            todo.extend(f.type for f in msgspec.structs.fields(t))
        else:
            todo.extend(get_args(t))
    return seen


@functools.cache
def newest(cls: type[WireMessage]) -> int:
    """The highest version any field of `cls`, or of a message inside it, was added at:
    at or above it a message encodes whole."""
    return max([1, *(v for t in _nested(cls) for v in t.added.values())])


@functools.cache
def fields_at(cls: type[WireMessage], version: int) -> tuple[str, ...]:
    """The fields of `cls` a speaker of `version` knows: all but those added later."""
    return tuple(name for name in cls.__struct_fields__ if cls.added.get(name, 1) <= version)


def _as_of(value: object, version: int) -> object:
    """`value` as plain data at `version`: every message is cut to its fields of then."""
    if isinstance(value, WireMessage):
        cls = type(value)
        return [tag_of(cls), *(_as_of(getattr(value, name), version) for name in fields_at(cls, version))]
    if isinstance(value, (list, tuple)):
        return [_as_of(v, version) for v in value]
    if isinstance(value, dict):
        return {k: _as_of(v, version) for k, v in value.items()}
    return value


def at_version(body: R, version: int) -> R:
    """`body` as a speaker of `version` could have sent it: fields added later hold their
    defaults (what the receiver of a frame at that version decodes, whatever trailing
    fields a careless sender put beyond it)."""
    if version >= newest(type(body)):
        return body
    return msgspec.msgpack.decode(_encoder.encode(_as_of(body, version)), type=type(body))


def check_evolution(messages: Iterable[type[WireMessage]]) -> None:
    """Refuse (TypeError, at import) a message that breaks the evolution rule: the fields
    in `added` must be its last fields, in the order of their versions (each above 1),
    each with a default; and no message may forbid unknown fields, or a newer peer's
    longer message would be refused."""
    for cls in {t for m in messages for t in _nested(m)}:
        names = cls.__struct_fields__
        later = names[len(names) - len(cls.added) :] if cls.added else ()
        versions = [cls.added.get(n, 0) for n in later]
        if (
            set(later) != set(cls.added)
            or versions != sorted(versions)
            or min(versions, default=2) < 2
            or len(cls.added) > len(cls.__struct_defaults__)
        ):
            raise TypeError(
                f"{cls.__name__}: fields added after version 1 ({dict(cls.added)}) must be its last "
                f"fields, in version order, each with a default"
            )
        if cls.__struct_config__.forbid_unknown_fields:
            raise TypeError(f"{cls.__name__}: a wire message must read past fields a newer peer appends")


check_evolution(get_args(Body))


def agree(ours: Mapping[str, tuple[int, int]], theirs: Mapping[str, tuple[int, int]]) -> dict[str, int]:
    """name -> the highest version both sides speak, for every request of ours the other
    side speaks in an overlapping range. Empty `theirs` is a peer from before versions
    were negotiated: it speaks every request at version 1. Ranges that make no sense
    (min above max, below 1) overlap nothing."""
    out: dict[str, int] = {}
    for name, (lo, hi) in ours.items():
        their_lo, their_hi = theirs.get(name, (0, -1)) if theirs else (1, 1)
        top = min(hi, their_hi)
        if top >= max(lo, their_lo, 1):
            out[name] = top
    return out


def describe_range(r: tuple[int, int] | None) -> str:
    return "none" if r is None else f"{r[0]}..{r[1]}"


def version_notes(
    ours: Mapping[str, tuple[int, int]], theirs: Mapping[str, tuple[int, int]], me: str, them: str
) -> list[str]:
    """For an operator: each request the two sides speak in different ranges, with the
    version the link will use and both ranges ("Metadata v1 (node 1 1..1, node 3 1..2)",
    "Echo unspoken (node 1 none, node 3 1..1)")."""
    agreed = agree(ours, theirs)
    their_ranges = dict(theirs) if theirs else {name: (1, 1) for name in ours}
    notes = []
    for name in sorted(set(ours) | set(their_ranges)):
        mine, their = ours.get(name), their_ranges.get(name)
        if mine != their:
            got = f"v{agreed[name]}" if name in agreed else "unspoken"
            notes.append(f"{name} {got} ({me} {describe_range(mine)}, {them} {describe_range(their)})")
    return notes


_encoder = msgspec.msgpack.Encoder()
_peek = msgspec.msgpack.Decoder(list[Any])


class EnvelopeDecoder(Generic[E]):
    """Decodes a frame's payload into `envelope`; a well-formed envelope of a message this
    build does not know (a newer peer's request) raises `UnknownMessageError` with its id
    and tag, so the receiver can answer it and keep the connection."""

    def __init__(self, envelope: type[E]) -> None:
        self._decoder = msgspec.msgpack.Decoder(envelope)
        body = {f.name: f.type for f in msgspec.structs.fields(envelope)}["body"]
        self.tags = frozenset(tag_of(cls) for cls in get_args(body))

    def decode(self, payload: bytes | memoryview) -> E:
        try:
            return self._decoder.decode(payload)
        except msgspec.DecodeError as exc:
            try:
                env = _peek.decode(payload)
            except msgspec.DecodeError:
                env = []
            tagged = (
                len(env) >= 2
                and isinstance(env[0], int)
                and isinstance(env[1], list)
                and bool(env[1])
                and isinstance(env[1][0], str)
            )
            if not tagged:
                raise RemoteProtocolError(f"malformed frame payload: {exc}") from exc
            tag = env[1][0][:100]
            if tag not in self.tags:
                raise UnknownMessageError(f"unknown message {tag!r}", request_id=env[0], tag=tag) from exc
            raise RemoteProtocolError(f"malformed {tag}: {exc}", tag=tag) from exc


_decoder = EnvelopeDecoder(Envelope)


def split_addr(addr: str) -> tuple[str, int]:
    """("host", port) from "host:port" (or "[::1]:port")."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"address {addr!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def encode_frame(request_id: int, body: object, version: int = PROTOCOL_VERSION) -> bytes:
    """One whole frame carrying `body` at `version` (fields added later are left out);
    the frame's version byte says which, so the receiver reads it at that version."""
    if not isinstance(body, WireMessage):
        raise LocalProtocolError(f"{type(body).__name__} is not a message of the protocol")
    if not 1 <= version <= MAX_MESSAGE_VERSION:
        raise LocalProtocolError(f"message version {version} outside 1..{MAX_MESSAGE_VERSION}")
    try:
        if version >= newest(type(body)):
            payload = _encoder.encode(Envelope(request_id, cast(Body, body)))
        else:
            payload = _encoder.encode([request_id, _as_of(body, version)])
    except (TypeError, ValueError, OverflowError) as exc:
        raise LocalProtocolError(f"cannot encode {type(body).__name__}: {exc}") from exc
    return _HEADER.pack(len(payload) + 1, version) + payload


def decode_payload(payload: bytes | memoryview) -> Envelope:
    """The envelope in one frame's payload; `RemoteProtocolError` if it is not one
    (`UnknownMessageError` if it is one of a message this build does not know)."""
    return _decoder.decode(payload)


class FrameDecoder:
    """Splits a byte stream into frames; holds at most one partial frame.

    `feed()` bytes as they arrive, then call `next_frame()` until it returns None.
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def next_frame(self) -> tuple[int, bytes] | None:
        """(version, payload) of the next whole frame, or None if more bytes are needed.
        Whether the body's type is spoken at that version is the receiver's to judge."""
        if self.buffered < HEADER_SIZE:
            return None
        length, version = _HEADER.unpack_from(self._buf, self._pos)
        if length < 1 or length - 1 > self.max_frame_bytes:
            raise RemoteProtocolError(
                f"frame length {length} outside 1..{self.max_frame_bytes + 1}; closing the connection"
            )
        if version < 1:
            raise RemoteProtocolError("frame version 0: message versions start at 1; closing the connection")
        end = self._pos + 4 + length
        if len(self._buf) < end:
            return None
        payload = bytes(self._buf[self._pos + HEADER_SIZE : end])
        self._pos = end
        if self._pos > 1 << 20:
            del self._buf[: self._pos]
            self._pos = 0
        return version, payload
