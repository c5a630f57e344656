"""Eager writes: a frame goes to the socket at once, from the task that made it, when the
connection's writer task has nothing queued and the event loop has nothing else to run.

A writer task that drains a queue batches well under load (a tick's heartbeats for a
thousand groups leave as one frame), but each frame it sends waits a scheduler pass for
that task to run first. With one message in flight that pass is on the path of every
hop: the leader's append, each follower's acknowledgement, the answer to the client.
asyncio's transports write at once when their buffer is empty for the same reason.

Batching must not suffer, so a connection writes at once at most once per scheduler
pass, and only while no task waits for the next pass. The tasks of the pass being run
are not counted as runnable by trio (they have left its run queue), so the first of a
thousand replica tasks woken together writes its frame at once and the others find the
connection's one eager write of this pass taken: theirs gather in the queue and leave
together, as before. The passes are counted by a trio instrument (`after_io_wait` runs
once per pass).

Plain TCP only: a TLS stream's bytes go through its `SSLObject`, which only its own
`send_all` may drive.
"""

from __future__ import annotations

from typing import Any

import trio

from client.rawsocket import write_now


class _Passes(trio.abc.Instrument):
    """Counts the scheduler's passes in one run."""

    def __init__(self) -> None:
        self.count = 0

    def after_io_wait(self, timeout: float) -> None:
        self.count += 1


_passes: trio.lowlevel.RunVar[_Passes] = trio.lowlevel.RunVar("tidemq_eager_passes")


_run_context: Any
try:
    from trio._core._run import GLOBAL_RUN_CONTEXT as _run_context
except ImportError:  # a trio laid out otherwise: its public statistics only
    _run_context = None


def tasks_runnable() -> bool:
    """Whether a task waits to run in the next scheduler pass (inside `trio.run`).
    Read from trio's run queue where this trio keeps one: `current_statistics` also
    counts every descriptor waited on, a few microseconds on every hop of a message."""
    try:
        return bool(_run_context.runner.runq)
    except AttributeError:
        return bool(trio.lowlevel.current_statistics().tasks_runnable)


def current_pass() -> int:
    """The number of the scheduler pass running now (counting starts at first use in
    each run)."""
    try:
        return _passes.get().count
    except LookupError:
        counter = _Passes()
        trio.lowlevel.add_instrument(counter)
        _passes.set(counter)
        return 0


class EagerWriter:
    """Writes frames at once where it may (`ready`, then `write`)."""

    __slots__ = ("_socket", "_pass")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._socket = stream.socket if type(stream) is trio.SocketStream else None
        self._pass = -1  # the pass of the last eager write

    def ready(self) -> bool:
        """Whether a frame may go now: an open plain socket, no eager write yet in this
        pass and no task waiting for the next (the caller knows that nothing of its own
        is queued or left over)."""
        return (
            self._socket is not None
            and self._pass != current_pass()
            and not tasks_runnable()
            and self._socket.fileno() >= 0  # (-1 once closed)
        )

    def write(self, frame: bytes) -> memoryview | None:
        """Write `frame` now (after `ready()`): None if nothing went (queue it as usual),
        else what is left of it (empty when all went), which the caller's writer must
        send before anything else."""
        assert self._socket is not None
        self._pass = current_pass()
        n = write_now(self._socket, frame)  # (0: full or broken: the writer task's send finds out which)
        return memoryview(frame)[n:] if n else None
