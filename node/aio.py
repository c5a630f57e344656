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

A sync may carry a frame to send once it is done (`submit_write`), so that a follower's
acknowledgement leaves the moment its entries are durable, without waiting for the
event loop to wake and run: the send is a second entry linked to the first
(IOSQE_IO_LINK), which the kernel starts, from the same worker, only if the first
succeeded. The first is not an fsync: the kernel does not fail a link on an fsync's
error (io_fsync sets the result only; a failed fsync on this kernel, 6.18, still
sent the frame), but it does on a write that does not write all it was given. So the
bytes written since the last sync are written again, unchanged, with RWF_DSYNC: the
write returns only once that range and the metadata needed to read it are durable, as
fdatasync would make them (ext4 runs the same `ext4_sync_file` for both, over the range
instead of the whole file), and an error in that sync is the write's error, which
cancels the send. Nothing leaves that the disk may not hold. The caller keeps the
socket open and to itself until `wait` returns: the kernel looks its number up only
when the send starts.
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
_OP_WRITE = 23
_OP_SEND = 26
_FSYNC_DATASYNC = 1
_RWF_DSYNC = 2
_IO_LINK = 4  # IOSQE_IO_LINK: the next entry starts once this one has succeeded
_SEND_FLAGS = 0x4000 | 0x100  # MSG_NOSIGNAL | MSG_WAITALL (a short send goes on to the end)
_SYNC, _SEND = 1, 2  # the entries' user_data
_OFF_CQ_RING = 0x8000000
_OFF_SQES = 0x10000000
#: Rings kept for reuse, and so syncs in flight at once; beyond it a sync goes to a
#: worker thread.
MAX_RINGS = 256


class _Ring:
    """One io_uring of two entries (a sync and the send linked to it), with the eventfd
    it signals."""

    def __init__(self, libc: ctypes.CDLL) -> None:
        self.libc = libc
        self.fd = self.eventfd = -1
        self.pending = 0  # completions still to come
        self.maps: list[mmap.mmap] = []
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        params = bytearray(120)  # struct io_uring_params
        fd = self.libc.syscall(ctypes.c_long(_SETUP), ctypes.c_uint(2), (ctypes.c_char * 120).from_buffer(params))
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

    def fsync(self, fd: int) -> bool:
        """Queue fdatasync of `fd` and enter it; False if the kernel would not take it."""
        tail = struct.unpack_from("I", self.sq, self.sq_tail)[0]
        self._put(tail, _OP_FSYNC, 0, fd, 0, 0, 0, _FSYNC_DATASYNC, _SYNC)
        return self._enter(tail, 1)

    def write_then_send(self, fd: int, position: int, data: ctypes.Array, sock: int, frame: ctypes.Array) -> bool:
        """Queue a durable write of `data` at `position` of `fd` and the send of `frame`
        on `sock` linked after it, and enter them; False if the kernel would not."""
        tail = struct.unpack_from("I", self.sq, self.sq_tail)[0]
        self._put(tail, _OP_WRITE, _IO_LINK, fd, position, ctypes.addressof(data), len(data), _RWF_DSYNC, _SYNC)
        self._put(tail + 1, _OP_SEND, 0, sock, 0, ctypes.addressof(frame), len(frame), _SEND_FLAGS, _SEND)
        return self._enter(tail, 2)

    def _put(
        self, at: int, op: int, flags: int, fd: int, off: int, addr: int, length: int, op_flags: int, user: int
    ) -> None:
        slot = at & self.sq_mask
        # struct io_uring_sqe: opcode, flags, ioprio, fd, off, addr, len, op_flags, user_data
        struct.pack_into("BBHiQQIIQ", self.sqes, 64 * slot, op, flags, 0, fd, off, addr, length, op_flags, user)
        struct.pack_into("I", self.sq, self.sq_array + 4 * slot, slot)

    def _enter(self, tail: int, count: int) -> bool:
        struct.pack_into("I", self.sq, self.sq_tail, (tail + count) & 0xFFFFFFFF)
        self.pending = count
        while True:
            n = self.libc.syscall(
                ctypes.c_long(_ENTER),
                self.fd,
                ctypes.c_uint(count),
                ctypes.c_uint(0),
                ctypes.c_uint(0),
                None,
                ctypes.c_size_t(0),
            )
            if n == count:
                return True
            if n < 0 and ctypes.get_errno() == errno.EINTR:
                continue
            return False  # (what was not taken stays queued: this ring is closed, not reused)

    def result(self) -> tuple[int, int] | None:
        """The next completion, (user_data, result: 0 or a count, or -errno), once there
        is one."""
        head = struct.unpack_from("I", self.cq, self.cq_head)[0]
        if head == struct.unpack_from("I", self.cq, self.cq_tail)[0]:
            return None
        user, res = struct.unpack_from("Qi", self.cq, self.cq_cqes + 16 * (head & self.cq_mask))
        struct.pack_into("I", self.cq, self.cq_head, (head + 1) & 0xFFFFFFFF)
        self.pending -= 1
        return user, res

    def close(self) -> None:
        for m in self.maps:
            m.close()
        self.maps.clear()
        for fd in (self.eventfd, self.fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.eventfd = -1


class SyncRequest(NamedTuple):
    """A sync submitted to the kernel (`DiskSync.submit`, `DiskSync.submit_write`)."""

    ring: _Ring
    expected: int = 0  # the sync's result when it succeeded (a write's: all its bytes)
    buffers: tuple[ctypes.Array, ...] = ()  # what the kernel reads until `wait` returns


class DiskSync:
    """The node's kernel fsyncs, opened for its run (`open`, then `close`)."""

    def __init__(self) -> None:
        self._libc: ctypes.CDLL | None = None
        self._free: list[_Ring] = []  # rings with nothing in flight
        self._rings = 0  # rings made and not closed
        self.syncs = 0  #: syncs done this way (fdatasyncs, and durable writes)
        self.refused = 0  #: requests the kernel would not take (done in a worker thread)
        self.sent_after = 0  #: frames the kernel sent right after their sync

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
        if ring is None or not ring.fsync(fd):
            self._refused(ring)
            return None
        return SyncRequest(ring)

    def submit_write(self, fd: int, position: int, data: bytes, sock: int, frame: bytes) -> SyncRequest | None:
        """Start writing `data` (bytes already written at `position` of `fd`, and not
        synced) again with RWF_DSYNC, and the send of `frame` on the socket `sock` once
        that write has succeeded (see the module docstring); None if refused (nothing
        was done). Every request submitted must be waited for (`wait`)."""
        if self._libc is None:
            return None
        ring = self._ring()
        data_buf = ctypes.create_string_buffer(data, len(data))
        frame_buf = ctypes.create_string_buffer(frame, len(frame))
        if ring is None or not ring.write_then_send(fd, position, data_buf, sock, frame_buf):
            self._refused(ring)
            return None
        return SyncRequest(ring, len(data), (data_buf, frame_buf))

    def _refused(self, ring: _Ring | None) -> None:
        if ring is not None:
            ring.close()
            self._rings -= 1
        self.refused += 1

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

    async def wait(self, request: SyncRequest) -> int | None:
        """Wait until a submitted sync is done, and its send if it has one; raises
        OSError if the sync failed (its send never started). Returns what the send
        returned (bytes sent, or -errno), None without one. A cancelled caller still
        waits for both (as for a worker thread's sync), then the cancellation goes on."""
        ring = request.ring
        done: dict[int, int] = {}  # user_data -> result
        try:
            try:
                await self._wait(ring, done)
            except trio.Cancelled:
                # (A shield on every wait would cost a cancel-status update each.)
                with trio.CancelScope(shield=True):
                    await self._wait(ring, done)
                raise
        finally:
            res, sent = done.get(_SYNC), done.get(_SEND)
            if ring.pending:  # (never finished: not to be reused)
                ring.close()
                self._rings -= 1
            elif self._libc is None:  # closed meanwhile
                ring.close()
            else:
                self._free.append(ring)
            if res == request.expected:
                self.syncs += 1
            if sent is not None and sent > 0:
                self.sent_after += 1
        assert res is not None
        if res < 0:
            raise OSError(-res, f"{'a durable write' if request.expected else 'fdatasync'}: {os.strerror(-res)}")
        if res != request.expected:
            raise OSError(errno.EIO, f"a durable write wrote {res} of {request.expected} bytes")
        return sent

    async def _wait(self, ring: _Ring, done: dict[int, int]) -> None:
        while ring.pending:
            got = ring.result()
            if got is not None:
                done[got[0]] = got[1]
                continue
            await trio.lowlevel.wait_readable(ring.eventfd)
            try:
                os.eventfd_read(ring.eventfd)
            except BlockingIOError:
                pass
