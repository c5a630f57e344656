"""What the services on a node may see of it.

The coordinators (groups, transactions, half messages, delay tiers), the request
handlers, the roster and the replica moves receive the node through these protocols,
not the broker itself: each names the few members its users need, so a service cannot
reach into the broker's wiring, and node/ has no import circle (`Broker` satisfies them
structurally).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from client.errors import InvalidRequestError
from client.protocol import CoordinatorResponse

if TYPE_CHECKING:
    from client.cluster import ClusterClient
    from node.acl import Authorizer
    from node.config import NodeConfig
    from node.metadata import ClusterState
    from node.metrics import NodeMetrics
    from node.partition import Partition
    from node.peerauth import PeerCredential
    from node.peers import PeerTransport
    from node.quotas import Quotas
    from node.replica import Replica
    from node.tls import NodeTLS
    from raft.liveness import PeerLiveness
    from segments import LogConfig

MAX_NAME = 255


class NodeContext(Protocol):
    """What a coordinator uses: who this node is, the cluster's topics, and where the
    shard of a key lives."""

    id: int
    cfg: NodeConfig
    state: ClusterState

    def metadata_loaded(self) -> bool: ...

    def check_loaded(self) -> None: ...

    def coordinating_partition(self, topic: str, key: str, what: str) -> Partition: ...

    def find_coordinator(self, topic: str, key: str, what: str) -> CoordinatorResponse: ...

    def local_partition(self, topic: str, partition: int) -> Partition: ...

    def led_partitions(self, topic: str) -> list[Partition]: ...


class Node(NodeContext, Protocol):
    """What the request handlers and the coordinator runtime use besides: this node's
    partitions, the controller, and the internal clients and topics of its services."""

    metrics: NodeMetrics
    authorizer: Authorizer
    quotas: Quotas
    controller: Replica
    shutting_down: bool

    @property
    def partitions(self) -> Mapping[tuple[str, int], Partition]: ...

    def controller_leader_check(self) -> None: ...

    async def run_command(self, cmd: object, timeout_s: float = 10.0) -> object: ...

    async def next_producer_id(self) -> int: ...

    def live_nodes(self) -> list[int]: ...

    def leader_of(self, group: int) -> int | None: ...

    def addr_of(self, node: int | None) -> str | None: ...

    def ensure_internal_topic(self, name: str, partitions: int, configs: dict[str, str]) -> None: ...

    def internal_client(self, purpose: str) -> ClusterClient: ...

    def log_config(self, configs: dict[str, str] | None = None) -> LogConfig:
        """The log settings a partition with these topic configs runs with."""
        ...


class Elastic(Node, Protocol):
    """What the roster and replica moves (node/roster.py, node/moves.py) use besides:
    every replica, the peer links and their failure detector."""

    credential: PeerCredential
    tls: NodeTLS
    transport: PeerTransport
    liveness: PeerLiveness
    replicas: dict[int, Replica]
    leaders: dict[int, tuple[int, int]]  # group -> (leader, term), as this node last heard
    kafka_addrs: dict[int, str]  # node -> the Kafka address it gossiped

    def transfer_target(self, r: Replica) -> int | None: ...


def now_ms() -> int:
    """Wall-clock epoch milliseconds: what records, due times and expiries are stamped with."""
    return int(time.time() * 1000)


def check_name(what: str, value: object) -> str:
    """A group, member, transactional id or topic name in a request: a short string."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME:
        raise InvalidRequestError(f"{what} must be a string of 1-{MAX_NAME} characters, got {value!r}")
    return value
