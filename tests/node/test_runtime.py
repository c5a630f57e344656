"""The coordinator runtime with a toy service over fake partitions: which partitions get
which shard, what the janitor asks of the node, which partitions a sweep sees, and the
per-term life of leader tasks and of a coordinator shard's live state."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import trio
import trio.testing

from node.metadata import TopicMeta
from node.partition import Shard
from node.runtime import CoordinatorRuntime, CoordinatorShard, InternalTopic, Service


@dataclass
class FakePartition:
    topic: str
    partition: int
    group: int
    leader: bool = False
    caught_up: bool = False
    closed: bool = False
    term: int = 1
    shard: Shard | None = None
    core: SimpleNamespace = field(default_factory=SimpleNamespace)

    def __post_init__(self) -> None:
        self.core.term = self.term

    @property
    def name(self) -> str:
        return f"{self.topic}-{self.partition}"

    @property
    def is_leader(self) -> bool:
        return self.leader

    def ready_for_writes(self) -> bool:
        return self.leader and self.caught_up

    def elect(self, term: int, caught_up: bool = True) -> None:
        self.leader, self.caught_up, self.core.term = True, caught_up, term


class FakeNode:
    def __init__(self) -> None:
        self.partitions: dict[tuple[str, int], FakePartition] = {}
        self.state = SimpleNamespace(topics={})  # name -> TopicMeta
        self.shutting_down = False
        self.created: list[InternalTopic] = []

    def ensure_internal_topic(self, name: str, partitions: int, configs: dict[str, str]) -> None:
        self.created.append(InternalTopic(name, partitions, configs))


class Counter(CoordinatorShard[list[int]]):
    def new_live(self, term: int) -> list[int]:
        return [term]


class Toy(Service):
    purpose = "toy"
    leads_partitions = True

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.swept: list[list[str]] = []
        self.leading: list[tuple[str, int]] = []
        self.stopped: list[tuple[str, int]] = []

    def topics(self) -> list[InternalTopic]:
        return [InternalTopic("__toy", 2, {"segment.bytes": "1024"})]

    def shard(self, meta: TopicMeta):
        return Counter if meta.name == "__toy" else None

    def handlers(self):
        return {int: self.lead}

    def sweep(self, led, nursery) -> None:
        self.swept.append(sorted(p.name for p in led))

    async def lead(self, part) -> None:
        term = part.core.term
        self.leading.append((part.name, term))
        try:
            await trio.sleep_forever()
        finally:
            self.stopped.append((part.name, term))


def meta(name: str) -> TopicMeta:
    return TopicMeta(name, first_group=10, replicas=[[1], [1]], internal=True)


def attach(node: FakeNode, runtime: CoordinatorRuntime, topic: str) -> list[FakePartition]:
    node.state.topics[topic] = meta(topic)
    factory = runtime.shard_for(node.state.topics[topic])
    parts = []
    for p in range(2):
        part = FakePartition(topic, p, group=10 + p)
        part.shard = factory(part) if factory is not None else None  # type: ignore[arg-type]
        node.partitions[(topic, p)] = part
        parts.append(part)
    return parts


async def test_the_runtime_gives_shards_creates_topics_and_sweeps_only_what_it_leads():
    node = FakeNode()
    toy = Toy(node)
    runtime = CoordinatorRuntime(node, [toy])  # type: ignore[arg-type]
    assert runtime.handlers() == {int: toy.lead}
    mine = attach(node, runtime, "__toy")
    other = attach(node, runtime, "user")
    assert all(isinstance(p.shard, Counter) for p in mine) and all(p.shard is None for p in other)

    async with trio.open_nursery() as nursery:
        runtime.janitor(nursery)
        assert node.created == [InternalTopic("__toy", 2, {"segment.bytes": "1024"})]
        assert toy.swept == [[]], "nothing led yet"

        mine[0].elect(term=3, caught_up=False)
        other[0].elect(term=3)
        runtime.janitor(nursery)
        await trio.testing.wait_all_tasks_blocked()
        assert toy.swept[-1] == [] and toy.leading == [], "a leader still catching up is left alone"

        mine[0].caught_up = True
        runtime.janitor(nursery)
        await trio.testing.wait_all_tasks_blocked()
        assert toy.swept[-1] == ["__toy-0"] and toy.leading == [("__toy-0", 3)]

        mine[0].core.term = 4  # re-elected in a later term: the old term's task goes first
        runtime.janitor(nursery)
        await trio.testing.wait_all_tasks_blocked()
        runtime.janitor(nursery)
        await trio.testing.wait_all_tasks_blocked()
        assert toy.stopped == [("__toy-0", 3)] and toy.leading[-1] == ("__toy-0", 4)

        mine[0].leader = False
        runtime.janitor(nursery)
        await trio.testing.wait_all_tasks_blocked()
        assert toy.swept[-1] == [] and toy.stopped[-1] == ("__toy-0", 4)
        nursery.cancel_scope.cancel()


def test_a_coordinator_shards_live_state_lasts_one_term():
    part = FakePartition("__toy", 0, group=10)
    shard = Counter(part)  # type: ignore[arg-type]
    part.elect(term=5)
    live = shard.coordination()
    assert live == [5] and shard.coordination() is live and shard.is_coordinating(live)
    part.core.term = 6
    assert not shard.is_coordinating(live), "a request that began in term 5 must stop"
    fresh = shard.coordination()
    assert fresh == [6] and shard.is_coordinating(fresh)
    shard.role_changed()
    assert not shard.is_coordinating(fresh)
    part.closed = True
    assert not shard.is_coordinating(shard.coordination())
