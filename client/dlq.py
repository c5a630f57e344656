"""Dead letters: look at what a group gave up on, and send it back.

A consumer group's `run()` (client/processor.py) writes a message it could not handle after its last retry to
`<group>.dlq`, with headers saying where it came from (topic, partition, offset), how
many attempts were made, the last error and when. `replay` sends dead letters back to
their original topic (user headers kept, TideMQ's own dropped, so the attempt count
starts again) and remembers how far it got in the group `<group>.dlq-replay`, so a
second replay never sends the same dead letter twice. A broadcast instance's dead
letter (it names the instance) goes back to that instance alone, through the group's
retry topic: its original topic would deliver it to every instance again.

One dead letter can be replayed or discarded on its own (`decide_dead_letter`): the
decision is a record in the letter's own dead-letter partition (headers
`tidemq.dlq.decision`, `tidemq.dlq.of`, `tidemq.dlq.reason`), written in one
transaction with the replayed copy, so it is recorded exactly when it happened, never
silently lost, and a later replay of them all skips it.
"""

from __future__ import annotations

from typing import NamedTuple

import anyio

from client.cluster import ClusterClient
from client.consumer import Consumer, Message
from client.conventions import (
    H_ATTEMPT,
    H_DLQ_DECISION,
    H_DLQ_ERROR,
    H_DLQ_OF,
    H_DLQ_REASON,
    H_DLQ_TIME,
    H_INSTANCE,
    H_ORIGIN_OFFSET,
    H_ORIGIN_PARTITION,
    H_ORIGIN_TOPIC,
    H_REPLAYED_FROM,
    dead_letter_topic,
    dlq_decision,
    retry_topic,
)
from client.errors import InvalidRequestError
from client.group import commit_offsets, fetch_offsets
from client.processor import ensure_topics, int_header, origin_of, user_headers
from client.producer import Producer
from client.tls import ConnectOptions
from client.trace import read_partition


class DeadLetter(NamedTuple):
    message: Message  # as stored in the dead-letter topic
    topic: str  # where it came from
    partition: int
    offset: int
    attempts: int
    error: str
    time_ms: int
    instance: str | None = None  # the broadcast instance that gave up on it
    decision: str | None = None  # replayed | discarded, when decided on its own
    reason: str = ""


def as_dead_letter(msg: Message) -> DeadLetter:
    topic, partition, offset, _ = origin_of(msg)
    h = dict(msg.headers)
    instance = h.get(H_INSTANCE)
    return DeadLetter(
        msg,
        topic,
        partition,
        offset,
        int_header(msg, H_ATTEMPT),
        (h.get(H_DLQ_ERROR) or b"").decode(errors="replace"),
        int_header(msg, H_DLQ_TIME),
        None if instance is None else instance.decode(errors="replace"),
    )


async def _read(
    bootstrap, topic: str, idle: float, limit: int | None, token, security: ConnectOptions
) -> list[Message]:
    out: list[Message] = []
    async with Consumer(
        bootstrap, topics=[topic], offset_reset="earliest", token=token, max_wait=0.1, **security
    ) as consumer:
        while limit is None or len(out) < limit:
            with anyio.move_on_after(idle) as scope:
                out.append(await consumer.__anext__())
            if scope.cancelled_caught:
                break
    return out


def with_decisions(msgs: list[Message]) -> list[DeadLetter]:
    """The dead letters among a dead-letter topic's records, each with the decision
    recorded for it, if any (decision records themselves left out)."""
    decided: dict[tuple[int, int], tuple[str, str]] = {}
    letters = []
    for m in msgs:
        if (d := dlq_decision(m.headers)) is None:
            letters.append(m)
        else:
            decided[(m.partition, d[0])] = d[1], d[2]
    out = []
    for m in letters:
        decision, reason = decided.get((m.partition, m.offset), (None, ""))
        out.append(as_dead_letter(m)._replace(decision=decision, reason=reason))
    return out


def _back(group: str, letter: DeadLetter) -> tuple[str, int | None, list[tuple[str, bytes | None]]]:
    """Where a replayed dead letter goes (topic, partition) and with which headers: its
    own topic, or a broadcast instance's through the group's retry topic."""
    m = letter.message
    headers = [*user_headers(m), (H_REPLAYED_FROM, f"{m.topic}/{m.partition}/{m.offset}".encode())]
    if letter.instance is None:
        return letter.topic, letter.partition, headers
    return (
        retry_topic(group),
        None,
        headers
        + [
            (H_ORIGIN_TOPIC, letter.topic.encode()),
            (H_ORIGIN_PARTITION, b"%d" % letter.partition),
            (H_ORIGIN_OFFSET, b"%d" % letter.offset),
            (H_INSTANCE, letter.instance.encode()),
        ],
    )


async def list_dead_letters(
    bootstrap: str | list[str] | None,
    group: str,
    *,
    idle: float = 1.0,
    limit: int | None = None,
    token: str | None = None,
    security: ConnectOptions | None = None,
) -> list[DeadLetter]:
    """Every dead letter of `group` with its decision, if one was made on it alone
    (reads until `idle` seconds pass with nothing new)."""
    return with_decisions(await _read(bootstrap, dead_letter_topic(group), idle, limit, token, security or {}))


async def replay_dead_letters(
    bootstrap: str | list[str] | None,
    group: str,
    *,
    idle: float = 1.0,
    token: str | None = None,
    security: ConnectOptions | None = None,
) -> list[DeadLetter]:
    """Send the dead letters of `group` not replayed before back to their topics."""
    replay_group = f"{group}.dlq-replay"
    security = security or {}
    async with ClusterClient(bootstrap, token=token, **security) as cluster:
        done = await fetch_offsets(cluster, replay_group)
        msgs = [
            m
            for m in await _read(bootstrap, dead_letter_topic(group), idle, None, token, security)
            if m.offset >= (done.get((m.topic, m.partition)) or 0)
        ]
        letters = [d for d in with_decisions(msgs) if d.decision is None]
        if any(letter.instance is not None for letter in letters):
            await ensure_topics(cluster, [retry_topic(group)])
        async with Producer(bootstrap, token=token, **security) as producer:
            for letter in letters:
                topic, partition, headers = _back(group, letter)
                await producer.submit(
                    topic, letter.message.value, key=letter.message.key, headers=headers, partition=partition
                )
            await producer.flush()
        # Only now that they are resent: a crash before this replays them again, never loses them.
        last: dict[tuple[str, int], int] = {}
        for m in msgs:
            last[(m.topic, m.partition)] = max(last.get((m.topic, m.partition), 0), m.offset + 1)
        if last:
            await commit_offsets(cluster, replay_group, last)
    return letters


async def decide_dead_letter(
    bootstrap: str | list[str] | None,
    group: str,
    partition: int,
    offset: int,
    *,
    replay: bool,
    reason: str = "",
    token: str | None = None,
    security: ConnectOptions | None = None,
) -> DeadLetter:
    """Replay (`replay=True`) or discard one dead letter of `group`, the one at `offset`
    of partition `partition` of `<group>.dlq`, recording the decision there in the same
    transaction as the copy it sends (transactional id `<group>.dlq-decisions`).
    InvalidRequestError if there is no dead letter there, or it was decided already."""
    security = security or {}
    dlq = dead_letter_topic(group)
    async with ClusterClient(bootstrap, token=token, **security) as cluster:
        found = await read_partition(cluster, dlq, partition, offset, limit=1, keep=lambda s: s.offset == offset)
        if not found:
            raise InvalidRequestError(f"there is no dead letter at {dlq}-{partition}@{offset}")
        later = [
            d
            for r in await read_partition(cluster, dlq, partition, offset)
            if (d := dlq_decision(r.headers)) is not None and d[0] == offset
        ]
        s = found[0]
        message = Message(s.topic, s.partition, s.offset, s.key, s.value, tuple(s.headers), s.timestamp)
        if dlq_decision(message.headers) is not None:
            raise InvalidRequestError(f"{dlq}-{partition}@{offset} is a decision, not a dead letter")
        letter = as_dead_letter(message)
        if later:
            raise InvalidRequestError(f"{dlq}-{partition}@{offset} was {later[-1][1]} already")
        replayed_to = (await fetch_offsets(cluster, f"{group}.dlq-replay", [(dlq, partition)])).get((dlq, partition))
        if replayed_to is not None and replayed_to > offset:
            raise InvalidRequestError(f"{dlq}-{partition}@{offset} was replayed already, with the others")
        if letter.instance is not None and replay:
            await ensure_topics(cluster, [retry_topic(group)])
    decision = b"replayed" if replay else b"discarded"
    async with Producer(bootstrap, token=token, transactional_id=f"{group}.dlq-decisions", **security) as producer:
        await producer.begin_transaction()
        if replay:
            topic, to, headers = _back(group, letter)
            await producer.send(topic, message.value, key=message.key, headers=headers, partition=to)
        record = [(H_DLQ_DECISION, decision), (H_DLQ_OF, b"%d" % offset), (H_DLQ_REASON, reason.encode())]
        await producer.send(dlq, None, key=message.key, headers=record, partition=partition)
        await producer.commit_transaction()
    return letter._replace(decision=decision.decode(), reason=reason)
