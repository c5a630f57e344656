"""What nodes say only to each other, on the peer listener (Kafka keeps its inter-broker
requests out of the `clients` module the same way).

The frames and the envelope are the client protocol's (`client.protocol`); these bodies
extend it. A client library never builds or decodes them, and the client listener
refuses every one of them (`PEER_ONLY`) with `CLUSTER_AUTHORIZATION_FAILED`. On the wire
a body is tagged by its class name, so moving these here changed no byte.
"""

from __future__ import annotations

import msgspec

from client.errors import RemoteProtocolError
from client.protocol import Body, Ok, Request, TopicPartition, WireMessage


class PendTxnOffsets(Request[Ok]):
    """Transaction coordinator to group coordinator: a transaction will commit offsets
    for these partitions of the group; check that the member still holds them and record
    them as pending (replicated) until `EndTxnOffsets`."""

    group: str
    transactional_id: str
    transaction: int
    partitions: list[TopicPartition]
    member_id: str = ""
    assigned_epochs: list[int] = []  # as in TxnOffsetCommit, in the order of `partitions`
    timeout_ms: int = 60_000  # the transaction's timeout: a pending entry outlives it by a margin at most


class EndTxnOffsets(Request[Ok]):
    """Transaction coordinator to group coordinator: the transaction is decided; on
    commit write its offsets; either way clear what it had pending for their partitions."""

    group: str
    transactional_id: str
    transaction: int
    commit: bool
    offsets: list[tuple[str, int, int]] = []


class WriteTxnMarker(Request[Ok]):
    """Coordinator to partition leader: append a COMMIT/ABORT marker for a producer."""

    topic: str
    partition: int
    producer_id: int
    producer_epoch: int
    commit: bool
    coordinator_epoch: int = 0


class PeerMessages(WireMessage):
    """Raft messages of many groups from one node to another, encoded by the broker."""

    payload: bytes


PEER_ONLY = (PeerMessages, WriteTxnMarker, PendTxnOffsets, EndTxnOffsets)

NodeBody = Body | PendTxnOffsets | EndTxnOffsets | WriteTxnMarker | PeerMessages


class NodeEnvelope(msgspec.Struct, array_like=True):
    """An envelope as a node reads it: a client's body or a peer's."""

    id: int
    body: NodeBody


_decoder = msgspec.msgpack.Decoder(NodeEnvelope)


def decode_node_payload(payload: bytes | memoryview) -> NodeEnvelope:
    """The envelope in one frame's payload, as a node reads it; `RemoteProtocolError`
    if it is not one."""
    try:
        return _decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise RemoteProtocolError(f"malformed frame payload: {exc}") from exc
