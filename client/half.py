"""Half messages with check-back (RocketMQ's transactional messages): the client side.

For a local database transaction that must publish a message if and only if it commits:

    async with Producer(bootstrap, producer_group="orders-svc", transaction_checker=check) as p:
        half = await p.send_half("orders", value, key=b"order-7")   # stored, not visible
        await save_order_in_local_db()
        await half.commit()                                          # or half.abort()

A half message is produced (idempotently, acks=all) into partition hash(producer_group)
of the internal `__half_messages` topic, its target and check-back settings in headers.
Nothing reads that topic but the cluster, so the half is durable and replicated yet in
no consumer's topic, and it never holds back the last stable offset of its target.
That partition's leader is the group's half coordinator: `commit()` makes it copy the
message to its target exactly once (a fresh offset there), `abort()` drops it. A half
nobody decides within `check_after` seconds is offered to a live producer of the same
group, whose `transaction_checker` answers True (commit), False (abort) or None (ask
again later, with backoff); after `max_checks` checks without an answer the coordinator
aborts it and records why (`tidemq half list --resolved`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio

from client.conventions import HALF_TOPIC, MAX_GROUP_NAME, half_partition
from client.errors import InvalidConfigError, RequestTimeoutError, TideMQError
from client.protocol import EndHalf, EndHalfResponse, HalfCheck, PollHalfChecks
from client.records import RecordMetadata

if TYPE_CHECKING:
    from client.cluster import ClusterClient

log = logging.getLogger(__name__)

DEFAULT_CHECK_AFTER_S = 6.0
DEFAULT_MAX_CHECKS = 15
POLL_WAIT_MS = 5_000

Checker = Callable[["HalfMessage"], Awaitable["bool | None"]]


def parse_half_id(half_id: str) -> tuple[int, int]:
    """(partition, offset) from a half id "P:OFFSET"."""
    p, sep, off = half_id.partition(":")
    if not sep or not p.isdigit() or not off.isdigit():
        raise InvalidConfigError(f"half id {half_id!r} is not PARTITION:OFFSET (as send_half returned it)")
    return int(p), int(off)


class HalfMessage:
    """A half message: stored and replicated, visible to no consumer until committed.

    Also what a `transaction_checker` is handed: `key`, `value`, `headers` as sent,
    `check` counting the check-backs of this half so far (1 for the first)."""

    def __init__(
        self,
        cluster: ClusterClient,
        producer_group: str,
        partition: int,
        offset: int,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: tuple,
        timestamp: int,
        check: int = 0,
        timeout: float = 120.0,
    ) -> None:
        self._cluster = cluster
        self._timeout = timeout
        self.producer_group = producer_group
        self.partition = partition  # of __half_messages
        self.offset = offset
        self.topic = topic  # the target topic
        self.key = key
        self.value = value
        self.headers = headers
        self.timestamp = timestamp
        self.check = check

    @property
    def id(self) -> str:
        return f"{self.partition}:{self.offset}"

    def __repr__(self) -> str:
        return f"HalfMessage(id={self.id!r}, topic={self.topic!r}, key={self.key!r})"

    async def commit(self) -> RecordMetadata:
        """Make it visible in its topic (exactly once); where it landed."""

        resp = await end_half(
            self._cluster, self.producer_group, self.partition, self.offset, True, timeout=self._timeout
        )
        return RecordMetadata(resp.topic, resp.partition, resp.offset, self.timestamp)

    async def abort(self, reason: str = "aborted by the producer") -> None:
        """Discard it; no consumer ever sees it."""
        await end_half(
            self._cluster, self.producer_group, self.partition, self.offset, False, reason, timeout=self._timeout
        )


async def end_half(
    cluster: ClusterClient,
    producer_group: str,
    partition: int,
    offset: int,
    commit: bool,
    reason: str = "",
    *,
    timeout: float = 120.0,
) -> EndHalfResponse:
    """Decide a half message at its coordinator, following it as it moves, for up to
    `timeout` seconds. Deciding the same way twice is fine (the first answer is
    repeated); the other way is an error."""
    try:
        with anyio.fail_after(timeout):
            return await cluster.leader_request(
                HALF_TOPIC, partition, EndHalf(producer_group, partition, offset, commit, reason)
            )
    except TimeoutError:
        raise RequestTimeoutError(
            f"half {partition}:{offset}: no answer to {'commit' if commit else 'abort'} within {timeout:g}s; "
            "the decision may or may not be recorded: decide again (it is idempotent), or leave it to the "
            "check-back"
        ) from None


def check_settings(producer_group: str | None, check_after: float, max_checks: int) -> None:
    if producer_group is not None and (
        not isinstance(producer_group, str) or not 0 < len(producer_group) <= MAX_GROUP_NAME
    ):
        raise InvalidConfigError(f"producer_group must be a string of 1-{MAX_GROUP_NAME} characters")
    if not 0 < check_after <= 86_400:
        raise InvalidConfigError(f"check_after must be in (0, 86400] seconds, got {check_after}")
    if not 1 <= max_checks <= 1000:
        raise InvalidConfigError(f"max_checks must be in 1..1000, got {max_checks}")


async def run_checker(cluster: ClusterClient, producer_group: str, checker: Checker, timeout: float) -> None:
    """Answer the group's check-backs for as long as the producer lives: long-poll the
    group's coordinator, ask `checker` about each half, report its decision. A checker
    that raises or overruns `timeout` counts as "ask again later"."""
    backoff = 0.1
    while True:
        try:
            n = await cluster.partition_count(HALF_TOPIC)
            p = half_partition(producer_group, n)
            resp = await cluster.leader_request(HALF_TOPIC, p, PollHalfChecks(producer_group, POLL_WAIT_MS))
            backoff = 0.1
        except (TideMQError, TimeoutError) as exc:
            log.info("check-back poll for group %r failed, retrying: %s", producer_group, exc)
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
            continue
        for c in resp.checks:
            await _answer(cluster, producer_group, checker, c, timeout)


async def _answer(cluster: ClusterClient, group: str, checker: Checker, c: HalfCheck, timeout: float) -> None:
    msg = HalfMessage(
        cluster, group, c.partition, c.offset, c.topic, c.key, c.value, tuple(c.headers), c.timestamp, c.check, timeout
    )
    decision = None
    try:
        with anyio.fail_after(timeout):
            decision = await checker(msg)
    except Exception as exc:  # the user's code: log, and let the coordinator ask again
        log.warning(
            "transaction_checker failed on half %s (check %d): %r; it will be asked again", msg.id, c.check, exc
        )
        return
    if decision is None:
        return
    try:
        await end_half(
            cluster,
            group,
            c.partition,
            c.offset,
            bool(decision),
            "" if decision else f"transaction_checker answered abort on check {c.check}",
            timeout=timeout,
        )
    except TideMQError as exc:  # decided meanwhile, or the coordinator moved: it asks again if need be
        log.info("deciding half %s after a check-back failed: %s", msg.id, exc)
