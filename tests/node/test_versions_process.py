"""Two protocol versions side by side, on real processes (issue 17's rolling upgrade):
node 3 runs the next version (tests/nextversion.py: `MetadataResponse` v NEXT appends
`served_by`, and a request `Echo` this build lacks), nodes 1 and 2 run this one, and a
client of each version produces, fetches and reads in a group against all three."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import msgspec
import pytest
import trio

from client import Admin, Consumer, Producer
from client.connection import open_connection
from client.errors import ErrorCode
from client.protocol import (
    CLIENT_VERSIONS,
    PROTOCOL_VERSION,
    ErrorResponse,
    FrameDecoder,
    Hello,
    HelloOk,
    Metadata,
    MetadataResponse,
    decode_payload,
    encode_frame,
    split_addr,
)
from tests.cluster import ProcessCluster

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
NEW = 3  # the node of the next version
THIS = CLIENT_VERSIONS["Metadata"][1]  # this build's newest Metadata; the next build's is NEXT (tests/nextversion.py)
NEXT = THIS + 1
SENT = 15  # messages each client produces


async def answers(addr: str, data: bytes, want: int) -> dict[int, object]:
    """Write raw frames on a fresh connection; the first `want` answers, by request id
    (answers come in any order)."""
    host, port = split_addr(addr)
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(data)
        decoder, got = FrameDecoder(), {}
        with trio.fail_after(10):
            while len(got) < want:
                chunk = await stream.receive_some(1 << 16)
                assert chunk, f"node closed the connection after {got}"
                decoder.feed(chunk)
                while (frame := decoder.next_frame()) is not None:
                    env = decode_payload(frame[1])
                    got[env.id] = env.body
    return got


async def in_sync_everywhere(c: ProcessCluster, topic: str, partitions: int) -> dict[int, int]:
    """partition -> leader, once each leader reports every replica caught up."""
    with trio.fail_after(30):
        while True:
            leaders, caught_up = {}, 0
            for p in range(partitions):
                leader = await c.leader_of(topic, p)
                md = await c.request(leader, Metadata([topic]))
                info = md.topics[0].partitions[p]
                leaders[p] = leader
                caught_up += info.in_sync == [1, 2, 3] and info.high_watermark > 0
            if caught_up == partitions:
                return leaders
            await trio.sleep(0.2)


async def test_a_node_and_a_client_of_the_next_version_work_beside_this_one(tmp_path):
    c = ProcessCluster(tmp_path, 3, fsync="never")
    c.node_commands[NEW] = ["-m", "tests.nextversion", "node"]
    try:
        for node in c.peers:
            c.start(node)
        await c.wait_ready(timeout=60)
        async with Admin(c.bootstrap) as admin:
            await admin.create_topic("mixed", partitions=3, replication=3)
        async with Producer(c.bootstrap) as producer:
            for i in range(SENT):
                await producer.send("mixed", b"old-%d" % i, key=b"k%d" % i)

        # This build's client and the next node: the node offers Metadata 1..NEXT and Echo,
        # the connection speaks Metadata at THIS, and the answer is one this build reads.
        async with open_connection(c.peers[NEW]) as conn:
            assert conn.node_versions["Metadata"] == (1, NEXT) and "Echo" in conn.node_versions
            assert conn.versions["Metadata"] == THIS and "Echo" not in conn.versions
            md = await conn.request(Metadata(["mixed"]))
            assert type(md) is MetadataResponse and md.topics[0].name == "mixed"

        # The next build's client, in a process of its own, against every node.
        job = {
            "bootstrap": c.bootstrap,
            "nodes": {str(n): a for n, a in c.peers.items()},
            "topic": "mixed",
            "group": "g-next",
            "send": SENT,
            "expect": 2 * SENT,
        }
        done = await trio.run_process(
            [sys.executable, "-m", "tests.nextversion", "client", json.dumps(job)],
            cwd=ROOT,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()[-3000:]
        result = json.loads(done.stdout.decode().splitlines()[-1])
        # With the next node: Metadata at NEXT (its new field arrives), Echo served.
        assert result["nodes"][str(NEW)] == {"metadata_version": NEXT, "served_by": NEW, "echo": NEW, "after": True}
        for old in (1, 2):
            seen = result["nodes"][str(old)]
            # With this build's nodes: v1, the new field at its default; Echo refused by
            # negotiation with both ranges named, and the connection still serves.
            assert (seen["metadata_version"], seen["served_by"], seen["after"]) == (THIS, -1, True), seen
            assert re.match(
                rf"refused: Echo: no version both sides speak \(this side 1..1, node {old} .* none\)", seen["echo"]
            )
        everything = sorted([f"old-{i}" for i in range(SENT)] + [f"new-{i}" for i in range(SENT)])
        assert result["read"] == everything

        # This build's client reads both clients' messages in a group of its own.
        got: set[str] = set()
        with trio.fail_after(30):
            async with Consumer(c.bootstrap, group="g-this", topics=["mixed"], offset_reset="earliest") as consumer:
                async for message in consumer:
                    got.add(message.value.decode())
                    if len(got) == len(everything):
                        break
        assert sorted(got) == everything

        # Raft across versions: every replica of every partition caught up, and Raft
        # groups led by nodes of either version (internal topics' included).
        await in_sync_everywhere(c, "mixed", 3)
        everywhere = await c.request(1, Metadata(None))
        leaders = {p.leader for t in everywhere.topics for p in t.partitions}
        assert NEW in leaders and leaders & {1, 2}, leaders

        # Sent anyway, a v2-only frame gets a typed answer from a node of this build, and
        # the connection goes on: a Metadata at v2 and an Echo (a tag it does not know).
        hello = encode_frame(0, Hello(PROTOCOL_VERSION))
        echo = msgspec.msgpack.encode([8, ["Echo", "hi"]])
        echo_frame = (len(echo) + 1).to_bytes(4, "big") + bytes([1]) + echo  # framed by hand: no Echo here
        forced = hello + encode_frame(7, Metadata([]), version=NEXT) + echo_frame + encode_frame(9, Metadata([]))
        got = await answers(c.peers[1], forced, 4)
        ok, v2, unknown, after = got[0], got[7], got[8], got[9]
        assert isinstance(ok, HelloOk)
        assert isinstance(v2, ErrorResponse) and v2.code == ErrorCode.UNSUPPORTED_VERSION
        assert v2.message == f"Metadata v{NEXT}: node 1 speaks Metadata 1..{THIS}"
        assert isinstance(unknown, ErrorResponse) and unknown.code == ErrorCode.UNSUPPORTED_VERSION
        assert "'Echo'" in unknown.message
        assert isinstance(after, MetadataResponse)
        # The next node serves the same Metadata v2 frame.
        served = await answers(c.peers[NEW], hello + encode_frame(7, Metadata([]), version=NEXT), 2)
        assert isinstance(served[7], MetadataResponse)

        # The peers negotiated the lower version, and each side says so in its log.
        differ = (
            "protocol versions differ: Echo unspoken (node {a} {ea}, node {b} {eb}); "
            f"Metadata v{THIS} "
            "(node {a} {ma}, node {b} {mb})"
        )
        logs = {n: (tmp_path / f"n{n}.log").read_text() for n in c.peers}
        for old in (1, 2):
            assert (
                f"link {NEW} -> {old} up; "
                + differ.format(a=NEW, b=old, ea="1..1", eb="none", ma=f"1..{NEXT}", mb=f"1..{THIS}")
                in logs[NEW]
            )
            assert (
                f"link {old} -> {NEW} up; "
                + differ.format(a=old, b=NEW, ea="none", eb="1..1", ma=f"1..{THIS}", mb=f"1..{NEXT}")
                in logs[old]
            )
        assert "link 1 -> 2 up; same protocol versions" in logs[1]
        assert all(c.alive(n) for n in c.peers)
    finally:
        c.close()
