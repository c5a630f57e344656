"""The connection's watchdog: an answer overdue fails the whole connection at once,
against a listener that says Hello and then never answers (a SIGSTOPped node)."""

from __future__ import annotations

import functools
import time

import pytest
import trio

from client.connection import open_connection
from client.errors import ConnectionClosedError
from client.protocol import CLIENT_VERSIONS, FrameDecoder, Hello, HelloOk, Metadata, decode_payload, encode_frame


def _node(answer: bool):
    """A listener that says Hello, then answers every request at once (`answer`) or
    never."""

    async def serve(stream: trio.SocketStream) -> None:
        decoder = FrameDecoder(1 << 20)
        async for data in stream:
            decoder.feed(bytes(data))
            while (frame := decoder.next_frame()) is not None:
                env = decode_payload(frame[1])
                if isinstance(env.body, Hello):
                    await stream.send_all(encode_frame(env.id, HelloOk(1, versions=CLIENT_VERSIONS)))
                elif answer:
                    await stream.send_all(encode_frame(env.id, HelloOk(1)))

    return serve


async def _listen(nursery, answer: bool) -> str:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, _node(answer), 0, host="127.0.0.1"))
    host, port = listeners[0].socket.getsockname()[:2]
    return f"{host}:{port}"


async def test_an_overdue_answer_fails_every_request_on_the_connection(nursery):
    silent_addr = await _listen(nursery, answer=False)
    failed: list[tuple[str, float]] = []
    start = time.monotonic()
    with trio.fail_after(10):
        async with open_connection(silent_addr, watchdog=True) as conn:

            async def ask(name: str, timeout: float) -> None:
                with pytest.raises(ConnectionClosedError):
                    await conn.request(Metadata([]), timeout=timeout)
                failed.append((name, time.monotonic() - start))

            async with trio.open_nursery() as n:
                n.start_soon(ask, "patient", 30.0)
                await trio.sleep(0.05)
                n.start_soon(ask, "hasty", 0.3)  # due before the one already watched
            assert conn.closed
    # The later request's earlier deadline woke the watchdog: both failed at ~0.3 s, not 30.
    assert {name for name, _ in failed} == {"patient", "hasty"}
    assert all(0.25 < at < 5 for _, at in failed), failed


async def test_requests_answered_in_time_keep_the_connection(nursery):
    """Each request is due 0.2 s after it is sent, and requests go on for 1 s: the
    watchdog wakes at deadlines whose requests were answered long ago, and must let
    the connection be."""
    addr = await _listen(nursery, answer=True)
    with trio.fail_after(10):
        async with open_connection(addr, watchdog=True) as conn:
            end = trio.current_time() + 1.0
            answered = 0
            while trio.current_time() < end:
                await conn.request(Metadata([]), timeout=0.2)
                answered += 1
                await trio.sleep(0.01)
            assert not conn.closed
    assert answered > 20
