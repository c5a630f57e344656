"""A message's whole life, derived from what the cluster keeps anyway: the record and
its batch (when, by which producer, in which transaction and how it ended), and for
every consumer group of its topic the group's committed offset, its retry topic, its
dead-letter topic and its replays. Nothing is written on the hot path to make this.

`derive` is the pure part (tests build its inputs by hand); `trace_message` and
`find_by_key` read the cluster, with bounded scans (`scan_limit` records a partition).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import anyio

from client.cluster import ClusterClient
from client.conventions import (
    H_ATTEMPT,
    H_DELAY_VIA,
    H_DLQ_ERROR,
    H_DLQ_TIME,
    H_ORIGIN_OFFSET,
    H_ORIGIN_PARTITION,
    H_ORIGIN_TOPIC,
    H_REPLAYED_FROM,
    H_RUN_ERROR,
    H_RUN_GROUP,
    H_RUN_MEMBER,
    H_RUN_MS,
    H_RUN_OUTCOME,
    H_RUN_START,
    RUNS_TOPIC,
    dead_letter_topic,
    dlq_decision,
    retry_topic,
    run_key,
)
from client.errors import AuthorizationFailedError, TideMQError, UnknownTopicError
from client.group import fetch_offsets, list_groups
from client.partitioner import partition_for_key
from client.protocol import (
    EARLIEST,
    LATEST,
    READ_COMMITTED,
    READ_UNCOMMITTED,
    Fetch,
    FetchPartition,
    ListOffsets,
)
from segments.batch import decode_records, iter_batches

SCAN_LIMIT = 100_000  # records read from one partition at most, in any scan
NO_GROUP = "(no group)"  # stands for the runs of consumers outside any group


class Stored(NamedTuple):
    """A record as the log holds it, with its batch's facts."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    producer_id: int
    transactional: bool


class Step(NamedTuple):
    time_ms: int | None
    what: str  # produced | delayed | handled | retry | dead letter | replayed | discarded
    detail: str


class GroupFate(NamedTuple):
    group: str
    status: str  # not yet delivered | delivered | done | retrying | dead letter | replayed | discarded
    detail: str


class GroupView(NamedTuple):
    """What one group's offsets, retry and dead-letter topics say about one message
    (its retries and dead letters in the order they were made)."""

    committed: int | None  # the group's next offset on the message's partition
    retries: list[Stored] = []  # its records in the group's retry topic
    dead: list[Stored] = []  # its records in the group's dead-letter topic
    positions: dict[tuple[str, int], int | None] = {}  # committed offsets of the retry and dead-letter partitions
    replays: list[Stored] = []  # records replayed from those dead letters
    # dead letter (partition, offset) -> (decision, reason, when)
    decisions: dict[tuple[int, int], tuple[str, str, int]] = {}
    runs: list[Stored] = []  # its handler runs (`Consumer.run(trace=True)`), oldest first


class Trace(NamedTuple):
    message: Stored
    outcome: str  # "" (not transactional) | committed | aborted | open
    steps: list[Step]
    groups: list[GroupFate]


def _int(h: dict[str, bytes | None], name: str) -> int:
    try:
        return int(h.get(name) or b"0")
    except ValueError:
        return 0


def fate(group: str, offset: int, view: GroupView) -> GroupFate:
    """Where the message stands for one group."""
    if view.dead:
        last = view.dead[-1]
        h = dict(last.headers)
        decision, reason, _ = view.decisions.get((last.partition, last.offset), ("", "", 0))
        if decision == "discarded":
            return GroupFate(group, "discarded", f"by hand from {last.topic}-{last.partition}@{last.offset}: {reason}")
        replayed = [r for r in view.replays if dict(r.headers).get(H_REPLAYED_FROM) == _coords(last).encode()]
        if replayed:
            r = replayed[-1]
            return GroupFate(group, "replayed", f"sent back to {r.topic}-{r.partition} at offset {r.offset}")
        done = view.positions.get((last.topic, last.partition))
        if done is not None and done > last.offset:
            return GroupFate(group, "replayed", f"sent back to {_origin_topic(last)} by a replay")
        error = (h.get(H_DLQ_ERROR) or b"").decode(errors="replace")
        return GroupFate(group, "dead letter", f"after {_int(h, H_ATTEMPT)} attempt(s): {error}")
    if view.retries:
        last = view.retries[-1]
        attempt = _int(dict(last.headers), H_ATTEMPT)
        done = view.positions.get((last.topic, last.partition))
        if done is not None and done > last.offset:
            return GroupFate(group, "done", f"handled on attempt {attempt + 1}")
        return GroupFate(group, "retrying", f"attempt {attempt + 1} due at {last.timestamp} ms")
    if view.committed is not None and view.committed > offset:
        return GroupFate(group, "done", f"committed (the group is at offset {view.committed})")
    if view.runs:
        latest = dict(view.runs[-1].headers)
        outcome = (latest.get(H_RUN_OUTCOME) or b"?").decode(errors="replace")
        pending = "a consumer outside a group commits nothing" if group == NO_GROUP else "not committed yet"
        return GroupFate(group, "delivered", f"handled {len(view.runs)} time(s), the last {outcome}; {pending}")
    at = "nothing committed yet" if view.committed is None else f"the group is at offset {view.committed}"
    return GroupFate(group, "not yet delivered", at)


def derive(message: Stored, outcome: str, groups: dict[str, GroupView]) -> Trace:
    """The trace: the message's steps in time order and each group's status."""
    producer = f"producer {message.producer_id}" if message.producer_id >= 0 else "a producer without id"
    txn = f", in a transaction ({outcome})" if message.transactional else ""
    delayed = _delayed(message)
    if delayed is None:
        steps = [Step(message.timestamp, "produced", f"by {producer}{txn}")]
    else:
        sent, tiers = delayed
        steps = [
            Step(sent, "produced", f"with a delay, into {tiers[0] if tiers else 'a delay tier'}"),
            Step(message.timestamp, "delayed", f"due, through {', '.join(tiers)}; written by {producer}"),
        ]
    for group, view in groups.items():
        for r in view.retries:
            attempt = _int(dict(r.headers), H_ATTEMPT)
            steps.append(
                Step(r.timestamp, "retry", f"{group}: attempt {attempt + 1} ({r.topic}-{r.partition}@{r.offset})")
            )
        for d in view.dead:
            h = dict(d.headers)
            error = (h.get(H_DLQ_ERROR) or b"").decode(errors="replace")
            when = _int(h, H_DLQ_TIME) or d.timestamp
            steps.append(Step(when, "dead letter", f"{group}: {error} ({d.topic}-{d.partition}@{d.offset})"))
        for r in view.replays:
            steps.append(Step(r.timestamp, "replayed", f"{group}: to {r.topic}-{r.partition}@{r.offset}"))
        for r in view.runs:
            h = dict(r.headers)
            ran = (h.get(H_RUN_OUTCOME) or b"?").decode(errors="replace")
            error = (h.get(H_RUN_ERROR) or b"").decode(errors="replace")
            member = (h.get(H_RUN_MEMBER) or b"").decode(errors="replace") or "a consumer"
            detail = f"{group}: {member}, {_int(h, H_RUN_MS)} ms, {ran}{': ' + error if error else ''}"
            steps.append(Step(_int(h, H_RUN_START) or r.timestamp, "handled", detail))
        for (p, o), (decision, reason, when) in view.decisions.items():
            if decision == "discarded":
                steps.append(Step(when, "discarded", f"{group}: {view.dead[0].topic}-{p}@{o}: {reason}"))
    steps.sort(key=lambda s: (s.time_ms is None, s.time_ms or 0))
    return Trace(message, outcome, steps, [fate(g, message.offset, v) for g, v in sorted(groups.items())])


def _delayed(message: Stored) -> tuple[int, list[str]] | None:
    """(sent ms, tiers passed) of a message that came through the delay tiers."""
    via = dict(message.headers).get(H_DELAY_VIA)
    sent, _, tiers = (via or b"").decode(errors="replace").partition(";")
    if not via or not sent.isdigit():
        return None
    return int(sent), [t for t in tiers.split(",") if t]


def _attempt_order(s: Stored) -> tuple[int, int]:
    return _int(dict(s.headers), H_ATTEMPT), s.timestamp


def _coords(s: Stored) -> str:
    return f"{s.topic}/{s.partition}/{s.offset}"


def _origin_topic(dead: Stored) -> str:
    return (dict(dead.headers).get(H_ORIGIN_TOPIC) or b"?").decode(errors="replace")


def is_origin(s: Stored, topic: str, partition: int, offset: int) -> bool:
    """Whether a retry or dead letter stands for topic-partition@offset."""
    h = dict(s.headers)
    return (
        h.get(H_ORIGIN_TOPIC) == topic.encode()
        and h.get(H_ORIGIN_PARTITION) == str(partition).encode()
        and h.get(H_ORIGIN_OFFSET) == str(offset).encode()
    )


# -- reading the cluster -----------------------------------------------------------------------


async def _end(cluster: ClusterClient, topic: str, p: int, which: int) -> int:
    return (await cluster.leader_request(topic, p, ListOffsets(topic, p, which))).offset


async def read_partition(
    cluster: ClusterClient,
    topic: str,
    p: int,
    start: int | None = None,
    *,
    limit: int = SCAN_LIMIT,
    keep: Callable[[Stored], bool] = lambda s: True,
    isolation: int = READ_UNCOMMITTED,
    control: Callable[[int, list[Any]], None] | None = None,
) -> list[Stored]:
    """The records of a partition from `start` (the log start) to its end as it is now,
    `limit` at most, those `keep` wants; `control(offset, records)` sees each control
    batch on the way."""
    first = await _end(cluster, topic, p, EARLIEST)
    pos, end = max(first, start if start is not None else first), await _end(cluster, topic, p, LATEST)
    out: list[Stored] = []
    read = 0
    while pos < end and read < limit:
        body = Fetch([FetchPartition(topic, p, pos, 1024 * 1024)], max_wait_ms=0, isolation=isolation)
        res = (await cluster.leader_request(topic, p, body)).results[0]
        if res.error:
            break
        moved = False
        for header, batch in iter_batches(res.records, allow_partial=True):
            if header.last_offset < pos:
                continue
            moved, pos = True, header.next_offset
            if header.is_control:
                if control is not None:
                    control(header.base_offset, decode_records(batch))
                continue
            for rec in decode_records(batch):
                read += 1
                s = Stored(
                    topic,
                    p,
                    rec.offset,
                    rec.timestamp,
                    rec.key,
                    rec.value,
                    list(rec.headers),
                    header.producer_id,
                    header.is_transactional,
                )
                if rec.offset >= (start or 0) and keep(s):
                    out.append(s)
        if not moved:
            break
    return out


async def read_one(cluster: ClusterClient, topic: str, p: int, offset: int) -> tuple[Stored, str] | None:
    """The record at `offset` and its transaction's outcome; None if there is none
    (a control entry, or outside the log)."""
    found = await read_partition(cluster, topic, p, offset, limit=1, keep=lambda s: s.offset == offset)
    if not found:
        return None
    s = found[0]
    if not s.transactional:
        return s, ""
    lso = await cluster.leader_request(topic, p, ListOffsets(topic, p, LATEST, READ_COMMITTED))
    if offset >= lso.offset:
        return s, "open"
    committed = await read_partition(
        cluster, topic, p, offset, limit=1, keep=lambda r: r.offset == offset, isolation=READ_COMMITTED
    )
    return s, "committed" if committed else "aborted"


async def _topic_records(cluster: ClusterClient, topic: str, keep: Callable[[Stored], bool]) -> list[Stored]:
    try:
        n = await cluster.partition_count(topic)
    except UnknownTopicError:
        return []
    out: list[Stored] = []
    for p in range(n):
        out += await read_partition(cluster, topic, p, keep=keep)
    return out


async def group_view(cluster: ClusterClient, group: str, message: Stored) -> GroupView:
    t, p, o = message.topic, message.partition, message.offset
    committed = (await fetch_offsets(cluster, group, [(t, p)])).get((t, p))
    mine = lambda s: is_origin(s, t, p, o)  # noqa: E731
    # (in the order they happened: a retry topic's partitions are read one after another)
    retries = sorted(await _topic_records(cluster, retry_topic(group), mine), key=_attempt_order)
    in_dlq = await _topic_records(
        cluster, dead_letter_topic(group), lambda s: mine(s) or dlq_decision(s.headers) is not None
    )
    dead = sorted((s for s in in_dlq if mine(s)), key=_attempt_order)
    letters = {(d.partition, d.offset) for d in dead}
    decisions = {
        (s.partition, d[0]): (d[1], d[2], s.timestamp)
        for s in in_dlq
        if (d := dlq_decision(s.headers)) is not None and (s.partition, d[0]) in letters
    }
    positions: dict[tuple[str, int], int | None] = {}
    if retries:
        positions.update(await fetch_offsets(cluster, group, {(r.topic, r.partition) for r in retries}))
    replays: list[Stored] = []
    if dead:
        replay_group = f"{group}.dlq-replay"
        positions.update(await fetch_offsets(cluster, replay_group, {(d.topic, d.partition) for d in dead}))
        marks = {_coords(d).encode() for d in dead}
        replays = await read_partition(cluster, t, p, keep=lambda s: dict(s.headers).get(H_REPLAYED_FROM) in marks)
    return GroupView(committed, retries, dead, positions, replays, decisions)


async def handler_runs(cluster: ClusterClient, message: Stored) -> dict[str, list[Stored]]:
    """The message's handler runs by group, from RUNS_TOPIC: only the partition its key
    goes to, from the time the message was written on (runs come after it)."""
    key = run_key(message.topic, message.partition, message.offset)
    try:
        p = partition_for_key(key, await cluster.partition_count(RUNS_TOPIC))
        since = ListOffsets(RUNS_TOPIC, p, max(message.timestamp - 60_000, 0))
        start = (await cluster.leader_request(RUNS_TOPIC, p, since)).offset
        runs = await read_partition(cluster, RUNS_TOPIC, p, start, keep=lambda s: s.key == key)
    except (UnknownTopicError, AuthorizationFailedError):
        return {}  # (none recorded yet, or not ours to read)
    out: dict[str, list[Stored]] = {}
    for r in runs:
        out.setdefault((dict(r.headers).get(H_RUN_GROUP) or b"").decode(errors="replace"), []).append(r)
    return out


async def groups_of(cluster: ClusterClient, topic: str, partition: int) -> list[str]:
    """The groups that have committed an offset of this partition (a group's own retry
    and replay bookkeeping groups left out)."""
    out = []
    for g in sorted(await list_groups(cluster)):
        if g.endswith(".dlq-replay"):
            continue
        try:
            committed = await fetch_offsets(cluster, g)
        except TideMQError:
            continue
        if any(tp[0] == topic and tp[1] == partition for tp in committed):
            out.append(g)
    return out


async def trace_message(cluster: ClusterClient, topic: str, partition: int, offset: int) -> Trace | None:
    """The trace of the record at topic-partition@offset; None if there is none."""
    found = await read_one(cluster, topic, partition, offset)
    if found is None:
        return None
    message, outcome = found
    views = {}
    runs = await handler_runs(cluster, message)
    if "" in runs:  # no offsets, retries or dead letters to look up for these
        views[NO_GROUP] = GroupView(None, runs=runs.pop(""))
    async with anyio.create_task_group() as tg:

        async def one(g: str) -> None:
            views[g] = (await group_view(cluster, g, message))._replace(runs=runs.get(g, []))

        for g in sorted(set(await groups_of(cluster, topic, partition)) | set(runs)):
            tg.start_soon(one, g)
    return derive(message, outcome, views)


async def find_by_key(cluster: ClusterClient, topic: str, key: bytes, *, limit: int = SCAN_LIMIT) -> list[Stored]:
    """The records with this key, in the partition keys hash to (as every keyed send
    without its own partition goes), among its newest `limit` offsets."""
    home = partition_for_key(key, await cluster.partition_count(topic))
    return await read_partition(
        cluster, topic, home, await newest(cluster, topic, home, limit), keep=lambda s: s.key == key
    )


async def newest(cluster: ClusterClient, topic: str, partition: int, count: int) -> int:
    """Where a partition's newest `count` offsets start."""
    return max((await _end(cluster, topic, partition, LATEST)) - count, 0)
