"""Eager writes (node/eager.py): a frame goes at once only while nothing else is
runnable, a partial write's remainder goes before anything after it, and a stream that
is not a plain socket is left to its writer."""

from __future__ import annotations

import socket

import trio
import trio.testing

import node.eager
from node.eager import EagerWriter, tasks_runnable
from node.server import Server, _Outbox


def _pair(sndbuf: int | None = None) -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = socket.socketpair()
    if sndbuf is not None:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    return trio.SocketStream(trio.socket.from_stdlib_socket(a)), trio.SocketStream(trio.socket.from_stdlib_socket(b))


def hold_socket_sends(monkeypatch) -> trio.Event:
    """Every socket stream's `send_all` waits for the event returned (a reader that does
    not read), so a writer task stays in its send."""
    free = trio.Event()
    send_all = trio.SocketStream.send_all

    async def held(self, data):
        await free.wait()
        await send_all(self, data)

    monkeypatch.setattr(trio.SocketStream, "send_all", held)
    return free


async def _read(stream: trio.SocketStream, n: int) -> bytes:
    got = bytearray()
    with trio.fail_after(10):
        while len(got) < n:
            got += await stream.receive_some(1 << 16)
    return bytes(got)


async def test_a_frame_goes_at_once_when_nothing_else_is_runnable():
    left, right = _pair()
    w = EagerWriter(left)
    assert w.ready() and w.write(b"hello") == b""
    assert await _read(right, 5) == b"hello"


async def test_nothing_goes_at_once_while_another_task_is_runnable(nursery):
    left, _ = _pair()
    w = EagerWriter(left)
    nursery.start_soon(trio.sleep, 0)  # runnable until the scheduler's next pass
    assert not w.ready()
    await trio.sleep(0.01)
    assert w.ready()


async def test_the_run_queue_check_agrees_with_trios_statistics(nursery, monkeypatch):
    """`tasks_runnable` reads trio's run queue (private); on a trio that keeps it
    elsewhere it must fall back to the statistics, never answer wrongly."""

    def public() -> bool:
        return bool(trio.lowlevel.current_statistics().tasks_runnable)

    for context in (node.eager._run_context, None):
        monkeypatch.setattr(node.eager, "_run_context", context)
        await trio.sleep(0.01)
        assert tasks_runnable() is public() is False
        nursery.start_soon(trio.sleep, 0)
        assert tasks_runnable() is public() is True


async def test_a_stream_that_is_not_a_plain_socket_is_never_written_at_once():
    one, _ = trio.testing.memory_stream_pair()
    assert not EagerWriter(one).ready()


async def test_a_partial_write_hands_back_its_remainder():
    left, right = _pair(sndbuf=4096)
    w = EagerWriter(left)
    big = bytes(range(256)) * 4096  # 1 MiB: more than the socket takes at once
    assert w.ready()
    rest = w.write(big)
    assert rest is not None and 0 < len(rest) < len(big)
    async with trio.open_nursery() as n:
        n.start_soon(left.send_all, rest)
        got = await _read(right, len(big))
    assert got == big


async def test_an_answer_that_fits_goes_at_once_and_a_remainder_is_queued_for_the_writer():
    left, right = _pair(sndbuf=4096)
    outbox = _Outbox(1 << 30)
    outbox.eager = EagerWriter(left)
    outbox.put(b"small")
    assert outbox.queued == 0 and await _read(right, 5) == b"small"
    big = b"z" * (1 << 20)
    outbox.put(big)  # partly written; the rest waits in the channel, counted
    assert 0 < outbox.queued < len(big)
    outbox.put(b"after")  # behind it, in order
    async with trio.open_nursery() as n:
        n.start_soon(Server._writer, left, outbox)
        got = await _read(right, len(big) + 5)
        await outbox.send.aclose()
    assert got == big + b"after" and outbox.queued == 0


async def test_a_closed_socket_is_never_written_at_once():
    left, _ = _pair()
    w = EagerWriter(left)
    assert w.ready()
    await left.aclose()  # its descriptor's number may now be another file's
    assert not w.ready()


async def test_one_eager_write_a_pass():
    left, right = _pair()
    w = EagerWriter(left)
    assert w.ready() and w.write(b"a") == b""
    assert not w.ready()  # this pass had its eager write: the next frame queues
    await trio.sleep(0)  # the next pass
    assert w.ready() and w.write(b"b") == b""
    assert await _read(right, 2) == b"ab"


async def test_an_answer_waits_behind_one_the_writer_is_sending(nursery, monkeypatch):
    """The writer has taken an answer and waits for the socket (a slow reader): one put
    in a later pass queues behind it instead of going at once, ahead of it."""
    left, right = _pair()
    outbox = _Outbox(1 << 30)
    outbox.eager = EagerWriter(left)
    socket_free = hold_socket_sends(monkeypatch)
    nursery.start_soon(Server._writer, left, outbox)
    await trio.sleep(0.01)
    outbox.put(b"first")  # at once
    outbox.put(b"second")  # this pass had its eager write: the writer takes it
    await trio.sleep(0.01)
    outbox.put(b"late")
    socket_free.set()
    assert await _read(right, 15) == b"firstsecondlate"
