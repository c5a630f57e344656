"""The coordinator runtime: one owner for what every coordinator on a node needs.

Groups, transactions, half messages and delay tiers are each a `Service` whose state
lives in the partitions of internal topics it owns, one `Shard` per partition (Kafka's
`CoordinatorRuntime` over `CoordinatorShard`s is the model). The runtime:

- gives each new partition of an owned topic its shard (the broker asks `shard_for`);
- creates the internal topics (on the controller leader, until they exist);
- opens a service's internal client when it needs one (to write to other partitions);
- runs one janitor: every `JANITOR_INTERVAL_S` each service sweeps the partitions it
  leads and has caught up on (so its shards are complete), and a service with work per
  partition and term (`lead`) gets one task per led partition, cancelled when the lead
  or the term goes (`node.leadership`);
- merges the services' request handlers for the API.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, ClassVar, Generic, NamedTuple, TypeVar

import trio

from node.leadership import LeaderTasks
from node.partition import Partition, Shard, ShardFactory

if TYPE_CHECKING:
    from client.cluster import ClusterClient
    from node.context import Node, NodeContext
    from node.metadata import TopicMeta

log = logging.getLogger(__name__)

JANITOR_INTERVAL_S = 0.1

Handlers = dict[type, Callable[[Any], Awaitable[Any]]]


L = TypeVar("L")


class CoordinatorShard(Shard, Generic[L], abc.ABC):
    """A shard that serves requests while this node leads its partition. Its live state
    (members' heartbeats, per-id locks: what is not replicated) belongs to one Raft
    term: built on first use once the leader has caught up, dropped when leadership or
    the term changes, so nothing carries from one term into the next, where another
    leader may have worked. A request keeps the live state it started with and checks
    `is_coordinating` after every wait."""

    def __init__(self, part: Partition) -> None:
        super().__init__(part)
        self._live: L | None = None
        self._live_term = -1

    @abc.abstractmethod
    def new_live(self, term: int) -> L:
        """The live state of a new term, from what the log holds."""

    def coordination(self) -> L:
        term = self.part.core.term
        if self._live is None or self._live_term != term:
            self._live, self._live_term = self.new_live(term), term
        return self._live

    def is_coordinating(self, live: L) -> bool:
        part = self.part
        return self._live is live and self._live_term == part.core.term and part.ready_for_writes() and not part.closed

    def role_changed(self) -> None:
        self._live = None


class InternalTopic(NamedTuple):
    name: str
    partitions: int
    configs: dict[str, str]


class Service:
    """A coordinator on the runtime. Subclasses override what they use; the defaults
    own no topic and do nothing."""

    #: Names the service's internal client (`node-N-<purpose>`) and its log lines.
    purpose: ClassVar[str]
    #: Whether it writes through the cluster (delay moves, half relays, txn markers).
    needs_client: ClassVar[bool] = False
    #: Whether it runs `lead` on each partition it leads.
    leads_partitions: ClassVar[bool] = False

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        #: The internal client, once the runtime opened it (with `needs_client`).
        self.cluster: ClusterClient | None = None

    def topics(self) -> list[InternalTopic]:
        """The internal topics it needs created."""
        return []

    def shard(self, meta: TopicMeta) -> ShardFactory | None:
        """The state machine for the partitions of `meta`, if the service owns it."""
        return None

    def handlers(self) -> Handlers:
        return {}

    def sweep(self, led: list[Partition], nursery: trio.Nursery) -> None:
        """One janitor pass over the caught-up partitions this node leads."""

    async def lead(self, part: Partition) -> None:
        """Work on one led partition for one term (with `leads_partitions`)."""


class CoordinatorRuntime:
    def __init__(self, node: Node, services: list[Service]) -> None:
        self._node = node
        self.services = services
        self._owner: dict[str, Service] = {}  # topic -> the service that owns it
        self._leading = {s.purpose: LeaderTasks(s.purpose, s.lead) for s in services if s.leads_partitions}

    def shard_for(self, meta: TopicMeta) -> ShardFactory | None:
        for s in self.services:
            factory = s.shard(meta)
            if factory is not None:
                self._owner[meta.name] = s
                return factory
        return None

    def handlers(self) -> Handlers:
        out: Handlers = {}
        for s in self.services:
            out.update(s.handlers())
        return out

    async def run(self) -> None:
        async with AsyncExitStack() as stack:
            for s in self.services:
                if s.needs_client:
                    s.cluster = await stack.enter_async_context(self._node.internal_client(s.purpose))
            nursery = await stack.enter_async_context(trio.open_nursery())
            while True:
                await trio.sleep(JANITOR_INTERVAL_S)
                if not self._node.shutting_down:
                    self.janitor(nursery)

    def janitor(self, nursery: trio.Nursery) -> None:
        node = self._node
        for t in (t for s in self.services for t in s.topics()):
            node.ensure_internal_topic(t.name, t.partitions, t.configs)
        # Only the internal topics' partitions: a node's thousands of data partitions
        # cost the janitor nothing.
        owned: dict[str, list[Partition]] = {s.purpose: [] for s in self.services}
        for topic, owner in list(self._owner.items()):
            meta = node.state.topics.get(topic)
            for p in range(len(meta.replicas) if meta is not None else 0):
                part = node.partitions.get((topic, p))
                if part is not None and part.shard is not None:
                    owned[owner.purpose].append(part)
        for s in self.services:
            parts = owned[s.purpose]
            s.sweep([p for p in parts if p.ready_for_writes() and not p.closed], nursery)
            tasks = self._leading.get(s.purpose)
            if tasks is not None:
                tasks.reconcile(nursery, parts)
