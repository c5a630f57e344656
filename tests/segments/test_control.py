"""Control batches: Kafka's control record key and transaction marker layouts."""

from __future__ import annotations

import struct

import pytest
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from segments.batch import build_batch, decode_records, verify
from segments.control import (
    ControlType,
    build_control_batch,
    build_transaction_marker,
    control_type_of,
    transaction_marker_of,
)
from segments.errors import CorruptBatchError

from .helpers import recrc


def test_kafka_values():
    assert [(t.name, int(t)) for t in ControlType] == [
        ("ABORT", 0),
        ("COMMIT", 1),
        ("LEADER_CHANGE", 2),
        ("RAFT_CONFIG", 6),
        ("DELAY_CHECKPOINT", 100),
        ("HALF_OP", 101),
        ("DELETE_RECORDS", 102),
        ("DELAY_INTAKE", 103),
        ("DELAY_INTAKE_DONE", 104),
    ]


@pytest.mark.parametrize("control_type", list(ControlType))
def test_control_batch_round_trip(control_type):
    buf = build_control_batch(control_type, b"payload", producer_id=5, producer_epoch=2, timestamp=77)
    header = verify(buf)
    assert header.is_control and header.record_count == 1
    assert header.is_transactional == (control_type in (ControlType.ABORT, ControlType.COMMIT))
    assert control_type_of(buf) is control_type
    record = decode_records(buf)[0]
    assert record.key == struct.pack(">hh", 0, control_type) and record.value == b"payload"
    kafka = list(DefaultRecordBatch(buf))[0]  # kafka-python reads it as a ControlRecord
    assert (kafka.version, kafka.type) == (0, int(control_type))


def test_transactional_flag_can_be_overridden():
    assert verify(build_control_batch(ControlType.LEADER_CHANGE, transactional=True)).is_transactional
    assert not verify(build_control_batch(ControlType.COMMIT, transactional=False)).is_transactional


def test_transaction_marker_layout():
    buf = build_transaction_marker(False, producer_id=42, producer_epoch=3, coordinator_epoch=9, timestamp=5)
    header = verify(buf)
    assert (header.producer_id, header.producer_epoch, header.is_transactional) == (42, 3, True)
    assert transaction_marker_of(buf) == (ControlType.ABORT, 9)
    assert decode_records(buf)[0].value == struct.pack(">hi", 0, 9)  # EndTransactionMarker v0
    kafka = list(DefaultRecordBatch(buf))[0]
    assert kafka.abort and not kafka.commit
    commit = build_transaction_marker(True, producer_id=42, producer_epoch=3, coordinator_epoch=10)
    assert transaction_marker_of(commit) == (ControlType.COMMIT, 10)


def test_we_read_a_control_batch_built_elsewhere():
    builder = DefaultRecordBatchBuilder(2, 0, True, 8, 1, 0, 1 << 20)
    builder.append(0, 1000, struct.pack(">hh", 0, 1), struct.pack(">hi", 0, 4), [])
    buf = bytearray(builder.build())
    struct.pack_into(">h", buf, 21, struct.unpack_from(">h", buf, 21)[0] | 0x20)  # control bit
    assert transaction_marker_of(recrc(buf)) == (ControlType.COMMIT, 4)


def test_control_errors():
    with pytest.raises(ValueError, match="not a control batch"):
        control_type_of(build_batch([(None, b"v", (), 0)]))
    odd = build_batch([(struct.pack(">hh", 0, 9), b"", (), 0)], control=True)
    with pytest.raises(CorruptBatchError, match="unknown control record type 9"):
        control_type_of(odd)
    short = build_batch([(b"\x00", b"", (), 0)], control=True)
    with pytest.raises(CorruptBatchError, match="shorter than 4 bytes"):
        control_type_of(short)
    with pytest.raises(ValueError, match="not a transaction marker"):
        transaction_marker_of(build_control_batch(ControlType.LEADER_CHANGE))
    with pytest.raises(CorruptBatchError, match="too short"):
        transaction_marker_of(build_control_batch(ControlType.COMMIT, b"\x00"))
    with pytest.raises(ValueError):
        build_control_batch(5)
