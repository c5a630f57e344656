"""Typed errors shared by the client and the broker.

Every error the broker can answer with has a stable numeric `ErrorCode` on the wire and
one exception class here, so a caller can `except NotLeaderError` instead of parsing a
string. `retriable` says whether the same request may succeed later unchanged (the
producer's retry loop relies on it).

Framing errors follow h11: `LocalProtocolError` is our own bug (we tried to send
something invalid), `RemoteProtocolError` is the peer's (it sent garbage); the latter
closes only that connection.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    NONE = 0
    UNKNOWN = 1
    NOT_LEADER = 2
    UNKNOWN_TOPIC = 3
    CORRUPT_BATCH = 4
    MESSAGE_TOO_LARGE = 5
    TIMEOUT = 6
    INVALID_REQUEST = 7
    AUTH_FAILED = 8
    TOPIC_EXISTS = 9
    INVALID_CONFIG = 10
    NOT_ENOUGH_REPLICAS = 11
    OFFSET_OUT_OF_RANGE = 12
    OUT_OF_ORDER_SEQUENCE = 13
    DUPLICATE_SEQUENCE = 14
    UNKNOWN_PRODUCER = 15
    PRODUCER_FENCED = 16
    UNSUPPORTED_VERSION = 17
    NOT_CONTROLLER = 18
    COORDINATOR_NOT_AVAILABLE = 19
    NOT_COORDINATOR = 20
    UNKNOWN_MEMBER = 21
    REBALANCE_IN_PROGRESS = 22
    ILLEGAL_GENERATION = 23
    SHUTTING_DOWN = 24
    INVALID_TXN_STATE = 25
    UNSTABLE_OFFSET_COMMIT = 26
    CLUSTER_AUTHORIZATION_FAILED = 27
    UNSUPPORTED_COMPRESSION = 28
    INVALID_TIMESTAMP = 29
    CONNECTION_LIMIT = 30
    STORAGE_ERROR = 31
    LIMIT_EXCEEDED = 32


class TideMQError(Exception):
    """Base of every TideMQ error; `code` is what travels on the wire."""

    code: ErrorCode = ErrorCode.UNKNOWN
    retriable: bool = False

    def __init__(self, message: str = "", **details: object) -> None:
        super().__init__(message or self.code.name)
        self.message = message or self.code.name
        self.details = details


class ProtocolError(TideMQError):
    """A frame that breaks the wire protocol."""

    code = ErrorCode.INVALID_REQUEST


class LocalProtocolError(ProtocolError):
    """We were about to send something the protocol does not allow (our bug)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow (its bug or hostility)."""


class ConnectionClosedError(TideMQError):
    """The connection went away with requests in flight; their outcome is unknown."""

    retriable = True


def _error(name: str, code: ErrorCode, retriable: bool, doc: str) -> type[TideMQError]:
    return type(name, (TideMQError,), {"code": code, "retriable": retriable, "__doc__": doc})


class NotLeaderError(TideMQError):
    """This node does not lead the partition (or group); `leader_addr` says who might."""

    code = ErrorCode.NOT_LEADER
    retriable = True

    @property
    def leader_id(self) -> int | None:
        return self.details.get("leader_id")  # type: ignore[return-value]

    @property
    def leader_addr(self) -> str | None:
        return self.details.get("leader_addr")  # type: ignore[return-value]


UnknownError = _error("UnknownError", ErrorCode.UNKNOWN, False, "The broker failed in a way it could not classify.")
UnknownTopicError = _error("UnknownTopicError", ErrorCode.UNKNOWN_TOPIC, False, "No such topic or partition.")
CorruptBatchError = _error(
    "CorruptBatchError", ErrorCode.CORRUPT_BATCH, False, "The record batch failed validation (CRC, length, magic)."
)
MessageTooLargeError = _error(
    "MessageTooLargeError", ErrorCode.MESSAGE_TOO_LARGE, False, "The batch or frame exceeds the configured limit."
)
RequestTimeoutError = _error(
    "RequestTimeoutError", ErrorCode.TIMEOUT, True, "The request did not complete in time; its outcome is unknown."
)
InvalidRequestError = _error(
    "InvalidRequestError", ErrorCode.INVALID_REQUEST, False, "The request is malformed or its arguments are invalid."
)
AuthFailedError = _error("AuthFailedError", ErrorCode.AUTH_FAILED, False, "Missing or wrong cluster token.")
TopicExistsError = _error("TopicExistsError", ErrorCode.TOPIC_EXISTS, False, "A topic of that name already exists.")
InvalidConfigError = _error(
    "InvalidConfigError", ErrorCode.INVALID_CONFIG, False, "A topic or client setting is out of range."
)
NotEnoughReplicasError = _error(
    "NotEnoughReplicasError", ErrorCode.NOT_ENOUGH_REPLICAS, True, "Too few live nodes for the requested replication."
)
OffsetOutOfRangeError = _error(
    "OffsetOutOfRangeError",
    ErrorCode.OFFSET_OUT_OF_RANGE,
    False,
    "The offset is below the log start or beyond its end.",
)
OutOfOrderSequenceError = _error(
    "OutOfOrderSequenceError",
    ErrorCode.OUT_OF_ORDER_SEQUENCE,
    False,
    "An idempotent producer skipped sequence numbers.",
)
DuplicateSequenceError = _error(
    "DuplicateSequenceError",
    ErrorCode.DUPLICATE_SEQUENCE,
    False,
    "The batch was already written (the broker answers with its offsets).",
)
UnknownProducerError = _error(
    "UnknownProducerError", ErrorCode.UNKNOWN_PRODUCER, False, "The broker has no state for this producer id."
)
ProducerFencedError = _error(
    "ProducerFencedError", ErrorCode.PRODUCER_FENCED, False, "A newer producer with the same id took over."
)
UnsupportedVersionError = _error(
    "UnsupportedVersionError", ErrorCode.UNSUPPORTED_VERSION, False, "The peer speaks another protocol version."
)
NotControllerError = _error(
    "NotControllerError", ErrorCode.NOT_CONTROLLER, True, "This node does not lead the controller group."
)
CoordinatorNotAvailableError = _error(
    "CoordinatorNotAvailableError",
    ErrorCode.COORDINATOR_NOT_AVAILABLE,
    True,
    "The coordinator is loading or has no leader.",
)
NotCoordinatorError = _error(
    "NotCoordinatorError", ErrorCode.NOT_COORDINATOR, True, "Another node coordinates this group."
)
UnknownMemberError = _error(
    "UnknownMemberError", ErrorCode.UNKNOWN_MEMBER, False, "The group does not know this member (it was expired)."
)
RebalanceInProgressError = _error(
    "RebalanceInProgressError", ErrorCode.REBALANCE_IN_PROGRESS, True, "The group is rebalancing; rejoin."
)
IllegalGenerationError = _error(
    "IllegalGenerationError", ErrorCode.ILLEGAL_GENERATION, False, "The member's generation is stale; rejoin."
)
ShuttingDownError = _error(
    "ShuttingDownError", ErrorCode.SHUTTING_DOWN, True, "The node is shutting down; try another."
)
InvalidTxnStateError = _error(
    "InvalidTxnStateError",
    ErrorCode.INVALID_TXN_STATE,
    False,
    "The transaction does not allow this now (e.g. a partition written before it was added).",
)
UnstableOffsetCommitError = _error(
    "UnstableOffsetCommitError",
    ErrorCode.UNSTABLE_OFFSET_COMMIT,
    True,
    "A transaction will commit this offset but is not decided yet; retry shortly.",
)
UnsupportedCompressionError = _error(
    "UnsupportedCompressionError",
    ErrorCode.UNSUPPORTED_COMPRESSION,
    False,
    "The batch's compression codec is not accepted (use none, gzip or zstd).",
)
InvalidTimestampError = _error(
    "InvalidTimestampError",
    ErrorCode.INVALID_TIMESTAMP,
    False,
    "A record's timestamp is negative or too far from the broker's clock.",
)
LimitExceededError = _error(
    "LimitExceededError",
    ErrorCode.LIMIT_EXCEEDED,
    False,
    "A per-group limit (members, pending half messages) is reached; docs/security.md lists them.",
)
StorageError = _error(
    "StorageError",
    ErrorCode.STORAGE_ERROR,
    True,
    "The node cannot take the write now (its data disk is full); retry later or elsewhere.",
)
ConnectionLimitError = _error(
    "ConnectionLimitError",
    ErrorCode.CONNECTION_LIMIT,
    True,
    "The node has as many connections as it allows; retry, or ask another node.",
)
ClusterAuthorizationError = _error(
    "ClusterAuthorizationError",
    ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
    False,
    "Only the cluster's own nodes may send this (Raft and broker-to-broker requests), and only on the peer listener.",
)

_BY_CODE: dict[int, type[TideMQError]] = {
    cls.code: cls
    for cls in list(globals().values())
    if isinstance(cls, type)
    and issubclass(cls, TideMQError)
    and cls not in (TideMQError, ProtocolError, LocalProtocolError, RemoteProtocolError, ConnectionClosedError)
}


def error_for(code: int, message: str = "", **details: object) -> TideMQError:
    """The exception for a wire error code (unknown codes become `UnknownError`)."""
    cls = _BY_CODE.get(code, UnknownError)
    return cls(message, **details)
