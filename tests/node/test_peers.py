"""Peer links: authenticated to the peer listener, and a large drain split into frames
the peer accepts."""

import os

import trio

import client.rawsocket
import node.peers
from node.peerauth import PeerCredential
from node.peers import PeerLink, Reassembler
from node.server import Server
from tests.node.test_eager import hold_socket_sends

SECRET = "peer-secret-for-the-link-tests"


def _link(max_payload: int, addr: str = "127.0.0.1:1") -> PeerLink:
    return PeerLink(2, 1, addr, PeerCredential(2, SECRET), lambda items: b"".join(items), max_payload)


def test_a_large_outbox_is_split_into_frames_that_fit():
    items = [b"%04d" % i for i in range(7)]
    payloads = _link(10)._payloads(items)
    assert all(len(p) <= 10 for p in payloads) and b"".join(payloads) == b"".join(items)


def test_one_message_larger_than_a_frame_goes_in_pieces_and_comes_back_whole():
    big = bytes(range(256)) * 40  # 10 KB, frames of 1 KB
    pieces = _link(1024)._payloads([big])
    assert len(pieces) > 10 and all(len(p) <= 1024 for p in pieces)
    r = Reassembler()
    assert [r.feed(2, p) for p in pieces[:-1]] == [None] * (len(pieces) - 1)
    assert r.feed(2, pieces[-1]) == big
    assert r.feed(2, b"plain") == b"plain"  # what is not in pieces passes through


def test_pieces_out_of_turn_or_too_many_bytes_are_dropped(monkeypatch):
    pieces = _link(1024)._payloads([b"y" * 5000])
    r = Reassembler()
    r.feed(3, pieces[0])
    assert r.feed(3, pieces[2]) is None  # a gap: what was gathered goes
    assert all(r.feed(3, p) is None for p in pieces[1:])  # no piece 0 since: nothing completes
    monkeypatch.setattr(node.peers, "MAX_MESSAGE_BYTES", 3000)
    assert [r.feed(3, p) for p in pieces] == [None] * len(pieces)


class _NoRequests:
    def dispatch(self, body, client):
        raise AssertionError("no requests here")


async def _linked(nursery, got: list, max_frame_bytes: int, max_payload: int) -> PeerLink:
    """A running link from node 2 to a peer listener of node 1 that keeps what arrives
    in `got` as (sender, payload)."""
    server = Server(
        1,
        _NoRequests(),
        lambda frm, payload: got.append((frm, payload)),
        max_frame_bytes=max_frame_bytes,
        peer_auth=PeerCredential(1, SECRET),
        peer_ids=(1, 2),
    )
    listeners = await nursery.start(server.serve, "127.0.0.1", 0)
    link = _link(max_payload, f"127.0.0.1:{listeners[0].socket.getsockname()[1]}")
    nursery.start_soon(link.run)
    return link


async def _idle_link(nursery, got: list) -> PeerLink:
    """`_linked` with room for any frame, once connected and its task waits for work."""
    link = await _linked(nursery, got, max_frame_bytes=1 << 20, max_payload=1 << 20)
    with trio.fail_after(10):
        while not link.connected:
            await trio.sleep(0.01)
    await trio.sleep(0.05)
    return link


async def test_a_link_delivers_a_large_drain_in_pieces(nursery):
    got: list = []
    link = await _linked(nursery, got, max_frame_bytes=4096, max_payload=2048)
    items = [bytes([i]) * 1000 for i in range(10)]  # 10 KB: more than one frame may hold
    for item in items:
        link.send(item)
    with trio.fail_after(10):
        while sum(len(p) for _, p in got) < 10_000:
            await trio.sleep(0.01)
    assert len(got) >= 5 and b"".join(p for _, p in got) == b"".join(items) and {f for f, _ in got} == {2}


async def test_an_idle_link_sends_at_once_once_a_pass_and_the_rest_gathers(nursery):
    """With the link task idle and nothing else runnable, a message leaves from the
    sender's task; what follows in the same scheduler pass, from that task or from the
    tasks woken with it, gathers in the outbox and leaves in one frame."""
    got: list = []
    link = await _idle_link(nursery, got)
    sent = link.frames_sent
    link.send(b"one")
    assert link.frames_sent == sent + 1 and not link.outbox  # written by this task, now
    link.send(b"two")
    assert link.outbox == [b"two"]  # this pass had its eager write
    with trio.fail_after(10):
        while len(got) < 2:
            await trio.sleep(0.01)
    assert got == [(2, b"one"), (2, b"two")]
    await trio.sleep(0.05)

    async def send(item: bytes) -> None:
        link.send(item)

    async with trio.open_nursery() as tasks:  # four tasks run in one pass
        for i in range(4):
            tasks.start_soon(send, b"then%d" % i)
    with trio.fail_after(10):
        while len(got) < 4:
            await trio.sleep(0.01)
    first, rest = got[2][1], got[3][1]
    assert len(got) == 4 and len(first) == 5 and len(rest) == 15  # one at once, three together
    assert sorted([first] + [rest[i : i + 5] for i in range(0, 15, 5)]) == [b"then%d" % i for i in range(4)]


async def test_what_a_partial_eager_write_left_goes_before_anything_after_it(nursery, monkeypatch):
    """The socket takes half of an eager frame: the link task sends the other half
    first, and a message sent meanwhile queues behind it."""
    got: list = []
    link = await _idle_link(nursery, got)
    write = os.write
    monkeypatch.setattr(client.rawsocket.os, "write", lambda fd, data: write(fd, data[: len(data) // 2]))
    link.send(b"x" * 1000)
    monkeypatch.setattr(client.rawsocket.os, "write", write)
    assert not link.outbox
    link.send(b"after")  # (the rest is pending: this one queues)
    assert link.outbox == [b"after"]
    with trio.fail_after(10):
        while len(got) < 2:
            await trio.sleep(0.01)
    assert got == [(2, b"x" * 1000), (2, b"after")]


async def test_nothing_goes_at_once_while_the_link_task_is_in_a_send(nursery, monkeypatch):
    """The link task has taken the outbox and waits for the socket to take a frame (a
    slow reader): a message sent meanwhile, in a later pass, queues behind that frame
    instead of going at once (it would jump it, or land inside it)."""
    got: list = []
    link = await _idle_link(nursery, got)
    socket_free = hold_socket_sends(monkeypatch)
    link.send(b"first")  # at once
    link.send(b"second")  # queued: the link task takes it and waits for the socket
    await trio.sleep(0.05)
    assert not link.outbox
    link.send(b"late")
    assert link.outbox == [b"late"]
    socket_free.set()
    with trio.fail_after(10):
        while len(got) < 3:
            await trio.sleep(0.01)
    assert [p for _, p in got] == [b"first", b"second", b"late"]
