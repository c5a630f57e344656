"""The Kafka codec: requests decoded at the versions we serve, responses built for any
version from one description, our errors as Kafka's, and the frames we refuse."""

from __future__ import annotations

import io
import struct

import pytest
from kio.schema.errors import ErrorCode as KafkaError
from kio.serial import entity_reader, entity_writer

from client.errors import ErrorCode
from node.kafka_wire import (
    SUPPORTED,
    KafkaFrameError,
    api_versions_fallback,
    build,
    decode_request,
    encode_response,
    kafka_error,
    response_class,
)


def frame_of(key: int, version: int, body) -> bytes:
    header_cls = type(body).__header_schema__
    buf = io.BytesIO()
    entity_writer(header_cls)(
        buf, header_cls(request_api_key=key, request_api_version=version, correlation_id=7, client_id="t")
    )
    entity_writer(type(body))(buf, body)
    return buf.getvalue()


def decode_response(key: int, version: int, frame: bytes):
    cls = response_class(key, version)
    (size,) = struct.unpack_from(">i", frame)
    assert size == len(frame) - 4
    header, used = entity_reader(cls.__header_schema__)(frame, 4)
    body, n = entity_reader(cls)(frame, 4 + used)
    assert 4 + used + n == len(frame)
    return header.correlation_id, body


@pytest.mark.parametrize("version", range(SUPPORTED[3][0], SUPPORTED[3][1] + 1))
def test_one_description_builds_every_metadata_version(version):
    body = build(
        response_class(3, version),
        {
            "brokers": [{"node_id": 1, "host": "127.0.0.1", "port": 9092}],
            "controller_id": 1,
            "cluster_id": "tidemq",  # (v2+)
            "topics": [
                {
                    "name": "t",
                    "is_internal": False,
                    "partitions": [{"partition_index": 0, "leader_id": 1, "replica_nodes": [1], "isr_nodes": [1]}],
                }
            ],
        },
    )
    corr, back = decode_response(3, version, encode_response(body, 11))
    assert corr == 11 and back == body
    assert back.topics[0].partitions[0].leader_id == 1 and back.brokers[0].port == 9092


def test_a_produce_request_decodes_with_its_records_untouched():
    import kio.schema.produce.v9 as p9

    records = b"\x00" * 61 + b"batch"
    body = p9.ProduceRequest(
        transactional_id=None,
        acks=-1,
        timeout=__import__("datetime").timedelta(seconds=30),
        topic_data=(
            p9.request.TopicProduceData(
                name="t", partition_data=(p9.request.PartitionProduceData(index=0, records=records),)
            ),
        ),
    )
    req = decode_request(frame_of(0, 9, body))
    assert (req.api_key, req.version, req.correlation_id, req.client_id) == (0, 9, 7, "t")
    assert req.body.topic_data[0].partition_data[0].records == records


def test_frames_we_refuse():
    with pytest.raises(KafkaFrameError):
        decode_request(b"\x00\x00")  # shorter than a header
    with pytest.raises(KafkaFrameError):
        decode_request(struct.pack(">hhi", 0, 2, 1) + b"\xff" * 8)  # Produce v2: not served
    import kio.schema.api_versions.v3 as av3

    good = frame_of(18, 3, av3.ApiVersionsRequest(client_software_name="x", client_software_version="1"))
    # Bytes after a whole request are read past, as Kafka's brokers do: librdkafka 2.16's
    # Metadata v12 for every topic carries three.
    assert decode_request(good + b"\x00\x01\x02").body.client_software_name == "x"
    with pytest.raises(KafkaFrameError):
        decode_request(good[:-3])  # cut short


def test_a_newer_api_versions_is_answered_at_v0_with_our_ranges():
    corr, body = decode_response(18, 0, api_versions_fallback(5))
    assert corr == 5 and body.error_code == KafkaError.unsupported_version
    assert {k.api_key: (k.min_version, k.max_version) for k in body.api_keys} == SUPPORTED


def test_every_error_of_ours_has_a_kafka_code():
    for code in ErrorCode:
        assert isinstance(kafka_error(code), KafkaError)
    assert kafka_error(ErrorCode.NOT_LEADER) == KafkaError.not_leader_or_follower
    assert kafka_error(ErrorCode.OUT_OF_ORDER_SEQUENCE) == KafkaError.out_of_order_sequence_number
    assert kafka_error(999) == KafkaError.unknown_server_error


def test_times_and_missing_fields_take_kafkas_meanings():
    body = build(
        response_class(0, 9),
        {"responses": [{"name": "t", "partition_responses": [{"index": 0, "base_offset": 5, "log_append_time": -1}]}]},
    )
    p = body.responses[0].partition_responses[0]
    assert p.log_append_time is None and p.error_code == KafkaError.none and p.record_errors == ()
    _, back = decode_response(0, 9, encode_response(body, 1))
    assert back.responses[0].partition_responses[0].base_offset == 5


def test_every_api_advertised_has_a_handler_and_no_handler_goes_unadvertised():
    from types import SimpleNamespace

    from node.kafka_api import KafkaApi
    from node.kafka_sasl import SASL_AUTHENTICATE, SASL_HANDSHAKE

    api = KafkaApi(None, None, SimpleNamespace(), dict)  # type: ignore[arg-type]
    # (SASL is the connection's, served by the listener itself: node/kafka_sasl.py)
    assert set(api.handlers) | {SASL_HANDSHAKE, SASL_AUTHENTICATE} == set(SUPPORTED)
