"""fdatasync without a worker thread: Linux's asynchronous I/O runs it in the kernel
(`io_submit` with IOCB_CMD_FDSYNC, kernel 4.18 and later) and signals an eventfd that
trio's epoll waits on, beside the sockets.

A worker thread costs every fsync two hand-offs through the GIL: the thread must take it
before it can start the call, and the event loop is woken through trio's wakeup socket
to resume the task. With one message in flight both are on the path of every write, at
the leader and at the follower whose acknowledgement commits it, and the thread
machinery was a quarter of a follower's busy time (docs/performance.md).

The kernel's request holds its own reference to the file, so closing the descriptor
meanwhile is harmless; a started sync is waited for whatever cancels its caller, as a
worker thread's is. Where the kernel refuses (no AIO in it, a seccomp filter, the
system's `fs.aio-max-nr` reached, a file that cannot be synced this way, another
architecture), `submit` says so and the caller uses a worker thread.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import logging
import os
import platform
from typing import NamedTuple

import trio

log = logging.getLogger(__name__)

#: io_setup, io_destroy, io_submit, io_getevents
_SYSCALLS = {"x86_64": (206, 207, 209, 208), "aarch64": (0, 1, 2, 4)}
_IOCB_CMD_FDSYNC = 3
_IOCB_FLAG_RESFD = 1
#: Requests in flight at once; beyond it a sync goes to a worker thread.
QUEUE_DEPTH = 128


class _Iocb(ctypes.Structure):
    # struct iocb (linux/aio_abi.h); aio_key and aio_rw_flags swap places on big-endian
    # machines, and both are 0 here.
    _fields_ = [
        ("aio_data", ctypes.c_uint64),
        ("aio_key", ctypes.c_uint32),
        ("aio_rw_flags", ctypes.c_int32),
        ("aio_lio_opcode", ctypes.c_uint16),
        ("aio_reqprio", ctypes.c_int16),
        ("aio_fildes", ctypes.c_uint32),
        ("aio_buf", ctypes.c_uint64),
        ("aio_nbytes", ctypes.c_uint64),
        ("aio_offset", ctypes.c_int64),
        ("aio_reserved2", ctypes.c_uint64),
        ("aio_flags", ctypes.c_uint32),
        ("aio_resfd", ctypes.c_uint32),
    ]


class _Event(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_uint64),
        ("obj", ctypes.c_uint64),
        ("res", ctypes.c_int64),
        ("res2", ctypes.c_int64),
    ]


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class SyncRequest(NamedTuple):
    """An fdatasync submitted to the kernel (`DiskSync.submit`)."""

    key: int
    eventfd: int


class DiskSync:
    """One kernel AIO context, opened for a node's run (`open`, then `close`)."""

    def __init__(self) -> None:
        self._ctx: int | None = None
        self._libc: ctypes.CDLL | None = None
        self._calls = (0, 0, 0, 0)
        self._eventfds: list[int] = []  # one per request in flight, reused
        self._results: dict[int, int] = {}  # request key -> its result, reaped but not yet claimed
        self._keys = itertools.count(1)
        self._events = (_Event * 16)()
        self._now = _Timespec(0, 0)
        self.syncs = 0  #: fdatasyncs done this way
        self.refused = 0  #: requests the kernel would not take (done in a worker thread)

    @property
    def active(self) -> bool:
        return self._ctx is not None

    def open(self) -> bool:
        """Set up the context; False (and a logged reason) where this kernel or machine
        offers none, and every sync then goes to a worker thread."""
        calls = _SYSCALLS.get(platform.machine())
        if calls is None or not hasattr(os, "eventfd"):
            log.info("fdatasync in worker threads: no Linux AIO on %s", platform.machine())
            return False
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        ctx = ctypes.c_ulong(0)
        if libc.syscall(ctypes.c_long(calls[0]), ctypes.c_long(QUEUE_DEPTH), ctypes.byref(ctx)) != 0:
            err = ctypes.get_errno()
            log.info("fdatasync in worker threads: io_setup refused (%s)", os.strerror(err))
            return False
        self._libc, self._calls, self._ctx = libc, calls, ctx.value
        return True

    def close(self) -> None:
        """Destroy the context (the kernel finishes what is in flight first)."""
        if self._ctx is not None and self._libc is not None:
            self._libc.syscall(ctypes.c_long(self._calls[1]), ctypes.c_ulong(self._ctx))
        self._ctx = None
        for fd in self._eventfds:
            os.close(fd)
        self._eventfds.clear()

    def submit(self, fd: int) -> SyncRequest | None:
        """Start fdatasync of `fd` now, without waiting; None if refused (nothing was
        done). Every request submitted must be waited for (`wait`)."""
        if self._ctx is None or self._libc is None:
            return None
        try:
            efd = self._eventfds.pop() if self._eventfds else os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        except OSError:  # (out of descriptors: the thread's sync says what the disk says)
            self.refused += 1
            return None
        key = next(self._keys)
        iocb = _Iocb(
            aio_data=key, aio_lio_opcode=_IOCB_CMD_FDSYNC, aio_fildes=fd, aio_flags=_IOCB_FLAG_RESFD, aio_resfd=efd
        )
        batch = (ctypes.POINTER(_Iocb) * 1)(ctypes.pointer(iocb))
        submitted = self._libc.syscall(
            ctypes.c_long(self._calls[2]), ctypes.c_ulong(self._ctx), ctypes.c_long(1), batch
        )
        if submitted != 1:
            self._eventfds.append(efd)
            self.refused += 1
            return None
        return SyncRequest(key, efd)

    async def wait(self, request: SyncRequest) -> None:
        """Wait until a submitted fdatasync is done; raises OSError if it failed. A
        cancelled caller still waits for it (as for a worker thread's), then the
        cancellation goes on."""
        key, efd = request
        try:
            try:
                await self._wait(efd, key)
            except trio.Cancelled:
                # (A shield on every wait would cost a cancel-status update each.)
                with trio.CancelScope(shield=True):
                    await self._wait(efd, key)
                raise
        finally:
            self._eventfds.append(efd)
            res = self._results.pop(key, None)
            if res == 0:
                self.syncs += 1
        if res is not None and res < 0:
            raise OSError(-res, f"fdatasync: {os.strerror(-res)}")

    async def _wait(self, efd: int, key: int) -> None:
        while key not in self._results:
            await trio.lowlevel.wait_readable(efd)
            try:
                os.eventfd_read(efd)
            except BlockingIOError:
                continue
            self._reap()

    def _reap(self) -> None:
        """Take every finished request's result (some may be other waiters': their own
        eventfds wake them to find it here)."""
        assert self._libc is not None and self._ctx is not None
        events, size = self._events, len(self._events)
        while True:
            n = self._libc.syscall(
                ctypes.c_long(self._calls[3]),
                ctypes.c_ulong(self._ctx),
                ctypes.c_long(0),
                ctypes.c_long(size),
                events,
                ctypes.byref(self._now),
            )
            if n < 0:
                err = ctypes.get_errno()
                if err == errno.EINTR:
                    continue
                raise OSError(err, f"io_getevents: {os.strerror(err)}")
            for ev in events[:n]:
                self._results[ev.data] = ev.res
            if n < size:
                return
