"""What nodes say only to each other, on the peer listener (Kafka keeps its inter-broker
requests out of the `clients` module the same way).

The frames and the envelope are the client protocol's (`client.protocol`); these bodies
extend it. A client library never builds or decodes them, and the client listener
refuses every one of them (`PEER_ONLY`) with `CLUSTER_AUTHORIZATION_FAILED`. On the wire
a body is tagged by its class name, so moving these here changed no byte.

They are versioned like the client's requests (`client.protocol.CLIENT_VERSIONS`), in
`PEER_VERSIONS`; a node's peer listener serves, and its peer Hello offers, both.
"""

from __future__ import annotations

from typing import get_args

import msgspec

from client.protocol import (
    CLIENT_VERSIONS,
    Body,
    EnvelopeDecoder,
    MetadataResponse,
    Ok,
    Request,
    TopicPartition,
    WireMessage,
    check_evolution,
)


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


class JoinCluster(Request[MetadataResponse]):
    """A node started with `--join` announces itself (to any node: it forwards to the
    controller leader) until an operator admits it (`AddNode`). The answer names every
    node of the roster with its peer listener (`NodeInfo.peer`) and its state in the
    controller group, the joiner among them once admitted."""

    node_id: int
    peer: str
    client: str


class ReassignDone(Request[Ok]):
    """Partition leader to controller leader: the move is done (node/moves.py)."""

    topic: str
    partition: int
    group: int
    replicas: list[int]


class PeerMessages(WireMessage):
    """Raft messages of many groups from one node to another, encoded by the broker."""

    payload: bytes


PEER_ONLY = (PeerMessages, WriteTxnMarker, PendTxnOffsets, EndTxnOffsets, JoinCluster, ReassignDone)

#: What nodes send only each other, with the versions this build speaks (min, max); the
#: rule is `CLIENT_VERSIONS`'s. `PeerMessages` is answered by nothing: its version is the
#: one the link agreed on.
PEER_VERSIONS: dict[str, tuple[int, int]] = {
    "PeerMessages": (1, 1),
    "WriteTxnMarker": (1, 1),
    "PendTxnOffsets": (1, 1),
    "EndTxnOffsets": (1, 1),
    "JoinCluster": (3, 3),  # (from 3: its answer needs NodeInfo's `state` and `peer`, Metadata v3's)
    "ReassignDone": (1, 1),
}

#: Everything a node speaks: what its peer listener serves and its peer Hello offers.
NODE_VERSIONS: dict[str, tuple[int, int]] = {**CLIENT_VERSIONS, **PEER_VERSIONS}

NodeBody = Body | PendTxnOffsets | EndTxnOffsets | WriteTxnMarker | PeerMessages | JoinCluster | ReassignDone


class NodeEnvelope(msgspec.Struct, array_like=True):
    """An envelope as a node reads it: a client's body or a peer's."""

    id: int
    body: NodeBody


check_evolution(get_args(NodeBody))
_decoder = EnvelopeDecoder(NodeEnvelope)


def decode_node_payload(payload: bytes | memoryview) -> NodeEnvelope:
    """The envelope in one frame's payload, as a node reads it; `RemoteProtocolError`
    if it is not one (`UnknownMessageError`, answerable, for a type this build lacks)."""
    return _decoder.decode(payload)
