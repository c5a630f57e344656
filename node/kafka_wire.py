"""The Kafka wire protocol's framing and codec, on `kio` (docs/kafka.md).

Request and response classes are kio's, generated from Kafka's own message definitions:
one frozen dataclass per API key, version and message. This module frames them (a
4-byte size, then the header and body), decodes a request of a version we advertise,
and builds a response of the version asked for from one description that holds every
field of every version (`build` keeps the fields that version has). Nothing here knows
what a request means; that is `node.kafka_api`.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import io
import struct
import types
import typing
import uuid
from typing import Any

import kio.serial.errors
from kio.index import load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode as KafkaError
from kio.serial import entity_reader, entity_writer
from kio.static.primitive import i16, i32

from client.errors import AuthorizationFailedError, ErrorCode, TideMQError

#: API key -> (lowest, highest) version served. Only versions really implemented: a
#: client picks the highest both sides know, so an advertised version is a promise.
#: Produce and Fetch stop at the last versions that name topics (13+ use topic ids).
SUPPORTED: dict[int, tuple[int, int]] = {
    0: (3, 9),  # Produce: v3 is the first with record batch v2
    1: (4, 12),  # Fetch: v4 is the first with record batch v2 (and isolation levels)
    2: (1, 7),  # ListOffsets
    3: (0, 12),  # Metadata
    8: (2, 9),  # OffsetCommit (9: a KIP-848 member's epoch)
    9: (1, 9),  # OffsetFetch
    10: (0, 4),  # FindCoordinator (groups and transactions)
    11: (2, 7),  # JoinGroup
    12: (0, 4),  # Heartbeat
    13: (0, 4),  # LeaveGroup
    14: (0, 5),  # SyncGroup
    15: (0, 5),  # DescribeGroups
    16: (0, 4),  # ListGroups
    17: (1, 1),  # SaslHandshake (v1: the tokens go in SaslAuthenticate; node/kafka_sasl.py)
    18: (0, 4),  # ApiVersions
    19: (2, 7),  # CreateTopics
    20: (1, 6),  # DeleteTopics (v6 names topics by name or id: by name here)
    21: (0, 2),  # DeleteRecords
    22: (0, 4),  # InitProducerId
    24: (0, 3),  # AddPartitionsToTxn (4 and up are brokers' batched verification)
    25: (0, 3),  # AddOffsetsToTxn
    26: (0, 3),  # EndTxn (4 and up: KIP-890's transactions v2)
    28: (0, 3),  # TxnOffsetCommit
    32: (1, 4),  # DescribeConfigs (v0 has no config sources)
    33: (0, 2),  # AlterConfigs
    36: (0, 2),  # SaslAuthenticate
    37: (0, 3),  # CreatePartitions
    42: (0, 2),  # DeleteGroups
    44: (0, 1),  # IncrementalAlterConfigs
    47: (0, 0),  # OffsetDelete
    60: (0, 1),  # DescribeCluster
    61: (0, 0),  # DescribeProducers
    65: (0, 0),  # DescribeTransactions
    66: (0, 1),  # ListTransactions
    68: (0, 1),  # ConsumerGroupHeartbeat (KIP-848)
    69: (0, 1),  # ConsumerGroupDescribe
}
API_VERSIONS = 18
MAX_FRAME_BYTES = 100 * 1024 * 1024  # Kafka's socket.request.max.bytes default

_SIZE = struct.Struct(">i")
_KEY_VERSION = struct.Struct(">hhi")  # api key, version, correlation id: at the same place in every header


class KafkaFrameError(Exception):
    """The bytes are not a Kafka request we can answer: the connection is closed."""


#: Our error codes as Kafka's, so a Kafka client's own retry logic applies.
_KAFKA_CODES: dict[ErrorCode, KafkaError] = {
    ErrorCode.NONE: KafkaError.none,
    ErrorCode.UNKNOWN: KafkaError.unknown_server_error,
    ErrorCode.NOT_LEADER: KafkaError.not_leader_or_follower,
    ErrorCode.UNKNOWN_TOPIC: KafkaError.unknown_topic_or_partition,
    ErrorCode.CORRUPT_BATCH: KafkaError.corrupt_message,
    ErrorCode.MESSAGE_TOO_LARGE: KafkaError.message_too_large,
    ErrorCode.TIMEOUT: KafkaError.request_timed_out,
    ErrorCode.INVALID_REQUEST: KafkaError.invalid_request,
    ErrorCode.AUTH_FAILED: KafkaError.sasl_authentication_failed,
    ErrorCode.TOPIC_EXISTS: KafkaError.topic_already_exists,
    ErrorCode.INVALID_CONFIG: KafkaError.invalid_config,
    ErrorCode.NOT_ENOUGH_REPLICAS: KafkaError.not_enough_replicas,
    ErrorCode.OFFSET_OUT_OF_RANGE: KafkaError.offset_out_of_range,
    ErrorCode.OUT_OF_ORDER_SEQUENCE: KafkaError.out_of_order_sequence_number,
    ErrorCode.DUPLICATE_SEQUENCE: KafkaError.duplicate_sequence_number,
    ErrorCode.UNKNOWN_PRODUCER: KafkaError.unknown_producer_id,
    ErrorCode.PRODUCER_FENCED: KafkaError.producer_fenced,
    ErrorCode.UNSUPPORTED_VERSION: KafkaError.unsupported_version,
    ErrorCode.NOT_CONTROLLER: KafkaError.not_controller,
    ErrorCode.COORDINATOR_NOT_AVAILABLE: KafkaError.coordinator_not_available,
    ErrorCode.NOT_COORDINATOR: KafkaError.not_coordinator,
    ErrorCode.UNKNOWN_MEMBER: KafkaError.unknown_member_id,
    ErrorCode.REBALANCE_IN_PROGRESS: KafkaError.rebalance_in_progress,
    ErrorCode.ILLEGAL_GENERATION: KafkaError.illegal_generation,
    ErrorCode.SHUTTING_DOWN: KafkaError.not_leader_or_follower,  # retriable: the client asks another node
    ErrorCode.INVALID_TXN_STATE: KafkaError.invalid_txn_state,
    ErrorCode.UNSTABLE_OFFSET_COMMIT: KafkaError.unstable_offset_commit,
    ErrorCode.CLUSTER_AUTHORIZATION_FAILED: KafkaError.cluster_authorization_failed,
    ErrorCode.UNSUPPORTED_COMPRESSION: KafkaError.unsupported_compression_type,
    ErrorCode.INVALID_TIMESTAMP: KafkaError.invalid_timestamp,
    ErrorCode.CONNECTION_LIMIT: KafkaError.throttling_quota_exceeded,
    ErrorCode.STORAGE_ERROR: KafkaError.kafka_storage_error,
    ErrorCode.LIMIT_EXCEEDED: KafkaError.policy_violation,
    ErrorCode.GROUP_NOT_FOUND: KafkaError.group_id_not_found,
    ErrorCode.GROUP_NOT_EMPTY: KafkaError.non_empty_group,
    ErrorCode.GROUP_SUBSCRIBED: KafkaError.group_subscribed_to_topic,
    ErrorCode.AUTHORIZATION_FAILED: KafkaError.topic_authorization_failed,  # (the usual; see error_of)
}
_AUTHORIZATION_CODES = {
    "topic": KafkaError.topic_authorization_failed,
    "group": KafkaError.group_authorization_failed,
    "cluster": KafkaError.cluster_authorization_failed,
    "transactional-id": KafkaError.transactional_id_authorization_failed,
}


def kafka_error(code: int) -> KafkaError:
    """Kafka's code for one of ours (an unknown one is Kafka's unknown server error)."""
    try:
        return _KAFKA_CODES[ErrorCode(code)]
    except ValueError:
        return KafkaError.unknown_server_error


def error_of(exc: TideMQError) -> KafkaError:
    """Kafka's code for a refusal: its own where the error carries one (`kafka_code`,
    as the classic group protocol's do), else the mapping of ours."""
    code = getattr(exc, "kafka_code", None)
    if code is None and isinstance(exc, AuthorizationFailedError):
        code = _AUTHORIZATION_CODES.get(str(exc.details.get("resource_type")))
    return KafkaError(code) if code is not None else kafka_error(exc.code)


def failed(exc: TideMQError) -> dict[str, Any]:
    """The error fields of a Kafka answer that has a message beside its code."""
    return {"error_code": error_of(exc), "error_message": exc.message}


#: Topic ids (Kafka's UUIDs for a topic incarnation) are derived, not stored: the same on
#: every node, and new when a topic is deleted and created again (its first Raft group
#: is new).
_TOPIC_IDS = uuid.UUID("6f1d52b4-6e0f-4d8e-9a53-7c1f0c5b2e11")


def topic_id(name: str, first_group: int) -> uuid.UUID:
    return uuid.uuid5(_TOPIC_IDS, f"{name}/{first_group}")


class Request(typing.NamedTuple):
    api_key: int
    version: int
    correlation_id: int
    client_id: str | None
    body: Any  # kio's request dataclass
    caller: Any = None  # who sent it (node/acl.py's Caller): what the ACLs are asked about


def peek_header(frame: bytes) -> tuple[int, int, int]:
    """(api key, version, correlation id) of a request frame (after its size)."""
    if len(frame) < _KEY_VERSION.size:
        raise KafkaFrameError(f"a request of {len(frame)} bytes is shorter than a request header")
    return _KEY_VERSION.unpack_from(frame)


def decode_request(frame: bytes) -> Request:
    """A request of a supported API and version. KafkaFrameError if the bytes do not
    decode as one (kio refuses writable buffers: pass bytes)."""
    key, version, _ = peek_header(frame)
    lo_hi = SUPPORTED.get(key)
    if lo_hi is None or not lo_hi[0] <= version <= lo_hi[1]:
        raise KafkaFrameError(f"API {key} version {version} is not served")
    cls = _request_class(key, version)
    try:
        header, used = _reader(cls.__header_schema__)(frame, 0)
        body, _ = _reader(cls)(frame, used)
    except (kio.serial.errors.DecodeError, KeyError, ValueError, IndexError) as exc:
        raise KafkaFrameError(f"API {key} v{version}: {type(exc).__name__}: {exc}") from None
    # Bytes after a whole request are read past, as Kafka's brokers do (librdkafka 2.16
    # sends three after a Metadata v12 for every topic); the frame's size bounds them.
    return Request(key, version, header.correlation_id, getattr(header, "client_id", None), body)


def encode_response(body: Any, correlation_id: int) -> bytes:
    """One response frame: size, header (kio picks its version), body."""
    buf = io.BytesIO()
    buf.write(b"\0\0\0\0")
    header_cls: Any = type(body).__header_schema__
    _writer(header_cls)(buf, header_cls(correlation_id=i32(correlation_id)))
    body_cls: Any = type(body)
    _writer(body_cls)(buf, body)
    out = buf.getbuffer()
    _SIZE.pack_into(out, 0, len(out) - 4)
    return bytes(out)


def api_versions_fallback(correlation_id: int) -> bytes:
    """The answer to an ApiVersions newer than we serve: v0, UNSUPPORTED_VERSION and our
    ranges (Kafka's rule; the client asks again at a version from the list)."""
    return encode_response(api_versions_response(0, KafkaError.unsupported_version), correlation_id)


def api_versions_response(version: int, error: KafkaError = KafkaError.none) -> Any:
    keys = [{"api_key": k, "min_version": lo, "max_version": hi} for k, (lo, hi) in sorted(SUPPORTED.items())]
    return build(response_class(API_VERSIONS, version), {"error_code": error, "api_keys": keys})


@functools.cache
def _request_class(key: int, version: int) -> Any:
    return load_request_schema(key, version)


@functools.cache
def response_class(key: int, version: int) -> Any:
    return load_response_schema(key, version)


@functools.cache
def _reader(cls: type) -> Any:
    return entity_reader(cls)


@functools.cache
def _writer(cls: type) -> Any:
    return entity_writer(cls)


# -- building a response of any version from one description ------------------------------


@functools.cache
def _fields(cls: type) -> tuple[tuple[str, Any, bool], ...]:
    """(name, type, has a default) of a kio dataclass's fields."""
    hints = typing.get_type_hints(cls)
    return tuple(
        (
            f.name,
            hints[f.name],
            f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING,
        )
        for f in dataclasses.fields(cls)
    )


def build(cls: type, data: dict[str, Any]) -> Any:
    """`cls` (a kio entity of some version) from `data`, which may hold fields other
    versions have: those are dropped; fields `data` lacks take their default, or zero.
    Nested entities and tuples of them are given as dicts and lists of dicts."""
    kwargs = {}
    for name, hint, has_default in _fields(cls):
        if name in data:
            kwargs[name] = _convert(hint, data[name])
        elif not has_default:
            kwargs[name] = _zero(hint)
    return cls(**kwargs)


def _convert(hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        (item, _) = typing.get_args(hint)
        return tuple(_convert(item, v) for v in value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return build(hint, value)
    if origin in (typing.Union, types.UnionType):
        inner = next(a for a in typing.get_args(hint) if a is not type(None))
        if value is None or (_is_time(inner) and value == -1):
            return None  # (Kafka's -1 for "no time" is None in kio)
        return _convert(inner, value)
    if _is_time(hint) and isinstance(value, int):
        return datetime.datetime.fromtimestamp(value / 1000, datetime.UTC)
    if hint is datetime.timedelta or (isinstance(hint, type) and issubclass(hint, datetime.timedelta)):
        return value if isinstance(value, datetime.timedelta) else datetime.timedelta(milliseconds=value)
    if isinstance(hint, type) and issubclass(hint, int) and not isinstance(value, hint):
        return hint(value)
    return value


def _is_time(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, datetime.datetime)


def _zero(hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        return ()
    if origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint):
        return None
    if hint is bool:
        return False
    if hint is str:
        return ""
    if hint is uuid.UUID:
        return uuid.UUID(int=0)
    if isinstance(hint, type) and issubclass(hint, datetime.timedelta):
        return datetime.timedelta(0)
    if hint is KafkaError:
        return KafkaError.none
    if isinstance(hint, type) and issubclass(hint, int):
        return hint(0)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return build(hint, {})
    raise TypeError(f"no zero value for {hint!r}")


__all__ = [
    "API_VERSIONS",
    "MAX_FRAME_BYTES",
    "SUPPORTED",
    "KafkaError",
    "KafkaFrameError",
    "Request",
    "api_versions_fallback",
    "api_versions_response",
    "build",
    "decode_request",
    "encode_response",
    "i16",
    "kafka_error",
    "peek_header",
    "response_class",
]
