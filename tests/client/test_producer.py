"""Producer against in-process brokers: keys, order, timeouts, failover, asyncio."""

import asyncio
from collections import defaultdict

import pytest
import trio

from client import Admin, Consumer, Producer
from client.errors import InvalidConfigError, RequestTimeoutError, UnknownTopicError
from client.partitioner import partition_for_key
from tests.cluster import local_cluster, running_cluster


async def read_all(bootstrap, topic, count, timeout=20):
    out = []
    with trio.fail_after(timeout):
        async with Consumer(bootstrap, topics=[topic], offset_reset="earliest") as consumer:
            async for msg in consumer:
                out.append(msg)
                if len(out) == count:
                    break
    return out


async def test_keys_land_where_kafka_puts_them_in_order(tmp_path):
    async with local_cluster(tmp_path) as c:
        async with Admin(c.bootstrap) as admin:
            await admin.create_topic("orders", partitions=4, replication=3)
        async with Producer(c.bootstrap) as producer:
            deliveries = [
                await producer.submit("orders", b"%d" % i, key=b"user-%d" % (i % 7), headers={"n": b"%d" % i})
                for i in range(300)
            ]
            mds = [await d for d in deliveries]
        assert all(md.partition == partition_for_key(b"user-%d" % (i % 7), 4) for i, md in enumerate(mds))
        msgs = await read_all(c.bootstrap, "orders", 300)
        per_key = defaultdict(list)
        for m in msgs:
            assert m.partition == partition_for_key(m.key, 4)
            assert m.headers == (("n", m.value),)
            per_key[m.key].append(int(m.value))
        assert all(v == sorted(v) for v in per_key.values())
        assert sorted(int(m.value) for m in msgs) == list(range(300))


async def test_keyless_messages_spread_over_partitions(tmp_path):
    async with local_cluster(tmp_path, n=1) as c:
        async with Admin(c.bootstrap) as admin:
            await admin.create_topic("spread", partitions=3)
        async with Producer(c.bootstrap, batch_bytes=2000) as producer:
            mds = [await producer.send("spread", b"x" * 100) for _ in range(200)]
        assert len({md.partition for md in mds}) == 3


async def test_bad_arguments_fail_clearly(tmp_path):
    async with local_cluster(tmp_path, n=1) as c:
        async with Producer(c.bootstrap) as producer:
            with pytest.raises(UnknownTopicError, match="create it first"):
                await producer.send("nope", b"x")
            with pytest.raises(TypeError, match="bytes"):
                await producer.send("nope", "text")
    with pytest.raises(InvalidConfigError):
        Producer("127.0.0.1:1", acks=1)  # idempotence needs acks=all
    with pytest.raises(InvalidConfigError):
        Producer("127.0.0.1:1", compression="brotli")


async def test_delivery_timeout_fires(tmp_path):
    async with local_cluster(tmp_path) as c:
        async with Admin(c.bootstrap) as admin:
            info = await admin.create_topic("lonely", partitions=1, replication=1)
        owner = info.partitions[0].leader
        async with Producer(c.bootstrap, delivery_timeout=3.0, request_timeout=1.0) as producer:
            await producer.send("lonely", b"before")
            await c.stop(owner, graceful=False)
            start = trio.current_time()
            with pytest.raises(RequestTimeoutError, match="delivery_timeout"):
                await producer.send("lonely", b"lost")
            assert trio.current_time() - start >= 3.0, "not before its delivery timeout"


async def test_sends_survive_leader_failover_exactly_once(tmp_path):
    async with local_cluster(tmp_path) as c:
        async with Admin(c.bootstrap) as admin:
            info = await admin.create_topic("fo", partitions=1, replication=3)
        leader = info.partitions[0].leader
        async with Producer(c.bootstrap, delivery_timeout=30) as producer:
            first = [await producer.submit("fo", b"%d" % i) for i in range(200)]
            await c.stop(leader, graceful=False)
            second = [await producer.submit("fo", b"%d" % i) for i in range(200, 400)]
            for d in first + second:
                await d
        msgs = await read_all(c.bootstrap, "fo", 400)
        assert [int(m.value) for m in msgs] == list(range(400))


def test_producer_and_consumer_under_asyncio(tmp_path):
    async def main(bootstrap):
        async with Admin(bootstrap) as admin:
            await admin.create_topic("aio", partitions=2, replication=3)
        async with Producer(bootstrap) as producer:
            await asyncio.gather(*(producer.send("aio", b"%d" % i, key=b"k%d" % (i % 3)) for i in range(50)))
        got = []
        async with Consumer(bootstrap, topics=["aio"], offset_reset="earliest") as consumer:
            async for msg in consumer:
                got.append(int(msg.value))
                if len(got) == 50:
                    break
        return sorted(got)

    with running_cluster(tmp_path) as c:
        assert asyncio.run(asyncio.wait_for(main(c.bootstrap), 60)) == list(range(50))
