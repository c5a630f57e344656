"""A live node process: admin, every acks level, hostile frames, token, metrics."""

import signal
import struct
import urllib.request

import pytest
import trio

from client.connection import open_connection
from client.errors import AuthFailedError, MessageTooLargeError, NotControllerError, NotLeaderError, UnknownTopicError
from client.protocol import (
    ACKS_LEADER,
    ACKS_NONE,
    PROTOCOL_VERSION,
    CreateTopic,
    DeleteTopic,
    Fetch,
    FetchPartition,
    Hello,
    ListOffsets,
    Metadata,
    Produce,
    encode_frame,
)
from segments import build_batch
from tests.cluster import ProcessCluster, free_ports, process_cluster


async def create_topic(c, req, node: int = 1):
    """wait_ready() sees an elected controller; it takes commands once it has applied
    its first entry of the new term (NOT_CONTROLLER until then)."""
    with trio.fail_after(10):
        while True:
            try:
                return await c.request(node, req)
            except NotControllerError:
                await trio.sleep(0.02)


async def writable(c, topic, partition):
    """Produce one record once the partition takes writes: a new leader answers
    NOT_LEADER ("catching up") until it has applied its no-op."""
    with trio.fail_after(10):
        while True:
            try:
                return await c.request(1, Produce(topic, partition, build_batch([(None, b"x", (), None)])))
            except NotLeaderError:
                await trio.sleep(0.02)


async def test_live_node_survives_hostile_clients(tmp_path):
    async with process_cluster(tmp_path, n=1, token="tok") as c:
        await c.wait_ready()
        await create_topic(c, CreateTopic("t", partitions=2, replication=1))
        for p in (0, 1):
            await c.leader_of("t", p)
            await writable(c, "t", p)
        host, port = c.peers[1].split(":")
        garbage = [
            struct.pack(">IB", 2**31 - 1, PROTOCOL_VERSION),  # a 2 GB frame
            b"\xde\xad\xbe\xef" * 64,  # noise
            encode_frame(0, Hello(PROTOCOL_VERSION, token="tok")) + b"\x00\x00\x00\x03\x01\x91\xc0",  # bad body
            encode_frame(0, Hello(PROTOCOL_VERSION, token="tok"))
            + struct.pack(">IB", 100, PROTOCOL_VERSION)
            + b"x",  # torn
        ]
        for g in garbage:
            s = await trio.open_tcp_stream(host, int(port))
            await s.send_all(g)
            await s.send_eof()
            with trio.fail_after(15):
                while await s.receive_some(4096):
                    pass
            await s.aclose()
        with pytest.raises(AuthFailedError):
            async with open_connection(c.peers[1], token="wrong"):
                pass
        async with open_connection(c.peers[1], token="tok") as conn:
            r_all = await conn.request(Produce("t", 0, build_batch([(b"k", b"all", (), None)])))
            r_one = await conn.request(Produce("t", 0, build_batch([(b"k", b"one", (), None)]), acks=ACKS_LEADER))
            await conn.send_only(Produce("t", 0, build_batch([(b"k", b"none", (), None)]), acks=ACKS_NONE))
            assert r_one.base_offset == r_all.base_offset + 1
            with trio.fail_after(5):
                while (await conn.request(ListOffsets("t", 0))).offset < r_one.base_offset + 2:
                    await trio.sleep(0.02)
            with pytest.raises(MessageTooLargeError):
                await conn.request(Produce("t", 1, build_batch([(None, b"x" * (9 << 20), (), None)])))
            res = (await conn.request(Fetch([FetchPartition("t", 0, 0)], max_wait_ms=0))).results[0]
            assert res.error == 0 and res.high_watermark == r_one.base_offset + 2
            await conn.request(DeleteTopic("t"))
            with pytest.raises(UnknownTopicError):
                await conn.request(Produce("t", 0, build_batch([(None, b"x", (), None)])))
            assert [t.name for t in (await conn.request(Metadata())).topics if not t.internal] == []


async def test_metrics_endpoint(tmp_path):
    (mport,) = free_ports(1)
    async with process_cluster(tmp_path, n=1) as c:
        c.kill(1)
        await c.wait_exit(1)
        c.extra_args = ["--metrics", f"127.0.0.1:{mport}"]
        c.start(1)
        await c.wait_ready()
        await create_topic(c, CreateTopic("m", partitions=1, replication=1))
        await c.leader_of("m", 0)
        await writable(c, "m", 0)
        body = await trio.to_thread.run_sync(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
        )
        assert 'tidemq_requests_total{kind="Produce",outcome="ok"} 1.0' in body
        assert 'tidemq_partition_leader{partition="0",topic="m"} 1.0' in body
        assert "tidemq_request_seconds_bucket" in body and "tidemq_under_replicated_partitions" in body


async def test_idle_partitions_go_quiet_and_a_killed_leader_is_replaced(tmp_path):
    """Real processes: once idle, no Raft group on a node is awake (none is even ticked);
    a leader killed while its groups are quiet is noticed by the other nodes' failure
    detectors, and its partitions get new leaders that take writes."""
    (mport,) = free_ports(1)
    c = ProcessCluster(tmp_path, 3)
    c.node_settings[1] = {"metrics": f"127.0.0.1:{mport}"}
    try:
        for n in c.peers:
            c.start(n)
        with trio.fail_after(20):
            while True:
                try:
                    await c.request(await c.wait_ready(), CreateTopic("q", partitions=12, replication=3))
                    break
                except NotControllerError:
                    await trio.sleep(0.05)

        async def metric(name: str) -> float:
            body = await trio.to_thread.run_sync(
                lambda: urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
            )
            return float(next(line.split()[1] for line in body.splitlines() if line.startswith(name + " ")))

        with trio.fail_after(30):
            leaders = {p: await c.leader_of("q", p) for p in range(12)}
            while await metric("tidemq_raft_groups_awake") > 0:
                await trio.sleep(0.2)
        victim = next(n for n in (2, 3) if n in leaders.values())
        moved = [p for p, n in leaders.items() if n == victim]
        c.kill(victim)
        await c.wait_exit(victim)
        with trio.fail_after(15):
            for p in moved:
                new = await c.leader_of("q", p, poll_s=0.05)
                assert new != victim
                while True:
                    try:
                        await c.request(new, Produce("q", p, build_batch([(None, b"after", (), None)])))
                        break
                    except NotLeaderError:
                        await trio.sleep(0.05)
            while await metric("tidemq_peers_down") != 1:  # each node's detector calls it in its own time
                await trio.sleep(0.05)
    finally:
        c.close()


async def test_writes_go_on_whichever_follower_stops_and_the_trailing_one_stays_in_sync(tmp_path):
    """Thrifty appends (docs/raft.md): a new entry goes at once to one follower of two, the
    other gets a tick's entries at a time. While writes go one at a time both followers
    are reported in sync; a paused follower, whichever of the two, costs a write about a
    tick, not a stall; and once both answer again every replica holds every write."""
    async with process_cluster(tmp_path, n=3) as c:
        await create_topic(c, CreateTopic("t", partitions=1, replication=3), await c.wait_ready())
        leader = await c.leader_of("t", 0)

        async def produce(value: bytes) -> float:
            t0 = trio.current_time()
            with trio.fail_after(10):
                while True:
                    try:
                        await c.request(leader, Produce("t", 0, build_batch([(None, value, (), None)])))
                        return trio.current_time() - t0
                    except NotLeaderError:  # (a new leader applies its no-op first)
                        await trio.sleep(0.02)

        async def partition_info():
            return (await c.request(leader, Metadata(["t"]))).topics[0].partitions[0]

        await produce(b"first")
        reported = []
        for i in range(60):
            await produce(b"steady %d" % i)
            if i % 6 == 5:
                reported.append((await partition_info()).in_sync)
        # (Strictly "holds the whole log", most samples lack one follower or the other.)
        assert sum(s == [1, 2, 3] for s in reported) >= 8, reported
        for follower in (n for n in (1, 2, 3) if n != leader):
            c.kill(follower, signal.SIGSTOP)
            try:
                slowest = max([await produce(b"without %d" % follower) for _ in range(20)])
            finally:
                c.kill(follower, signal.SIGCONT)
            assert slowest < 1.0, f"a write took {slowest:.2f} s with node {follower} paused"
        with trio.fail_after(10):
            while (info := await partition_info()).in_sync != [1, 2, 3]:
                await trio.sleep(0.05)
        assert info.high_watermark == 1 + 1 + 60 + 40  # (the leader's no-op first)
