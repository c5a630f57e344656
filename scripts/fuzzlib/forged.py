"""Bodies only nodes may send each other, forged as a hostile client would forge them:
the same tag and fields, built without the node's code (scripts never import `node/`).
The client listener must refuse each with CLUSTER_AUTHORIZATION_FAILED."""

from __future__ import annotations

from client.protocol import Ok, Request, TopicPartition, WireMessage


class PendTxnOffsets(Request[Ok]):
    group: str
    transactional_id: str
    transaction: int
    partitions: list[TopicPartition]
    member_id: str = ""
    assigned_epochs: list[int] = []
    timeout_ms: int = 60_000


class EndTxnOffsets(Request[Ok]):
    group: str
    transactional_id: str
    transaction: int
    commit: bool
    offsets: list[tuple[str, int, int]] = []


class WriteTxnMarker(Request[Ok]):
    topic: str
    partition: int
    producer_id: int
    producer_epoch: int
    commit: bool
    coordinator_epoch: int = 0


class PeerMessages(WireMessage):
    payload: bytes
