"""Reading a plain TCP connection with one system call a read, not two.

trio's `SocketStream.receive_some` tries `recv` first and waits for the socket only if
that fails. A node's connections are mostly waiting: a frame is read whole, and the next
has not come yet, so that first try nearly always fails, and every frame cost a failed
`recv`, its exception and trio's layers around it (a context manager for the errors, an
async one for the try). With one message in flight that is every hop: the leader reads
the client's request and both acknowledgements, each follower the append.

`SocketReader` remembers whether its last read emptied the socket (it got less than it
asked for) and then waits first. A read that filled its buffer is followed by a
scheduler pass, as trio's is, so a flood on one connection cannot starve the others.

Plain TCP only: a TLS stream's bytes go through its `SSLObject`.
"""

from __future__ import annotations

import errno
import os

import trio

_CLOSED_ERRNOS = {errno.EBADF, errno.ENOTSOCK}


class SocketReader:
    """`receive_some` of a `trio.SocketStream`, as trio's answers it (bytes, b"" at
    EOF, `trio.BrokenResourceError` or `trio.ClosedResourceError`)."""

    __slots__ = ("_socket", "_drained")

    def __init__(self, stream: trio.SocketStream) -> None:
        self._socket = stream.socket
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
