"""Acknowledgements sent by the kernel with their sync (node/aio.py), on three real node
processes with fsync=always: a producer with one message in flight gets every send
acknowledged, most of the followers' acknowledgements leave linked to their durable
write, and every message reads back in order."""

import re
import urllib.request

import trio

from client import Admin, Consumer, Producer
from tests.cluster import ProcessCluster, free_ports

SENDS = 300


def sends_after_sync(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    found = re.search(r"^tidemq_raft_sends_after_sync (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_followers_acknowledge_with_their_sync_and_nothing_is_lost(tmp_path):
    ports = free_ports(3)
    c = ProcessCluster(tmp_path, 3)
    for n, port in zip(c.peers, ports):
        c.node_settings[n] = {"metrics": f"127.0.0.1:{port}"}
        c.start(n)
    try:
        with trio.fail_after(120):
            await c.wait_ready()
            async with Admin(c.bootstrap) as admin:
                await admin.create_topic("linked", 1, 3)
            want = [b"linked-%04d" % i for i in range(SENDS)]
            async with Producer(c.bootstrap) as producer:
                for v in want:
                    await producer.send("linked", v, partition=0)
            leader = await c.leader_of("linked", 0)
            followers = [port for n, port in zip(c.peers, ports) if n != leader]

            def linked() -> float:
                return sum(sends_after_sync(p) for p in followers)

            with trio.fail_after(10):  # (the gauges follow the counters once a second)
                while await trio.to_thread.run_sync(linked) < SENDS / 2:
                    await trio.sleep(0.2)
            got: list[bytes] = []
            async with Consumer(c.bootstrap, topics=["linked"], offset_reset="earliest") as consumer:
                async for message in consumer:
                    got.append(message.value)
                    if len(got) == SENDS:
                        break
            assert got == want
    finally:
        with trio.CancelScope(shield=True):
            await c.aclose()
