"""Consumer: read topics, alone, in a group, or as a broadcast listener.

    async with Consumer(bootstrap, group="billing", topics=["orders"]) as consumer:
        async for msg in consumer:
            ...
            await consumer.commit()          # what the iterator has handed out
        # or
        await consumer.run(handler, mode="serial" | "concurrent", concurrency=16, timeout=5.0)

- In a group, the partitions are shared among the group's members by the broker
  (`client.group`); committed offsets live in the replicated `__consumer_offsets` topic,
  so a restarted or replacement member resumes where the group left off.
- `broadcast=True, group="notifier"`: every instance reads every partition as a consumer
  group of its own, `notifier@<instance_id>` (`instance_id` defaults to the host name):
  it commits its own offsets, resumes after them when it restarts with the same
  instance id, and a new instance starts at `offset_reset`. `tidemq group describe
  notifier` lists the instances; one idle longer than the offsets' retention is expired.
- `broadcast=True` without a group: an ephemeral listener that reads every partition
  from the end of the log and keeps no position (`commit()` does nothing).
- Without a group: all partitions, from `offset_reset`; nothing is committed.

`run()` handles messages with a handler in serial or concurrent mode, with timeouts,
retries and dead letters, or exactly-once in transactions: client/processor.py.
"""

from __future__ import annotations

import logging
import socket
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, contextmanager
from typing import Any

import anyio
from sortedcontainers import SortedSet

from client import processor
from client.cluster import ClusterClient
from client.errors import (
    AuthorizationFailedError,
    CorruptBatchError,
    InvalidConfigError,
    OffsetOutOfRangeError,
    TideMQError,
    UnknownTopicError,
    UnstableOffsetCommitError,
    error_for,
    error_leaves,
)
from client.group import GroupMember
from client.processor import Held
from client.producer import Producer
from client.protocol import (
    EARLIEST,
    LATEST,
    READ_COMMITTED,
    READ_UNCOMMITTED,
    Fetch,
    FetchPartition,
    ListOffsets,
)
from client.records import GroupMetadata, Message
from segments.batch import codec_in_use, decode_rows, iter_batches, verify
from segments.errors import SegmentError

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]


class _Assigned:
    """One partition this consumer reads: where it is, what is in flight."""

    def __init__(self, position: int | None, epoch: int = -1) -> None:
        # None until known (a group member looks its committed offset up after the
        # assignment, see `_on_assigned`); nothing is committed for it until then.
        self.position: int = position  # type: ignore[assignment]   # next offset to fetch
        self.handed: int | None = position  # next offset after what the iterator handed out
        self.pending: SortedSet = SortedSet()  # offsets handed to handlers, not finished
        self.controls: dict[int, int] = {}  # control batches ahead: base offset -> next offset
        self.scope = anyio.CancelScope()
        self.revoked = False
        self.epoch = epoch  # the member epoch it was assigned at (-1: no group)

    def hand_out(self, offset: int) -> None:
        """`offset` was handed out; step over control batches right after it, so the
        committed position passes Raft no-ops and markers (lag 0 when caught up)."""
        assert self.handed is not None, "handed out before the position was known"
        self.handed = max(self.handed, offset)
        while self.handed in self.controls:
            self.handed = self.controls.pop(self.handed)


class _Chunk:
    """One fetch's messages for one partition, handed out from `pos` on."""

    __slots__ = ("state", "messages", "pos")

    def __init__(self, state: _Assigned, messages: list[Message | TideMQError]) -> None:
        self.state, self.messages, self.pos = state, messages, 0


class Consumer:
    def __init__(
        self,
        bootstrap: str | list[str] | None = None,
        *,
        group: str | None = None,
        topics: list[str],
        offset_reset: str = "latest",
        broadcast: bool = False,
        instance_id: str | None = None,
        isolation: str = "read_committed",
        token: str | None = None,
        session_timeout: float = 10.0,
        rebalance_timeout: float = 30.0,
        max_wait: float = 0.5,
        fetch_max_bytes: int = 1024 * 1024,
        buffer: int = 10_000,
        request_timeout: float = 30.0,
        client_id: str = "tidemq-consumer",
        tls: bool | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        if offset_reset not in ("earliest", "latest"):
            raise InvalidConfigError(f"offset_reset must be 'earliest' or 'latest', not {offset_reset!r}")
        if isolation not in ("read_committed", "read_uncommitted"):
            raise InvalidConfigError(f"isolation must be 'read_committed' or 'read_uncommitted', not {isolation!r}")
        if not topics or isinstance(topics, str):
            raise InvalidConfigError("topics must be a non-empty list of topic names")
        self.topics = list(topics)
        self.broadcast = broadcast
        # The group a broadcast instance belongs to names its retry and dead-letter
        # topics; `group` is the consumer group it really is (the instance's own).
        self.broadcast_group: str | None = None
        self.instance_id: str | None = None
        if broadcast and group is not None:
            self.broadcast_group, self.instance_id = group, broadcast_instance(instance_id)
            group = instance_group(group, self.instance_id)
        elif instance_id is not None and group is None:
            raise InvalidConfigError("instance_id needs a group: a static member, or a broadcast instance")
        self.static_id = instance_id if not broadcast else None  # a static group member (KIP-345)
        self.group = group
        # (the ephemeral listener keeps no position, so it starts at the end)
        self.offset_reset = "latest" if broadcast and group is None else offset_reset
        self.isolation = READ_COMMITTED if isolation == "read_committed" else READ_UNCOMMITTED
        self.session_timeout = session_timeout
        self.rebalance_timeout = rebalance_timeout
        self.max_wait = max_wait
        self.fetch_max_bytes = fetch_max_bytes
        self.client_id = client_id
        self.cluster = ClusterClient(
            bootstrap,
            token=token,
            client_id=client_id,
            request_timeout=request_timeout,
            tls=tls,
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
            username=username,
            password=password,
        )
        self._assigned: dict[TopicPartition, _Assigned] = {}
        # Whole fetched batches travel through the stream; the iterator takes messages
        # from the chunk at the head of `_ready` one by one (a per-message channel hop
        # would cost more than the rest), `getmany`/`batches` take slices of it.
        # A partition that cannot be read on sends its error in place of a message.
        self._send, self._receive = anyio.create_memory_object_stream[tuple[_Assigned, list[Message | TideMQError]]](
            max(1, buffer // 500)
        )
        self._ready: deque[_Chunk] = deque()
        self._active_handlers = 0  # run() handlers running now (a revocation waits for them)
        self._txn_commits = False  # run(producer=...): only transactions commit offsets
        self._tg: anyio.abc.TaskGroup | None = None
        self._member: GroupMember | None = None
        self._stack: AsyncExitStack
        # run(trace=True)'s producer of run records: owned by a task of this consumer,
        # so it outlives a run that is cancelled (`runs_producer`).
        self._runs: Producer | BaseException | None = None
        self._runs_ready: anyio.Event | None = None
        self._runs_closing = anyio.Event()
        self._runs_closed = anyio.Event()

    @property
    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    @property
    def membership(self) -> tuple[str, int] | None:
        """(member id, current member epoch) in the group; None outside group membership."""
        return None if self._member is None else (self._member.member_id, self._member.member_epoch)

    def group_metadata(self) -> GroupMetadata:
        """This consumer's group, membership and the epoch each partition it holds was
        assigned at, for a transactional producer's `send_offsets` (the group checks them,
        KIP-447). A consumer that commits without joining (manual assignment) is no
        member: its offsets go unchecked, as Kafka's do."""
        if self.group is None:
            raise InvalidConfigError("only a consumer in a group has group metadata: Consumer(..., group='name')")
        if self._member is None:
            return GroupMetadata(self.group)
        epochs = {tp: s.epoch for tp, s in self._assigned.items() if not s.revoked}
        return GroupMetadata(self.group, self._member.member_id, epochs)

    # -- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> Consumer:
        await anyio.to_thread.run_sync(codec_in_use)  # load the record codec now, not in the first fetch
        # The exit stack unwinds in reverse: leave the group (revoking and committing
        # through `_on_revoked`), stop the fetch tasks, close the connections.
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            await stack.enter_async_context(self.cluster)
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(self._tg.cancel_scope.cancel)
            if self.group is not None:
                self._member = GroupMember(
                    self.cluster,
                    self.group,
                    self.topics,
                    session_timeout=self.session_timeout,
                    rebalance_timeout=self.rebalance_timeout,
                    client_id=self.client_id,
                    on_assigned=self._on_assigned,
                    on_revoked=self._on_revoked,
                    instance_id=self.static_id,
                )
                await stack.enter_async_context(self._member)
            else:
                parts: set[TopicPartition] = set()
                for topic in self.topics:
                    n = await self.cluster.partition_count(topic)
                    parts.update((topic, p) for p in range(n))
                await self._on_assigned(parts)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(self, *exc: Any) -> None:
        # Unwound without the body's exception, so it propagates as is (not wrapped in
        # an ExceptionGroup by the task groups on the way out); so does the one error
        # that ended the group membership (a refused group, say).
        if self._runs_ready is not None:  # the run records still queued go out first
            self._runs_closing.set()
            with anyio.CancelScope(shield=True), anyio.move_on_after(processor.RUNS_FLUSH_S):
                await self._runs_closed.wait()
        if self._member is not None and self._member.static and exc[0] is None and not self._txn_commits:
            # A static member keeps its partitions while it is away: what it handled is
            # committed now, as giving them back would have.
            with anyio.move_on_after(self.rebalance_timeout):
                try:
                    await self.commit()
                except TideMQError as exc_:
                    log.warning("group %s: offsets not committed on close: %s", self.group, exc_)
        try:
            await self._stack.aclose()
        except BaseExceptionGroup as group:
            leaves = error_leaves(group)
            if len(leaves) == 1 and isinstance(leaves[0], Exception):
                raise leaves[0] from None
            raise

    # -- assignment -----------------------------------------------------------------------------------

    async def _on_assigned(self, parts: set[TopicPartition]) -> None:
        """Without a group: start every partition at `offset_reset` now. In a group:
        claim the partitions and return at once; a task of their own looks up where
        they start. A callback that waited on a coordinator gone silent would hold up
        the member's reconciliation, and a failure here would end the whole consumer."""
        assert self._tg is not None
        if self._member is None:
            for tp in parts:
                state = self._assigned[tp] = _Assigned(await self._reset_offset(tp))
                self._tg.start_soon(self._fetch_loop, tp, state)
            return
        states = {tp: _Assigned(None, self._member.member_epoch) for tp in parts}
        self._assigned.update(states)
        self._tg.start_soon(self._start_from_committed, states)

    async def _start_from_committed(self, states: dict[TopicPartition, _Assigned]) -> None:
        """Fetch the group's committed offsets for newly assigned partitions (one
        request for all), retrying while the coordinator cannot answer, then start
        their fetch loops (which reset those with nothing committed). Partitions
        revoked meanwhile are dropped: nothing was read from them, nothing committed."""
        assert self._member is not None and self._tg is not None
        backoff = 0.05
        while True:
            live = {tp: s for tp, s in states.items() if not s.revoked}
            if not live:
                return
            try:
                committed = await self._member.committed(sorted(live))
                break
            except (TideMQError, TimeoutError) as exc:
                if isinstance(exc, TideMQError) and not exc.retriable:
                    raise
                (log.info if isinstance(exc, UnstableOffsetCommitError) else log.warning)(
                    "committed offsets of %s not fetched yet: %r", sorted(live), exc
                )
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
        for tp, state in live.items():
            if not state.revoked:
                state.position = state.handed = committed.get(tp)  # type: ignore[assignment]
                self._tg.start_soon(self._fetch_loop, tp, state)

    async def _on_revoked(self, parts: set[TopicPartition]) -> None:
        """Stop fetching, let in-flight handlers finish (bounded), commit, forget."""
        states = {tp: self._assigned[tp] for tp in parts if tp in self._assigned}
        for state in states.values():
            state.revoked = True
            state.scope.cancel()
        with anyio.move_on_after(self.rebalance_timeout / 2):
            while self._active_handlers and any(s.pending for s in states.values()):
                await anyio.sleep(0.01)
        if self._member is not None and not self._txn_commits:
            offsets = self._points(states)
            try:
                await self._member.commit(offsets)
            except (TideMQError, TimeoutError) as exc:
                # The coordinator is gone or silent: give the partitions up anyway. Their
                # next owner starts from the last commit that did land, so what was
                # read since is delivered again (never lost).
                log.warning("commit on revoke failed for %s: %r", sorted(offsets), exc)
        for tp in states:
            self._assigned.pop(tp, None)

    async def _reset_offset(self, tp: TopicPartition) -> int:
        return await self._list_offset(tp, EARLIEST if self.offset_reset == "earliest" else LATEST)

    async def _list_offset(self, tp: TopicPartition, when: int) -> int:
        return (await self.cluster.leader_request(tp[0], tp[1], ListOffsets(tp[0], tp[1], when, self.isolation))).offset

    # -- moving ----------------------------------------------------------------------------------------

    def seek(self, topic: str, partition: int, offset: int) -> None:
        """Read an assigned partition from `offset` next: what was fetched and not handed
        out yet is dropped, and in a group the next commit of it is from there (Kafka's
        `seek`). InvalidConfigError for a partition this consumer does not hold."""
        tp = (topic, partition)
        old = self._assigned.get(tp)
        if old is None or old.revoked or self._tg is None:
            raise InvalidConfigError(f"{topic}-{partition} is not assigned to this consumer (see its .assignment)")
        old.revoked = True  # its fetched chunks are dropped, its loop ends
        old.scope.cancel()
        new = self._assigned[tp] = _Assigned(max(offset, 0), old.epoch)
        self._tg.start_soon(self._fetch_loop, tp, new)

    async def seek_to_beginning(self, partitions: list[TopicPartition] | None = None) -> None:
        """Read these partitions (all assigned ones by default) from their log start."""
        for tp in partitions or sorted(self.assignment):
            self.seek(*tp, await self._list_offset(tp, EARLIEST))

    async def seek_to_end(self, partitions: list[TopicPartition] | None = None) -> None:
        """Skip to the end of these partitions (all assigned ones by default): only what
        is written from now on."""
        for tp in partitions or sorted(self.assignment):
            self.seek(*tp, await self._list_offset(tp, LATEST))

    async def offsets_for_times(self, times: dict[TopicPartition, int]) -> dict[TopicPartition, int | None]:
        """For each partition, the first offset whose record is at or after the time (ms);
        None where no record is (Kafka's `offsetsForTimes`)."""
        out: dict[TopicPartition, int | None] = {}
        for tp, ms in times.items():
            found, end = await self._list_offset(tp, ms), await self._list_offset(tp, LATEST)
            out[tp] = None if found >= end else found
        return out

    # -- fetching ---------------------------------------------------------------------------------------

    async def _fetch_loop(self, tp: TopicPartition, state: _Assigned) -> None:
        topic, p = tp
        with state.scope:
            if state.position is None:
                state.position = state.handed = await self._reset_offset(tp)
            while True:
                req = Fetch(
                    [FetchPartition(topic, p, state.position, self.fetch_max_bytes)],
                    max_wait_ms=int(self.max_wait * 1000),
                    isolation=self.isolation,
                )
                try:
                    resp = await self.cluster.leader_request(topic, p, req)
                except UnknownTopicError:
                    log.warning("%s-%s disappeared; stop reading it", topic, p)
                    return
                res = resp.results[0]
                if res.error:
                    if res.error == AuthorizationFailedError.code:  # the consumer hears it; others go on
                        await self._send.send((state, [error_for(res.error, res.error_message)]))
                        return
                    if res.error == OffsetOutOfRangeError.code:
                        state.position = await self._reset_offset(tp)
                        log.warning(
                            "%s-%s: offset out of range, reset to %s (%s)", topic, p, state.position, self.offset_reset
                        )
                        continue
                    # Leadership moved under us: the retrying request path finds the new leader.
                    with anyio.move_on_after(self.cluster.request_timeout):
                        try:
                            await self.cluster.refresh_metadata([topic])
                        except TideMQError as exc:  # no node answers now: ask again next round
                            log.info("%s-%s: metadata refresh failed: %s", topic, p, exc)
                    await anyio.sleep(0.05)
                    continue
                messages = self._decode(topic, p, state, res)
                if messages and isinstance(messages[-1], TideMQError):
                    await self._send.send((state, messages))  # what came before it, then the error
                    return
                assert state.handed is not None  # known once the position is
                state.hand_out(state.handed)  # nothing pending before a control batch
                if messages:
                    await self._send.send((state, messages))

    def _decode(self, topic: str, p: int, state: _Assigned, res) -> list[Message | TideMQError]:
        """The messages of one fetch result from the position on, skipping control
        batches and, read_committed, aborted transactions. A batch that cannot be
        decoded (bit rot on the leader's disk: the broker validated it on the way in)
        ends the list with a CorruptBatchError saying where; the partition stops there
        and every other one goes on."""
        messages: list[Message | TideMQError] = []
        try:
            self._decode_into(messages, topic, p, state, res)
            return messages
        except SegmentError as exc:
            at = state.position
            return messages + [
                CorruptBatchError(
                    f"{topic}-{p}: the data at offset {at} cannot be decoded ({exc}); stopped reading this partition. "
                    "The leader's copy is damaged: restore that replica, or move the group's offset past it",
                    topic=topic,
                    partition=p,
                    offset=at,
                )
            ]

    @staticmethod
    def _decode_into(messages: list[Message | TideMQError], topic: str, p: int, state: _Assigned, res) -> None:
        # Aborted transactions (read_committed): from its first offset until its
        # marker, a producer's transactional batches are dropped (Kafka's rule).
        aborted = sorted((a.first_offset, a.producer_id) for a in res.aborted)
        aborting: set[int] = set()
        # Each batch's CRC is checked once: by `decode_records`, or `verify` for one skipped.
        for header, data in iter_batches(res.records, check_crc=False):
            while aborted and aborted[0][0] <= header.base_offset:
                aborting.add(aborted.pop(0)[1])
            skip = header.is_control or (header.is_transactional and header.producer_id in aborting)
            if header.is_control and header.is_transactional:
                aborting.discard(header.producer_id)
            if skip:
                verify(data)
                if header.last_offset >= state.position:
                    state.controls[header.base_offset] = header.last_offset + 1
            else:
                # Every record passes here: built as a Message by the codec, with no
                # Record in between (half the decoding cost of a 256 B record).
                rows = decode_rows(Message, (topic, p), data)
                messages.extend(
                    rows if header.base_offset >= state.position else rows[state.position - header.base_offset :]
                )
            state.position = max(state.position, header.last_offset + 1)

    # -- the iterator ------------------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        ready = self._ready
        while True:
            if not ready:
                ready.append(_Chunk(*await self._receive.receive()))
            chunk = ready[0]
            if chunk.state.revoked:
                ready.popleft()  # fetched before a rebalance took the partition away
                continue
            msg = chunk.messages[chunk.pos]
            chunk.pos += 1
            if chunk.pos == len(chunk.messages):
                ready.popleft()
            if isinstance(msg, TideMQError):
                raise msg  # that partition cannot be read on; the others go on
            chunk.state.hand_out(msg.offset + 1)
            return msg

    async def getmany(
        self, max_records: int | None = None, timeout: float | None = None
    ) -> dict[TopicPartition, list[Message]]:
        """Every message fetched and not yet handed out (up to `max_records`), by
        partition, in offset order within each: the bulk face for high rates, as
        aiokafka's `getmany`. Waits up to `timeout` seconds (None: until something
        arrives) for the first message and returns {} if none came. What it returns
        counts as handed out, as the iterator's messages do (`commit()` commits after
        them). A partition that cannot be read on raises its error once the messages
        fetched before it have been returned."""
        if max_records is not None and max_records < 1:
            raise InvalidConfigError(f"max_records must be at least 1, not {max_records}")
        if not await self._wait_ready(timeout):
            return {}
        out: dict[TopicPartition, list[Message]] = {}
        left = max_records
        while left is None or left > 0:
            if not self._ready and not self._receive_ready():
                break
            got = self._take(left, raise_error=not out)
            if got is None:
                break  # the partition's error waits for the next call, after these messages
            if got:
                tp = (got[0].topic, got[0].partition)
                if tp in out:
                    out[tp].extend(got)
                else:
                    out[tp] = got
                if left is not None:
                    left -= len(got)
        return out

    async def batches(self, max_records: int | None = None) -> AsyncIterator[list[Message]]:
        """Messages a fetched batch at a time (one partition each, in offset order, at
        most `max_records`): `async for batch in consumer.batches(): ...`. A batch
        counts as handed out when it is yielded, as the iterator's messages do."""
        if max_records is not None and max_records < 1:
            raise InvalidConfigError(f"max_records must be at least 1, not {max_records}")
        while True:
            await self._wait_ready(None)
            got = self._take(max_records)
            if got:
                yield got

    async def _wait_ready(self, timeout: float | None) -> bool:
        """Wait until a chunk is ready (False when `timeout` passed first)."""
        if self._ready or self._receive_ready():
            return True
        with anyio.move_on_after(timeout if timeout is not None else float("inf")):
            self._ready.append(_Chunk(*await self._receive.receive()))
        return bool(self._ready)

    def _receive_ready(self) -> bool:
        """Take a chunk that already waits in the stream, without waiting."""
        try:
            self._ready.append(_Chunk(*self._receive.receive_nowait()))
        except anyio.WouldBlock:
            return False
        return True

    def _take(self, limit: int | None, *, raise_error: bool = True) -> list[Message] | None:
        """Hand out up to `limit` messages of the head chunk (empty when it was stale).
        At the partition's error: raises it, or with `raise_error=False` leaves it
        there and returns None."""
        chunk = self._ready[0]
        if chunk.state.revoked:
            self._ready.popleft()
            return []
        messages, pos = chunk.messages, chunk.pos
        end = len(messages) if limit is None else min(len(messages), pos + limit)
        if isinstance(messages[end - 1], TideMQError):
            end -= 1  # only the last message of a chunk may be an error
            if end == pos:
                if not raise_error:
                    return None
                self._ready.popleft()
                raise messages[end]  # type: ignore[misc]
        got: list[Message] = messages[pos:end]  # type: ignore[assignment]
        chunk.pos = end
        if end == len(messages):
            self._ready.popleft()
        chunk.state.hand_out(got[-1].offset + 1)
        return got

    async def commit(self) -> None:
        """Commit, for every assigned partition, the offset after the last message handed
        out (by the iterator) or the lowest unfinished one (by `run`)."""
        if self._member is None:
            if self.broadcast:
                return  # an ephemeral broadcast listener keeps no position
            raise InvalidConfigError("commit() needs a group: Consumer(..., group='name')")
        if self._txn_commits:
            raise InvalidConfigError("this consumer's offsets are committed by its transactions (run(producer=...))")
        offsets = self._points(self._assigned)
        if offsets:
            await self._member.commit(offsets)

    def commit_points(self) -> dict[TopicPartition, int]:
        """Per assigned partition, the offset `commit()` would commit now (what a
        transactional producer's `send_offsets` commits with its transaction)."""
        return self._points(self._assigned)

    @staticmethod
    def _points(states: dict[TopicPartition, _Assigned]) -> dict[TopicPartition, int]:
        """Commit points of the partitions whose position is known."""
        return {tp: point for tp, s in states.items() if (point := Consumer._commit_point(s)) is not None}

    @staticmethod
    def _commit_point(state: _Assigned) -> int | None:
        return state.pending[0] if state.pending else state.handed

    # -- for processors (client/processor.py): messages in flight ---------------------------------------

    @property
    def in_group(self) -> bool:
        return self._member is not None

    def hold(self, msg: Message) -> Held | None:
        """Mark `msg` in flight: its offset holds the partition's commit point back until
        `release`. None if its partition is no longer assigned here."""
        state = self._assigned.get((msg.topic, msg.partition))
        if state is None:
            return None
        state.pending.add(msg.offset)
        return Held(msg, state)

    def release(self, held: Held) -> None:
        held.state.pending.discard(held.msg.offset)

    def holds(self, held: Held) -> bool:
        """Is the message's partition still this consumer's, in the same assignment (a
        revoked partition may have been handed back since, as a new one)?"""
        return not held.state.revoked and self._assigned.get((held.msg.topic, held.msg.partition)) is held.state

    def position_after(self, held: Held) -> int:
        """The offset after the held message, past control batches right behind it (what
        a transaction commits for it)."""
        handed = held.state.handed
        assert handed is not None  # known once the message was handed out
        return int(handed)

    @contextmanager
    def handling(self) -> Iterator[None]:
        """Count a handler running (a revocation waits, bounded, for them to finish)."""
        self._active_handlers += 1
        try:
            yield
        finally:
            self._active_handlers -= 1

    def commit_by_transactions(self) -> None:
        """From now on only transactions commit this consumer's offsets."""
        self._txn_commits = True

    def retry_reader(self, topic: str) -> Consumer:
        """A consumer of the group's retry topic beside this one (same group or broadcast
        instance, same settings), for `run()`'s retries."""
        return Consumer(
            self.cluster.bootstrap,
            group=self.broadcast_group or self.group,
            broadcast=self.broadcast,
            instance_id=self.instance_id,
            topics=[topic],
            offset_reset="earliest",
            token=self.cluster.token,
            session_timeout=self.session_timeout,
            rebalance_timeout=self.rebalance_timeout,
            max_wait=self.max_wait,
            client_id=f"{self.client_id}-retries",
        )

    async def runs_producer(self) -> Producer:
        """The producer that records `run(trace=True)`'s handler runs. It belongs to the
        consumer, not to a run: a run cancelled just as a handler finishes still gets
        that run's record out, and the consumer's close sends what is queued."""
        if self._tg is None:
            raise RuntimeError("use the consumer inside `async with Consumer(...)`")
        if self._runs_ready is None:
            self._runs_ready = anyio.Event()
            self._tg.start_soon(self._own_runs_producer, self._runs_ready)
        await self._runs_ready.wait()
        if isinstance(self._runs, BaseException):
            raise self._runs
        if self._runs is None:  # (its task was cancelled before it had one)
            raise RuntimeError("the consumer is closing")
        return self._runs

    async def _own_runs_producer(self, ready: anyio.Event) -> None:
        try:
            async with Producer(
                self.cluster.bootstrap, token=self.cluster.token, client_id=f"{self.client_id}-runs"
            ) as runs:
                self._runs = runs
                ready.set()
                await self._runs_closing.wait()  # (a clean exit: the producer flushes)
        except Exception as exc:  # no producer: the run that asked for it fails with why
            self._runs = exc
        finally:
            ready.set()
            self._runs_closed.set()

    # -- run: handlers with modes (client/processor.py) ------------------------------------------------

    # Handle messages with a handler until cancelled (or `max_messages` are finished):
    # `consumer.run(handler, mode=..., ...)`; client/processor.py says how.
    run = processor.run


# -- broadcast instances ------------------------------------------------------------------------


def broadcast_instance(instance_id: str | None) -> str:
    """A broadcast instance's id: given, or this host's name (one instance per host
    needs no setting)."""
    iid = socket.gethostname() if instance_id is None else instance_id
    if not isinstance(iid, str) or not iid or "@" in iid or len(iid) > 128:
        raise InvalidConfigError(f"instance_id must be 1-128 characters without '@', not {iid!r}")
    return iid


def instance_group(group: str, instance_id: str) -> str:
    """The consumer group a broadcast instance is: `notifier@host-a`."""
    if not isinstance(group, str) or not group:
        raise InvalidConfigError(f"group must be a non-empty string, not {group!r}")
    return f"{group}@{instance_id}"


def split_instance_group(name: str) -> tuple[str, str] | None:
    """(broadcast group, instance id) of an instance's consumer group; None for any
    other group name."""
    group, at, instance = name.rpartition("@")
    return (group, instance) if at and group and instance else None
