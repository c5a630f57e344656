"""Moving a consumer: seek to an offset, to the beginning and the end, and the offsets
of times; what was fetched before a seek is not handed out after it, and a group
commits from where it moved."""

from __future__ import annotations

import time

import pytest
import trio

from client import Admin, Consumer, Producer
from client.cluster import ClusterClient
from client.errors import InvalidConfigError
from client.group import fetch_offsets
from tests.cluster import local_cluster


async def next_value(consumer: Consumer) -> bytes | None:
    with trio.fail_after(10):
        return (await consumer.__anext__()).value


async def test_seek_beginning_end_and_times(tmp_path):
    async with local_cluster(tmp_path) as c:
        async with Admin(c.bootstrap) as admin:
            await admin.create_topic("tape", partitions=1, replication=3)
        before = int(time.time() * 1000) - 1
        async with Producer(c.bootstrap) as producer:
            sent = [await producer.send("tape", b"m%d" % i) for i in range(10)]
        async with Consumer(c.bootstrap, group="g", topics=["tape"], offset_reset="earliest") as consumer:
            assert [await next_value(consumer) for _ in range(3)] == [b"m0", b"m1", b"m2"]
            consumer.seek("tape", 0, sent[7].offset)
            assert await next_value(consumer) == b"m7"  # not m3: what was fetched is dropped
            await consumer.seek_to_beginning()
            assert await next_value(consumer) == b"m0"
            times = await consumer.offsets_for_times({("tape", 0): before})
            assert times == {("tape", 0): sent[0].offset}
            assert await consumer.offsets_for_times({("tape", 0): int(time.time() * 1000) + 60_000}) == {
                ("tape", 0): None
            }
            await consumer.seek_to_end()
            async with Producer(c.bootstrap) as producer:
                late = await producer.send("tape", b"late")
            assert await next_value(consumer) == b"late"
            await consumer.commit()
            with pytest.raises(InvalidConfigError, match="not assigned"):
                consumer.seek("tape", 5, 0)
        async with ClusterClient(c.bootstrap) as cluster:
            assert (await fetch_offsets(cluster, "g", [("tape", 0)]))[("tape", 0)] == late.offset + 1
