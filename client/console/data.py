"""What the console's pages show, read from the cluster through the client library as
the logged-in principal. Every read is bounded (NODE_ANSWER_S a node), so one stuck node
makes a page slower and partial, never hang.

Rates come from the log's own time index (ListOffsets by time: the offset of the first
record at or after a time), so the console keeps no history of its own for them.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import anyio
import msgspec

from client.admin import NODE_ANSWER_S, Admin, leader_view
from client.conventions import (
    H_DELAY_DUE,
    H_DELAY_TARGET,
    TIER_CONFIG,
    TIER_PREFIX,
    dead_letter_topic,
    dlq_decision,
)
from client.errors import TideMQError
from client.group import describe_group, fetch_offsets, list_groups
from client.protocol import (
    DescribeGroupResponse,
    ListOffsets,
    MetadataResponse,
    TopicInfo,
)
from client.trace import Stored, read_partition

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
    size_bytes: int | None = None  # on the leader's disk

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
    md, answers = await admin.survey(topics, node_timeout=NODE_ANSWER_S)
    rows = []
    for t in md.topics:
        for p, known in leader_view(t, answers):
            rows.append(
                PartitionRow(
                    t.name,
                    p.partition,
                    p.leader,
                    list(p.replicas),
                    list(p.in_sync) if known else [],
                    p.high_watermark if known else None,
                    p.log_start_offset if known else None,
                    p.size_bytes if known and p.size_bytes >= 0 else None,
                )
            )
    return ClusterView(md, rows)


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


DELAY_CHECKPOINT = 100  # the control type of a tier scheduler's progress (segments.control.ControlType)


@dataclass
class Tier:
    name: str
    delay_ms: int
    pending: list[tuple[int, str]]  # (due ms, target topic) of each record not moved on yet


async def tiers(admin: Admin, view: ClusterView) -> list[Tier]:
    """Each delay tier, shortest first, with the records its scheduler has not moved on
    yet: those after its latest checkpoint (written every so often, so a few just moved
    may still show), with their due times and targets."""
    out = []
    for t in view.md.topics:
        if t.name.startswith(TIER_PREFIX):
            try:
                delay_ms = int(t.configs.get(TIER_CONFIG, ""))
            except ValueError:
                continue
            pending = [due for p in range(len(t.partitions)) for due in await _tier_pending(admin, t.name, p)]
            out.append(Tier(t.name, delay_ms, sorted(pending)))
    return sorted(out, key=lambda tier: tier.delay_ms)


async def _tier_pending(admin: Admin, tier: str, p: int) -> list[tuple[int, str]]:
    moved_to = 0

    def checkpoint(_offset: int, records: list) -> None:
        nonlocal moved_to
        first = records[0] if records else None
        if first is not None and first.key and struct.unpack(">hh", first.key[:4])[1] == DELAY_CHECKPOINT:
            moved_to = msgspec.msgpack.decode(first.value or b"\x90")[0]

    records = await bounded(lambda: read_partition(admin.cluster, tier, p, control=checkpoint), list[Stored]())
    out = []
    for r in records:
        if r.offset >= moved_to:
            h = dict(r.headers)
            out.append((int(h.get(H_DELAY_DUE) or b"0"), (h.get(H_DELAY_TARGET) or b"?").decode(errors="replace")))
    return out


def now_ms() -> int:
    return int(time.time() * 1000)


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


async def dead_letter_counts(admin: Admin, view: ClusterView, group_names: list[str]) -> dict[str, int]:
    """Dead letters per group still waiting for someone: in `<group>.dlq`, neither
    replayed (with the others, or alone) nor discarded."""
    out = {}
    for g in group_names:
        info = view.topic(dead_letter_topic(g))
        if info is None:
            continue
        none: dict[tuple[str, int], int | None] = {}
        replayed = await bounded(lambda: fetch_offsets(admin.cluster, f"{g}.dlq-replay"), none)  # noqa: B023
        waiting = 0
        for p in range(len(info.partitions)):
            records = await bounded(lambda: read_partition(admin.cluster, info.name, p), list[Stored]())  # noqa: B023
            decisions = {r.offset: dlq_decision(r.headers) for r in records}
            decided = {d[0] for d in decisions.values() if d is not None}
            start = replayed.get((info.name, p)) or 0
            waiting += sum(
                1 for r in records if r.offset >= start and decisions[r.offset] is None and r.offset not in decided
            )
        out[g] = waiting
    return out


def size_text(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
