"""DiskSync: fdatasync in the kernel, waited for on the event loop, never abandoned."""

import os

import pytest
import trio

from node.aio import DiskSync


async def fdatasync(syncer: DiskSync, fd: int) -> bool:
    """Submit and wait: False if the kernel refused."""
    request = syncer.submit(fd)
    if request is None:
        return False
    await syncer.wait(request)
    return True


async def test_a_sync_is_done_in_the_kernel_without_a_thread(kernel_syncer, tmp_path):
    fd = os.open(tmp_path / "log", os.O_CREAT | os.O_WRONLY)
    try:
        threads = trio.to_thread.current_default_thread_limiter().borrowed_tokens
        for _ in range(20):
            os.write(fd, b"x" * 300)
            assert await fdatasync(kernel_syncer, fd)
            assert trio.to_thread.current_default_thread_limiter().borrowed_tokens == threads
        assert (kernel_syncer.syncs, kernel_syncer.refused) == (20, 0)
    finally:
        os.close(fd)


async def test_concurrent_syncs_each_get_their_own_result(kernel_syncer, tmp_path):
    """Each sync in flight has a ring of its own, made when needed and kept for reuse."""
    fds = [os.open(tmp_path / f"log{i}", os.O_CREAT | os.O_WRONLY) for i in range(8)]
    done = []

    async def sync(fd):
        for _ in range(10):
            os.write(fd, b"y" * 100)
            assert await fdatasync(kernel_syncer, fd)
        done.append(fd)

    try:
        with trio.fail_after(20):
            async with trio.open_nursery() as n:
                for fd in fds:
                    n.start_soon(sync, fd)
        assert sorted(done) == sorted(fds) and kernel_syncer.syncs == 80
        assert 1 < kernel_syncer._rings <= 8 and len(kernel_syncer._free) == kernel_syncer._rings
    finally:
        for fd in fds:
            os.close(fd)


async def test_a_cancelled_caller_still_waits_for_its_started_sync(kernel_syncer, tmp_path):
    """As with a worker thread: a started sync is waited for (the replica's io lock
    must not be let go while a sync may still run), then the cancellation lands."""
    fd = os.open(tmp_path / "log", os.O_CREAT | os.O_WRONLY)
    try:
        os.write(fd, b"z" * (8 << 20))  # (enough that the sync is not done as the wait begins)
        with trio.CancelScope() as scope:
            scope.cancel()
            await fdatasync(kernel_syncer, fd)
        assert scope.cancelled_caught
        assert kernel_syncer.syncs == 1 and len(kernel_syncer._free) == kernel_syncer._rings == 1
    finally:
        os.close(fd)


async def test_a_failed_sync_raises_as_fdatasync_would(kernel_syncer):
    """A pipe cannot be synced: the error comes back from the kernel, as from
    os.fdatasync, and the next sync goes on as usual."""
    import errno

    r, w = os.pipe()
    try:
        with pytest.raises(OSError) as err:
            await fdatasync(kernel_syncer, w)
        assert err.value.errno == errno.EINVAL and kernel_syncer.syncs == 0
    finally:
        os.close(r)
        os.close(w)


async def test_more_in_flight_than_rings_are_left_to_a_thread(kernel_syncer, tmp_path, monkeypatch):
    import node.aio

    monkeypatch.setattr(node.aio, "MAX_RINGS", 1)
    fd = os.open(tmp_path / "log", os.O_CREAT | os.O_WRONLY)
    try:
        first = kernel_syncer.submit(fd)
        assert first is not None
        assert kernel_syncer.submit(fd) is None and kernel_syncer.refused == 1  # (a worker thread's, then)
        await kernel_syncer.wait(first)
        assert await fdatasync(kernel_syncer, fd) and kernel_syncer.syncs == 2  # its ring, reused
    finally:
        os.close(fd)


async def test_closed_or_never_opened_means_a_thread(tmp_path):
    s = DiskSync()
    fd = os.open(tmp_path / "log", os.O_CREAT | os.O_WRONLY)
    try:
        assert not await fdatasync(s, fd)
        if s.open():
            s.close()
            assert not s.active and not await fdatasync(s, fd)
    finally:
        os.close(fd)


async def test_no_descriptor_for_a_new_ring_means_a_thread(kernel_syncer, tmp_path, monkeypatch):
    """Out of descriptors for another ring is not a disk error: the sync is refused (the
    caller's thread then syncs), and no replica goes offline for it."""
    fd = os.open(tmp_path / "log", os.O_CREAT | os.O_WRONLY)
    try:
        first = kernel_syncer.submit(fd)  # (the ring made at open)
        assert first is not None

        def no_more(*args):
            raise OSError(24, "Too many open files")

        monkeypatch.setattr(os, "eventfd", no_more)
        assert kernel_syncer.submit(fd) is None and kernel_syncer.refused == 1
        await kernel_syncer.wait(first)
    finally:
        os.close(fd)
