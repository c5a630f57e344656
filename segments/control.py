"""Control batches: markers that take offsets like data but that consumers skip.

A control batch has attributes bit 5 set and holds one record whose key is
(version int16, type int16), as Kafka's ControlRecordType reads it. The record value
is type-specific:

- ABORT / COMMIT: a transaction marker, transactional, carrying the producer id and
  epoch in the batch header and value (version int16 = 0, coordinatorEpoch int32),
  Kafka's EndTransactionMarker.
- LEADER_CHANGE: the no-op a new Raft leader writes at the start of its term.
- RAFT_CONFIG: a Raft membership change (KRaft's VotersRecord slot, type 6); the value
  is the caller's encoding of the new configuration.

Public API: `ControlType`, `build_control_batch`, `control_type_of`,
`build_transaction_marker`, `transaction_marker_of`.
"""

from __future__ import annotations

import enum
import struct
import time

from .batch import build_batch, decode_records, parse_header
from .errors import CorruptBatchError

CONTROL_KEY_VERSION = 0
TXN_MARKER_VERSION = 0
_KEY = struct.Struct(">hh")
_TXN_VALUE = struct.Struct(">hi")


class ControlType(enum.IntEnum):
    """Kafka's control record types (and the KRaft slot TideMQ uses for membership)."""

    ABORT = 0
    COMMIT = 1
    LEADER_CHANGE = 2
    RAFT_CONFIG = 6
    DELAY_CHECKPOINT = 100  # TideMQ's own: a delay scheduler's progress, in its own partition
    HALF_OP = 101  # TideMQ's own: decisions and check-backs of half messages, in their partition
    DELETE_RECORDS = 102  # TideMQ's own: the partition's log start moves up to this offset (DeleteRecords)
    DELAY_INTAKE = 103  # TideMQ's own: a producer's batch of delayed messages, held until relayed to a tier
    DELAY_INTAKE_DONE = 104  # TideMQ's own: the intake at this offset is in its tier


def build_control_batch(
    control_type: ControlType,
    value: bytes = b"",
    *,
    producer_id: int = -1,
    producer_epoch: int = -1,
    timestamp: int | None = None,
    transactional: bool | None = None,
    base_offset: int = 0,
    leader_epoch: int = -1,
) -> bytes:
    """A control batch of one record keyed (0, control_type) with `value`.

    `transactional` defaults to True for ABORT/COMMIT (Kafka's markers are
    transactional batches) and False otherwise. A None timestamp means now.
    """
    control_type = ControlType(control_type)
    if transactional is None:
        transactional = control_type in (ControlType.ABORT, ControlType.COMMIT)
    key = _KEY.pack(CONTROL_KEY_VERSION, control_type)
    return build_batch(
        [(key, value, (), timestamp)],
        base_offset=base_offset,
        leader_epoch=leader_epoch,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        transactional=transactional,
        control=True,
    )


def build_carrier(
    control_type: ControlType,
    value: bytes,
    *,
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
    span: int,
    timestamp: int | None = None,
) -> bytes:
    """A control batch that stands in the log for a producer's batch of `span` records:
    the first record carries `value`, the others are empty, so it takes `span` offsets
    and their sequence numbers (the producer's idempotence goes on as if the batch were
    written) while every consumer, ours and Kafka's, skips it."""
    key = _KEY.pack(CONTROL_KEY_VERSION, ControlType(control_type))
    if timestamp is None:
        timestamp = int(time.time() * 1000)
    records = [(key, value, (), timestamp)] + [(key, b"", (), timestamp)] * (span - 1)
    return build_batch(
        records,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        control=True,
    )


def _control_record_key_value(buf: bytes | bytearray | memoryview) -> tuple[ControlType, bytes]:
    header = parse_header(buf)
    if not header.is_control:
        raise ValueError("not a control batch (attributes bit 5 is clear)")
    records = decode_records(buf)
    key = records[0].key
    if key is None or len(key) < _KEY.size:
        raise CorruptBatchError(f"control record key {key!r} is shorter than {_KEY.size} bytes")
    _version, code = _KEY.unpack_from(key)
    try:
        control_type = ControlType(code)
    except ValueError:
        raise CorruptBatchError(f"unknown control record type {code}") from None
    return control_type, records[0].value or b""


def control_type_of(buf: bytes | bytearray | memoryview) -> ControlType:
    """The type of the control batch `buf` (verifies its CRC).

    Raises ValueError if `buf` is not a control batch and CorruptBatchError if its key
    is malformed or of an unknown type.
    """
    return _control_record_key_value(buf)[0]


def build_transaction_marker(
    commit: bool,
    *,
    producer_id: int,
    producer_epoch: int,
    coordinator_epoch: int,
    timestamp: int | None = None,
) -> bytes:
    """A COMMIT or ABORT marker for a producer's transaction, Kafka's layout."""
    return build_control_batch(
        ControlType.COMMIT if commit else ControlType.ABORT,
        _TXN_VALUE.pack(TXN_MARKER_VERSION, coordinator_epoch),
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        timestamp=timestamp,
    )


def transaction_marker_of(buf: bytes | bytearray | memoryview) -> tuple[ControlType, int]:
    """(COMMIT or ABORT, coordinator epoch) of a transaction marker batch."""
    control_type, value = _control_record_key_value(buf)
    if control_type not in (ControlType.ABORT, ControlType.COMMIT):
        raise ValueError(f"{control_type.name} batch is not a transaction marker")
    if len(value) < _TXN_VALUE.size:
        raise CorruptBatchError(f"transaction marker value of {len(value)} bytes is too short")
    _version, coordinator_epoch = _TXN_VALUE.unpack_from(value)
    return control_type, coordinator_epoch
