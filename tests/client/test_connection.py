"""The connection's watchdog: an answer overdue fails the whole connection at once,
against a listener that says Hello and then never answers (a SIGSTOPped node); and
frames written at once that the socket takes only in part."""

from __future__ import annotations

import functools
import math
import socket
import time

import anyio
import pytest
import trio

from client.connection import open_connection
from client.errors import ConnectionClosedError
from client.protocol import CLIENT_VERSIONS, FrameDecoder, Hello, HelloOk, Metadata, decode_payload, encode_frame


def _node(answers: float):
    """A listener that says Hello, then answers the first `answers` requests at once
    and never another (math.inf: all of them)."""

    async def serve(stream: trio.SocketStream) -> None:
        decoder = FrameDecoder(1 << 20)
        left = answers
        async for data in stream:
            decoder.feed(bytes(data))
            while (frame := decoder.next_frame()) is not None:
                env = decode_payload(frame[1])
                if isinstance(env.body, Hello):
                    await stream.send_all(encode_frame(env.id, HelloOk(1, versions=CLIENT_VERSIONS)))
                elif left > 0:
                    left -= 1
                    await stream.send_all(encode_frame(env.id, HelloOk(1)))

    return serve


async def _listen(nursery, answers: float) -> str:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, _node(answers), 0, host="127.0.0.1"))
    host, port = listeners[0].socket.getsockname()[:2]
    return f"{host}:{port}"


async def test_an_overdue_answer_fails_every_request_on_the_connection(nursery):
    silent_addr = await _listen(nursery, answers=0)
    failed: list[tuple[str, float]] = []
    start = time.monotonic()
    with trio.fail_after(10):
        async with open_connection(silent_addr, watchdog=True) as conn:

            async def ask(name: str, timeout: float) -> None:
                # The overdue request times out; the other goes down with the connection.
                with pytest.raises(TimeoutError if name == "hasty" else ConnectionClosedError):
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
    addr = await _listen(nursery, answers=math.inf)
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


async def _hold_the_loop_at(when: float) -> None:
    await trio.sleep_until(when)  # wakes in the same pass as a task due then
    time.sleep(0.02)


async def test_a_callers_own_timeout_lands_before_the_connection_is_dropped(nursery):
    """`ClusterClient.request` bounds a request twice: its caller's deadline, then (a
    moment later) the connection's. A caller must get its TimeoutError even when the
    watchdog wakes for an earlier, answered request's deadline in a pass that a task
    holds for 20 ms, past both deadlines (trio runs a pass's tasks in a random order:
    12 tries with the watchdog asleep on that earlier deadline)."""
    armed = 0
    for _ in range(60):
        addr = await _listen(nursery, answers=1)
        with trio.fail_after(10):
            async with open_connection(addr, watchdog=True) as conn:
                await conn.request(Metadata([]), timeout=0.3)  # answered; the watchdog may sleep until its due
                earlier = conn._watched
                if earlier == math.inf:
                    continue  # it had not started watching it
                armed += 1

                nursery.start_soon(_hold_the_loop_at, earlier)
                await trio.sleep(0.005)  # the next request is due 5 ms after the answered one
                with pytest.raises(TimeoutError):
                    with anyio.fail_after(0.3):
                        await conn.request(Metadata([]), timeout=0.3)
                with trio.move_on_after(2):  # (the watchdog's pass may wait for a core on a loaded machine)
                    while not conn.closed:
                        await trio.sleep(0.01)
                assert conn.closed, "the unanswered request dropped its connection"
        if armed == 12:
            break
    assert armed == 12


async def test_frames_the_socket_takes_in_part_still_go_whole_and_apart(nursery):
    """Under trio a frame goes with one write when no other send is under way; what the
    socket does not take goes after it under the send lock, so two large requests
    sent at once reach the node whole, one after the other."""
    addr = await _listen(nursery, answers=math.inf)
    with trio.fail_after(10):
        async with open_connection(addr) as conn:
            assert conn._raw is not None  # (trio, plain TCP: the at-once path)
            conn._raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            big = Metadata([f"topic-{i:06d}" for i in range(30_000)])  # about 450 KB

            async with trio.open_nursery() as n:
                for _ in range(2):
                    n.start_soon(conn.request, big)
            await conn.request(Metadata([]))
            assert not conn.closed


async def test_a_request_stuck_in_the_write_fails_with_the_overdue_connection(nursery):
    """A node that stopped reading: a request the socket no longer takes must not wait
    on the write past its timeout (the watchdog closes the socket)."""

    async def deaf(stream: trio.SocketStream) -> None:
        decoder = FrameDecoder(1 << 20)
        while (frame := decoder.next_frame()) is None:
            decoder.feed(bytes(await stream.receive_some(65536)))
        await stream.send_all(encode_frame(decode_payload(frame[1]).id, HelloOk(1, versions=CLIENT_VERSIONS)))
        await trio.sleep_forever()  # never reads again

    listeners = await nursery.start(functools.partial(trio.serve_tcp, deaf, 0, host="127.0.0.1"))
    host, port = listeners[0].socket.getsockname()[:2]
    big = Metadata([f"topic-{i:06d}" for i in range(30_000)])  # about 450 KB a request
    with trio.fail_after(10):
        async with open_connection(f"{host}:{port}", watchdog=True) as conn:
            outcomes = []

            async def ask() -> None:
                try:
                    await conn.request(big, timeout=0.5)
                except (TimeoutError, ConnectionClosedError) as exc:
                    outcomes.append(type(exc))

            async with trio.open_nursery() as n:
                for _ in range(40):  # far more than the socket buffers hold
                    n.start_soon(ask)
            assert len(outcomes) == 40 and conn.closed
