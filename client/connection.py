"""One multiplexed connection from a client to a node, on anyio (runs under trio and
asyncio).

Requests get ids; the reader task matches each response to its waiter, so many requests
are in flight on one socket. `open_connection()` owns the reader task (trio's `open_*`
idiom): leaving its block closes the socket and fails whatever is still waiting with
`ConnectionClosedError` (its outcome is unknown, so a caller must not assume either way).

A request may carry a `timeout`: if its answer has not come within it, the node (or the
route to it) is taken to be silent, and the whole connection is failed at once (Kafka's
NetworkClient does the same). Every other waiter then gets a retriable
`ConnectionClosedError` instead of sitting out its own timeout behind a blackhole, and
the owner dials afresh. The deadline holds even if the caller gave up earlier (a shorter
cancel scope): the node still owes that answer, and its silence is what counts.

Versions are negotiated in the handshake (Kafka's ApiVersions, folded into Hello): Hello
carries the ranges this side speaks, HelloOk the node's, and each request then goes at
the highest version both speak (`Connection.versions`). A request with none is refused
here with `UnsupportedVersionError`, naming both ranges, before anything is sent; the
connection stays up.
"""

from __future__ import annotations

import itertools
import math
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol, cast

import anyio
import anyio.abc
import sniffio
from anyio.abc import ByteStream

from client.errors import (
    AuthFailedError,
    ConnectionClosedError,
    RemoteProtocolError,
    UnsupportedVersionError,
    error_for,
)
from client.protocol import (
    CLIENT_VERSIONS,
    DEFAULT_MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    ErrorResponse,
    FrameDecoder,
    Hello,
    HelloOk,
    PeerChallenge,
    PeerProof,
    R,
    Request,
    ScramChallenge,
    ScramProof,
    WireMessage,
    agree,
    decode_payload,
    describe_range,
    encode_frame,
    split_addr,
    tag_of,
)
from client.scram import ScramClient, ScramError


def _raw_socket(stream: ByteStream) -> socket.socket | None:
    """The socket under a plain stream when running under trio (`client.rawsocket`);
    None over TLS or under asyncio, whose stream is used as it is."""
    if not isinstance(stream, anyio.abc.SocketStream) or sniffio.current_async_library() != "trio":
        return None
    return stream.extra(anyio.abc.SocketAttribute.raw_socket, None)


class _Waiter:
    __slots__ = ("event", "body")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.body: object = None


class Connection:
    """Use `open_connection()`; a Connection lives inside its block."""

    def __init__(self, stream: ByteStream, addr: str, max_frame_bytes: int) -> None:
        self.addr = addr
        self.node_id: int | None = None
        self.speaks: dict[str, tuple[int, int]] = {}  # this side's ranges, as its Hello said
        self.node_versions: dict[str, tuple[int, int]] = {}  # the node's, as its HelloOk said
        self.versions: dict[str, int] = {}  # request -> the version it goes at on this connection
        self._stream = stream
        self._raw = _raw_socket(stream)
        if self._raw is not None:  # (trio only then: asyncio users never import it)
            from client import rawsocket

            self._reader: rawsocket.SocketReader | None = rawsocket.SocketReader(self._raw)
            self._write_now = rawsocket.write_now
            self._reader_errors: tuple[type[Exception], ...] = rawsocket.STREAM_ERRORS
        else:
            self._reader = None
        self._ids = itertools.count(1)
        self._waiters: dict[int, _Waiter] = {}
        self._send_lock = anyio.Lock(fast_acquire=True)  # (no loop iteration when free)
        self._decoder = FrameDecoder(max_frame_bytes)
        self._closed: BaseException | None = None
        self._deadlines: dict[int, float] = {}  # request id -> when its answer is overdue
        self._deadline_added = anyio.Event()
        self._watched = math.inf  # the deadline the watchdog sleeps until

    @property
    def closed(self) -> bool:
        return self._closed is not None

    async def request(self, body: Request[R], sent: anyio.Event | None = None, *, timeout: float | None = None) -> R:
        """Send one request and wait for its answer; an error answer raises its exception.

        `sent` is set once the request is written, so a caller can order pipelined
        requests on the wire. Bound the caller's wait with a cancel scope; `timeout` is
        not that: it says when a missing answer means the connection is dead (see the
        module docstring), which needs `open_connection(..., watchdog=True)`. The request
        whose answer was overdue raises TimeoutError; the others on the connection,
        ConnectionClosedError.
        """
        if self._closed is not None:
            raise ConnectionClosedError(f"connection to {self.addr} is closed: {self._closed}")
        rid = next(self._ids)
        waiter = self._waiters[rid] = _Waiter()
        if timeout is not None:
            due = self._deadlines[rid] = anyio.current_time() + timeout
            if due < self._watched:  # (most come due after those already watched: no wake-up)
                self._deadline_added.set()
        written = False
        try:
            await self._send(rid, body)
            written = True
            if sent is not None:
                sent.set()
            await waiter.event.wait()
        finally:
            self._waiters.pop(rid, None)
            if not written:
                self._deadlines.pop(rid, None)  # never on the wire: no answer is owed
        resp = waiter.body
        if isinstance(resp, BaseException):
            if timeout is not None and isinstance(resp, ConnectionClosedError) and anyio.current_time() >= due:
                raise TimeoutError(f"node at {self.addr} did not answer within {timeout:g}s") from resp
            raise resp
        if isinstance(resp, ErrorResponse):
            raise error_for(resp.code, resp.message, leader_id=resp.leader_id, leader_addr=resp.leader_addr)
        return cast(R, resp)  # the node answers a request with its response type (or an error)

    async def send_only(self, body: object) -> None:
        """Send a request that gets no answer (a produce with acks=0)."""
        if self._closed is not None:
            raise ConnectionClosedError(f"connection to {self.addr} is closed: {self._closed}")
        await self._send(next(self._ids), body, at_once=False)  # (the send is this caller's only pass)

    def version_for(self, body: object) -> int:
        """The version `body` goes at: the highest both sides speak. A body this side does
        not version (a forged one, in the fuzzer) goes at 1, and the node judges it."""
        if not isinstance(body, WireMessage):
            return PROTOCOL_VERSION
        name = tag_of(type(body))
        if name not in self.speaks:
            return PROTOCOL_VERSION
        version = self.versions.get(name)
        if version is None:
            raise UnsupportedVersionError(
                f"{name}: no version both sides speak (this side {describe_range(self.speaks[name])}, "
                f"node {self.node_id} at {self.addr} {describe_range(self.node_versions.get(name))})",
                request=name,
                ours=self.speaks[name],
                theirs=self.node_versions.get(name),
            )
        return version

    async def _send(self, rid: int, body: object, *, at_once: bool = True) -> None:
        """Write a frame. Under trio on plain TCP, with no other send under way, it goes
        with one `os.write` and no scheduler pass (trio's send yields one after every
        write): a caller that then waits for the answer yields anyway. The rest of a
        frame the socket did not take goes the usual way, under the lock, taken before
        anything could come between."""
        frame = encode_frame(rid, body, self.version_for(body))
        try:
            if at_once and self._raw is not None and not self._send_lock.locked():
                sent = self._write_now(self._raw, frame)
                if sent == len(frame):
                    return
                frame = frame[sent:]  # (a copy, of a partial write only)
            async with self._send_lock:
                await self._stream.send(frame)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            self._fail(ConnectionClosedError(f"connection to {self.addr} lost: {exc!r}"))
            raise ConnectionClosedError(f"connection to {self.addr} lost while sending: {exc!r}") from exc

    async def _next_envelope(self):
        while True:
            frame = self._decoder.next_frame()
            if frame is not None:
                return decode_payload(frame[1])
            if self._reader is not None:
                try:
                    data = await self._reader.receive_some(256 * 1024)
                except self._reader_errors as exc:
                    raise anyio.BrokenResourceError(str(exc)) from exc
                if not data:
                    raise anyio.EndOfStream
            else:
                data = await self._stream.receive(256 * 1024)
            self._decoder.feed(data)

    async def _read_loop(self) -> None:
        try:
            while True:
                env = await self._next_envelope()
                self._deadlines.pop(env.id, None)
                waiter = self._waiters.get(env.id)
                if waiter is not None:
                    waiter.body = env.body
                    waiter.event.set()
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            self._fail(ConnectionClosedError(f"connection to {self.addr} closed by the node ({type(exc).__name__})"))
        except RemoteProtocolError as exc:
            self._fail(exc)

    async def _watchdog(self) -> None:
        """Fail the connection once any request's answer is overdue. It sleeps until the
        earliest deadline it knows of and is woken only for an earlier one, so a stream
        of requests answered in time costs it one wake-up per timeout, not per request.

        It acts on a deadline only in a scheduler pass that started after it: a pass
        starts by expiring every deadline due, in order, so a caller's own timeout that
        falls at or before the connection's has landed by then, and the caller gets its
        TimeoutError. Acting on a clock read late in the pass that woke it could fail
        that request with ConnectionClosedError first.

        The socket is closed too: a request still being written (to a node that stopped
        reading) fails now instead of waiting for the owner to close it."""
        while self._closed is None:
            due = min(self._deadlines.values(), default=math.inf)
            if anyio.current_time() >= due:
                await anyio.lowlevel.checkpoint()  # see above: the next pass starts past `due`
                if min(self._deadlines.values(), default=math.inf) <= due:
                    self.abandon(f"node at {self.addr} did not answer a request in time; dropping the connection")
                    with anyio.CancelScope(shield=True):
                        await self._stream.aclose()
                    return
                continue
            self._watched = due
            with anyio.CancelScope(deadline=due):
                await self._deadline_added.wait()  # an earlier deadline came
            self._deadline_added = anyio.Event()
            self._watched = math.inf

    def abandon(self, reason: str) -> None:
        """Give the connection up as dead: every waiter fails now with a retriable
        ConnectionClosedError, and so does every later request (the owner redials)."""
        self._fail(ConnectionClosedError(f"connection to {self.addr} dropped: {reason}"))

    def _fail(self, exc: BaseException) -> None:
        if self._closed is None:
            self._closed = exc
        for waiter in self._waiters.values():
            if not waiter.event.is_set():
                waiter.body = exc
                waiter.event.set()

    async def _handshake(
        self,
        client_id: str,
        token: str | None,
        peer: PeerAuth | None,
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        scram = ScramClient(user, password or "") if user is not None and peer is None else None
        if peer is not None:
            hello = peer.hello(client_id)
        else:
            hello = Hello(
                PROTOCOL_VERSION,
                client_id,
                token,
                versions=CLIENT_VERSIONS,
                user=user if scram else None,
                scram=scram.first() if scram else None,
            )
        await self._send(0, hello)
        env = await self._next_envelope()
        if peer is not None and isinstance(env.body, PeerChallenge):
            await self._send(0, PeerProof(peer.prove(hello, env.body)))
            env = await self._next_envelope()
        if scram is not None and isinstance(env.body, ScramChallenge):
            try:
                await self._send(0, ScramProof(scram.final(env.body.message)))
            except ScramError as exc:
                raise AuthFailedError(f"node at {self.addr}: {exc}") from None
            env = await self._next_envelope()
        if isinstance(env.body, ErrorResponse):
            raise error_for(env.body.code, env.body.message)
        if not isinstance(env.body, HelloOk):
            raise RemoteProtocolError(f"node answered Hello with {type(env.body).__name__}")
        if scram is not None:
            try:
                scram.verify(env.body.scram or "")
            except ScramError as exc:  # a listener that does not know the password: not the cluster
                raise AuthFailedError(f"node at {self.addr} could not prove it knows user {user!r}: {exc}") from None
        self.node_id = env.body.node_id
        self.speaks = dict(hello.versions)
        self.node_versions = dict(env.body.versions)
        self.versions = agree(self.speaks, self.node_versions)


class PeerAuth(Protocol):
    """How a node proves itself on another node's peer listener (the node implements
    it; a client never holds the secret)."""

    def hello(self, client_id: str) -> Hello:
        """The Hello that opens a peer connection, with a fresh challenge."""
        ...

    def prove(self, hello: Hello, challenge: PeerChallenge) -> bytes:
        """Check the listener's proof, and answer its challenge; raises on a bad proof."""
        ...


@asynccontextmanager
async def open_connection(
    addr: str,
    *,
    token: str | None = None,
    client_id: str = "tidemq-client",
    connect_timeout: float = 5.0,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    watchdog: bool = False,
    peer: PeerAuth | None = None,
    ssl_context: ssl.SSLContext | None = None,
    user: str | None = None,
    password: str | None = None,
) -> AsyncIterator[Connection]:
    """Connect and say Hello. With `watchdog`, a request sent with a `timeout` that goes
    unanswered that long fails the connection (see the module docstring). With `peer`,
    the connection is a node's, to another node's peer listener. With `ssl_context`,
    over TLS (client/tls.py). With `user`, logged in with SCRAM-SHA-256 (client/scram.py)."""
    host, port = split_addr(addr)
    try:
        with anyio.fail_after(connect_timeout):
            # (Frames carry their own lengths: no TLS close_notify is needed to end a stream.)
            stream: ByteStream
            if ssl_context is None:
                stream = await anyio.connect_tcp(host, port)
            else:
                stream = await anyio.connect_tcp(
                    host, port, ssl_context=ssl_context, tls_hostname=host, tls_standard_compatible=False
                )
    except ssl.SSLCertVerificationError as exc:
        raise AuthFailedError(
            f"TLS with {addr} failed: {exc.reason or exc}; check the CA (tls_ca / TIDEMQ_TLS_CA) and the address"
        ) from exc
    except ssl.SSLError as exc:  # not the certificate: a plain listener, or a handshake cut (retried)
        raise ConnectionClosedError(
            f"TLS with {addr} failed: {exc.reason or exc}; is it a TLS listener, and is the node up?"
        ) from exc
    except (OSError, TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError) as exc:
        raise ConnectionClosedError(f"cannot connect to {addr}: {exc!r}; is the node running?") from exc
    conn = Connection(stream, addr, max_frame_bytes)
    async with stream:
        try:
            with anyio.fail_after(connect_timeout):
                await conn._handshake(client_id, token, peer, user, password)
        except TimeoutError as exc:
            raise ConnectionClosedError(f"node at {addr} did not answer Hello within {connect_timeout}s") from exc
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError) as exc:
            hint = "" if ssl_context is not None else " (is it a TLS listener? then pass tls_ca= or set TIDEMQ_TLS_CA)"
            raise ConnectionClosedError(f"node at {addr} closed the connection during Hello{hint}") from exc
        # The body's own exception is re-raised outside the task group, so callers see
        # it as is rather than wrapped in an ExceptionGroup.
        body_error: BaseException | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(conn._read_loop)
            if watchdog:
                tg.start_soon(conn._watchdog)
            try:
                yield conn
            except BaseException as exc:
                body_error = exc
            finally:
                conn._fail(ConnectionClosedError(f"connection to {addr} closed"))
                tg.cancel_scope.cancel()
        if body_error is not None:
            raise body_error
