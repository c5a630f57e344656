"""DiskSync: fdatasync in the kernel, waited for on the event loop, never abandoned."""

import os

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
    """One context serves every replica: a waiter that reaps another's completion leaves
    it for that one."""
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
        assert not kernel_syncer._results  # every result claimed by its own waiter
    finally:
        for fd in fds:
            os.close(fd)


async def test_a_cancelled_caller_still_waits_for_its_started_sync(kernel_syncer, tmp_path):
    """As with a worker thread: a started sync is waited for (the replica's io lock
    must not be let go while a sync may still run), then the cancellation lands."""
    fd = os.open(tmp_path / "log", os.O_CREAT | os.O_WRONLY)
    try:
        os.write(fd, b"z" * 100)
        with trio.CancelScope() as scope:
            scope.cancel()
            await fdatasync(kernel_syncer, fd)
        assert scope.cancelled_caught
        assert kernel_syncer.syncs == 1 and not kernel_syncer._results
    finally:
        os.close(fd)


async def test_what_the_kernel_refuses_is_left_to_a_thread(kernel_syncer):
    """A pipe cannot be synced this way: nothing is done, the caller is told to use a
    worker thread, and the next sync goes on as usual."""
    r, w = os.pipe()
    try:
        assert not await fdatasync(kernel_syncer, w)
        assert kernel_syncer.refused == 1 and kernel_syncer.syncs == 0
    finally:
        os.close(r)
        os.close(w)


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


async def test_no_descriptor_for_the_wait_means_a_thread(kernel_syncer, tmp_path, monkeypatch):
    """Out of descriptors for an eventfd is not a disk error: the sync is refused (the
    caller's thread then syncs), and no replica goes offline for it."""

    def no_more(*args):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(os, "eventfd", no_more)
    fd = os.open(tmp_path / "log", os.O_CREAT | os.O_WRONLY)
    try:
        assert kernel_syncer.submit(fd) is None and kernel_syncer.refused == 1
    finally:
        os.close(fd)
