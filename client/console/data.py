"""What the console's pages show, read from the cluster through the client library as
the logged-in principal. Every read is bounded (NODE_ANSWER_S a node), so one stuck node
makes a page slower and partial, never hang.

Rates come from the log's own time index (ListOffsets by time: the offset of the first
record at or after a time), so the console keeps no history of its own for them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import anyio

from client.admin import Admin
from client.conventions import TIER_CONFIG, TIER_PREFIX, dead_letter_topic
from client.errors import TideMQError
from client.group import describe_group, list_groups
from client.protocol import (
    EARLIEST,
    LATEST,
    DescribeGroupResponse,
    ListOffsets,
    Metadata,
    MetadataResponse,
    PartitionInfo,
    TopicInfo,
)

NODE_ANSWER_S = 3.0
T = TypeVar("T")


async def bounded(make: Callable[[], Awaitable[T]], default: T, seconds: float = NODE_ANSWER_S) -> T:
    """`make()`'s result, or `default` if it fails or takes longer than `seconds`."""
    with anyio.move_on_after(seconds):
        try:
            return await make()
        except TideMQError:
            return default
    return default


@dataclass
class PartitionRow:
    topic: str
    partition: int
    leader: int | None
    replicas: list[int]
    in_sync: list[int]
    high_watermark: int | None
    log_start: int | None

    @property
    def under_replicated(self) -> bool:
        return self.leader is not None and set(self.in_sync) != set(self.replicas)


@dataclass
class ClusterView:
    md: MetadataResponse
    partitions: list[PartitionRow]

    @property
    def leaderless(self) -> list[PartitionRow]:
        return [p for p in self.partitions if p.leader is None]

    @property
    def under_replicated(self) -> list[PartitionRow]:
        return [p for p in self.partitions if p.under_replicated]

    def topic(self, name: str) -> TopicInfo | None:
        return next((t for t in self.md.topics if t.name == name), None)


async def cluster_view(admin: Admin, topics: list[str] | None = None) -> ClusterView:
    """Every partition as its leader reports it (only a leader knows the in-sync set and
    the high watermark): metadata from one node, then from each node at once."""
    md = await admin.cluster.refresh_metadata(topics)
    answers: dict[int, MetadataResponse] = {}

    async def ask(node: int, addr: str) -> None:
        got = await bounded(lambda: admin.cluster.request(addr, Metadata(topics)), None)
        if got is not None:
            answers[node] = got

    async with anyio.create_task_group() as tg:
        for n in md.nodes:
            if n.alive:
                tg.start_soon(ask, n.node_id, n.addr)
    rows = []
    for t in md.topics:
        for p in t.partitions:
            mine = _leaders_view(answers.get(p.leader) if p.leader else None, t.name, p)
            rows.append(
                PartitionRow(
                    t.name,
                    p.partition,
                    p.leader,
                    list(p.replicas),
                    list(mine.in_sync) if mine else [],
                    mine.high_watermark if mine else None,
                    mine.log_start_offset if mine else None,
                )
            )
    return ClusterView(md, rows)


def _leaders_view(answer: MetadataResponse | None, topic: str, p: PartitionInfo) -> PartitionInfo | None:
    theirs = next((t for t in answer.topics if t.name == topic), None) if answer else None
    if theirs is None or p.partition >= len(theirs.partitions):
        return None
    mine = theirs.partitions[p.partition]
    return mine if mine.leader == p.leader else None


# -- rates from the time index -------------------------------------------------------------------


async def offset_at(admin: Admin, topic: str, partition: int, when_ms: int) -> int | None:
    """The first offset at or after `when_ms` (the end if none), from the time index."""
    body = ListOffsets(topic, partition, when_ms)
    got = await bounded(lambda: admin.cluster.leader_request(topic, partition, body), None)
    return None if got is None else got.offset


async def counts_per_bucket(admin: Admin, topic: str, partitions: int, edges_ms: list[int]) -> list[int]:
    """Messages written to `topic` between consecutive edges (offsets, so control
    entries count too: close enough for a chart)."""
    totals = [0] * (len(edges_ms) - 1)

    async def one(p: int) -> None:
        offsets = [await offset_at(admin, topic, p, t) for t in edges_ms]
        for i in range(len(totals)):
            a, b = offsets[i], offsets[i + 1]
            if a is not None and b is not None:
                totals[i] += max(b - a, 0)

    async with anyio.create_task_group() as tg:
        for p in range(partitions):
            tg.start_soon(one, p)
    return totals


def edges(now_ms: int, step_ms: int, count: int) -> list[int]:
    """`count` buckets of `step_ms` ending now, as count+1 edges."""
    return [now_ms - (count - i) * step_ms for i in range(count + 1)]


# -- groups ------------------------------------------------------------------------------------


@dataclass
class GroupRow:
    name: str
    desc: DescribeGroupResponse | None
    lag: dict[tuple[str, int], int] = field(default_factory=dict)  # per partition

    @property
    def total_lag(self) -> int:
        return sum(self.lag.values())


async def groups(admin: Admin, view: ClusterView) -> list[GroupRow]:
    """Every group (internal bookkeeping groups left out) with its lag per partition."""
    names = await bounded(lambda: list_groups(admin.cluster), list[str]())
    hw = {(p.topic, p.partition): p.high_watermark for p in view.partitions}
    rows = {n: GroupRow(n, None) for n in sorted(names) if not n.endswith(".dlq-replay")}

    async def one(row: GroupRow) -> None:
        row.desc = await bounded(lambda: describe_group(admin.cluster, row.name), None)
        for t, p, committed in row.desc.offsets if row.desc else []:
            end = hw.get((t, p))
            if end is not None:
                row.lag[(t, p)] = max(end - committed, 0)

    async with anyio.create_task_group() as tg:
        for row in rows.values():
            tg.start_soon(one, row)
    return list(rows.values())


# -- what waits ------------------------------------------------------------------------------


def records_in(view: ClusterView, topic: str) -> int:
    """Records a topic holds now (high watermark minus log start, over its partitions)."""
    return sum(
        (p.high_watermark or 0) - (p.log_start or 0)
        for p in view.partitions
        if p.topic == topic and p.high_watermark is not None
    )


def dead_letter_counts(view: ClusterView, group_names: list[str]) -> dict[str, int]:
    return {g: records_in(view, dead_letter_topic(g)) for g in group_names if view.topic(dead_letter_topic(g))}


def tier_backlog(view: ClusterView) -> list[tuple[str, int, int]]:
    """(tier, its delay in ms, records it holds) of each delay tier, shortest first (the
    records a tier holds; how far its scheduler got is the scheduler's own)."""
    tiers = []
    for t in view.md.topics:
        if t.name.startswith(TIER_PREFIX):
            try:
                ms = int(t.configs.get(TIER_CONFIG, ""))
            except ValueError:
                continue
            tiers.append((t.name, ms, records_in(view, t.name)))
    return sorted(tiers, key=lambda tier: tier[1])


def now_ms() -> int:
    return int(time.time() * 1000)


async def end_offsets(admin: Admin, topic: str, partition: int) -> tuple[int | None, int | None]:
    """(log start, high watermark) of a partition."""
    first = await bounded(
        lambda: admin.cluster.leader_request(topic, partition, ListOffsets(topic, partition, EARLIEST)), None
    )
    last = await bounded(
        lambda: admin.cluster.leader_request(topic, partition, ListOffsets(topic, partition, LATEST)), None
    )
    return (first.offset if first else None, last.offset if last else None)


def pretty_value(data: bytes | None) -> tuple[str, str]:
    """(kind, text) of a key or value for a page: JSON pretty-printed, text, or hex."""
    if data is None:
        return "null", ""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return "hex", data.hex(" ")
    try:
        return "json", json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return "text", text


def age(ms: int | None, now: int | None = None) -> str:
    if ms is None or ms <= 0:
        return "-"
    s = max(((now or now_ms()) - ms) / 1000, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s / size:.1f}{unit}"
    return f"{s:.1f}s"
