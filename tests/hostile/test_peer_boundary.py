"""A client cannot act as a node: no Raft traffic, no broker-to-broker requests, and a
node's own messages are checked for a forged sender and values out of range."""

from __future__ import annotations

import msgspec
import pytest
import trio

from client import Admin, Producer
from client.cluster import ClusterClient
from client.connection import open_connection
from client.errors import AuthFailedError, ClusterAuthorizationError
from client.protocol import (
    PROTOCOL_VERSION,
    Hello,
    encode_frame,
    split_addr,
)
from node.broker import PeerBatch
from node.peerauth import PeerCredential
from node.peerprotocol import EndTxnOffsets, PeerMessages, PendTxnOffsets, WriteTxnMarker
from raft.types import Heartbeat, InstallSnapshot, Snapshot
from tests.cluster import PEER_SECRET, read_all
from tests.hostile.conftest import assert_unharmed

pytestmark = pytest.mark.timeout(180)


def _forged(group: int, msgs) -> bytes:
    return msgspec.msgpack.encode(PeerBatch([(group, m) for m in msgs]))


async def test_a_client_cannot_open_a_peer_connection(cluster):
    node = next(iter(cluster.peers))
    # On the client listener, a peer Hello is refused, whatever it claims.
    with pytest.raises(ClusterAuthorizationError, match="client listener"):
        async with open_connection(cluster.peers[node], peer=PeerCredential(2, PEER_SECRET)):
            pass
    # A raw Raft frame on a client connection gets a typed refusal and does nothing.
    huge = Heartbeat(to=node, frm=2, term=(1 << 62), commit=0)
    async with open_connection(cluster.peers[node]) as conn:
        with pytest.raises(ClusterAuthorizationError):
            await conn.request(PeerMessages(_forged(0, [huge])))
    # On the peer listener, a client (no secret, or a guessed one) gets nowhere.
    with pytest.raises(ClusterAuthorizationError, match="clients use --listen"):
        async with open_connection(cluster.peer_addrs[node]):
            pass
    with pytest.raises(AuthFailedError):
        async with open_connection(cluster.peer_addrs[node], peer=PeerCredential(2, "a-guessed-secret-xxxx")):
            pass
    host, port = split_addr(cluster.peer_addrs[node])
    s = await trio.open_tcp_stream(host, port)
    await s.send_all(
        encode_frame(0, Hello(PROTOCOL_VERSION, peer_node=2, nonce=b"n" * 32))
        + encode_frame(0, PeerMessages(_forged(0, [huge])))
    )  # no proof, straight to Raft
    with trio.fail_after(10):
        while await s.receive_some(65536):
            pass
    await s.aclose()
    await assert_unharmed(cluster)


async def test_broker_to_broker_requests_are_refused_to_clients(cluster):
    """A client cannot abort another producer's transaction or pend its offsets."""
    async with Admin(cluster.bootstrap) as admin:
        await admin.create_topic("victim-out", partitions=1, replication=3)
    async with Producer(cluster.bootstrap, transactional_id="victim") as victim:
        await victim.begin_transaction()
        await victim.send("victim-out", b"kept")
        async with ClusterClient(cluster.bootstrap) as client:
            for body in (
                WriteTxnMarker(
                    "victim-out", 0, victim.producer_id, victim.producer_epoch, commit=False, coordinator_epoch=1 << 30
                ),
                PendTxnOffsets("g", "victim", 1, []),
                EndTxnOffsets("g", "victim", 1, commit=True),
            ):
                with pytest.raises(ClusterAuthorizationError):
                    await client.leader_request("victim-out", 0, body)
        await victim.commit_transaction()
    got = await read_all(cluster.bootstrap, ["victim-out"], quiet=1.0)
    assert [m.value for m in got] == [b"kept"]
    await assert_unharmed(cluster)


async def test_a_node_forging_or_overflowing_raft_messages_is_ignored(cluster):
    """Even with the secret, a message signed as another node, or with a term that does
    not fit a batch's leader epoch, is dropped before any replica sees it."""
    target = 1
    forged = [
        Heartbeat(to=target, frm=3, term=(1 << 40), commit=0),  # sent by 2, signed as 3
        Heartbeat(to=target, frm=2, term=(1 << 40), commit=0),  # term beyond int32
        InstallSnapshot(to=target, frm=2, term=1 << 40, snapshot=Snapshot(10**9, 1 << 40)),
    ]
    async with open_connection(cluster.peer_addrs[target], peer=PeerCredential(2, PEER_SECRET)) as conn:
        for group in range(0, 8):
            await conn.send_only(PeerMessages(_forged(group, forged)))
        await trio.sleep(0.5)
    log = (cluster.base / f"n{target}.log").read_text()
    assert "claims to come from node 3" in log and "outside 0.." in log
    await assert_unharmed(cluster)
