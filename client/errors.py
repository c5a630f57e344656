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
    GROUP_NOT_FOUND = 33
    GROUP_NOT_EMPTY = 34
    GROUP_SUBSCRIBED = 35
    AUTHORIZATION_FAILED = 36


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


class UnknownMessageError(RemoteProtocolError):
    """A well-formed envelope whose body is of a type this build does not know: a newer
    peer's request. The node answers it UNSUPPORTED_VERSION and keeps the connection."""

    @property
    def request_id(self) -> int:
        return self.details["request_id"]  # type: ignore[return-value]

    @property
    def tag(self) -> str:
        return self.details["tag"]  # type: ignore[return-value]


class ConnectionClosedError(TideMQError):
    """The connection went away with requests in flight; their outcome is unknown."""

    retriable = True


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


class UnknownError(TideMQError):
    """The broker failed in a way it could not classify."""

    code = ErrorCode.UNKNOWN


class UnknownTopicError(TideMQError):
    """No such topic or partition."""

    code = ErrorCode.UNKNOWN_TOPIC


class CorruptBatchError(TideMQError):
    """The record batch failed validation (CRC, length, magic)."""

    code = ErrorCode.CORRUPT_BATCH


class MessageTooLargeError(TideMQError):
    """The batch or frame exceeds the configured limit."""

    code = ErrorCode.MESSAGE_TOO_LARGE


class RequestTimeoutError(TideMQError):
    """The request did not complete in time; its outcome is unknown."""

    code = ErrorCode.TIMEOUT
    retriable = True


class InvalidRequestError(TideMQError):
    """The request is malformed or its arguments are invalid."""

    code = ErrorCode.INVALID_REQUEST


class AuthFailedError(TideMQError):
    """Missing or wrong cluster token."""

    code = ErrorCode.AUTH_FAILED


class TopicExistsError(TideMQError):
    """A topic of that name already exists."""

    code = ErrorCode.TOPIC_EXISTS


class InvalidConfigError(TideMQError):
    """A topic or client setting is out of range."""

    code = ErrorCode.INVALID_CONFIG


class NotEnoughReplicasError(TideMQError):
    """Too few live nodes for the requested replication."""

    code = ErrorCode.NOT_ENOUGH_REPLICAS
    retriable = True


class OffsetOutOfRangeError(TideMQError):
    """The offset is below the log start or beyond its end."""

    code = ErrorCode.OFFSET_OUT_OF_RANGE


class OutOfOrderSequenceError(TideMQError):
    """An idempotent producer skipped sequence numbers."""

    code = ErrorCode.OUT_OF_ORDER_SEQUENCE


class DuplicateSequenceError(TideMQError):
    """The batch was already written (the broker answers with its offsets)."""

    code = ErrorCode.DUPLICATE_SEQUENCE


class UnknownProducerError(TideMQError):
    """The broker has no state for this producer id."""

    code = ErrorCode.UNKNOWN_PRODUCER


class ProducerFencedError(TideMQError):
    """A newer producer with the same id took over."""

    code = ErrorCode.PRODUCER_FENCED


class UnsupportedVersionError(TideMQError):
    """No version of this request (or of the handshake) is spoken by both sides: the
    message names the request and both sides' ranges. The connection stays up."""

    code = ErrorCode.UNSUPPORTED_VERSION


class NotControllerError(TideMQError):
    """This node does not lead the controller group."""

    code = ErrorCode.NOT_CONTROLLER
    retriable = True


class CoordinatorNotAvailableError(TideMQError):
    """The coordinator is loading or has no leader."""

    code = ErrorCode.COORDINATOR_NOT_AVAILABLE
    retriable = True


class NotCoordinatorError(TideMQError):
    """Another node coordinates this group."""

    code = ErrorCode.NOT_COORDINATOR
    retriable = True


class UnknownMemberError(TideMQError):
    """The group does not know this member (it was expired)."""

    code = ErrorCode.UNKNOWN_MEMBER


class RebalanceInProgressError(TideMQError):
    """The group is rebalancing; rejoin."""

    code = ErrorCode.REBALANCE_IN_PROGRESS
    retriable = True


class IllegalGenerationError(TideMQError):
    """The member's generation is stale; rejoin."""

    code = ErrorCode.ILLEGAL_GENERATION


class ShuttingDownError(TideMQError):
    """The node is shutting down; try another."""

    code = ErrorCode.SHUTTING_DOWN
    retriable = True


class InvalidTxnStateError(TideMQError):
    """The transaction does not allow this now (e.g. a partition written before it was added)."""

    code = ErrorCode.INVALID_TXN_STATE


class UnstableOffsetCommitError(TideMQError):
    """A transaction will commit this offset but is not decided yet; retry shortly."""

    code = ErrorCode.UNSTABLE_OFFSET_COMMIT
    retriable = True


class UnsupportedCompressionError(TideMQError):
    """The batch's compression codec is not accepted (use none, gzip or zstd)."""

    code = ErrorCode.UNSUPPORTED_COMPRESSION


class InvalidTimestampError(TideMQError):
    """A record's timestamp is negative or too far from the broker's clock."""

    code = ErrorCode.INVALID_TIMESTAMP


class LimitExceededError(TideMQError):
    """A per-group limit (members, pending half messages) is reached; docs/security.md lists them."""

    code = ErrorCode.LIMIT_EXCEEDED


class StorageError(TideMQError):
    """The node cannot take the write now (its data disk is full); retry later or elsewhere."""

    code = ErrorCode.STORAGE_ERROR
    retriable = True


class ConnectionLimitError(TideMQError):
    """The node has as many connections as it allows; retry, or ask another node."""

    code = ErrorCode.CONNECTION_LIMIT
    retriable = True


class ClusterAuthorizationError(TideMQError):
    """Only the cluster's own nodes may send this (Raft and broker-to-broker requests), and only on the peer listener."""

    code = ErrorCode.CLUSTER_AUTHORIZATION_FAILED


class GroupNotFoundError(TideMQError):
    """The group has no members and no committed offsets: there is nothing of it."""

    code = ErrorCode.GROUP_NOT_FOUND


class GroupNotEmptyError(TideMQError):
    """The group has members (or undecided transactional offsets): stop them first."""

    code = ErrorCode.GROUP_NOT_EMPTY


class GroupSubscribedError(TideMQError):
    """The group's members read that topic: its offsets stay while they do."""

    code = ErrorCode.GROUP_SUBSCRIBED


class AuthorizationFailedError(TideMQError):
    """No ACL lets this principal do that operation on that resource (or one denies it);
    `details` name the principal, operation, resource type and resource."""

    code = ErrorCode.AUTHORIZATION_FAILED


_BY_CODE: dict[int, type[TideMQError]] = {
    cls.code: cls
    for cls in list(globals().values())
    if isinstance(cls, type)
    and issubclass(cls, TideMQError)
    and cls
    not in (
        TideMQError,
        ProtocolError,
        LocalProtocolError,
        RemoteProtocolError,
        UnknownMessageError,
        ConnectionClosedError,
    )
}


def error_for(code: int, message: str = "", **details: object) -> TideMQError:
    """The exception for a wire error code (unknown codes become `UnknownError`)."""
    cls = _BY_CODE.get(code, UnknownError)
    return cls(message, **details)


def error_leaves(exc: BaseException) -> list[BaseException]:
    """The errors inside (nested) exception groups, or the error itself."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in error_leaves(inner)]
    return [exc]
