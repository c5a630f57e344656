"""fdatasync without a thread of ours: io_uring runs it in the kernel (IORING_OP_FSYNC
with IORING_FSYNC_DATASYNC) and signals an eventfd that trio's epoll waits on, beside
the sockets.

A worker thread costs every fsync two hand-offs through the GIL: the thread must take it
before it can start the call, and the event loop is woken through trio's wakeup socket
to resume the task. With one message in flight both are on the path of every write, at
the leader and at the follower whose acknowledgement commits it, and the thread
machinery was a quarter of a follower's busy time (docs/performance.md).

io_uring, not Linux AIO: AIO's fsync runs on a per-CPU work queue, on the core that
asked; with that core busy it waits for a time slice (a write and sync loop beside two
busy processes: p90 4.0 ms, against 0.19-0.21 ms here and 0.27-0.31 ms in a worker
thread). io_uring's workers go wherever the scheduler has room.

Each request in flight has a small ring of its own (kept for reuse), so its task waits
on that ring's eventfd alone. The kernel's request holds its own reference to the file,
so closing the descriptor meanwhile is harmless; a started sync is waited for whatever
cancels its caller, as a worker thread's is. x86-64 only: the rings are shared memory
written without barriers, which x86's store order makes safe. Where io_uring is not to
be had (another architecture, an old kernel, `kernel.io_uring_disabled`, a seccomp
filter such as Docker's default, the locked-memory limit), `submit` says so and the
caller uses a worker thread.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import mmap
import os
import platform
import struct
from typing import NamedTuple

import trio

log = logging.getLogger(__name__)

_SETUP, _ENTER, _REGISTER = 425, 426, 427  # x86-64 system call numbers
_REGISTER_EVENTFD = 4
_OP_FSYNC = 3
_FSYNC_DATASYNC = 1
_OFF_CQ_RING = 0x8000000
_OFF_SQES = 0x10000000
#: Rings kept for reuse, and so syncs in flight at once; beyond it a sync goes to a
#: worker thread.
MAX_RINGS = 256


class _Ring:
    """One io_uring of one entry, with the eventfd it signals."""

    def __init__(self, libc: ctypes.CDLL) -> None:
        self.libc = libc
        self.fd = self.eventfd = -1
        self.maps: list[mmap.mmap] = []
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        params = bytearray(120)  # struct io_uring_params
        fd = self.libc.syscall(ctypes.c_long(_SETUP), ctypes.c_uint(1), (ctypes.c_char * 120).from_buffer(params))
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"io_uring_setup: {os.strerror(err)}")
        self.fd = fd
        sq_entries, cq_entries = struct.unpack_from("II", params, 0)
        _, self.sq_tail, sq_mask, _, _, _, self.sq_array, _ = struct.unpack_from("8I", params, 40)
        self.cq_head, self.cq_tail, cq_mask, _, _, self.cq_cqes, _, _ = struct.unpack_from("8I", params, 80)
        flags, prot = mmap.MAP_SHARED | mmap.MAP_POPULATE, mmap.PROT_READ | mmap.PROT_WRITE
        self.sq = mmap.mmap(fd, self.sq_array + 4 * sq_entries, flags, prot, offset=0)
        self.maps.append(self.sq)
        self.cq = mmap.mmap(fd, self.cq_cqes + 16 * cq_entries, flags, prot, offset=_OFF_CQ_RING)
        self.maps.append(self.cq)
        self.sqes = mmap.mmap(fd, 64 * sq_entries, flags, prot, offset=_OFF_SQES)
        self.maps.append(self.sqes)
        self.sq_mask = struct.unpack_from("I", self.sq, sq_mask)[0]
        self.cq_mask = struct.unpack_from("I", self.cq, cq_mask)[0]
        self.eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        arg = ctypes.c_int(self.eventfd)
        if self.libc.syscall(ctypes.c_long(_REGISTER), fd, ctypes.c_uint(_REGISTER_EVENTFD), ctypes.byref(arg), 1) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"io_uring_register: {os.strerror(err)}")

    def submit(self, fd: int) -> bool:
        """Queue fdatasync of `fd` and enter it; False if the kernel would not take it."""
        tail = struct.unpack_from("I", self.sq, self.sq_tail)[0]
        slot = tail & self.sq_mask
        # struct io_uring_sqe: opcode, flags, ioprio, fd, off, addr, len, fsync_flags, user_data
        struct.pack_into("BBHiQQIIQ", self.sqes, 64 * slot, _OP_FSYNC, 0, 0, fd, 0, 0, 0, _FSYNC_DATASYNC, 1)
        struct.pack_into("I", self.sq, self.sq_array + 4 * slot, slot)
        struct.pack_into("I", self.sq, self.sq_tail, (tail + 1) & 0xFFFFFFFF)
        while True:
            n = self.libc.syscall(
                ctypes.c_long(_ENTER),
                self.fd,
                ctypes.c_uint(1),
                ctypes.c_uint(0),
                ctypes.c_uint(0),
                None,
                ctypes.c_size_t(0),
            )
            if n == 1:
                return True
            if n < 0 and ctypes.get_errno() == errno.EINTR:
                continue
            return False  # (the entry stays queued: this ring is closed, not reused)

    def result(self) -> int | None:
        """The completion's result (0, or -errno), once there is one."""
        head = struct.unpack_from("I", self.cq, self.cq_head)[0]
        if head == struct.unpack_from("I", self.cq, self.cq_tail)[0]:
            return None
        res = struct.unpack_from("i", self.cq, self.cq_cqes + 16 * (head & self.cq_mask) + 8)[0]
        struct.pack_into("I", self.cq, self.cq_head, (head + 1) & 0xFFFFFFFF)
        return res

    def close(self) -> None:
        for m in self.maps:
            m.close()
        self.maps.clear()
        for fd in (self.eventfd, self.fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.eventfd = -1


class SyncRequest(NamedTuple):
    """An fdatasync submitted to the kernel (`DiskSync.submit`)."""

    ring: _Ring


class DiskSync:
    """The node's kernel fsyncs, opened for its run (`open`, then `close`)."""

    def __init__(self) -> None:
        self._libc: ctypes.CDLL | None = None
        self._free: list[_Ring] = []  # rings with nothing in flight
        self._rings = 0  # rings made and not closed
        self.syncs = 0  #: fdatasyncs done this way
        self.refused = 0  #: requests the kernel would not take (done in a worker thread)

    @property
    def active(self) -> bool:
        return self._libc is not None

    def open(self) -> bool:
        """Make the first ring; False (and a logged reason) where io_uring is not to be
        had, and every sync then goes to a worker thread."""
        if platform.machine() != "x86_64" or not hasattr(os, "eventfd"):
            log.info("fdatasync in worker threads: io_uring is used on x86-64 Linux only")
            return False
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        try:
            ring = _Ring(libc)
        except OSError as exc:
            log.info("fdatasync in worker threads: %s", exc)
            return False
        self._libc = libc
        self._free.append(ring)
        self._rings = 1
        return True

    def close(self) -> None:
        """Close the rings (each with nothing in flight by then: the node's tasks ended)."""
        for ring in self._free:
            ring.close()
        self._free.clear()
        self._rings = 0
        self._libc = None

    def submit(self, fd: int) -> SyncRequest | None:
        """Start fdatasync of `fd` now, without waiting; None if refused (nothing was
        done). Every request submitted must be waited for (`wait`)."""
        if self._libc is None:
            return None
        ring = self._ring()
        if ring is None or not ring.submit(fd):
            if ring is not None:
                ring.close()
                self._rings -= 1
            self.refused += 1
            return None
        return SyncRequest(ring)

    def _ring(self) -> _Ring | None:
        if self._free:
            return self._free.pop()
        if self._rings >= MAX_RINGS or self._libc is None:
            return None
        try:
            ring = _Ring(self._libc)
        except OSError as exc:  # (out of descriptors or locked memory: a thread's sync instead)
            log.warning("fdatasync in a worker thread: %s", exc)
            return None
        self._rings += 1
        return ring

    async def wait(self, request: SyncRequest) -> None:
        """Wait until a submitted fdatasync is done; raises OSError if it failed. A
        cancelled caller still waits for it (as for a worker thread's), then the
        cancellation goes on."""
        ring = request.ring
        res: int | None = None
        try:
            try:
                res = await self._wait(ring)
            except trio.Cancelled:
                # (A shield on every wait would cost a cancel-status update each.)
                with trio.CancelScope(shield=True):
                    res = await self._wait(ring)
                raise
        finally:
            if res is None:  # (never finished: not to be reused)
                ring.close()
                self._rings -= 1
            elif self._libc is None:  # closed meanwhile
                ring.close()
            else:
                self._free.append(ring)
            if res == 0:
                self.syncs += 1
        assert res is not None
        if res < 0:
            raise OSError(-res, f"fdatasync: {os.strerror(-res)}")

    async def _wait(self, ring: _Ring) -> int:
        while (res := ring.result()) is None:
            await trio.lowlevel.wait_readable(ring.eventfd)
            try:
                os.eventfd_read(ring.eventfd)
            except BlockingIOError:
                pass
        return res
