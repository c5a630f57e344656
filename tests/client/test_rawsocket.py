"""client/rawsocket.py: trio's `receive_some` answers with one system call a read,
waiting first once the socket was emptied; a write at once where the socket takes it."""

from __future__ import annotations

import socket
import struct

import pytest
import trio
import trio.testing

import client.rawsocket
from client.rawsocket import SocketReader, write_now


def _pair() -> tuple[trio.SocketStream, socket.socket]:
    a, b = socket.socketpair()
    return trio.SocketStream(trio.socket.from_stdlib_socket(a)), b


async def test_it_reads_what_comes_and_eof_as_empty():
    stream, peer = _pair()
    reader = SocketReader(stream.socket)
    peer.sendall(b"hello")
    with trio.fail_after(5):
        assert await reader.receive_some(1024) == b"hello"
    peer.sendall(b"again")
    peer.close()
    with trio.fail_after(5):
        assert await reader.receive_some(1024) == b"again"
        assert await reader.receive_some(1024) == b""


async def test_a_drained_socket_is_waited_on_without_a_failed_read(monkeypatch, nursery):
    stream, peer = _pair()
    reader = SocketReader(stream.socket)
    reads = []
    real_read = client.rawsocket.os.read

    def counted(fd, n):
        data = real_read(fd, n)
        reads.append(len(data))
        return data

    monkeypatch.setattr(client.rawsocket.os, "read", counted)
    got = []

    async def read_one():
        got.append(await reader.receive_some(1024))

    nursery.start_soon(read_one)
    await trio.testing.wait_all_tasks_blocked()
    assert reads == [] and got == []  # waiting, not trying
    peer.sendall(b"x" * 10)
    with trio.fail_after(5):
        while not got:
            await trio.sleep(0.001)
    assert got == [b"x" * 10] and reads == [10]


async def test_a_full_read_is_followed_by_a_scheduler_pass():
    """A flood on one connection must let the other tasks run."""
    stream, peer = _pair()
    reader = SocketReader(stream.socket)
    peer.sendall(b"y" * 100)
    ran = []

    async def other():
        ran.append(True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        assert await reader.receive_some(10) == b"y" * 10  # filled: a pass, the other task ran
        assert ran == [True]
        nursery.cancel_scope.cancel()


async def test_closed_and_broken_sockets_raise_as_trio_does():
    stream, _peer = _pair()
    reader = SocketReader(stream.socket)
    stream.socket.close()
    with pytest.raises(trio.ClosedResourceError):
        await reader.receive_some(10)

    listener = socket.create_server(("127.0.0.1", 0))
    peer = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    accepted.setblocking(False)
    listener.close()
    reader = SocketReader(accepted)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()  # a linger of 0: a reset, not an orderly close
    with trio.fail_after(5), pytest.raises(trio.BrokenResourceError, match="broken"):
        await reader.receive_some(10)


async def test_a_waiting_read_is_cancelled():
    stream, _peer = _pair()
    reader = SocketReader(stream.socket)
    with trio.move_on_after(0.05) as scope:
        await reader.receive_some(10)
    assert scope.cancelled_caught


async def test_a_write_goes_at_once_and_says_how_much_went():
    stream, peer = _pair()
    assert write_now(stream.socket, b"now") == 3
    assert peer.recv(10) == b"now"
    peer.setblocking(False)
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sent = 0
    while (n := write_now(stream.socket, b"f" * 65536)) > 0:  # until the socket takes no more
        sent += n
    assert sent > 0
    stream.socket.close()
    assert write_now(stream.socket, b"late") == 0  # closed: nothing, never an exception
