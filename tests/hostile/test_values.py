"""Values are checked where they enter: a batch that cannot be decoded, a clock far off,
a config out of range or a write into an internal topic gets a typed refusal before
anything reaches the log, where it would be replayed on every node at every restart."""

from __future__ import annotations

import time

import pytest
import trio
from crc32c import crc32c

from client.cluster import ClusterClient
from client.conventions import H_DELAY_DUE, H_DELAY_TARGET, HALF_TOPIC, tier_name
from client.errors import (
    CorruptBatchError,
    InvalidConfigError,
    InvalidRequestError,
    InvalidTimestampError,
    UnsupportedCompressionError,
)
from client.protocol import CreateTopic, Produce
from segments import Compression, build_batch
from segments.batch import ATTRIBUTES_OFFSET, CRC_OFFSET, HEADER_SIZE
from tests.hostile.conftest import assert_unharmed

pytestmark = pytest.mark.timeout(180)


def _recrc(b: bytearray) -> bytes:
    b[CRC_OFFSET:ATTRIBUTES_OFFSET] = crc32c(bytes(b[ATTRIBUTES_OFFSET:])).to_bytes(4, "big")
    return bytes(b)


def garbage_batch() -> bytes:
    """CRC-valid, header-valid, records that do not decode."""
    b = bytearray(build_batch([(b"k", b"v" * 20, (), int(time.time() * 1000))]))
    b[HEADER_SIZE] = 0x7F
    return _recrc(b)


def lz4_batch() -> bytes:
    b = bytearray(build_batch([(b"k", b"v", (), int(time.time() * 1000))]))
    b[ATTRIBUTES_OFFSET + 1] |= int(Compression.LZ4)
    return _recrc(b)


async def produce(client: ClusterClient, topic: str, data: bytes, partition: int = 0):
    return await client.leader_request(topic, partition, Produce(topic, partition, data))


async def test_batches_that_cannot_be_decoded_are_refused_everywhere(cluster):
    now = int(time.time() * 1000)
    async with ClusterClient(cluster.bootstrap) as client:
        await client.controller_request(CreateTopic("plain", 1, 3))
        tier = tier_name(100)
        bomb = build_batch([(None, bytes(64 << 20), (), now)], compression=Compression.GZIP)
        for topic in ("plain", tier, HALF_TOPIC):
            with trio.fail_after(30):
                with pytest.raises(CorruptBatchError):
                    await produce(client, topic, garbage_batch())
                with pytest.raises(UnsupportedCompressionError):
                    await produce(client, topic, lz4_batch())
                with pytest.raises(CorruptBatchError, match="decompresses to more than"):
                    await produce(client, topic, bomb)
    await assert_unharmed(cluster)


async def test_clocks_and_delays_far_off_are_refused(cluster):
    year_9999 = 253_402_300_799_000
    now = int(time.time() * 1000)
    async with ClusterClient(cluster.bootstrap) as client:
        await client.controller_request(CreateTopic("clock", 1, 3))
        with pytest.raises(InvalidTimestampError, match="future"):
            await produce(client, "clock", build_batch([(None, b"x", (), year_9999)]))
        tier = tier_name(100)
        with pytest.raises(InvalidTimestampError):
            await produce(
                client, tier, build_batch([(None, b"x", ((H_DELAY_TARGET, b"clock"), (H_DELAY_DUE, b"1")), year_9999)])
            )
        with pytest.raises(InvalidRequestError, match="due time"):
            await produce(
                client,
                tier,
                build_batch([(None, b"x", ((H_DELAY_TARGET, b"clock"), (H_DELAY_DUE, str(year_9999).encode())), now)]),
            )
        with pytest.raises(InvalidRequestError, match="needs"):
            await produce(client, tier, build_batch([(None, b"x", (), now)]))
        with pytest.raises(InvalidRequestError, match="not a topic"):
            await produce(
                client,
                tier,
                build_batch(
                    [(None, b"x", ((H_DELAY_TARGET, b"__consumer_offsets"), (H_DELAY_DUE, str(now).encode())), now)]
                ),
            )
    await assert_unharmed(cluster)


async def test_internal_topics_take_no_plain_writes(cluster):
    now = int(time.time() * 1000)
    async with ClusterClient(cluster.bootstrap) as client:
        for topic in ("__consumer_offsets", "__transaction_state"):
            with pytest.raises(InvalidRequestError, match="internal topic"):
                await produce(client, topic, build_batch([(b"k", b"v", (), now)]))
    await assert_unharmed(cluster)


@pytest.mark.parametrize(
    "configs",
    [
        {"segment.bytes": str(1 << 31)},
        {"segment.bytes": "1"},
        {"segment.ms": "1"},
        {"retention.ms": "-5"},
        {"segment.bytes": "12abc"},
    ],
)
async def test_topic_configs_out_of_range_are_refused(cluster, configs):
    async with ClusterClient(cluster.bootstrap) as client:
        with pytest.raises(InvalidConfigError, match="must be an integer in"):
            await client.controller_request(CreateTopic("cfg", 1, 3, configs))
    dead = [n for n in cluster.procs if not cluster.alive(n)]
    assert not dead


async def test_a_fetch_is_bounded_whatever_it_asks_for(cluster):
    from client.protocol import Fetch, FetchPartition
    from node.api import MAX_FETCH_BYTES, MAX_FETCH_PARTITIONS

    now = int(time.time() * 1000)
    async with ClusterClient(cluster.bootstrap) as client:
        await client.controller_request(CreateTopic("wide", 1, 3))
        for i in range(24):
            await produce(client, "wide", build_batch([(None, bytes(1 << 20), (), now + i)]))
        resp = await client.leader_request(
            "wide", 0, Fetch([FetchPartition("wide", 0, 0, 1 << 62)], max_bytes=1 << 62, max_wait_ms=0)
        )
        assert 0 < len(resp.results[0].records) <= MAX_FETCH_BYTES + (1 << 21)
        with pytest.raises(InvalidRequestError, match="partitions"):
            await client.leader_request(
                "wide", 0, Fetch([FetchPartition("wide", 0, 0)] * (MAX_FETCH_PARTITIONS + 1), max_wait_ms=0)
            )
    await assert_unharmed(cluster)
