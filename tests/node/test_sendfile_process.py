"""Fetch answers sent from the segment files (`os.sendfile`), on three real node
processes: consumers reading a topic whose segments roll every ~200 KB, one of them
while the producer is still writing (so reads end at the high watermark inside the
active segment), get every message once and in order, with each batch's CRC checked
by the consumer; and the leader says how many bytes went from its files."""

import re
import urllib.request

import trio

from client import Admin, Consumer, Producer
from client.protocol import Fetch, FetchPartition, FetchResponse
from segments import iter_batches
from tests.cluster import ProcessCluster, free_ports

MESSAGES = 3000
SIZE = 1000


def value(i: int) -> bytes:
    return b"%06d" % i + bytes([i % 251]) * (SIZE - 6)


async def read(bootstrap: str, isolation: str, count: int) -> list[bytes]:
    out: list[bytes] = []
    async with Consumer(bootstrap, topics=["files"], offset_reset="earliest", isolation=isolation) as consumer:
        async for message in consumer:
            out.append(message.value)
            if len(out) == count:
                return out
    return out


def sendfile_bytes(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    found = re.search(r"^tidemq_fetch_sendfile_bytes_total (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_consumers_read_every_message_sent_from_the_files_across_rolls(tmp_path):
    ports = free_ports(3)
    c = ProcessCluster(tmp_path, 3, settings={"min_segment_bytes": 64 * 1024})
    for n, port in zip(c.peers, ports):
        c.node_settings[n] = {"metrics": f"127.0.0.1:{port}"}
        c.start(n)
    try:
        with trio.fail_after(120):
            await c.wait_ready()
            async with Admin(c.bootstrap) as admin:
                await admin.create_topic("files", 1, 3, configs={"segment.bytes": 200_000})
            want = [value(i) for i in range(MESSAGES)]
            got: dict[str, list[bytes]] = {}

            async def follow() -> None:  # reads while the writes go on: cut at the high watermark
                got["during"] = await read(c.bootstrap, "read_uncommitted", MESSAGES)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(follow)
                async with Producer(c.bootstrap, linger=0.02, batch_bytes=64 * 1024) as producer:
                    deliveries = [await producer.submit("files", v, partition=0) for v in want]
                    for d in deliveries:
                        await d
            got["committed"] = await read(c.bootstrap, "read_committed", MESSAGES)
            got["uncommitted"] = await read(c.bootstrap, "read_uncommitted", MESSAGES)
            for how, values in got.items():
                assert values == want, how

            # A raw fetch from the first data batch (the leader's no-op, without a time, sits
            # in a segment of its own): the stored batches to the end of their segment.
            leader = await c.leader_of("files", 0)
            resp = await c.request(leader, Fetch([FetchPartition("files", 0, 1, 1 << 20)], max_wait_ms=0))
            assert isinstance(resp, FetchResponse)
            records = resp.results[0].records
            assert 64 * 1024 < len(records) <= 200_000
            batches = list(iter_batches(records))  # every CRC checked
            assert batches[0][0].base_offset == 1
            assert sum(len(v) for v in want) > 2 * 1024 * 1024
            assert sendfile_bytes(ports[list(c.peers).index(leader)]) > 1024 * 1024
    finally:
        with trio.CancelScope(shield=True):
            await c.aclose()
