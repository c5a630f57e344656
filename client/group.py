"""Consumer-group membership: `GroupMember` joins a group through its coordinator, keeps
the membership alive with heartbeats and tells its owner, through two callbacks, which
partitions to read. The broker computes the assignment (see node/coordinator.py); this
side only reports what it holds and follows what it is told.

    async with GroupMember(cluster, "billing", ["orders"],
                           on_assigned=start_reading, on_revoked=finish_and_commit) as member:
        ...
        await member.commit({("orders", 3): 1042})
        await member.committed([("orders", 3)])       # {("orders", 3): 1042}

Partitions are `(topic, partition)` tuples everywhere in this module (the callbacks'
sets, `assignment`, commit keys, `committed()` results): hashable and cheap. The wire's
`TopicPartition` structs are converted at the edge; passing them in works too.

The rules the member keeps, which the coordinator relies on so that no partition is
ever read by two members:

- It claims partitions the moment an answer assigns them (its next heartbeat reports
  them as owned), then calls `on_assigned`.
- It reports a partition as owned until `on_revoked` for it has returned: the consumer
  finishes and commits it first, only then may the coordinator give it to someone else.
- A member that gets no heartbeat answer for 2/3 of its session timeout (the coordinator
  drops it after the whole timeout) revokes everything itself and rejoins; so does one
  the coordinator no longer knows (UNKNOWN_MEMBER: it was expired or fenced).

Callbacks run one at a time, in the order of the changes, from a task of their own, so
a slow `on_revoked` does not stop the heartbeats. Heartbeats go out at the pace the
coordinator asks for, and at once after a revocation completes.

The member id is generated here (uuid4 hex) and kept for the member's lifetime, so
retries are idempotent and a rejoin after a lost session is recognised as the same
member. Leaving the block leaves the group: a clean exit first revokes everything
through `on_revoked` (so the consumer commits), then sends the leave; an exit by an
error or a cancellation only sends the leave (shielded, bounded), so the partitions
move at once instead of after the session timeout. An error raised by a callback or a
non-retriable heartbeat error (a bad group name) ends the block and is re-raised as is.

Its exit is bounded on its own (revocation by `rebalance_timeout`, the leave by 5 s,
shielded). Like anything that owns a task group, enter and exit it with `async with` or
an `AsyncExitStack`: a manual `__aexit__` must run in the same cancel-scope nesting as
`__aenter__` did (no new `CancelScope`/`move_on_after` around it), or trio and anyio
refuse it ("cancel scope stack corrupted").
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import anyio

from client.cluster import ClusterClient
from client.errors import (
    ConnectionClosedError,
    InvalidConfigError,
    ShuttingDownError,
    TideMQError,
    UnknownMemberError,
)
from client.protocol import (
    DescribeGroup,
    DescribeGroupResponse,
    GroupHeartbeat,
    ListGroups,
    OffsetCommit,
    OffsetFetch,
)
from client.protocol import (
    TopicPartition as WireTopicPartition,
)

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]
PartitionsCallback = Callable[[set[TopicPartition]], Awaitable[None]]

LOST_FRACTION = 2 / 3  # of the session timeout without an answer: give everything up
LEAVE_TIMEOUT_S = 5.0


def _tp(x: TopicPartition | WireTopicPartition) -> TopicPartition:
    return (x.topic, x.partition) if isinstance(x, WireTopicPartition) else (x[0], x[1])


def _wire(tps: Iterable[TopicPartition]) -> list[WireTopicPartition]:
    return [WireTopicPartition(t, p) for t, p in sorted(tps)]


async def _nothing(_: set[TopicPartition]) -> None:
    return None


# -- offsets and inspection without membership ------------------------------------------------


async def commit_offsets(
    cluster: ClusterClient,
    group: str,
    offsets: Mapping[TopicPartition, int] | Mapping[WireTopicPartition, int],
    *,
    member_id: str = "",
    member_epoch: int = -1,
) -> None:
    """Commit next-offsets-to-consume for a group; returns once replicated (acks=all).

    With `member_id=""` it is a simple commit that any tool may
    make; a member's commit is refused if the coordinator no longer knows the member
    (UnknownMemberError) or if it does not hold a partition (IllegalGenerationError).
    Bounded by the client's `request_timeout`.
    """
    if not offsets:
        return
    body = OffsetCommit(group, [(*_tp(tp), int(o)) for tp, o in offsets.items()], member_id, member_epoch)
    with anyio.fail_after(cluster.request_timeout):
        await cluster.coordinator_request(group, body)


async def fetch_offsets(
    cluster: ClusterClient,
    group: str,
    partitions: Iterable[TopicPartition | WireTopicPartition] | None = None,
    require_stable: bool = False,
) -> dict[TopicPartition, int | None]:
    """The group's committed offsets: for the given partitions (None where nothing is
    committed), or every partition the group has committed when `partitions` is None.
    `require_stable`: raise UnstableOffsetCommitError (retriable) while a transaction
    that will commit one of them is undecided, for a consumer about to start there."""
    wanted = None if partitions is None else [_tp(tp) for tp in partitions]
    body = OffsetFetch(group, None if wanted is None else _wire(wanted), require_stable)
    with anyio.fail_after(cluster.request_timeout):
        resp = await cluster.coordinator_request(group, body)
    found: dict[TopicPartition, int | None] = {(t, p): o for t, p, o in resp.offsets}
    if wanted is None:
        return found
    return {tp: found.get(tp) for tp in wanted}


async def list_groups(cluster: ClusterClient) -> list[str]:
    """Every group with members or committed offsets: each node lists the groups it
    coordinates; nodes that do not answer are skipped (their groups have moved)."""
    await cluster.refresh_metadata([])
    names: set[str] = set()
    for addr in list(cluster.nodes.values()):
        try:
            names.update((await cluster.request(addr, ListGroups())).groups)
        except (ConnectionClosedError, ShuttingDownError, TimeoutError):
            continue
    return sorted(names)


async def describe_group(cluster: ClusterClient, group: str) -> DescribeGroupResponse:
    """State (empty | stable | reconciling), epoch, members with what they hold, and the
    committed offsets, from the group's coordinator."""
    with anyio.fail_after(cluster.request_timeout):
        return await cluster.coordinator_request(group, DescribeGroup(group))


# -- membership -----------------------------------------------------------------------------


class GroupMember:
    """One member of a consumer group; use it as `async with` (it owns its tasks)."""

    def __init__(
        self,
        cluster: ClusterClient,
        group: str,
        topics: list[str],
        *,
        session_timeout: float = 10.0,
        rebalance_timeout: float = 30.0,
        client_id: str = "tidemq",
        on_assigned: PartitionsCallback | None = None,
        on_revoked: PartitionsCallback | None = None,
        instance_id: str | None = None,
    ) -> None:
        """With `instance_id`, a static member (Kafka's KIP-345): it joins under an id of
        its own making, and leaving it does not leave the group, so a restart within
        `session_timeout` rejoins as the same member and gets its partitions back, with
        no partition moving in between. One live consumer per instance id."""
        if not group or not isinstance(group, str):
            raise InvalidConfigError(f"group must be a non-empty string, not {group!r}")
        if not topics or isinstance(topics, str) or not all(isinstance(t, str) and t for t in topics):
            raise InvalidConfigError(f"topics must be a non-empty list of topic names, not {topics!r}")
        if not 0.1 <= session_timeout <= 3600 or not 0.1 <= rebalance_timeout <= 3600:
            raise InvalidConfigError("session_timeout and rebalance_timeout must be 0.1..3600 s")
        self.cluster = cluster
        self.group = group
        self.topics = list(topics)
        self.session_timeout = session_timeout
        self.rebalance_timeout = rebalance_timeout
        self.client_id = client_id
        if instance_id is not None and not (0 < len(instance_id) <= 200):
            raise InvalidConfigError(f"instance_id must be 1..200 characters, not {instance_id!r}")
        self.static = instance_id is not None
        self.member_id = f"static-{instance_id}" if instance_id is not None else uuid.uuid4().hex
        self.member_epoch = 0  # 0: (re)join at the next heartbeat
        self._on_assigned = on_assigned or _nothing
        self._on_revoked = on_revoked or _nothing
        self._target: set[TopicPartition] = set()  # what the coordinator last said to hold
        self._held: set[TopicPartition] = set()  # what we report as owned
        self._announced: set[TopicPartition] = set()  # handed to on_assigned, not yet revoked
        self._last_ok: float | None = None  # send time of the last answered heartbeat
        self._interval = 0.0
        self._closing = False
        self._changed = anyio.Event()  # the target moved: reconcile
        self._beat_now = anyio.Event()  # something to report: heartbeat without waiting
        self._progress = anyio.Event()  # held/announced changed: for whoever waits on them
        self._error: BaseException | None = None
        self._tg: anyio.abc.TaskGroup | None = None

    @property
    def assignment(self) -> set[TopicPartition]:
        """The partitions this member holds now (announced through on_assigned and not
        yet revoked)."""
        return set(self._announced)

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> GroupMember:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._guard, self._heartbeat_loop)
        self._tg.start_soon(self._guard, self._reconcile_loop)
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        assert self._tg is not None
        suppress = False
        try:
            if exc_type is None and self._error is None and not self.static:
                self._closing = True  # keep heartbeating, take nothing new, give all back
                with anyio.move_on_after(self.rebalance_timeout):  # the coordinator fences us then anyway
                    await self._release_all()
        finally:
            self._tg.cancel_scope.cancel()
            try:
                suppress = bool(await self._tg.__aexit__(exc_type, exc, tb))
            finally:
                if not self.static:  # (a static member stays in; its session ends it, or it comes back)
                    with anyio.move_on_after(LEAVE_TIMEOUT_S, shield=True):
                        await self._leave()
        if self._error is not None:
            raise self._error
        return suppress

    async def _guard(self, loop: Callable[[], Awaitable[None]]) -> None:
        """Run a background loop; its error ends the whole block and is re-raised by
        __aexit__ as it is (not wrapped in an exception group)."""
        try:
            await loop()
        except Exception as exc:
            if self._error is None:
                self._error = exc
            assert self._tg is not None
            self._tg.cancel_scope.cancel()

    async def _leave(self, member_id: str | None = None) -> None:
        body = GroupHeartbeat(
            self.group,
            member_id or self.member_id,
            -1,
            self.topics,
            [],
            self.client_id,
            int(self.session_timeout * 1000),
            int(self.rebalance_timeout * 1000),
        )
        try:
            await self.cluster.coordinator_request(self.group, body)
        except TideMQError as exc:  # best effort: the session timeout removes us anyway
            log.info("group %s: leave not acknowledged: %s", self.group, exc)

    async def _leave_soon(self, member_id: str) -> None:
        """Leave as a former incarnation, in the background: best effort, bounded."""
        with anyio.move_on_after(LEAVE_TIMEOUT_S):
            try:
                await self._leave(member_id)
            except (TimeoutError, OSError) as exc:
                log.info("group %s: leave of former member %s not sent: %r", self.group, member_id, exc)

    # -- offsets --------------------------------------------------------------------------------

    async def commit(self, offsets: Mapping[TopicPartition, int] | Mapping[WireTopicPartition, int]) -> None:
        """Commit next-offsets-to-consume for partitions this member holds (or is
        revoking); see `commit_offsets` for the errors."""
        await commit_offsets(
            self.cluster, self.group, offsets, member_id=self.member_id, member_epoch=self.member_epoch
        )

    async def committed(
        self,
        partitions: Iterable[TopicPartition | WireTopicPartition],
    ) -> dict[TopicPartition, int | None]:
        """The group's committed offsets for these partitions (None: nothing committed),
        once no undecided transaction is about to move them (the member starts there)."""
        return await fetch_offsets(self.cluster, self.group, partitions, require_stable=True)

    # -- heartbeats ------------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await self._heartbeat()
            with anyio.move_on_after(self._interval):
                await self._beat_now.wait()
            self._beat_now = anyio.Event()

    async def _heartbeat(self) -> None:
        if self._closing and self.member_epoch == 0:
            self._interval = self.session_timeout  # lost while leaving: nothing to rejoin for
            return
        now = anyio.current_time()
        session = self.session_timeout
        lost_at = self._last_ok + session * LOST_FRACTION if self._last_ok is not None and self._held else math.inf
        if now >= lost_at:
            await self._lose(f"no heartbeat answered for {now - self._last_ok:.1f}s")  # type: ignore[operator]
            return
        body = GroupHeartbeat(
            self.group,
            self.member_id,
            self.member_epoch,
            self.topics,
            _wire(self._held),
            self.client_id,
            int(session * 1000),
            int(self.rebalance_timeout * 1000),
        )
        try:
            with anyio.fail_after(max(0.05, min(lost_at - now, session / 2, self.cluster.request_timeout))):
                resp = await self.cluster.coordinator_request(self.group, body)
        except TimeoutError:
            self._interval = 0.0  # try again at once (the loss check above runs first)
            return
        except UnknownMemberError as exc:
            await self._lose(exc.message)
            return
        self._last_ok = now
        self.member_epoch = resp.member_epoch
        self._interval = resp.heartbeat_interval_ms / 1000
        if self._closing:
            return
        assignment = {(tp.topic, tp.partition) for tp in resp.assignment}
        self._held |= assignment  # ours from now on: the next heartbeat reports them
        if assignment != self._target:
            self._target = assignment
            self._changed.set()

    async def _lose(self, why: str) -> None:
        """Fenced, expired or out of touch: give everything up, then rejoin as a new
        member. A new id, because a handler of this incarnation may still be running and
        commit: the group must not take it for the member that the partition goes to
        next, even if that is this consumer again (KIP-447)."""
        if self._held:
            log.warning(
                "group %s: member %s gives up %d partitions: %s", self.group, self.member_id, len(self._held), why
            )
        await self._release_all()
        old, self.member_id = self.member_id, uuid.uuid4().hex
        assert self._tg is not None
        self._tg.start_soon(self._leave_soon, old)  # frees its partitions before it would expire
        self.member_epoch = 0
        self._last_ok = None
        self._interval = 0.0

    async def _release_all(self) -> None:
        self._target = set()
        self._changed.set()
        while self._held:
            await self._progress.wait()

    # -- reconciliation ---------------------------------------------------------------------------

    async def _reconcile_loop(self) -> None:
        while True:
            await self._changed.wait()
            self._changed = anyio.Event()
            await self._reconcile()

    async def _reconcile(self) -> None:
        """Bring what we hold to the target: revoke first (so a partition is free before
        anything new starts), then assign; re-read the target after every callback."""
        while True:
            revoke = self._announced - self._target
            if revoke:
                await self._on_revoked(set(revoke))
                self._announced -= revoke
                self._release(revoke)
                continue
            withdrawn = self._held - self._target - self._announced  # claimed, never announced
            if withdrawn:
                self._release(withdrawn)
            assign = (self._target & self._held) - self._announced
            if not assign:
                return
            self._announced |= assign
            await self._on_assigned(set(assign))
            self._signal_progress()

    def _release(self, tps: set[TopicPartition]) -> None:
        self._held -= tps
        self._beat_now.set()
        self._signal_progress()

    def _signal_progress(self) -> None:
        self._progress.set()
        self._progress = anyio.Event()
