"""The one Ready driver: how a Raft core's Ready becomes I/O, in the order Raft requires.

The node's replica (`node/replica.py`), the simulator (`raft/simulator.py`) and the unit
tests' harness all persist, send, apply and advance through `ReadyDriver.handle_ready`,
so the order the simulator checks is the order production runs. For each Ready:

0. a snapshot from the leader: its data made durable (`write_snapshot`, blocking), the
   log restarted after it (`install_snapshot`), the log flushed (blocking), and the
   host told to rebuild its state machine (`restored`); a crash between any two leaves
   what the storage's open finishes;
1. write the new entries and hard state, then fsync once for all of them: everything
   that arrived while the previous fsync ran is in this Ready, which is the group
   commit. Without entries to fsync (or with fsync off), a term or vote change
   (`state_dirty`) is still made durable, without a data fsync;
2. only then send the messages (persist before send: a vote or an ack never leaves
   before the state it promises is on disk). One exception, Raft's own (the
   dissertation's 10.2.1): a leader's Appends promise only their term, so once the
   entries are written, and with no term, vote or membership change waiting to be
   made durable, they leave before the leader's fsync, and the followers write while
   the leader syncs. The leader's own copy counts towards commit only once durable
   (`RaftNode.advance`), so an entry is still committed only when a majority holds it
   on disk; the simulator's checker holds every other message to the rule;
3. apply the committed entries;
4. `advance`, then tell the host (role changes).

raft/ stays sans-I/O: the driver never blocks and imports no event loop. Every blocking
call goes through the `run` the host passes (`trio.to_thread.run_sync` on the node; a
request the simulator's event loop completes at a simulated disk's pace; an immediate
call in the synchronous tests), so a crash is the host dropping the coroutine between
two of those awaits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import Any, Protocol

from raft.core import RaftNode, Ready
from raft.storage import MemoryStorage
from raft.types import Append, Entry, HardState, Message, Snapshot


class ReadyStorage(Protocol):
    """The write side of a core's storage, as the driver uses it (the node's
    `LogStorage` over segments, the simulator's model disk, `MemoryStorage` behind
    `MemoryWriter`)."""

    @property
    def state_dirty(self) -> bool:
        """A term, vote or membership change waits for `sync` to become durable."""
        ...

    def append(self, entries: Sequence[Entry]) -> None:
        """Write entries (not yet durable), cutting a conflicting suffix first."""
        ...

    def set_hard_state(self, hs: HardState) -> None: ...

    def sync(self, log: bool = True) -> None:
        """Make the pending state durable, then (with `log`) the appended entries. Blocking."""
        ...

    def write_snapshot(self, snap: Snapshot) -> None:
        """Make a snapshot's data durable before the log start moves past it. Blocking."""
        ...

    def install_snapshot(self, snap: Snapshot) -> None:
        """Restart the log after `snap.index` (made durable by `flush_log` and `sync`)."""
        ...

    def flush_log(self) -> None:
        """fsync the log files (after `install_snapshot`). Blocking."""
        ...


class ReadyHost(Protocol):
    """Whoever owns the core: where messages go and what applying means."""

    def restored(self, snap: Snapshot) -> None:
        """A leader's snapshot replaced the log: rebuild derived state from it."""
        ...

    def persisted(self, rd: Ready) -> None:
        """This Ready's entries and hard state are durable (before any send)."""
        ...

    def send(self, msg: Message) -> None: ...

    def apply(self, rd: Ready) -> None:
        """Apply `rd.committed_entries` (and note `rd.snapshot`'s index as applied)."""
        ...

    def advanced(self, rd: Ready) -> None:
        """The core advanced past `rd` (role changes show in `rd.soft_state`)."""
        ...


class Runner(Protocol):
    """Runs a blocking call where the host allows it and returns its result."""

    def __call__(self, fn: Callable[..., Any], /, *args: Any) -> Awaitable[Any]: ...


class ReadyDriver:
    """Drives one core's Readys through a storage and a host (see the module docstring)."""

    def __init__(
        self, core: RaftNode, storage: ReadyStorage, host: ReadyHost, run: Runner, *, fsync: bool = True
    ) -> None:
        self.core = core
        self.storage = storage
        self.host = host
        self.run = run
        self.fsync = fsync  #: fsync appended entries at each Ready (the node's `--fsync always`)
        self.fsyncs = 0  #: data fsyncs made (one per group commit)
        self._begun: _Begun | None = None

    @property
    def begun(self) -> bool:
        """A Ready was begun (`begin`) and waits for `handle_ready` to finish it."""
        return self._begun is not None

    def begin(self) -> bool:
        """Take the next Ready and do now what needs no waiting: write its entries and
        hard state, send a leader's Appends (step 2's exception), and ask the runner for
        its sync (a runner that starts work when called, as the node's kernel fsync
        does, has the disk at it before this returns). A Ready with nothing to wait for
        is carried through to its end here. What is left is done by the next
        `handle_ready`, from any task. False if nothing was taken: a Ready is begun
        already, there is none, or it brings a snapshot (step 0 blocks first).

        For a host that learns of input in one task and drives Readys in another: the
        Ready's first writes and sends leave from the task that stepped the core, a
        scheduler pass sooner. An OSError from the storage is kept for `handle_ready`
        to raise, where the host handles the others."""
        core = self.core
        if self._begun is not None or not core.has_ready() or core.log.unstable_snapshot is not None:
            return False
        begun = _Begun(core.ready())
        try:
            self._start(begun)
        except OSError as exc:
            begun.error = exc
        if begun.sync is None and begun.error is None:
            self._finish(begun)
        else:
            self._begun = begun
        return True

    async def handle_ready(self) -> Ready:
        """Carry one Ready through steps 0-4: the one `begin` left, else the next."""
        begun, self._begun = self._begun, None
        if begun is None:
            rd = self.core.ready()
            if rd.snapshot is not None:  # 0.
                st, run = self.storage, self.run
                await run(st.write_snapshot, rd.snapshot)
                st.install_snapshot(rd.snapshot)
                await run(st.flush_log)
                self.host.restored(rd.snapshot)
            begun = _Begun(rd)
            self._start(begun)
        elif begun.error is not None:
            raise begun.error
        if begun.sync is not None:
            await begun.sync
            if begun.counted:
                self.fsyncs += 1
        self._finish(begun)
        return begun.rd

    def _start(self, begun: _Begun) -> None:
        """Steps 1-2 up to the sync: writes, a leader's early Appends, the sync asked."""
        rd, st = begun.rd, self.storage
        if rd.entries:  # 1.
            st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        if rd.entries and self.fsync:
            if not st.state_dirty and any(type(m) is Append for m in rd.messages):
                for m in rd.messages:  # 2., a leader's appends: before its own fsync (see above)
                    if type(m) is Append:
                        self.host.send(m)
                begun.messages = [m for m in rd.messages if type(m) is not Append]
            begun.sync = self.run(st.sync)
            begun.counted = True
        elif st.state_dirty:  # a vote or term is durable before anyone hears of it
            begun.sync = self.run(st.sync, False)

    def _finish(self, begun: _Begun) -> None:
        """Steps 2-4 once the sync is done: persisted, send, apply, advance."""
        rd, host = begun.rd, self.host
        host.persisted(rd)
        for m in begun.messages:  # 2.
            host.send(m)
        if rd.snapshot is not None or rd.committed_entries:  # 3.
            host.apply(rd)
        self.core.advance(rd)  # 4.
        host.advanced(rd)

    def abandon(self) -> Awaitable[Any] | None:
        """Drop a begun Ready (the host is closing): the sync it asked for, to await or
        close. Its entries were written, not made durable; its messages never leave."""
        begun, self._begun = self._begun, None
        return begun.sync if begun is not None else None


class _Begun:
    """A Ready taken from the core, its first steps done (`ReadyDriver.begin`)."""

    __slots__ = ("rd", "messages", "sync", "counted", "error")

    def __init__(self, rd: Ready) -> None:
        self.rd = rd
        self.messages: Sequence[Message] = rd.messages  # what is left to send once persisted
        self.sync: Awaitable[Any] | None = None
        self.counted = False  # the sync is a data fsync (counted in `fsyncs`)
        self.error: OSError | None = None


async def run_now(fn: Callable[..., Any], /, *args: Any) -> Any:
    """A runner that calls at once: for hosts with nothing to wait for (unit tests)."""
    return fn(*args)


def run_sync(coro: Awaitable[Any]) -> Any:
    """Run a driver coroutine whose runner never suspends (`run_now`) to its end."""
    gen: Generator[Any, None, Any] = coro.__await__()
    try:
        gen.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the driver suspended under a synchronous runner")


class MemoryWriter:
    """`ReadyStorage` over a `MemoryStorage` (nothing to make durable: memory is the
    disk), for the unit tests' harness."""

    def __init__(self, storage: MemoryStorage) -> None:
        self.memory = storage

    @property
    def state_dirty(self) -> bool:
        return False

    def append(self, entries: Sequence[Entry]) -> None:
        self.memory.append(entries)

    def set_hard_state(self, hs: HardState) -> None:
        self.memory.set_hard_state(hs)

    def sync(self, log: bool = True) -> None:
        pass

    def write_snapshot(self, snap: Snapshot) -> None:
        pass

    def install_snapshot(self, snap: Snapshot) -> None:
        self.memory.apply_snapshot(snap)

    def flush_log(self) -> None:
        pass
