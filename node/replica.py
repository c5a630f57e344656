"""One Raft group on this node: its storage, its core, and the task that drives them.

The core is pure and synchronous, so any task may call `step`, `tick` or `propose` on
it at any time (trio runs one task at a time); it then calls `wake()`. The replica's
task hands each Ready to the shared driver (`raft.driver.ReadyDriver`: persist with a
group-commit fsync, then send, apply, advance; the order is documented there once),
holding the io lock for each, with the fsyncs off the event loop (the kernel's
asynchronous fdatasync where it offers one, node/aio.py; else a worker thread). What is the node's
own stays here: waiters, the io lock, going offline on a storage error, retention and
state-machine snapshots.

Produce waiters are keyed by their entry's last offset and resolved when that offset
commits with the same term (success) or with another term (the entry was overwritten
by a new leader: NOT_LEADER, so the producer retries and idempotence dedups).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from sortedcontainers import SortedDict

from client.errors import NotLeaderError, RequestTimeoutError, ShuttingDownError
from node.aio import DiskSync, SyncRequest
from node.eager import current_pass, tasks_runnable
from node.storage import LogStorage
from raft.core import NotLeader, ProposalDropped, RaftNode, Ready
from raft.driver import ReadyDriver
from raft.types import ConfChange, Entry, Message, Role, Snapshot

log = logging.getLogger(__name__)


class _Waiter:
    __slots__ = ("entry", "event", "error", "durable_only")

    def __init__(self, entry: Entry, durable_only: bool) -> None:
        self.entry = entry
        self.event = trio.Event()
        self.error: Exception | None = None
        self.durable_only = durable_only


async def _in_thread(fn: Callable[..., Any], /, *args: Any) -> Any:
    """The driver's runner: blocking storage calls (fsyncs) in a worker thread.

    `trio.to_thread.run_sync` without its detours, as every Ready of every replica with
    entries comes here: the thread limiter is taken at once when free (its `acquire`
    yields to the scheduler first, a loop iteration before the fsync even starts), and
    the job carries no thread name (two prctl calls each). Not cancellable, as
    `run_sync` by default: a sync that started is waited for."""
    task = trio.lowlevel.current_task()
    limiter = trio.to_thread.current_default_thread_limiter()
    try:
        limiter.acquire_on_behalf_of_nowait(task)
    except trio.WouldBlock:
        await limiter.acquire_on_behalf_of(task)
    token = trio.lowlevel.current_trio_token()

    def deliver(result: Any) -> None:  # an outcome.Outcome
        token.run_sync_soon(_resume, task, result)

    def _resume(task: trio.lowlevel.Task, result: Any) -> None:
        limiter.release_on_behalf_of(task)
        trio.lowlevel.reschedule(task, result)

    try:
        trio.lowlevel.start_thread_soon(functools.partial(fn, *args), deliver)
    except BaseException:
        limiter.release_on_behalf_of(task)
        raise
    return await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)


async def _nothing() -> None:
    return None


def in_sync_of(core: RaftNode) -> list[int]:
    """A leader's in-sync members: those holding what its log held a tick ago (a
    trailing follower of thrifty appends gets a tick's entries at a time) that it heard
    from lately or that the node's failure detector does not hold down. "Lately" alone
    (`recent_active`) is cleared each check-quorum period: a member that speaks only
    now and then (a quiet group's hears nothing, which is the point; a trailing follower
    answers once a tick) would drop out until it next spoke. A quiet group went quiet
    only once every member not held down had the whole log and said so, and a member
    going down since would have woken it."""
    down = core.peers_down
    return sorted(
        pid for pid, pr in core.status().progress.items() if pr.caught_up and (pr.recent_active or pid not in down)
    )


class _Host:
    """The replica as the driver's host (a separate object, so that the driver's hook
    names do not crowd the replica's and its subclasses' own)."""

    __slots__ = ("replica",)

    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    def restored(self, snap: Snapshot) -> None:
        self.replica.restore(snap)

    def persisted(self, rd: Ready) -> None:
        if rd.entries:
            r = self.replica
            r.durable = rd.entries[-1].last
            r._release_durable()
            r.unsynced = not r.driver.fsync  # (the interval policy's timer syncs it)

    def send(self, msg: Message) -> None:
        r = self.replica
        r._send(r.group, msg.to, msg)

    def apply(self, rd: Ready) -> None:
        self.replica._applied(rd)

    def advanced(self, rd: Ready) -> None:
        if rd.soft_state is not None:
            self.replica.role_changed()


#: A Ready writing at most this much is begun where its input arrives and synced in the
#: kernel (node/aio.py): a lone message waits on every step. Larger writes are what
#: throughput is made of: they wait for the driver's task, which gathers what a
#: scheduler pass brought into one Ready, and are synced in a worker thread, which the
#: scheduler may put on another core (the kernel syncs on the core that asked, beside
#: the event loop).
SMALL_WRITE_BYTES = 64 * 1024

#: Readys of this node's groups waiting on the disk (in or queued for a worker thread)
#: beyond which the election timers of followers and candidates stand still.
IO_BACKLOG_CALM = 64


class Ticker:
    """The groups whose cores need ticks: those that are not quiescent. One task ticks
    them every tick (`tick`), so a quiet group costs nothing at all: no tick, no task
    woken. A replica joins again as soon as its core may have left quiescence (`watch`,
    from `Replica.wake`), and leaves once a tick finds it quiet.

    While more than `IO_BACKLOG_CALM` Readys wait on the disk (a thousand groups created
    or electing at once, each saving its term and vote), only leaders are ticked: a
    campaign needs the disk too (the candidate's term, every voter's vote), so timing
    out more of them while the votes of the last ones are queued only feeds the queue
    (found creating 1,000 partitions on one disk: elections never finished). Timers
    never decide safety; a follower's campaign merely waits for the disk to catch up."""

    def __init__(self) -> None:
        self.groups: dict[int, Replica] = {}
        self.io_backlog = 0

    def watch(self, replica: Replica) -> None:
        self.groups[replica.group] = replica

    def tick(self) -> None:
        groups = self.groups
        calm = self.io_backlog <= IO_BACKLOG_CALM
        for g, r in list(groups.items()):
            if r.closed:
                del groups[g]
                continue
            if not calm and not r.is_leader:
                continue
            r.tick()
            if r.core.quiescent:
                del groups[g]

    def __len__(self) -> int:
        return len(self.groups)


class Replica:
    def __init__(
        self,
        group: int,
        name: str,
        storage: LogStorage,
        core: RaftNode,
        send: Callable[[int, int, Message], None],
        *,
        apply: Callable[[Any, list[Entry]], None],  # (a subclass's own method: the replica is its first argument)
        fsync: bool,
        leader_addr: Callable[[int], str | None],
        on_role_change: Callable[[Replica], None] | None = None,
        on_restore: Callable[[Snapshot], None] | None = None,
        ticker: Ticker | None = None,
        syncer: DiskSync | None = None,
    ) -> None:
        self.group = group
        self.name = name
        self.storage = storage
        self.core = core
        self._send = send
        self._apply = apply
        self._leader_addr = leader_addr
        self._on_role_change = on_role_change
        self._on_restore = on_restore
        self._wakeup = trio.Event()
        # Held while the storage changes shape (append, truncate, snapshot, retention)
        # or syncs in a worker thread: a sync must never overlap a truncation.
        # (A semaphore, not a Lock: a Ready begun in another task holds it until the
        # driver's task finishes that Ready.)
        self.io_lock = trio.Semaphore(1, max_value=1)
        self._waiters: SortedDict = SortedDict()  # last offset -> [_Waiter]
        self._hw_waiters: set[trio.Event] = set()
        self.durable = storage.last_index()
        self.applied = core.log.applied
        self.applied_term = 0
        self.closed = False
        self.ticker = ticker
        self.syncer = syncer
        self._beginning = False
        self._begun_pass = -1
        self._storage_sync = storage.sync
        self.driver = ReadyDriver(core, storage, _Host(self), self._run_io, fsync=fsync)
        self.apply_errors = 0
        self.offline: OSError | None = None
        self.unsynced = False  #: entries written and not fsynced (fsync "interval" or "never")
        if ticker is not None:
            ticker.watch(self)

    def _run_io(self, fn: Callable[..., Any], /, *args: Any) -> Awaitable[Any]:
        """The driver's runner. The log's sync, where all it owes is one file's data,
        goes to the kernel at once, when called (node/aio.py): a Ready begun in the task
        that stepped the core has the disk at work before the driver's task runs. Any
        other blocking call (or one the kernel refuses) runs in a worker thread once
        awaited. Both count in the ticker's disk backlog while they wait and run."""
        if fn == self._storage_sync and not args and self.syncer is not None:
            fd = self.storage.claim_sync(SMALL_WRITE_BYTES)
            if fd is not None:
                if fd < 0:
                    self.storage.synced(True)
                    return _nothing()
                request = self.syncer.submit(fd)
                if request is not None:
                    self._backlog(1)  # (from now: the disk is at it)
                    return self._synced_in_kernel(request)
                self.storage.synced(False)  # refused: the thread's sync owes it
        return self._in_thread(fn, *args)

    async def _synced_in_kernel(self, request: SyncRequest) -> None:
        assert self.syncer is not None
        done = False
        try:
            await self.syncer.wait(request)
            done = True
        finally:
            self.storage.synced(done)
            self._backlog(-1)

    async def _in_thread(self, fn: Callable[..., Any], /, *args: Any) -> Any:
        self._backlog(1)
        try:
            return await _in_thread(fn, *args)
        finally:
            self._backlog(-1)

    def _backlog(self, n: int) -> None:
        if self.ticker is not None:
            self.ticker.io_backlog += n

    # -- inputs ---------------------------------------------------------------------------

    def wake(self) -> None:
        """The core was given something (a message, a proposal, a transfer, a campaign,
        a peer down): run its Ready, and tick it again if that woke it from quiescence.
        The Ready is begun here when the driver's task may be bypassed (`_begin_here`);
        that task is woken only for what is left."""
        if not self._begin_here() or self.driver.begun or self.core.has_ready():
            self._wakeup.set()
        if self.ticker is not None and not self.core.quiescent:
            self.ticker.watch(self)

    def _begin_here(self) -> bool:
        """Begin the next Ready in the task that gave the core its input (see
        `ReadyDriver.begin`): a leader's Appends and a follower's fsync start a
        scheduler pass sooner, and a Ready with nothing to wait for (a commit that
        releases a produce) is done at once.

        That is for a node waiting on one message, not one at work: only while the
        driver's task is parked with nothing begun, the io lock is free (taken here on
        the Ready's behalf; the driver's task lets it go), no Ready of the node waits
        on the disk, the write is small (`SMALL_WRITE_BYTES`), and, as with eager
        writes (node/eager.py), nothing else is runnable and this replica has not
        begun one in this pass. Under load, proposals gather into the driver's next
        Ready as before, one fsync for all."""
        if (
            self.closed
            or self._beginning
            or self.driver.begun
            or not self._wakeup.statistics().tasks_waiting
            or self._begun_pass == current_pass()
            or tasks_runnable()
            or (self.ticker is not None and self.ticker.io_backlog)
            or sum(len(e.data) for e in self.core.log.unstable) > SMALL_WRITE_BYTES
        ):
            return False
        try:
            self.io_lock.acquire_nowait()
        except trio.WouldBlock:
            return False
        self._begun_pass = current_pass()
        self._beginning = True  # (applying may propose again: that waits for the driver's task)
        try:
            return self.driver.begin()
        finally:
            self._beginning = False
            if not self.driver.begun:
                self.io_lock.release()

    def step(self, msg: Message) -> None:
        self.core.step(msg)
        self.wake()

    def tick(self) -> None:
        core = self.core
        core.tick()
        if core.has_ready():  # most ticks only count: no task to wake for them
            self._wakeup.set()

    # -- state ----------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.core.role == Role.LEADER

    def in_sync(self) -> list[int]:
        """Leader: the members that hold its whole log and are there."""
        return in_sync_of(self.core)

    @property
    def high_watermark(self) -> int:
        """The first offset not yet committed (exclusive bound for consumers)."""
        return min(self.core.commit, self.applied) + 1

    def ready_for_writes(self) -> bool:
        """A leader that has applied an entry of its own term: every entry of earlier
        terms is committed and applied, so producer state is complete."""
        return self.is_leader and self.applied_term == self.core.term

    def not_leader(self) -> NotLeaderError:
        leader = self.core.leader
        return NotLeaderError(
            f"node {self.core.id} does not lead {self.name}"
            + (f"; node {leader} does" if leader else "; no leader elected yet"),
            leader_id=leader or None,
            leader_addr=self._leader_addr(leader) if leader else None,
        )

    def check_writable(self) -> None:
        if self.offline is not None:
            raise NotLeaderError(
                f"{self.name} is offline on node {self.core.id} after a storage error "
                f"({self.offline}); another replica will lead it"
            )
        if self.closed:
            raise ShuttingDownError(f"{self.name} is closing on node {self.core.id}")
        if not self.ready_for_writes():
            if self.is_leader:
                err = self.not_leader()
                err.message = f"node {self.core.id} was just elected for {self.name} and is catching up; retry shortly"
                err.details["leader_id"] = self.core.id
                raise err
            raise self.not_leader()

    # -- producing ------------------------------------------------------------------------

    def propose(self, data: bytes, count: int, *, durable_only: bool = False) -> _Waiter:
        """Propose a batch; the waiter fires when it commits (or, with durable_only, when
        the leader's own copy is on disk: acks=1)."""
        try:
            entry = self.core.propose(data, count)
        except (NotLeader, ProposalDropped):
            raise self.not_leader() from None
        waiter = _Waiter(entry, durable_only)
        self._waiters.setdefault(entry.last, []).append(waiter)
        self.wake()
        return waiter

    def propose_conf(self, change: ConfChange) -> _Waiter:
        """Propose one membership step (raft.core: one at a time, a learner promoted
        only once caught up); `ProposalDropped` says why not now."""
        try:
            entry = self.core.propose_conf_change(change)
        except NotLeader:
            raise self.not_leader() from None
        waiter = _Waiter(entry, False)
        self._waiters.setdefault(entry.last, []).append(waiter)
        self.wake()
        return waiter

    async def wait(self, waiter: _Waiter, timeout_s: float) -> Entry:
        with trio.move_on_after(timeout_s):
            await waiter.event.wait()
        if not waiter.event.is_set():
            raise RequestTimeoutError(
                f"{self.name}: offsets {waiter.entry.index}-{waiter.entry.last} not committed within {timeout_s:.1f}s; "
                "the write may still commit (an idempotent retry is safe)"
            )
        if waiter.error is not None:
            raise waiter.error
        return waiter.entry

    def add_hw_waiter(self, event: trio.Event) -> None:
        self._hw_waiters.add(event)

    def remove_hw_waiter(self, event: trio.Event) -> None:
        self._hw_waiters.discard(event)

    # -- the driver -----------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._drive()
        finally:
            if self.driver.begun:  # cancelled with a Ready begun: its sync is waited for, nothing more
                sync = self.driver.abandon()
                with trio.CancelScope(shield=True):
                    try:
                        if sync is not None:
                            await sync
                    except OSError:
                        pass
                    finally:
                        self.io_lock.release()

    async def _drive(self) -> None:
        lock, driver = self.io_lock, self.driver
        while not self.closed:
            if not self._wakeup.is_set():  # (a set event's wait() yields a loop iteration first)
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            rounds = 0
            while driver.begun or self.core.has_ready():
                rounds += 1
                if rounds % 16 == 0:  # a long run of Readys (a catch-up applied in pieces) lets others in
                    await trio.lowlevel.checkpoint()
                try:
                    if not driver.begun:  # (a begun Ready holds the lock already)
                        try:  # the lock at once when free: its acquire() yields a loop iteration first
                            lock.acquire_nowait()
                        except trio.WouldBlock:
                            await lock.acquire()
                    try:
                        if self.closed and not driver.begun:  # close() took the lock first: the storage is gone
                            return
                        await self._handle_ready()
                    finally:
                        lock.release()
                except OSError as exc:
                    # The disk failed or filled under a write: this replica's state on
                    # disk is now uncertain, so it goes offline (Kafka takes a log dir
                    # offline); the node and its other replicas go on, and the peers
                    # carry this group. A restart recovers it from its log.
                    log.error("%s: taken offline on node %s after a storage error: %s", self.name, self.core.id, exc)
                    self.offline = exc
                    await self.close()
                    return

    @property
    def fsyncs(self) -> int:
        """Log fsyncs made by Readys since start (one per group commit)."""
        return self.driver.fsyncs

    async def _handle_ready(self) -> None:
        await self.driver.handle_ready()

    def _applied(self, rd: Ready) -> None:
        """Step 3 of the driver: apply, then release the waiters the entries resolve."""
        if rd.snapshot is not None:
            self.applied = rd.snapshot.index
        if rd.committed_entries:
            self._apply_guarded(rd.committed_entries)
            last = rd.committed_entries[-1]
            self.applied = last.last
            self.applied_term = last.term
            self.storage.forget_applied(last.last)
            self._release_committed(rd.committed_entries)
            events, self._hw_waiters = self._hw_waiters, set()
            for ev in events:
                ev.set()

    def _apply_guarded(self, entries: list[Entry]) -> None:
        """Apply committed entries one at a time; one that raises is skipped with a
        warning and counted. What is in the log is data that may be bad (written before
        a check existed, or by a bug), and an exception here would stop the node again
        at every replay. The verdict is the same on every replica, so they stay alike."""
        for e in entries:
            try:
                self._apply(self, [e])
            except Exception:
                self.apply_errors += 1
                log.exception("%s: skipped committed entry %d-%d, which failed to apply", self.name, e.index, e.last)

    def restore(self, snap: Snapshot) -> None:
        """The leader's snapshot replaced our log up to `snap.index`: a replica whose
        state machine keeps derived state rebuilds it from `snap.data` here."""
        if self._on_restore is not None:
            self._on_restore(snap)

    def role_changed(self) -> None:
        if self._on_role_change is not None:
            self._on_role_change(self)

    def _release_durable(self) -> None:
        for last in list(self._waiters.irange(maximum=self.durable)):
            remaining = []
            for w in self._waiters[last]:
                if w.durable_only:
                    w.event.set()
                else:
                    remaining.append(w)
            if remaining:
                self._waiters[last] = remaining
            else:
                del self._waiters[last]

    def _release_committed(self, entries: list[Entry]) -> None:
        """Resolve waiters whose offsets are now committed, by whichever entry covers them."""
        if not self._waiters:
            return
        top = entries[-1].last
        committed_terms = {e.last: e.term for e in entries}
        for last in list(self._waiters.irange(maximum=top)):
            for w in self._waiters.pop(last):
                term = committed_terms.get(w.entry.last)
                if term != w.entry.term:
                    w.error = self.not_leader()
                    w.error.message = (
                        f"{self.name}: the write at {w.entry.index} was overwritten by a new leader; retry"
                    )
                w.event.set()

    async def sync(self) -> None:
        """fsync in a worker thread (the interval policy's timer), if anything was
        written since the last: an idle replica costs the timer nothing."""
        if not self.unsynced:
            return
        async with self.io_lock:
            if not self.closed:
                self.unsynced = False
                await trio.to_thread.run_sync(self.storage.sync)

    async def apply_retention(self, now_ms: int, log_start_at_least: int = 0) -> None:
        """Drop what retention lets go, and everything below `log_start_at_least` (a
        DeleteRecords), never past what is applied."""
        async with self.io_lock:
            if not self.closed:
                point = self.storage.retention_point(now_ms, self.applied)
                floor = min(log_start_at_least, self.applied + 1) - 1
                if floor >= self.storage.log.log_start_offset and (point is None or floor > point):
                    point = floor
                if point is not None:
                    await self.storage.compact_with(_in_thread, point)

    async def snapshot_state(self, every: int, dump: Callable[[], bytes]) -> None:
        """Snapshot a state machine kept until overwritten (`dump()` at the applied
        index) and drop the log before it, once `every` entries piled up since the last."""
        async with self.io_lock:
            if not self.closed and self.applied - self.storage.first_index() >= every:
                await self.storage.compact_with(_in_thread, self.applied, dump())  # (no Ready moves the log meanwhile)

    async def close(self) -> None:
        self.closed = True
        self.wake()
        for waiters in self._waiters.values():
            for w in waiters:
                w.error = ShuttingDownError(
                    f"{self.name} closed on node {self.core.id}; the write's outcome is unknown"
                )
                w.event.set()
        self._waiters.clear()
        async with self.io_lock:
            try:
                await trio.to_thread.run_sync(self.storage.close)
            except OSError as exc:  # closing flushes: a full disk may refuse that too
                log.error("%s: closing its log failed: %s", self.name, exc)
