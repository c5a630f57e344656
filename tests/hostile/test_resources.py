"""What a client can make a node hold is bounded: answers it never reads, frames before
Hello, fetch sizes; and a topic deleted and created again keeps its new data through a
restart."""

from __future__ import annotations

import signal
import struct
import time

import pytest
import trio

from client import Admin, Producer
from client.cluster import ClusterClient
from client.protocol import PROTOCOL_VERSION, Fetch, FetchPartition, Hello, encode_frame, split_addr
from tests.cluster import read_all
from tests.hostile.conftest import assert_unharmed

pytestmark = pytest.mark.timeout(240)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def test_a_client_that_never_reads_does_not_grow_the_node(cluster):
    now = int(time.time() * 1000)
    async with ClusterClient(cluster.bootstrap) as client:
        await client.refresh_metadata()
        async with Admin(cluster.bootstrap) as admin:
            await admin.create_topic("unread", partitions=1, replication=3)
        async with Producer(cluster.bootstrap) as producer:
            for i in range(8):
                await producer.send("unread", bytes(500_000), timestamp=now + i)
        md = await client.refresh_metadata(["unread"])
        leader = md.topics[0].partitions[0].leader
    pid = cluster.procs[leader].pid
    before = rss_mb(pid)
    host, port = split_addr(cluster.peers[leader])
    s = await trio.open_tcp_stream(host, port)
    await s.send_all(encode_frame(0, Hello(PROTOCOL_VERSION)))
    fetch = Fetch([FetchPartition("unread", 0, 0, 4 << 20)], max_wait_ms=0, max_bytes=4 << 20)
    with trio.move_on_after(8):  # 2,000 answers of ~4 MiB would be 8 GiB
        await s.send_all(b"".join(encode_frame(i, fetch) for i in range(1, 2001)))
    grown = rss_mb(pid) - before
    assert grown < 400, f"node {leader} grew by {grown:.0f} MB serving a client that never reads"
    await s.aclose()
    await assert_unharmed(cluster)


async def test_a_big_frame_before_hello_costs_nothing(cluster):
    host, port = split_addr(next(iter(cluster.peers.values())))
    s = await trio.open_tcp_stream(host, port)
    await s.send_all(struct.pack(">IB", (1 << 31) - 1, PROTOCOL_VERSION) + b"\0" * 65536)
    with trio.fail_after(10):
        try:
            while await s.receive_some(4096):
                pass  # the node closes the connection
        except trio.BrokenResourceError:
            pass  # ... with our bytes unread, so the kernel resets it: closed all the same
    await s.aclose()
    await assert_unharmed(cluster)


async def test_a_topic_deleted_and_created_again_keeps_its_data_through_a_kill(cluster):
    async with Admin(cluster.bootstrap) as admin:
        await admin.create_topic("reborn", partitions=1, replication=3)
        async with Producer(cluster.bootstrap) as producer:
            await producer.send("reborn", b"first life")
        await admin.delete_topic("reborn")
        with trio.fail_after(30):
            while True:
                try:
                    await admin.create_topic("reborn", partitions=1, replication=3)
                    break
                except Exception:  # the deletion still settling on some node
                    await trio.sleep(0.2)
        async with Producer(cluster.bootstrap) as producer:
            await producer.send("reborn", b"second life")
    for n in list(cluster.procs):  # every node replays create, delete, create
        cluster.kill(n, signal.SIGKILL)
        await cluster.wait_exit(n)
        cluster.start(n)
    await cluster.wait_ready()
    got = await read_all(cluster.bootstrap, ["reborn"], quiet=1.5, timeout=60)
    assert [m.value for m in got] == [b"second life"]
    await assert_unharmed(cluster)
