"""Eager writes: a frame goes to the socket at once, from the task that made it, when the
connection's writer task has nothing queued and the event loop has nothing else to run.

A writer task that drains a queue batches well under load (a tick's heartbeats for a
thousand groups leave as one frame), but each frame it sends waits a scheduler pass for
that task to run first. With one message in flight that pass is on the path of every
hop: the leader's append, each follower's acknowledgement, the answer to the client.
asyncio's transports write at once when their buffer is empty for the same reason.
Here that happens only while nothing else is runnable, so whenever other work is
waiting (other groups, other requests) frames still gather in the queue as before.

Plain TCP only: a TLS stream's bytes go through its `SSLObject`, which only its own
`send_all` may drive.
"""

from __future__ import annotations

import os

import trio


class EagerWriter:
    """Writes frames at once where it may; the writer task sends `rest` first."""

    __slots__ = ("_socket", "_fd", "rest")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._socket = stream.socket if type(stream) is trio.SocketStream else None
        self._fd = -1
        self.rest: bytes | memoryview = b""  # a partial write's remainder, for the writer task

    def ready(self) -> bool:
        """Whether a frame may go now: an open plain socket, no remainder pending, and
        nothing else runnable (the caller knows its own queue is empty). The descriptor
        is read afresh each time: once the socket is closed its number may belong to
        another file."""
        if self._socket is None or self.rest or trio.lowlevel.current_statistics().tasks_runnable:
            return False
        self._fd = self._socket.fileno()  # (-1 once closed)
        return self._fd >= 0

    def write(self, frame: bytes) -> bool:
        """Write `frame` now (after `ready()`): True if it was taken (wholly written, or
        its remainder left in `rest`, which must go before anything else), False to
        queue it as usual."""
        try:
            n = os.write(self._fd, frame)
        except OSError:  # full (EAGAIN) or broken: the writer task's send finds out which
            return False
        if n < len(frame):
            self.rest = memoryview(frame)[n:]
        return True

    async def send_rest(self, stream: trio.abc.SendStream) -> None:
        """The writer task's first step after waking: what a partial write left."""
        if self.rest:
            rest, self.rest = self.rest, b""
            await stream.send_all(rest)
