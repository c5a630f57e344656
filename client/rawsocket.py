"""A plain TCP socket read and written with one system call where trio's layers make
two or a scheduler pass, for the hot paths under trio (the node's connections, the
client's under trio).

trio's `receive_some` tries `recv` first and waits for the socket only if that fails.
A connection between frames is mostly waiting, so that first try nearly always failed,
and every frame cost a failed `recv`, its exception and trio's layers around it (a
context manager for the errors, an async one for the try). With one message in flight
that is every hop: the leader reads the client's request and both acknowledgements,
each follower the append, the client the answer. `SocketReader` remembers whether its
last read emptied the socket (it got less than it asked for) and then waits first. A
read that filled its buffer is followed by a scheduler pass, as trio's is, so a flood
on one connection cannot starve the others.

`write_now` is the writing half for a connection whose writer is idle: `os.write` at
once, no pass first (trio's `send` yields one after every successful write).

Plain TCP only: a TLS stream's bytes go through its `SSLObject`. trio only: the waits
are trio's.
"""

from __future__ import annotations

import errno
import os
from typing import Protocol

import trio

_CLOSED_ERRNOS = {errno.EBADF, errno.ENOTSOCK}
#: what `SocketReader.receive_some` raises for a connection that is gone
STREAM_ERRORS: tuple[type[Exception], ...] = (trio.BrokenResourceError, trio.ClosedResourceError)


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


class SocketReader:
    """`receive_some` of a plain TCP socket (a stdlib or trio socket), answered as
    trio's `SocketStream` answers it: bytes, b"" at EOF, `trio.BrokenResourceError` or
    `trio.ClosedResourceError`."""

    __slots__ = ("_socket", "_drained")

    def __init__(self, sock: _HasFileno) -> None:
        self._socket = sock
        self._drained = True  # (nothing read yet: a connection opens with nothing to read)

    async def receive_some(self, max_bytes: int) -> bytes:
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            fd = self._socket.fileno()  # (afresh: -1 once closed, and the number may be reused)
            if fd < 0:
                raise trio.ClosedResourceError("this socket was already closed")
            if self._drained:
                await trio.lowlevel.wait_readable(fd)  # (closed meanwhile: ClosedResourceError)
                fd = self._socket.fileno()
            try:
                data = os.read(fd, max_bytes)
            except BlockingIOError:  # (woken for nothing: another reader took it, or a spurious wake-up)
                self._drained = True
                continue
            except OSError as exc:
                if exc.errno in _CLOSED_ERRNOS:
                    raise trio.ClosedResourceError("this socket was already closed") from None
                raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
            self._drained = len(data) < max_bytes
            if not self._drained:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return data


def write_now(sock: _HasFileno, data: bytes | memoryview) -> int:
    """Write what the socket takes now; the number of bytes written (0 if it takes
    nothing now, or if it is closed or broken: the caller's own send finds out which)."""
    fd = sock.fileno()
    if fd < 0:
        return 0
    try:
        return os.write(fd, data)
    except OSError:
        return 0
