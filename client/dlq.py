"""Dead letters: look at what a group gave up on, and send it back.

A consumer group's `run()` (client/processor.py) writes a message it could not handle after its last retry to
`<group>.dlq`, with headers saying where it came from (topic, partition, offset), how
many attempts were made, the last error and when. `replay` sends dead letters back to
their original topic (user headers kept, TideMQ's own dropped, so the attempt count
starts again) and remembers how far it got in the group `<group>.dlq-replay`, so a
second replay never sends the same dead letter twice. A broadcast instance's dead
letter (it names the instance) goes back to that instance alone, through the group's
retry topic: its original topic would deliver it to every instance again.
"""

from __future__ import annotations

from typing import NamedTuple

import anyio

from client.cluster import ClusterClient
from client.consumer import Consumer, Message
from client.conventions import (
    H_ATTEMPT,
    H_DLQ_ERROR,
    H_DLQ_TIME,
    H_INSTANCE,
    H_ORIGIN_OFFSET,
    H_ORIGIN_PARTITION,
    H_ORIGIN_TOPIC,
    H_REPLAYED_FROM,
    dead_letter_topic,
    retry_topic,
)
from client.group import commit_offsets, fetch_offsets
from client.processor import ensure_topics, int_header, origin_of, user_headers
from client.producer import Producer
from client.tls import ConnectOptions


class DeadLetter(NamedTuple):
    message: Message  # as stored in the dead-letter topic
    topic: str  # where it came from
    partition: int
    offset: int
    attempts: int
    error: str
    time_ms: int
    instance: str | None = None  # the broadcast instance that gave up on it


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


async def list_dead_letters(
    bootstrap: str | list[str] | None,
    group: str,
    *,
    idle: float = 1.0,
    limit: int | None = None,
    token: str | None = None,
    security: ConnectOptions | None = None,
) -> list[DeadLetter]:
    """Every dead letter of `group` (reads until `idle` seconds pass with nothing new)."""
    return [
        as_dead_letter(m) for m in await _read(bootstrap, dead_letter_topic(group), idle, limit, token, security or {})
    ]


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
        letters = [as_dead_letter(m) for m in msgs]
        if any(letter.instance is not None for letter in letters):
            await ensure_topics(cluster, [retry_topic(group)])
        async with Producer(bootstrap, token=token, **security) as producer:
            for letter in letters:
                m = letter.message
                replayed = (H_REPLAYED_FROM, f"{m.topic}/{m.partition}/{m.offset}".encode())  # (for a trace)
                if letter.instance is None:
                    await producer.submit(
                        letter.topic,
                        m.value,
                        key=m.key,
                        headers=[*user_headers(m), replayed],
                        partition=letter.partition,
                    )
                    continue
                await producer.submit(
                    retry_topic(group),
                    m.value,
                    key=m.key,
                    headers=[*user_headers(m), replayed]
                    + [
                        (H_ORIGIN_TOPIC, letter.topic.encode()),
                        (H_ORIGIN_PARTITION, b"%d" % letter.partition),
                        (H_ORIGIN_OFFSET, b"%d" % letter.offset),
                        (H_INSTANCE, letter.instance.encode()),
                    ],
                )
            await producer.flush()
        # Only now that they are resent: a crash before this replays them again, never loses them.
        last: dict[tuple[str, int], int] = {}
        for m in msgs:
            last[(m.topic, m.partition)] = max(last.get((m.topic, m.partition), 0), m.offset + 1)
        if last:
            await commit_offsets(cluster, replay_group, last)
    return letters
