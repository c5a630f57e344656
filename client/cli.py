"""`tidemq`: topics, producing, consuming, groups and the cluster from a shell.

    tidemq topic create orders --partitions 3 --replication 3 --config retention.ms=86400000
    tidemq topic list | topic describe orders | topic delete orders
    tidemq topic alter orders --config retention.ms=3600000 [--delete-config segment.ms]
    printf 'a\\nb\\n' | tidemq produce orders [--key K | --key-separator :]
    tidemq consume orders [--group G] [--from-beginning] [--max N] [--timeout S] [--format json]
    tidemq consume orders --broadcast [--group G [--instance ID]]
    tidemq group list | group describe G | group delete G
    tidemq txn list | txn describe ID [--format json]
    tidemq user add NAME [--password PW] | user passwd NAME | user delete NAME | user list
    tidemq half list [--group G] [--resolved] [--format json]
    tidemq cluster status

`--bootstrap` (default $TIDEMQ_BOOTSTRAP, else 127.0.0.1:9401) and `--token` (default
$TIDEMQ_TOKEN) go before or after the command. Every failure the cluster reports is one
line on stderr saying what happened and what to do, with exit status 1; usage errors exit
with 2, Ctrl-C with 130.

Tables go to stdout through rich; consumed messages are written plainly (a message's
bytes are never read as markup). Each command runs the async client under trio.
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import json
import os
import sys
import time
from base64 import b64encode
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import IO, Any

import anyio
import msgspec
from rich.console import Console
from rich.table import Table
from rich.text import Text

from client import acls, quotas, trace
from client.admin import NODE_ANSWER_S, Admin, Moving, leader_view, moving
from client.consumer import Consumer, Message, split_instance_group
from client.dlq import decide_dead_letter, list_dead_letters, replay_dead_letters
from client.errors import (
    AuthFailedError,
    ConnectionClosedError,
    GroupNotEmptyError,
    GroupNotFoundError,
    InvalidRequestError,
    TideMQError,
    TopicExistsError,
    UnknownTopicError,
    error_leaves,
)
from client.group import describe_group
from client.producer import Delivery, Producer
from client.protocol import (
    AclBinding,
    AclFilter,
    DescribeGroupResponse,
    HalfInfo,
    ListGroups,
    ListGroupsResponse,
    ListOffsets,
    MetadataResponse,
    TopicInfo,
    TxnInfo,
)
from client.tls import ConnectOptions

DEFAULT_BOOTSTRAP = "127.0.0.1:9401"
COMMIT_INTERVAL_S = 1.0  # how often `consume --group` commits while it runs


class CliError(Exception):
    """A failure explained for the user: the message is printed as the whole error line."""


@dataclass
class Env:
    """What every command gets: where the cluster is, and where to write."""

    bootstrap: str
    token: str | None
    security: ConnectOptions  # --tls-*, --user, --password (each defaults to its TIDEMQ_* variable)
    out: Console  # tables and summaries
    err: Console  # progress spinners (stderr, so stdout stays clean for pipes)
    stdout: IO[str]  # consumed messages, written raw


# -- the shared plumbing -------------------------------------------------------------------------


@asynccontextmanager
async def _admin(env: Env) -> AsyncIterator[Admin]:
    """An Admin that has proven the cluster answers: an unreachable cluster fails here, at
    once and with advice, instead of after an admin call's retries run out."""
    async with Admin(env.bootstrap, token=env.token, client_id="tidemq-cli", **env.security) as admin:
        try:
            await admin.cluster.refresh_metadata([])
        except ConnectionClosedError:
            raise CliError(
                f"cannot reach {env.bootstrap}: is the cluster up? run scripts/cluster up "
                "(or point --bootstrap / TIDEMQ_BOOTSTRAP at a node)"
            ) from None
        yield admin


async def _topic(admin: Admin, name: str) -> TopicInfo:
    try:
        return await admin.describe_topic(name)
    except UnknownTopicError:
        raise CliError(
            f"topic {name!r} does not exist: create it with `tidemq topic create {name}` (see `tidemq topic list`)"
        ) from None


def _partition_table(title: str, topics: list[TopicInfo], answers: dict[int, MetadataResponse]) -> Table:
    table = Table("topic", "partition", "leader", "replicas", "in sync", "high watermark", "log start", title=title)
    for t in topics:
        for p, from_leader in leader_view(t, answers):
            leader = str(p.leader) if p.leader is not None else "none"
            if from_leader:
                table.add_row(
                    t.name,
                    str(p.partition),
                    leader,
                    _ids(p.replicas),
                    _ids(p.in_sync),
                    str(p.high_watermark),
                    str(p.log_start_offset),
                )
            else:  # the leader did not answer (or there is none): its numbers are unknown
                table.add_row(t.name, str(p.partition), leader, _ids(p.replicas), "?", "?", "?")
    return table


def _half_json(h: HalfInfo, now_ms: float) -> dict[str, Any]:
    return {
        "id": f"{h.partition}:{h.offset}",
        "producer_group": h.producer_group,
        "topic": h.topic,
        "key": _json_bytes(h.key),
        "state": h.state,
        "checks": h.checks,
        "age_ms": int(now_ms - h.created_ms),
        "reason": h.reason or None,
        "landed": [h.target_partition, h.target_offset] if h.state == "committed" else None,
    }


async def half_list(env: Env, args: argparse.Namespace) -> None:
    """Pending half messages (and with --resolved the recently decided ones and why),
    from every node; partitions whose coordinator did not answer are named on stderr."""
    async with _admin(env) as admin:
        survey = await admin.list_halves(args.group, resolved=args.resolved, node_timeout=NODE_ANSWER_S)
    if not survey.answered:
        raise CliError(
            "no node listed its half messages: "
            + "; ".join(f"node {n}: {e}" for n, e in sorted(survey.unanswered.items()))
        )
    if survey.uncovered:
        env.err.print(
            f"__half_messages partition(s) {_ids(survey.uncovered)} did not answer; their half messages are missing",
            style="yellow",
        )
    now_ms = time.time() * 1000
    if args.format == "json":
        env.stdout.write(json.dumps([_half_json(h, now_ms) for h in survey.halves]) + "\n")
        return
    if not survey.halves:
        env.out.print("no half messages pending" + (" or recently decided" if args.resolved else ""))
        return
    table = Table("id", "group", "topic", "key", "state", "checks", "age", "note")
    for h in survey.halves:
        note = h.reason
        if h.state == "committed":
            note = f"landed at {h.topic}-{h.target_partition}@{h.target_offset}" if h.target_offset >= 0 else note
        table.add_row(
            f"{h.partition}:{h.offset}",
            h.producer_group,
            h.topic,
            _text(h.key) if h.key else "-",
            h.state,
            str(h.checks),
            _age(now_ms - h.created_ms),
            note or "-",
        )
    env.out.print(table)


def _ids(ids: list[int]) -> str:
    return ",".join(map(str, ids)) or "-"


def _text(data: bytes | None) -> str:
    """Bytes as text when they are UTF-8, else their repr (so binary stays one visible line)."""
    if data is None:
        return repr(None)
    try:
        return data.decode()
    except UnicodeDecodeError:
        return repr(data)


def _json_bytes(data: bytes | None) -> str | dict[str, str] | None:
    """JSON has no bytes: UTF-8 as a string, anything else as {"base64": ...} (lossless)."""
    if data is None:
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return {"base64": b64encode(data).decode()}


def format_message(msg: Message, fmt: str) -> str:
    """One consumed message as one output line (`text`: its value; `json`: everything)."""
    if fmt == "text":
        return _text(msg.value)
    return json.dumps(
        {
            "topic": msg.topic,
            "partition": msg.partition,
            "offset": msg.offset,
            "key": _json_bytes(msg.key),
            "value": _json_bytes(msg.value),
            "headers": [[name, _json_bytes(value)] for name, value in msg.headers],
            "timestamp": msg.timestamp,
        },
        ensure_ascii=False,
    )


# -- topic --------------------------------------------------------------------------------------


async def topic_create(env: Env, args: argparse.Namespace) -> None:
    async with _admin(env) as admin:
        with env.err.status(f"creating {args.name} and waiting for its partition leaders..."):
            try:
                info = await admin.create_topic(args.name, args.partitions, args.replication, dict(args.config))
            except TopicExistsError:
                raise CliError(
                    f"topic {args.name!r} already exists (see `tidemq topic describe {args.name}`)"
                ) from None
    assert info is not None
    env.out.print(f"created topic {info.name}: {len(info.partitions)} partition(s), replication {args.replication}")


async def topic_list(env: Env, args: argparse.Namespace) -> None:
    async with _admin(env) as admin:
        md = await admin.describe_cluster()
    table = Table("topic", "partitions", "replication", "configs")
    for t in sorted(md.topics, key=lambda t: t.name):
        if t.internal and not args.internal:
            continue
        replication = len(t.partitions[0].replicas) if t.partitions else 0
        configs = " ".join(f"{k}={v}" for k, v in sorted(t.configs.items()))
        table.add_row(t.name, str(len(t.partitions)), str(replication), configs or "-")
    if table.row_count:
        env.out.print(table)
    else:
        env.out.print("no topics (create one with `tidemq topic create NAME`)")


async def topic_describe(env: Env, args: argparse.Namespace) -> None:
    async with _admin(env) as admin:
        info = await _topic(admin, args.name)
        _, answers = await admin.survey([args.name], node_timeout=NODE_ANSWER_S)
    configs = " ".join(f"{k}={v}" for k, v in sorted(info.configs.items()))
    env.out.print(
        f"topic {info.name}: {len(info.partitions)} partition(s)"
        + (", internal" if info.internal else "")
        + (f", {configs}" if configs else "")
    )
    env.out.print(_partition_table("", [info], answers))


async def topic_alter(env: Env, args: argparse.Namespace) -> None:
    if not args.config and not args.delete_config and args.partitions is None:
        raise CliError("nothing to change: give --partitions N, --config KEY=VALUE or --delete-config KEY")
    async with _admin(env) as admin:
        before = await _topic(admin, args.name)
        if args.partitions is not None:
            await admin.add_partitions(args.name, args.partitions)
            env.out.print(
                f"{args.name}: {len(before.partitions)} -> {args.partitions} partitions "
                "(keyed messages now map to partitions anew)"
            )
        if args.config or args.delete_config:
            await admin.alter_topic_configs(args.name, dict(args.config), args.delete_config)
            info = await admin.describe_topic(args.name)
            configs = " ".join(f"{k}={v}" for k, v in sorted(info.configs.items()))
            env.out.print(f"altered topic {info.name}: {configs or 'every config at its default'}")


async def topic_delete(env: Env, args: argparse.Namespace) -> None:
    async with _admin(env) as admin:
        await _topic(admin, args.name)
        await admin.delete_topic(args.name)
    env.out.print(f"deleted topic {args.name}")


# -- produce --------------------------------------------------------------------------------------


@dataclass
class _Sent:
    """What a produce run achieved, per partition, and its first failure."""

    offsets: dict[int, list[int]] = field(default_factory=dict)  # partition -> [count, first, last]
    failed: int = 0
    first_error: BaseException | None = None

    def tally(self, delivery: Delivery) -> None:
        """Count one finished delivery (acknowledged or failed)."""
        try:
            meta = delivery.result()
        except (TideMQError, OSError) as exc:  # what a send reports; counted, the first one shown
            self.failed += 1
            self.first_error = self.first_error or exc
            return
        entry = self.offsets.get(meta.partition)
        if entry is None:
            self.offsets[meta.partition] = [1, meta.offset, meta.offset]
        else:
            entry[0] += 1
            entry[1], entry[2] = min(entry[1], meta.offset), max(entry[2], meta.offset)

    @property
    def count(self) -> int:
        return sum(e[0] for e in self.offsets.values())


def _split_line(line: bytes, key: bytes | None, separator: bytes | None, lineno: int) -> tuple[bytes | None, bytes]:
    line = line.removesuffix(b"\n").removesuffix(b"\r")
    if separator is None:
        return key, line
    k, sep, value = line.partition(separator)
    if not sep:
        raise CliError(
            f"line {lineno} has no key separator {separator.decode()!r}: write KEY{separator.decode()}VALUE "
            "on every line, or drop --key-separator"
        )
    return k, value


async def produce(env: Env, args: argparse.Namespace, stdin: IO[bytes]) -> None:
    """Send stdin's lines in order, many in flight at once so they share batches.

    `Producer.submit` returns once a line is queued (so lines keep their order in each
    partition) and hands back a delivery to check later; awaiting `send` per line would
    cost a round trip per line. Deliveries are tallied as they complete, so a long stream
    holds only the unacknowledged ones.
    """
    key = args.key.encode() if args.key is not None else None
    separator = args.key_separator.encode() if args.key_separator is not None else None
    async with _admin(env) as admin:
        await _topic(admin, args.topic)
    sent = _Sent()
    pending: deque[Delivery] = deque()
    bad_line: CliError | None = None
    async with Producer(env.bootstrap, token=env.token, client_id="tidemq-cli", **env.security) as producer:
        with env.err.status("sending...") as status:
            lineno = 0
            while line := await anyio.to_thread.run_sync(stdin.readline):
                lineno += 1
                try:
                    k, value = _split_line(line, key, separator, lineno)
                except CliError as exc:
                    bad_line = exc
                    break
                pending.append(await producer.submit(args.topic, value, key=k, delay=args.delay))
                while pending and pending[0].done:
                    sent.tally(pending.popleft())
                if lineno % 1000 == 0:
                    status.update(f"sending... {lineno} lines read, {sent.count} acknowledged")
            await producer.flush()
            while pending:
                sent.tally(pending.popleft())
    _print_sent(env, args.topic, sent)
    if sent.first_error is not None:
        raise CliError(
            f"{sent.failed} message(s) were not acknowledged; the first error: "
            f"{_explain(sent.first_error) or sent.first_error}"
        )
    if bad_line is not None:
        raise bad_line


def _print_sent(env: Env, topic: str, sent: _Sent) -> None:
    if not sent.offsets:
        env.out.print(f"sent nothing to {topic}")
        return
    env.out.print(f"sent {sent.count} message(s) to {topic}, {len(sent.offsets)} partition(s)")
    table = Table("partition", "messages", "first offset", "last offset")
    for p, (count, first, last) in sorted(sent.offsets.items()):
        table.add_row(str(p), str(count), str(first), str(last))
    env.out.print(table)


# -- consume --------------------------------------------------------------------------------------


async def consume(env: Env, args: argparse.Namespace) -> None:
    async with _admin(env) as admin:
        await _topic(admin, args.topic)
    if args.instance is not None and not args.broadcast:
        raise CliError("--instance names a broadcast instance: add --broadcast")
    consumer = Consumer(
        env.bootstrap,
        token=env.token,
        **env.security,
        group=args.group,
        topics=[args.topic],
        broadcast=args.broadcast,
        instance_id=args.instance,
        offset_reset="earliest" if args.from_beginning else "latest",
        client_id="tidemq-cli",
    )
    count = 0
    async with consumer:
        last_commit = time.monotonic()
        try:
            while args.max is None or count < args.max:
                msg: Message | None = None
                with anyio.move_on_after(args.timeout):
                    msg = await consumer.__anext__()
                if msg is None:
                    break
                env.stdout.write(format_message(msg, args.format) + "\n")
                count += 1
                if args.group is not None and time.monotonic() - last_commit >= COMMIT_INTERVAL_S:
                    env.stdout.flush()  # commit only what has really been written out
                    await consumer.commit()
                    last_commit = time.monotonic()
        finally:
            env.stdout.flush()
        if args.group is not None:
            # Leaving the group commits too (on Ctrl-C as well), but only logs a failure;
            # this commit reports one to the user.
            await consumer.commit()
    env.err.print(
        f"consumed {count} message(s) from {args.topic}"
        + (f", committed for group {consumer.group}" if args.group is not None else "")
    )


# -- group ----------------------------------------------------------------------------------------


async def _survey_groups(env: Env, admin: Admin) -> dict[str, int]:
    """Each node lists the groups it coordinates; ask them all at once and merge (group ->
    coordinator). Unlike `client.group.list_groups` (one node after another, silent
    about the ones that do not answer), a stuck node costs NODE_ANSWER_S rather than a
    request timeout, and the user is told whose groups may be missing."""
    md = await admin.cluster.refresh_metadata([])
    found: dict[str, int] = {}
    errors: dict[int, str] = {}

    async def ask(node_id: int, addr: str) -> None:
        try:
            with anyio.fail_after(NODE_ANSWER_S):
                resp: ListGroupsResponse = await admin.cluster.request(addr, ListGroups())
        except (TideMQError, TimeoutError) as exc:
            errors[node_id] = _explain(exc) or repr(exc)
            return
        for g in resp.groups:
            found[g] = node_id

    async with anyio.create_task_group() as tg:
        for node in md.nodes:
            tg.start_soon(ask, node.node_id, node.addr)
    if len(errors) == len(md.nodes):
        by_error: dict[str, list[int]] = {}
        for node_id, error in sorted(errors.items()):
            by_error.setdefault(error, []).append(node_id)
        raise CliError(
            "no node listed its groups: "
            + "; ".join(f"{error} (node{'s' if len(ids) > 1 else ''} {_ids(ids)})" for error, ids in by_error.items())
        )
    for node_id, error in sorted(errors.items()):
        env.err.print(f"node {node_id} did not answer ({error}); its groups are missing", style="yellow")
    return found


@dataclass
class _GroupState:
    desc: DescribeGroupResponse | None  # None: its coordinator did not answer
    high_watermarks: dict[tuple[str, int], int | None] = field(default_factory=dict)

    @property
    def lag(self) -> int | None:
        """Messages behind over every committed partition; None where one is unknown."""
        if self.desc is None:
            return None
        total = 0
        for t, p, committed in self.desc.offsets:
            hw = self.high_watermarks.get((t, p))
            if hw is None:
                return None
            total += max(hw - committed, 0)
        return total


async def _group_states(admin: Admin, names: list[str]) -> dict[str, _GroupState]:
    """Describe each group and read the high watermark of every partition it owns or
    has committed, all at once, each answer bounded by NODE_ANSWER_S."""
    states = {name: _GroupState(None) for name in names}
    hws: dict[tuple[str, int], int | None] = {}

    async def high_watermark(topic: str, partition: int) -> None:
        hws[(topic, partition)] = None
        with anyio.move_on_after(NODE_ANSWER_S):
            try:
                resp = await admin.cluster.leader_request(topic, partition, ListOffsets(topic, partition))
                hws[(topic, partition)] = resp.offset
            except TideMQError:
                pass  # a deleted topic, say: shown as "?"

    async def describe(name: str) -> None:
        with anyio.move_on_after(NODE_ANSWER_S * 2):
            try:
                states[name].desc = await describe_group(admin.cluster, name)
            except TideMQError:
                pass

    async with anyio.create_task_group() as tg:
        for name in names:
            tg.start_soon(describe, name)
    parts = set()
    for st in states.values():
        if st.desc is not None:
            d = st.desc
            parts |= {(tp.topic, tp.partition) for m in d.members for tp in m.assignment}
            parts |= {(t, p) for t, p, _ in d.offsets} | {(t, p) for t, p, _ in d.pending}
    async with anyio.create_task_group() as tg:
        for topic, partition in parts:
            tg.start_soon(high_watermark, topic, partition)
    for st in states.values():
        st.high_watermarks = hws
    return states


def _lag_text(lag: int | None) -> str:
    return "?" if lag is None else str(lag)


async def group_list(env: Env, args: argparse.Namespace) -> None:
    """Every group with its coordinator, members and lag; a broadcast group's instances
    (`notifier@host-a`) are shown under it."""
    async with _admin(env) as admin:
        found = await _survey_groups(env, admin)
        states = await _group_states(admin, sorted(found))
    if not found:
        env.out.print("no consumer groups")
        return
    plain: list[str] = []
    broadcast: dict[str, list[tuple[str, str]]] = {}
    for name in sorted(found):
        if (parts := split_instance_group(name)) is not None:
            broadcast.setdefault(parts[0], []).append((parts[1], name))
        else:
            plain.append(name)
    table = Table("group", "instance", "coordinator", "members", "lag")
    for family in sorted(set(plain) | set(broadcast)):
        if family in plain:
            st = states[family]
            table.add_row(
                family,
                "-",
                str(found[family]),
                "?" if st.desc is None else str(len(st.desc.members)),
                _lag_text(st.lag),
            )
        instances = broadcast.get(family, [])
        if instances:
            lags = [states[name].lag for _, name in instances]
            table.add_row(
                family,
                f"broadcast: {len(instances)} instance(s)",
                "-",
                str(sum(len(d.members) for _, n in instances if (d := states[n].desc) is not None)),
                "?" if None in lags else str(sum(lag for lag in lags if lag is not None)),
            )
            for instance, name in instances:
                st = states[name]
                table.add_row(
                    "",
                    instance,
                    str(found[name]),
                    "?" if st.desc is None else str(len(st.desc.members)),
                    _lag_text(st.lag),
                )
    env.out.print(table)


def _group_lag_rows(
    desc: DescribeGroupResponse, high_watermarks: dict[tuple[str, int], int | None]
) -> list[tuple[str, ...]]:
    """(topic, partition, member, committed, high watermark, lag, pending transaction) for
    every partition the group owns or has committed. Lag = high watermark - committed; '-'
    where either is unknown. A pending transaction will commit the partition's offset when
    it ends; a member starting on that partition waits for it."""
    owner = {(tp.topic, tp.partition): m.client_id or m.member_id for m in desc.members for tp in m.assignment}
    committed = {(t, p): off for t, p, off in desc.offsets}
    pending = {(t, p): tid for t, p, tid in desc.pending}
    rows: list[tuple[str, ...]] = []
    for tp in sorted(set(owner) | set(committed) | set(pending)):
        c, hw = committed.get(tp), high_watermarks.get(tp)
        lag = str(max(hw - c, 0)) if c is not None and hw is not None else "-"
        rows.append(
            (
                tp[0],
                str(tp[1]),
                owner.get(tp, "-"),
                "-" if c is None else str(c),
                "?" if hw is None else str(hw),
                lag,
                pending.get(tp, "-"),
            )
        )
    return rows


def _seen(desc: DescribeGroupResponse, now_ms: float) -> tuple[str, str]:
    """(last seen, expires) of a broadcast instance: live while it has members; else
    its last commit or departure, and when its offsets go if it stays away."""
    if desc.members:
        return "now (live)", "-"
    if desc.last_write_ms < 0:
        return "never", "-"
    seen = f"{_age(now_ms - desc.last_write_ms)} ago"
    if not desc.retention_ms:
        return seen, "-"
    left = desc.last_write_ms + desc.retention_ms - now_ms
    return seen, (f"in {_age(left)}" if left > 0 else "due now")


async def group_describe(env: Env, args: argparse.Namespace) -> None:
    async with _admin(env) as admin:
        states = await _group_states(admin, [args.group])
        st = states[args.group]
        if st.desc is None:
            raise CliError(
                f"the coordinator of group {args.group!r} did not answer within {NODE_ANSWER_S * 2:.0f}s; "
                "try again (check `tidemq cluster status`)"
            )
        instances = sorted(
            name
            for name in await _survey_groups(env, admin)
            if (parts := split_instance_group(name)) is not None and parts[0] == args.group
        )
        inst_states = await _group_states(admin, instances) if instances else {}
    desc = st.desc
    if instances and not desc.members and not desc.offsets:
        _print_instances(env, args.group, inst_states)
        return
    env.out.print(f"group {desc.group}: {desc.state}, epoch {desc.epoch}, {len(desc.members)} member(s)")
    if not desc.members and not desc.offsets:
        env.out.print(
            "no members and no committed offsets: the group does not exist (yet), "
            "or its offsets were removed (see `tidemq group list`)"
        )
    if desc.members:
        members = Table("member", "client", "epoch", "topics", "assigned")
        for m in sorted(desc.members, key=lambda m: m.member_id):
            assigned = " ".join(
                f"{tp.topic}-{tp.partition}" for tp in sorted(m.assignment, key=lambda tp: (tp.topic, tp.partition))
            )
            members.add_row(m.member_id, m.client_id, str(m.member_epoch), ",".join(m.topics) or "-", assigned or "-")
        env.out.print(members)
    rows = _group_lag_rows(desc, st.high_watermarks)
    if rows:
        table = Table("topic", "partition", "owner", "committed", "high watermark", "lag", "pending transaction")
        for row in rows:
            table.add_row(*row)
        env.out.print(table)
    if instances:
        _print_instances(env, args.group, inst_states)


async def group_delete(env: Env, args: argparse.Namespace) -> None:
    async with _admin(env) as admin:
        try:
            await admin.delete_group(args.group)
        except GroupNotFoundError:
            raise CliError(f"group {args.group!r} does not exist (see `tidemq group list`)") from None
        except GroupNotEmptyError as exc:
            raise CliError(f"{exc.message} (see `tidemq group describe {args.group}`)") from None
    env.out.print(f"deleted group {args.group}")


def _print_instances(env: Env, group: str, states: dict[str, _GroupState]) -> None:
    env.out.print(f"broadcast group {group}: {len(states)} instance(s), each reading every partition")
    now_ms = time.time() * 1000
    table = Table("instance", "consumer group", "members", "lag", "last seen", "expires")
    for name, st in sorted(states.items()):
        instance = split_instance_group(name)[1]  # type: ignore[index]
        if st.desc is None:
            table.add_row(instance, name, "?", "?", "?", "?")
            continue
        seen, expires = _seen(st.desc, now_ms)
        table.add_row(instance, name, str(len(st.desc.members)), _lag_text(st.lag), seen, expires)
    env.out.print(table)
    env.out.print(f"(partitions of one instance: tidemq group describe {group}@INSTANCE)")


async def group_reset_offsets(env: Env, args: argparse.Namespace) -> None:
    at_ms = None
    if args.to_datetime is not None:
        try:
            when = datetime.datetime.fromisoformat(args.to_datetime)
        except ValueError:
            raise CliError(
                f"--to-datetime wants ISO 8601 like 2026-12-05T10:00:00+00:00, not {args.to_datetime!r}"
            ) from None
        at_ms = int((when if when.tzinfo else when.astimezone()).timestamp() * 1000)
    to = "earliest" if args.to_earliest else "latest" if args.to_latest else None
    async with _admin(env) as admin:
        try:
            moves = await admin.reset_offsets(
                args.group, args.topic, to=to, at_ms=at_ms, offset=args.to_offset, shift_by=args.shift_by,
                dry_run=args.dry_run,
            )  # fmt: skip
        except GroupNotEmptyError as exc:
            raise CliError(f"{exc.message} (`tidemq group describe {args.group}` shows them)") from None
    table = Table("topic", "partition", "committed", "new", title=f"group {args.group}")
    for (t, p), (old, new) in sorted(moves.items()):
        table.add_row(t, str(p), "-" if old is None else str(old), str(new))
    env.out.print(table)
    env.out.print("dry run: nothing changed" if args.dry_run else f"reset {len(moves)} partition(s) of {args.topic}")


# -- user -----------------------------------------------------------------------------------------


def _new_password(args: argparse.Namespace) -> str:
    """--password, else asked for twice on the terminal (never echoed)."""
    if args.new_password:
        return args.new_password
    if not sys.stdin.isatty():
        raise CliError("give the new user's password with --password (no terminal to ask on)")
    first = getpass.getpass(f"password for {args.name}: ")
    if not first or first != getpass.getpass("again: "):
        raise CliError("the passwords were empty or did not match")
    return first


async def user_add(env: Env, args: argparse.Namespace) -> None:
    password = _new_password(args)
    async with _admin(env) as admin:
        await admin.add_user(args.name, password)
    env.out.print(f"added user {args.name}")


async def user_passwd(env: Env, args: argparse.Namespace) -> None:
    password = _new_password(args)
    async with _admin(env) as admin:
        await admin.change_password(args.name, password)
    env.out.print(f"changed the password of user {args.name}")


async def user_delete(env: Env, args: argparse.Namespace) -> None:
    async with _admin(env) as admin:
        await admin.delete_user(args.name)
    env.out.print(f"deleted user {args.name}")


async def user_list(env: Env, args: argparse.Namespace) -> None:
    async with _admin(env) as admin:
        names = await admin.list_users()
    if not names:
        env.out.print("no users (add one with `tidemq user add NAME`)")
        return
    table = Table("user", "mechanism")
    for name in names:
        table.add_row(name, "SCRAM-SHA-256")
    env.out.print(table)


# -- acl ------------------------------------------------------------------------------------------


def _acl_resource(args: argparse.Namespace) -> tuple[str, str] | None:
    """(resource type, name) from --topic/--group/--transactional-id/--cluster."""
    if args.cluster:
        return acls.CLUSTER, acls.CLUSTER_NAME
    for rtype, name in ((acls.TOPIC, args.topic), (acls.GROUP, args.group), (acls.TRANSACTIONAL_ID, args.txn_id)):
        if name is not None:
            return rtype, name
    return None


def _acl_filters(args: argparse.Namespace, *, exact: bool) -> list[AclFilter]:
    """One filter per --operation (or one for every operation); `exact` (add) wants
    a principal, an operation and a resource."""
    resource = _acl_resource(args)
    if exact and (resource is None or not args.principal or not args.operation):
        raise CliError(
            "give --principal User:NAME, --operation OP and one of --topic, --group, --transactional-id, --cluster"
        )
    rtype, name = resource or (None, None)
    return [
        AclFilter(
            args.principal,
            rtype,
            name,
            op,
            acls.PREFIXED if args.prefix else acls.LITERAL if resource else None,
            acls.DENY if args.deny else acls.ALLOW if exact else None,
        )
        for op in args.operation or [None]
    ]


async def acl_add(env: Env, args: argparse.Namespace) -> None:
    bindings = [AclBinding(**msgspec.structs.asdict(f)) for f in _acl_filters(args, exact=True)]
    async with _admin(env) as admin:
        await admin.create_acls(bindings)
    for b in bindings:
        env.out.print(f"added: {acls.describe(b)}")


async def acl_remove(env: Env, args: argparse.Namespace) -> None:
    if _acl_resource(args) is None and not args.principal:
        raise CliError("say what to remove: --principal and/or a resource (--topic, --group, ...)")
    async with _admin(env) as admin:
        gone = await admin.delete_acls(_acl_filters(args, exact=False))
    if not gone:
        env.out.print("no binding matched; nothing removed (tidemq acl list shows them)")
    for b in gone:
        env.out.print(f"removed: {acls.describe(b)}")


async def acl_list(env: Env, args: argparse.Namespace) -> None:
    (wanted,) = _acl_filters(argparse.Namespace(**{**vars(args), "operation": None}), exact=False)
    if not args.prefix and not args.deny:
        wanted.pattern = None  # a listing shows literal and prefixed, allow and deny
    async with _admin(env) as admin:
        found = await admin.describe_acls(wanted)
    if args.format == "json":
        env.stdout.write(json.dumps([msgspec.structs.asdict(b) for b in found]) + "\n")
        return
    if not found:
        env.out.print("no ACLs (tidemq acl add grants access)")
        return
    table = Table("principal", "permission", "operation", "resource", "name", "pattern")
    for b in sorted(found, key=lambda b: (b.principal, b.resource_type, b.name, b.operation)):
        table.add_row(b.principal, b.permission, b.operation, b.resource_type, b.name, b.pattern)
    env.out.print(table)


# -- console --------------------------------------------------------------------------------------


async def console_cmd(env: Env, args: argparse.Namespace) -> None:
    from client.console import AlertSettings, serve

    trust = {k: v for k, v in env.security.items() if k.startswith("tls") and v}
    bootstrap = env.bootstrap or os.environ.get("TIDEMQ_BOOTSTRAP") or DEFAULT_BOOTSTRAP
    alerts = None
    if args.alert_webhook or args.alert_user or args.alert_token:
        alerts = AlertSettings(
            args.alert_webhook,
            args.alert_user,
            os.environ.get("TIDEMQ_ALERT_PASSWORD"),
            args.alert_token,
            args.alert_every,
            args.alert_lag,
            args.alert_lag_for,
        )
    env.out.print(f"console: http://{args.listen} (cluster {bootstrap}; Ctrl-C stops it)")
    await serve(args.listen, bootstrap, trust, alerts=alerts)


# -- trace ----------------------------------------------------------------------------------------

TRACE_KEY_MATCHES = 10  # the newest traced for --key


def _when(ms: int | None) -> str:
    if ms is None or ms < 0:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) + f".{ms % 1000:03d}"


def _print_trace(env: Env, t: trace.Trace) -> None:
    m = t.message
    env.out.print(Text(f"{m.topic}-{m.partition}@{m.offset}  key {_shown(m.key)}  value {_shown(m.value)}"))
    if m.headers:
        env.out.print("headers: " + ", ".join(f"{k}={_shown(v)}" for k, v in m.headers))
    steps = Table("time", "step", "detail", title="its life")
    for s in t.steps:
        steps.add_row(_when(s.time_ms), s.what, s.detail)
    env.out.print(steps)
    if not t.groups:
        env.out.print("no consumer group has committed an offset of this partition")
        return
    groups = Table("group", "status", "detail", title="per consumer group")
    for g in t.groups:
        groups.add_row(g.group, g.status, g.detail)
    env.out.print(groups)


def _shown(data: bytes | None, width: int = 60) -> str:
    if data is None:
        return "null"
    text = data.decode(errors="replace")
    return repr(text if len(text) <= width else text[:width] + "...")


async def trace_cmd(env: Env, args: argparse.Namespace) -> None:
    if (args.partition is None) == (args.key is None):
        raise CliError("give PARTITION OFFSET, or --key KEY")
    async with _admin(env) as admin:
        cluster = admin.cluster
        if args.key is not None:
            found = await trace.find_by_key(cluster, args.topic, args.key.encode())
            if not found:
                raise CliError(f"no message with key {args.key!r} in {args.topic} (the newest {trace.SCAN_LIMIT} read)")
            places = [(s.partition, s.offset) for s in found[-TRACE_KEY_MATCHES:]]
        else:
            if args.offset is None:
                raise CliError("give the OFFSET after the PARTITION")
            places = [(args.partition, args.offset)]
        for p, offset in places:
            t = await trace.trace_message(cluster, args.topic, p, offset)
            if t is None:
                raise CliError(f"there is no message at {args.topic}-{p}@{offset}")
            _print_trace(env, t)


# -- quota ----------------------------------------------------------------------------------------

_QUOTA_FLAGS = (
    ("produce_rate", quotas.PRODUCE_RATE, "bytes/s"),
    ("fetch_rate", quotas.FETCH_RATE, "bytes/s"),
    ("request_rate", quotas.REQUEST_RATE, "requests/s"),
)


async def quota_set(env: Env, args: argparse.Namespace) -> None:
    rates = {key: getattr(args, flag) for flag, key, _ in _QUOTA_FLAGS if getattr(args, flag) is not None}
    delete = [key for flag, key, _ in _QUOTA_FLAGS if flag in (args.remove or [])]
    if not rates and not delete:
        raise CliError("give at least one of --produce-rate, --fetch-rate, --request-rate or --remove")
    async with _admin(env) as admin:
        await admin.alter_quotas(args.principal, rates, delete)
        now = (await admin.describe_quotas(args.principal)).get(args.principal, {})
    env.out.print(f"quotas of {args.principal}: {_quota_text(now)}")


def _quota_text(rates: dict[str, float]) -> str:
    shown = [f"{flag.replace('_', ' ')} {rates[key]:g} {unit}" for flag, key, unit in _QUOTA_FLAGS if key in rates]
    return ", ".join(shown) or "none"


async def quota_list(env: Env, args: argparse.Namespace) -> None:
    async with _admin(env) as admin:
        found = await admin.describe_quotas(args.principal)
    found = {p: r for p, r in found.items() if r}
    if not found:
        env.out.print("no quotas (tidemq quota set PRINCIPAL --produce-rate ...)")
        return
    table = Table("principal", *(f"{flag.replace('_', ' ')} ({unit})" for flag, _, unit in _QUOTA_FLAGS))
    for principal, rates in sorted(found.items()):
        table.add_row(principal, *(f"{rates[key]:g}" if key in rates else "-" for _, key, _ in _QUOTA_FLAGS))
    env.out.print(table)


# -- txn ------------------------------------------------------------------------------------------

OPEN_STATES = ("ongoing", "prepare_commit", "prepare_abort")


def _age(ms: float) -> str:
    """A duration for people: 850ms, 12.3s, 4m05s, 2h03m, 3d04h."""
    ms = max(ms, 0)
    if ms < 1000:
        return f"{ms:.0f}ms"
    s = ms / 1000
    if s < 60:
        return f"{s:.1f}s"
    m, s = divmod(int(s), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def _txn_times(info: TxnInfo, now_ms: float) -> tuple[str, str]:
    """(age of the open transaction or '-', time since the id's last state change or '-')."""
    age = _age(now_ms - info.started_ms) if info.state in OPEN_STATES and info.started_ms else "-"
    changed = f"{_age(now_ms - info.updated_ms)} ago" if info.updated_ms else "-"
    return age, changed


def _txn_json(info: TxnInfo, now_ms: float) -> dict[str, Any]:
    return {
        "transactional_id": info.transactional_id,
        "state": info.state,
        "producer_id": info.producer_id,
        "producer_epoch": info.producer_epoch,
        "partitions": [
            [tp.topic, tp.partition] for tp in sorted(info.partitions, key=lambda tp: (tp.topic, tp.partition))
        ],
        "groups": list(info.groups),
        "started_ms": info.started_ms or None,
        "updated_ms": info.updated_ms or None,
        "age_ms": int(now_ms - info.started_ms) if info.state in OPEN_STATES and info.started_ms else None,
        "timeout_ms": info.timeout_ms,
        "coordinator": info.coordinator,
    }


async def txn_list(env: Env, args: argparse.Namespace) -> None:
    """Every node lists the ids it coordinates; partitions whose coordinator did not
    answer are named on stderr (their ids are missing), as `group list` does for nodes."""
    async with _admin(env) as admin:
        survey = await admin.survey_transactions(node_timeout=NODE_ANSWER_S)
    if not survey.answered:
        raise CliError(
            "no node listed its transactions: "
            + "; ".join(f"node {n}: {e}" for n, e in sorted(survey.unanswered.items()))
        )
    for node_id, error in sorted(survey.unanswered.items()):
        env.err.print(
            f"node {node_id} did not answer ({error}); the transactions it coordinates are missing", style="yellow"
        )
    if survey.uncovered and not survey.unanswered:
        env.err.print(
            f"__transaction_state partition(s) {_ids(survey.uncovered)} have no leader yet; "
            "their transactions are missing",
            style="yellow",
        )
    found = survey.transactions
    now_ms = time.time() * 1000
    if args.format == "json":
        env.stdout.write(json.dumps([_txn_json(t, now_ms) for t in found]) + "\n")
        return
    if not found:
        env.out.print("no transactions (a producer with a transactional_id creates one)")
        return
    table = Table(
        "transactional id", "state", "producer id", "epoch", "partitions", "groups", "age", "changed", "coordinator"
    )
    for t in found:
        age, changed = _txn_times(t, now_ms)
        table.add_row(
            t.transactional_id,
            t.state,
            str(t.producer_id),
            str(t.producer_epoch),
            str(len(t.partitions)),
            ",".join(t.groups) or "-",
            age,
            changed,
            str(t.coordinator),
        )
    env.out.print(table)


async def txn_describe(env: Env, args: argparse.Namespace) -> None:
    async with _admin(env) as admin:
        try:
            info = await admin.describe_transaction(args.id)
        except InvalidRequestError as exc:
            raise CliError(f"{exc.message} (see `tidemq txn list`)") from None
    now_ms = time.time() * 1000
    if args.format == "json":
        env.stdout.write(json.dumps(_txn_json(info, now_ms)) + "\n")
        return
    age, changed = _txn_times(info, now_ms)
    env.out.print(
        f"transaction {info.transactional_id}: {info.state}, producer {info.producer_id} "
        f"epoch {info.producer_epoch}, coordinator node {info.coordinator}"
    )
    env.out.print(
        ("open for " + age if age != "-" else "no transaction open")
        + f", timeout {_age(info.timeout_ms)}, last change {changed}"
    )
    env.out.print("groups: " + (", ".join(info.groups) if info.groups else "none"))
    if info.partitions:
        table = Table("topic", "partition", title=f"partitions ({len(info.partitions)})")
        for tp in sorted(info.partitions, key=lambda tp: (tp.topic, tp.partition)):
            table.add_row(tp.topic, str(tp.partition))
        env.out.print(table)
    else:
        env.out.print("partitions: none")


# -- cluster --------------------------------------------------------------------------------------


async def cluster_status(env: Env, args: argparse.Namespace) -> None:
    async with _admin(env) as admin:
        md, answers = await admin.survey(None, node_timeout=NODE_ANSWER_S)
    nodes = Table("node", "address", "alive (controller's view)", "answered us", "role", "state", title="nodes")
    for n in md.nodes:
        nodes.add_row(
            str(n.node_id),
            n.addr,
            "yes" if n.alive else "no",
            "yes" if n.node_id in answers else "no",
            "controller" if n.node_id == md.controller else "",
            n.state,
        )
    env.out.print(nodes)
    env.out.print(f"controller: node {md.controller}" if md.controller is not None else "controller: none elected")
    shown = sorted((t for t in md.topics if args.internal or not t.internal), key=lambda t: t.name)
    if shown:
        env.out.print(_partition_table("partitions", shown, answers))
    hidden = [p for t in md.topics if t.internal and not args.internal for p in t.partitions]
    under_way = moving(md, answers)
    if under_way:
        moves = Table("topic", "partition", "replicas", "to", "new replicas behind (offsets)", title="replica moves")
        for m in under_way:
            lag = ", ".join(f"node {n}: {b:,}" for n, b in sorted(m.behind.items())) or "switching over"
            moves.add_row(m.topic, str(m.partition), _ids(m.replicas), _ids(m.target), lag)
        env.out.print(moves)
    if hidden:
        leaderless = sum(p.leader is None for p in hidden)
        env.out.print(
            f"{len(hidden)} partition(s) of internal topics not shown, {leaderless} without a leader "
            "(--internal shows them)"
        )


def moves_line(moves: list[Moving]) -> str:
    """One line for a spinner: each move under way, and what its new replicas lack."""
    if not moves:
        return "finishing..."
    parts = []
    for m in moves[:4]:
        lag = ", ".join(f"node {n} {b:,} behind" for n, b in sorted(m.behind.items())) or "switching over"
        parts.append(f"{m.topic}-{m.partition} {_ids(m.replicas)} -> {_ids(m.target)} ({lag})")
    more = f" and {len(moves) - 4} more" if len(moves) > 4 else ""
    return f"{len(moves)} moving: " + "; ".join(parts) + more


async def _watching_moves(env: Env, args: argparse.Namespace, what: str, run: Callable[..., Awaitable[Any]]) -> Any:
    """Run an admin call that moves replicas, with a spinner saying how far they are."""
    wait = None if args.no_wait else args.timeout
    if wait is None:
        return await run(wait=None)
    start = time.monotonic()
    with env.err.status(f"{what}...") as status:
        result = await run(wait=wait, progress=lambda moves: status.update(f"{what}: {moves_line(moves)}"))
    env.err.print(f"{what}: done in {time.monotonic() - start:.1f}s")
    return result


def _throttle(args: argparse.Namespace) -> int:
    return int(args.throttle * 1_000_000) if args.throttle else 0


async def topic_reassign(env: Env, args: argparse.Namespace) -> None:
    async with _admin(env) as admin:
        info = await _topic(admin, args.name)
        if not 0 <= args.partition < len(info.partitions):
            raise CliError(f"{args.name} has partitions 0..{len(info.partitions) - 1}")
        before = info.partitions[args.partition].replicas
        if args.cancel:
            back = await _watching_moves(
                env,
                args,
                f"cancelling the move of {args.name}-{args.partition}",
                partial(admin.cancel_reassignment, args.name, args.partition),
            )
            env.out.print(f"{args.name}-{args.partition}: back on replicas {_ids(back)}")
            return
        if not args.replicas:
            raise CliError("give --replicas 1,3,4 (or --cancel a move under way)")
        await _watching_moves(
            env,
            args,
            f"moving {args.name}-{args.partition}",
            partial(admin.reassign, args.name, args.partition, args.replicas, throttle=_throttle(args)),
        )
    done = "moving" if args.no_wait else "moved"
    env.out.print(f"{args.name}-{args.partition}: {done} from replicas {_ids(before)} to {_ids(args.replicas)}")


async def cluster_add_node(env: Env, args: argparse.Namespace) -> None:
    async with _admin(env) as admin:
        with env.err.status(f"admitting node {args.node_id}; it catches up on the cluster's metadata..."):
            await admin.add_node(args.node_id, args.peer, wait=None if args.no_wait else args.timeout)
    env.out.print(
        f"node {args.node_id} ({args.peer}) joined the cluster"
        + ("" if args.no_wait else " and votes in the controller group")
        + "; `tidemq cluster rebalance` moves replicas onto it"
    )


async def cluster_remove_node(env: Env, args: argparse.Namespace) -> None:
    async with _admin(env) as admin:
        await _watching_moves(
            env,
            args,
            f"removing node {args.node_id}",
            partial(admin.remove_node, args.node_id, throttle=_throttle(args)),
        )
    env.out.print(
        f"node {args.node_id}: "
        + ("draining (its replicas move off, then it leaves)" if args.no_wait else "removed; its process stopped")
    )


async def cluster_rebalance(env: Env, args: argparse.Namespace) -> None:
    async with _admin(env) as admin:
        plan = await _watching_moves(
            env,
            args,
            "rebalancing",
            partial(admin.rebalance, throttle=_throttle(args), dry_run=args.dry_run),
        )
    if not plan:
        env.out.print("the replicas and preferred leaders are even already: nothing to move")
        return
    table = Table("topic", "partition", "replicas", "to", title="planned" if args.dry_run else "moved")
    for m in plan:
        table.add_row(m.topic, str(m.partition), _ids(m.replicas), _ids(m.target))
    env.out.print(table)


# -- the command line --------------------------------------------------------------------------------
# -- the command line --------------------------------------------------------------------------------


def _node_ids(text: str) -> list[int]:
    try:
        ids = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"node ids like 1,3,4, not {text!r}") from None
    if len(set(ids)) != len(ids) or min(ids) < 1:
        raise argparse.ArgumentTypeError(f"distinct positive node ids, not {text!r}")
    return ids


def _move_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--throttle",
        type=_positive_rate,
        metavar="MB/s",
        help="at most this many MB/s to each new replica while it catches up (default: no limit)",
    )
    p.add_argument("--no-wait", action="store_true", help="return once the moves are decided")
    p.add_argument("--timeout", type=_seconds, default=3600.0, metavar="SECONDS", help="wait at most (default 3600)")


def _config_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def _positive_rate(text: str) -> float:
    """A rate per second, with k/M/G multiples of 1024 for bytes: 512k, 1.5M."""
    scale = {"k": 1024, "m": 1024**2, "g": 1024**3}.get(text[-1:].lower(), 1)
    try:
        rate = float(text[:-1] if scale > 1 else text) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"a rate like 1000, 512k or 2M, not {text!r}") from None
    if not rate > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return rate


def _seconds(text: str) -> float:
    s = float(text)
    if s <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, got {s}")
    return s


def _duration(text: str) -> float:
    """Seconds from "30s", "500ms", "2m", "1h", "1d" or a plain number of seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip().lower()
    for unit in ("ms", "s", "m", "h", "d"):
        if t.endswith(unit):
            number, scale = t[: -len(unit)], units[unit]
            break
    else:
        number, scale = t, 1
    try:
        value = float(number) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30s, 500ms, 2m, 1h") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"a delay cannot be negative: {text!r}")
    return value


async def dlq_list(env: Env, args: argparse.Namespace) -> None:
    letters = await list_dead_letters(env.bootstrap, args.group, idle=args.idle, token=env.token, security=env.security)
    instances = any(d.instance is not None for d in letters)  # a broadcast group's: say whose
    table = Table(
        "topic",
        "partition",
        "offset",
        *(("instance",) if instances else ()),
        "attempts",
        "failed at",
        "last error",
        "value",
        "dlq place",
        "decided",
        title=f"dead letters of group {args.group} ({len(letters)})",
    )
    for d in letters:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.time_ms / 1000)) if d.time_ms else "?"
        table.add_row(
            d.topic,
            str(d.partition),
            str(d.offset),
            *((d.instance or "-",) if instances else ()),
            str(d.attempts),
            when,
            d.error[:80],
            _text(d.message.value)[:60],
            f"{d.message.partition}@{d.message.offset}",
            f"{d.decision}: {d.reason}" if d.decision else "-",
        )
    env.out.print(table)


async def dlq_replay(env: Env, args: argparse.Namespace) -> None:
    if (args.partition is None) != (args.offset is None):
        raise CliError("name one dead letter with both --partition and --offset (its place in the dead-letter topic)")
    if args.offset is not None:
        await _decide(env, args, replay=True)
        return
    letters = await replay_dead_letters(
        env.bootstrap, args.group, idle=args.idle, token=env.token, security=env.security
    )
    env.out.print(
        f"replayed {len(letters)} dead letter(s) of group {args.group} to their topics"
        + (f": {', '.join(sorted({d.topic for d in letters}))}" if letters else "")
    )
    instances = sorted({d.instance for d in letters if d.instance is not None})
    if instances:
        env.out.print(f"(broadcast instances {', '.join(instances)} get theirs back through {args.group}.retry)")


async def dlq_discard(env: Env, args: argparse.Namespace) -> None:
    await _decide(env, args, replay=False)


async def _decide(env: Env, args: argparse.Namespace, *, replay: bool) -> None:
    who = env.security.get("username") or ("the token" if env.token else "anonymous")
    reason = args.reason or f"{'replayed' if replay else 'discarded'} with tidemq by {who}"
    d = await decide_dead_letter(
        env.bootstrap, args.group, args.partition, args.offset, replay=replay, reason=reason, token=env.token,
        security=env.security,
    )  # fmt: skip
    what = f"dead letter {args.group}.dlq-{args.partition}@{args.offset} (from {d.topic}-{d.partition}@{d.offset})"
    env.out.print(f"{'replayed' if replay else 'discarded'} {what}; recorded in {args.group}.dlq")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tidemq", description="Manage and use a TideMQ cluster.")

    # Connection options work before or after the command: the leaf parsers inherit them
    # with SUPPRESS defaults, so a value given after the command wins and none is lost.
    def connection_options(p: argparse.ArgumentParser, defaults: bool, login_password: bool = True) -> None:
        p.add_argument(
            "--bootstrap",
            metavar="HOST:PORT[,...]",
            default=os.environ.get("TIDEMQ_BOOTSTRAP") or DEFAULT_BOOTSTRAP if defaults else argparse.SUPPRESS,
            help=f"nodes to start from (default $TIDEMQ_BOOTSTRAP, else {DEFAULT_BOOTSTRAP})",
        )
        p.add_argument(
            "--token",
            default=os.environ.get("TIDEMQ_TOKEN") if defaults else argparse.SUPPRESS,
            help="the cluster token (default $TIDEMQ_TOKEN)",
        )
        for flag, what in (
            ("--tls-ca", "the CA (PEM) the nodes' certificates chain to; turns TLS on"),
            ("--tls-cert", "a client certificate (PEM) to present"),
            ("--tls-key", "the client certificate's key (PEM)"),
            ("--user", "the user to log in as"),
            *([("--password", "the user's password")] if login_password else []),
        ):
            var = "TIDEMQ_" + flag[2:].upper().replace("-", "_")
            p.add_argument(
                flag,
                metavar="FILE" if flag.startswith("--tls") else flag[2:].upper(),
                default=os.environ.get(var) or None if defaults else argparse.SUPPRESS,
                help=f"{what} (default ${var})",
            )

    connection_options(parser, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    connection_options(common, defaults=False)
    # `tidemq user add NAME --password PW`: there --password is the new user's; the login
    # password comes before the command or from $TIDEMQ_PASSWORD.
    setting_password = argparse.ArgumentParser(add_help=False)
    connection_options(setting_password, defaults=False, login_password=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def leaf(
        group: Any, name: str, run: Callable[..., Awaitable[None]], text: str, parent: argparse.ArgumentParser = common
    ) -> argparse.ArgumentParser:
        p = group.add_parser(name, parents=[parent], help=text, description=text)
        p.set_defaults(run=run)
        return p

    topic = commands.add_parser("topic", help="create, list, describe, delete topics").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    config_help = "topic config, repeatable: retention.ms, retention.bytes, segment.bytes, segment.ms"
    p = leaf(topic, "create", topic_create, "create a topic; returns once every partition has a leader")
    p.add_argument("name")
    p.add_argument("--partitions", type=_positive, default=1)
    p.add_argument("--replication", type=_positive, default=1, help="replicas per partition (<= live nodes)")
    p.add_argument("--config", type=_config_pair, action="append", default=[], metavar="KEY=VALUE", help=config_help)
    p = leaf(topic, "alter", topic_alter, "add partitions, change configs; the topic takes them at once")
    p.add_argument("name")
    p.add_argument("--partitions", type=_positive, metavar="N", help="grow to N partitions (never fewer)")
    p.add_argument("--config", type=_config_pair, action="append", default=[], metavar="KEY=VALUE", help=config_help)
    p.add_argument("--delete-config", action="append", default=[], metavar="KEY", help="return a config to its default")
    p = leaf(topic, "reassign", topic_reassign, "move a partition's replicas to other nodes, online")
    p.add_argument("name")
    p.add_argument("--partition", type=int, required=True)
    p.add_argument("--replicas", type=_node_ids, metavar="1,3,4", help="the new replicas, preferred leader first")
    p.add_argument("--cancel", action="store_true", help="send a move under way back to where it started")
    _move_options(p)
    p = leaf(topic, "list", topic_list, "list topics")
    p.add_argument("--internal", action="store_true", help="include internal topics (__consumer_offsets...)")
    p = leaf(topic, "describe", topic_describe, "partitions: leader, replicas, in sync, high watermark")
    p.add_argument("name")
    p = leaf(topic, "delete", topic_delete, "delete a topic and its data")
    p.add_argument("name")

    p = leaf(commands, "produce", produce, "send stdin's lines, one message per line, then print a summary")
    p.add_argument("topic")
    keys = p.add_mutually_exclusive_group()
    keys.add_argument("--key", help="the key of every message (one key: one partition, in order)")
    keys.add_argument("--key-separator", metavar="SEP", help="split each line at the first SEP into KEY and VALUE")
    p.add_argument(
        "--delay",
        type=_duration,
        metavar="DURATION",
        help="deliver each message this much later: 30s, 500ms, 2m, 1h (through the delay tiers)",
    )

    p = leaf(commands, "consume", consume, "print messages as they arrive")
    p.add_argument("topic")
    p.add_argument("--group", help="consume as this group's member and commit what was printed")
    p.add_argument(
        "--broadcast",
        action="store_true",
        help="get every message: with --group, as the group's instance (its own offsets, resumed "
        "on restart); without, an ephemeral listener from the end of the log",
    )
    p.add_argument("--instance", metavar="ID", help="this broadcast instance's id (default: the host name)")
    p.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at the log start where nothing is committed (default: only new messages)",
    )
    p.add_argument("--max", type=_positive, metavar="N", help="stop after N messages")
    p.add_argument("--timeout", type=_seconds, metavar="SECONDS", help="stop when no message arrives for this long")
    p.add_argument(
        "--format",
        choices=["text", "json"],
        default="text",
        help="text: the value (repr if not UTF-8); json: one object per line with every field",
    )

    group = commands.add_parser("group", help="consumer groups").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    leaf(group, "list", group_list, "list the consumer groups of every coordinator")
    p = leaf(group, "describe", group_describe, "members, assignment, committed offsets and lag")
    p.add_argument("group")
    p = leaf(group, "delete", group_delete, "remove a group that has no members, with its committed offsets")
    p.add_argument("group")
    p = leaf(group, "reset-offsets", group_reset_offsets, "move an idle group's committed offsets of a topic")
    p.add_argument("group")
    p.add_argument("--topic", required=True)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--to-earliest", action="store_true", help="the log start")
    where.add_argument("--to-latest", action="store_true", help="the end: skip everything there now")
    where.add_argument("--to-datetime", metavar="ISO", help="the first message at or after this time")
    where.add_argument("--to-offset", type=int, metavar="N", help="this offset in every partition")
    where.add_argument("--shift-by", type=int, metavar="N", help="forward (or back, negative) from where it is")
    p.add_argument("--dry-run", action="store_true", help="show the new offsets, change nothing")

    user = commands.add_parser("user", help="users who log in with a password (SCRAM-SHA-256)").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    for name, run, text in (
        ("add", user_add, "create a user; the password never leaves this machine, only its SCRAM keys do"),
        ("passwd", user_passwd, "change a user's password"),
    ):
        p = leaf(user, name, run, text, setting_password)
        p.add_argument("name")
        p.add_argument(
            "--password", dest="new_password", metavar="PW", help="the new password (asked for if not given)"
        )
    p = leaf(user, "delete", user_delete, "delete a user: it can no longer log in")
    p.add_argument("name")
    leaf(user, "list", user_list, "list the users")

    acl = commands.add_parser("acl", help="who may do what (with --require-users)").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    for name, run, text in (
        ("add", acl_add, "allow (or --deny) a principal an operation on a resource"),
        ("remove", acl_remove, "remove the bindings these options pick (every operation without --operation)"),
        ("list", acl_list, "list the bindings, all or those of a principal or resource"),
    ):
        p = leaf(acl, name, run, text)
        p.add_argument("--principal", metavar="User:NAME", help="who: User:NAME, or User:* for every user")
        if name != "list":
            p.add_argument(
                "--operation",
                action="append",
                choices=acls.OPERATIONS,
                metavar="OP",
                help=f"repeatable: {', '.join(acls.OPERATIONS)}",
            )
        which = p.add_mutually_exclusive_group()
        which.add_argument("--topic", metavar="NAME")
        which.add_argument("--group", metavar="NAME")
        which.add_argument("--transactional-id", dest="txn_id", metavar="NAME")
        which.add_argument("--cluster", action="store_true", help="the cluster itself (create topics, users, ACLs)")
        p.add_argument("--prefix", action="store_true", help="NAME is a prefix: every resource whose name starts so")
        p.add_argument("--deny", action="store_true", help="a deny binding (deny wins over any allow)")
        if name == "list":
            p.add_argument("--format", choices=["table", "json"], default="table", help="json: one array on stdout")

    p = leaf(commands, "console", console_cmd, "the web console: pages of the cluster, its messages and their traces")
    p.add_argument(
        "--listen", default="127.0.0.1:9480", metavar="HOST:PORT", help="where it serves (default %(default)s)"
    )
    p.add_argument("--alert-webhook", metavar="URL", help="POST each alert event there as JSON")
    p.add_argument(
        "--alert-user",
        default=os.environ.get("TIDEMQ_ALERT_USER"),
        metavar="NAME",
        help="the user the alert rules read the cluster as (password in $TIDEMQ_ALERT_PASSWORD)",
    )
    p.add_argument("--alert-token", default=os.environ.get("TIDEMQ_ALERT_TOKEN"), help="or the cluster token")
    p.add_argument("--alert-every", type=_seconds, default=10.0, metavar="SECONDS", help="check every (default 10)")
    p.add_argument("--alert-lag", type=int, default=1000, metavar="N", help="alert when a group is N behind ...")
    p.add_argument("--alert-lag-for", type=_seconds, default=60.0, metavar="SECONDS", help="... for this long")

    p = leaf(commands, "trace", trace_cmd, "a message's whole life: produced, retried, dead, replayed; per group")
    p.add_argument("topic")
    p.add_argument("partition", nargs="?", type=int)
    p.add_argument("offset", nargs="?", type=int)
    p.add_argument("--key", help="trace the messages with this key instead (the newest ten)")

    quota = commands.add_parser("quota", help="rates a principal is held to on each node").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = leaf(quota, "set", quota_set, "set or remove a principal's quotas; over them a client is slowed, not failed")
    p.add_argument("principal", metavar="PRINCIPAL", help="User:NAME, or User:* for every user without their own")
    for flag, _, unit in _QUOTA_FLAGS:
        p.add_argument("--" + flag.replace("_", "-"), dest=flag, type=_positive_rate, metavar=unit.upper())
    p.add_argument(
        "--remove",
        action="append",
        choices=[flag for flag, _, _ in _QUOTA_FLAGS],
        help="remove this quota (repeatable)",
    )
    p = leaf(quota, "list", quota_list, "list the quotas")
    p.add_argument("--principal", metavar="PRINCIPAL", help="only this principal's")

    txn = commands.add_parser("txn", help="transactions (transactional producers)").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = leaf(txn, "list", txn_list, "list every transactional id: state, producer, partitions, age")
    p.add_argument("--format", choices=["table", "json"], default="table", help="json: one array on stdout")
    p = leaf(txn, "describe", txn_describe, "one transactional id: state, partitions, groups, age, coordinator")
    p.add_argument("id", metavar="ID", help="the transactional id")
    p.add_argument("--format", choices=["table", "json"], default="table", help="json: one object on stdout")

    half = commands.add_parser("half", help="half messages (send_half: check-back transactions)").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = leaf(half, "list", half_list, "pending half messages: group, target, checks made, age, next check")
    p.add_argument("--group", help="only this producer group's")
    p.add_argument(
        "--resolved",
        action="store_true",
        help="also the recently decided ones: committed (where they landed) or aborted (why)",
    )
    p.add_argument("--format", choices=["table", "json"], default="table", help="json: one array on stdout")

    dlq = commands.add_parser("dlq", help="a group's dead letters").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    for name, run, text in (
        ("list", dlq_list, "show the group's dead letters with their origin, last error and decision"),
        ("replay", dlq_replay, "send the dead letters not replayed before back to their topics (or one of them)"),
        ("discard", dlq_discard, "discard one dead letter, recording who and why in the dead-letter topic"),
    ):
        p = leaf(dlq, name, run, text)
        p.add_argument("group")
        if name != "list":
            p.add_argument("--partition", type=int, required=name == "discard", help="the dead letter's partition")
            p.add_argument("--offset", type=int, required=name == "discard", help="the dead letter's offset")
            p.add_argument("--reason", help="why (recorded with the decision)")
        p.add_argument(
            "--idle",
            type=_seconds,
            default=1.0,
            metavar="SECONDS",
            help="stop reading once nothing new arrives for this long (default 1)",
        )

    cluster = commands.add_parser("cluster", help="the cluster's nodes and partitions").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = leaf(cluster, "status", cluster_status, "nodes, controller, every partition's leader, moves under way")
    p.add_argument("--internal", action="store_true", help="also list the partitions of internal topics")
    p = leaf(cluster, "add-node", cluster_add_node, "admit a node started with --join; it catches up, then votes")
    p.add_argument("node_id", type=_positive, metavar="ID")
    p.add_argument("peer", metavar="HOST:PORT", help="its peer listener, as the other nodes reach it")
    p.add_argument("--no-wait", action="store_true", help="return once admitted, before it caught up")
    p.add_argument("--timeout", type=_seconds, default=120.0, metavar="SECONDS", help="wait at most (default 120)")
    p = leaf(cluster, "remove-node", cluster_remove_node, "move every replica off a node, then remove it")
    p.add_argument("node_id", type=_positive, metavar="ID")
    _move_options(p)
    p = leaf(cluster, "rebalance", cluster_rebalance, "spread replicas and leaders evenly (after a node joined)")
    p.add_argument("--dry-run", action="store_true", help="show the moves, make none")
    _move_options(p)
    return parser


def _explain(exc: BaseException) -> str | None:
    """The one-line explanation of an error worth explaining (None: a bug, let it show)."""
    if isinstance(exc, CliError):
        return str(exc)
    if isinstance(exc, AuthFailedError):
        if "token" in exc.message:
            return "the cluster refused our token: pass --token or set TIDEMQ_TOKEN to the cluster's token"
        return f"{exc.message} (--user and --password, or TIDEMQ_USER and TIDEMQ_PASSWORD)"
    if isinstance(exc, ConnectionClosedError):
        return f"lost the cluster ({exc.message}); check it with `tidemq cluster status` or scripts/cluster status"
    if isinstance(exc, TideMQError):
        return exc.message
    if isinstance(exc, TimeoutError):
        return (
            "the cluster did not answer in time: it may be electing leaders or overloaded; "
            "check `tidemq cluster status` and try again"
        )
    return None


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit status is the return value (0 ok, 1 failed, 2 usage, 130 Ctrl-C)."""
    args = build_parser().parse_args(argv)
    interactive = sys.stdout.isatty()
    env = Env(
        bootstrap=args.bootstrap,
        token=args.token or None,
        security=ConnectOptions(
            tls_ca=args.tls_ca,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            username=args.user,
            password=args.password,
        ),
        out=Console(file=sys.stdout, markup=False, highlight=False, width=None if interactive else 200),
        err=Console(file=sys.stderr, markup=False, highlight=False),
        stdout=sys.stdout,
    )
    run: Callable[..., Awaitable[None]] = args.run
    command = partial(run, env, args, sys.stdin.buffer) if run is produce else partial(run, env, args)
    try:
        anyio.run(command, backend="trio")
    except BrokenPipeError:
        # The reader went away (`tidemq consume ... | head`): not an error. Point stdout at
        # /dev/null so the interpreter's final flush does not complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except BaseException as exc:  # noqa: BLE001 - sorted below: explained, Ctrl-C, or re-raised
        leaves = error_leaves(exc)
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
            return 130
        explained = [_explain(leaf) for leaf in leaves]
        if None in explained:
            raise
        print(f"tidemq: error: {explained[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
