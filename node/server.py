"""The broker's TCP front door: accept, authenticate, frame, dispatch, answer.

Each connection gets a reader (this module) and a writer task; every request runs in its
own task, so one slow request (a long-poll fetch, an acks=all produce) never holds up
the others on the same connection. A per-connection limit on requests in flight gives
backpressure: when it is reached the reader stops reading.

A frame that breaks the protocol (bad length, garbage, a handshake of another version, no
Hello in time) closes that connection only; nothing else is affected. A well-formed
request this node does not speak, at that version or at all (a newer peer's), is
answered UNSUPPORTED_VERSION naming it and this node's range, and the connection goes
on. Each request is read at its frame's version and answered at it (client.protocol).
A handler that raises a `TideMQError` answers with its code; anything else is logged
and answered with UNKNOWN, and the node keeps serving.

A node runs two of these (Kafka's client and inter-broker listeners): the client
listener checks the cluster token and refuses every peer Hello and broker-to-broker
request with CLUSTER_AUTHORIZATION_FAILED; the peer listener admits only the cluster's
nodes, each proving the peer secret (node.peerauth), and carries their Raft traffic and
their requests to each other.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import math
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Container
from contextlib import asynccontextmanager
from typing import Protocol

import trio

from client.errors import (
    AuthFailedError,
    ClusterAuthorizationError,
    ConnectionLimitError,
    CoordinatorNotAvailableError,
    ErrorCode,
    RemoteProtocolError,
    TideMQError,
    UnknownMessageError,
    UnsupportedVersionError,
)
from client.protocol import (
    CLIENT_VERSIONS,
    PROTOCOL_VERSION,
    ErrorResponse,
    FrameDecoder,
    Hello,
    HelloOk,
    PeerProof,
    ScramChallenge,
    ScramProof,
    at_version,
    describe_range,
    encode_frame,
    tag_of,
    version_notes,
)
from client.rawsocket import SocketReader
from client.scram import ScramError, ScramServer, UserCredential
from node.acl import ANONYMOUS, TOKEN_USER
from node.eager import EagerWriter
from node.peerauth import PeerCredential
from node.peerprotocol import NODE_VERSIONS, PEER_ONLY, NodeEnvelope, PeerMessages, decode_node_payload
from node.sendfile import Spliced, SplicedFrame, sendfile_all
from node.tls import accept, common_name_of, node_id_of

log = logging.getLogger(__name__)

HELLO_TIMEOUT_S = 10.0
HELLO_MAX_FRAME_BYTES = 64 * 1024
#: Requests only the cluster's nodes send each other (never served on the client listener).
_READ_CHUNK = 256 * 1024


class Handler(Protocol):
    def dispatch(self, body: object, client: ClientInfo) -> Awaitable[object | None]:
        """Start serving a request; the awaitable gives the response body, or None to
        send nothing (acks=0).

        Called synchronously, in the order requests arrived on the connection, so a
        handler can do order-sensitive work (an idempotent producer's pipelined
        batches) before its first await, whatever order trio runs the tasks in.
        """


class ClientInfo:
    """What the server knows about the far end of one connection; `peer_node` is set
    only for a node authenticated on the peer listener; `zero_copy` when answers can
    be sent from files (`os.sendfile`: a plain TCP socket, not TLS)."""

    def __init__(
        self,
        addr: str,
        client_id: str,
        peer_node: int | None = None,
        *,
        zero_copy: bool = False,
        principal: str = ANONYMOUS,
    ) -> None:
        self.addr = addr
        self.client_id = client_id
        self.peer_node = peer_node
        self.zero_copy = zero_copy
        self.principal = principal  # "User:NAME" once logged in; who ACLs will be about


@asynccontextmanager
async def contained(
    stream: trio.abc.AsyncResource, addr: str, protocol_error: type[Exception], metrics=None, what: str = "connection"
) -> AsyncIterator[None]:
    """Whatever happens on one connection ends there, and the connection is closed:
    nothing may escape into the listener's nursery, or one bad client would stop the
    node. A `protocol_error` is logged as the client's fault and counted."""
    try:
        yield
    except* protocol_error as group:
        log.warning("closing %s from %s: %s", what, addr, group.exceptions[0])
        if metrics:
            metrics.protocol_errors.inc()
    except* (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
        pass
    except* Exception:
        log.exception("%s from %s failed", what, addr)
    finally:
        with trio.move_on_after(1) as cs:
            cs.shield = True
            await stream.aclose()


async def secured(stream: trio.SocketStream, ctx: ssl.SSLContext | None, addr: str, what: str, metrics=None):
    """The stream a listener speaks on: TLS over `stream` where `ctx` is given (None if
    the handshake failed: a plain-text client, an untrusted certificate; logged and
    counted as an authentication failure)."""
    if ctx is None:
        return stream
    try:
        return await accept(stream, ctx)
    except (trio.BrokenResourceError, trio.TooSlowError, ssl.SSLError, OSError) as exc:
        cause = exc.__cause__ or exc
        log.warning("refused a %s from %s: TLS handshake failed: %s", what, addr, cause)
        if metrics:
            metrics.auth_failures.inc()
        return None


def certificate_user(stream: trio.abc.Stream) -> str | None:
    """The user a client certificate stands for (its common name), where the client
    presented one the cluster's CA signed; None otherwise, and for a node's certificate."""
    if not isinstance(stream, trio.SSLStream):
        return None
    cert = stream.getpeercert()
    if not cert or node_id_of(cert) is not None:
        return None
    return common_name_of(cert)


def remote_addr(stream: trio.abc.Stream) -> str:
    """HOST:PORT of the other end, for the logs ("?" once it is gone)."""
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    try:
        peer = stream.socket.getpeername()  # type: ignore[attr-defined]
    except OSError:
        return "?"
    return f"{peer[0]}:{peer[1]}"


def error_body(exc: TideMQError) -> ErrorResponse:
    return ErrorResponse(
        int(exc.code),
        exc.message,
        leader_id=exc.details.get("leader_id"),  # type: ignore[arg-type]
        leader_addr=exc.details.get("leader_addr"),  # type: ignore[arg-type]
    )


def _typed_leaves(group: BaseExceptionGroup) -> list[TideMQError] | None:
    """The group's leaf exceptions if every one is a TideMQError, else None."""
    leaves: list[TideMQError] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            sub = _typed_leaves(exc)
            if sub is None:
                return None
            leaves.extend(sub)
        elif isinstance(exc, TideMQError):
            leaves.append(exc)
        else:
            return None
    return leaves


async def _raise(exc: Exception) -> None:
    raise exc


class _Outbox:
    """Answers waiting to be written, with their bytes counted: past the budget the
    reader stops taking requests until the client reads (TCP backpressure, as Kafka
    mutes a channel whose sends are pending). A frame is bytes, or a `SplicedFrame`
    whose regions the writer sends from their files."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.queued = 0
        self.send, self.receive = trio.open_memory_channel[bytes | SplicedFrame](math.inf)
        self._drained = trio.Event()
        self.eager: EagerWriter | None = None  # with nothing queued, an answer may go at once

    def put(self, frame: bytes | SplicedFrame) -> None:
        eager = self.eager
        if not self.queued and type(frame) is bytes and eager is not None and eager.ready():
            rest = eager.write(frame)
            if rest is not None:
                if not rest:
                    return
                frame = bytes(rest)  # the writer sends what is left, ahead of anything later
        try:
            self.send.send_nowait(frame)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            if isinstance(frame, SplicedFrame):
                frame.close()
            return
        self.queued += len(frame)

    def discard(self) -> None:
        """The connection is gone: give back what answers still queued hold (descriptors)."""
        while True:
            try:
                frame = self.receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError, trio.BrokenResourceError):
                return
            if isinstance(frame, SplicedFrame):
                frame.close()

    def sent(self, n: int) -> None:
        self.queued -= n
        if self.queued <= self.budget:
            self._drained.set()

    async def wait_below_budget(self) -> None:
        while self.queued > self.budget:
            self._drained = trio.Event()
            await self._drained.wait()


@dataclasses.dataclass(frozen=True)
class ConnectionLimits:
    """What one listener lets connections hold (docs/security.md lists the defaults)."""

    max_connections: int = 1000
    max_queued_bytes: int = 64 * 1024 * 1024  # answers written but not yet read, per connection
    idle_timeout_s: float | None = 600.0  # a client connection with nothing asked or owed (Kafka: 10 min)


class Server:
    def __init__(
        self,
        node_id: int,
        handler: Handler,
        on_peer_messages: Callable[[int, bytes], None],
        *,
        token: str | None = None,
        max_frame_bytes: int,
        max_inflight: int = 256,
        metrics=None,
        peer_auth: PeerCredential | None = None,
        peer_ids: Container[int] = (),
        limits: ConnectionLimits = ConnectionLimits(),
        ssl_context: ssl.SSLContext | None = None,
        users: Callable[[str], UserCredential | None] = lambda name: None,
        require_users: bool = False,
        throttle: Callable[[str], float] | None = None,
        loaded: Callable[[], bool] = lambda: True,
    ) -> None:
        """`throttle(principal)`: how long to wait before reading that principal's next
        request (its quotas, node/quotas.py). `loaded()`: whether the node has replayed
        the cluster's state (before, a user it does not know may merely not be there
        yet: the client is told to retry). `users` looks a user's stored credential up (the controller's replicated
        state); with `require_users`, a client must log in as one (or hold the token,
        the deprecated single user). With `peer_auth` this is the peer listener: only the nodes in `peer_ids`,
        proving the peer secret, get in; without, the client listener, which refuses
        every peer and broker-to-broker request. With `ssl_context`, TLS only (on the
        peer listener, a peer's certificate must name the node it claims to be)."""
        self.node_id = node_id
        self.ssl_context = ssl_context
        self.users = users
        self.require_users = require_users
        self.throttle = throttle
        self.loaded = loaded
        self._scram_secret = os.urandom(16)  # the made-up salts of unknown users
        self.peer_auth = peer_auth
        self.peer_ids = peer_ids  # (a live collection: the roster changes)
        self.handler = handler
        self.on_peer_messages = on_peer_messages
        self.token = token
        self.max_frame_bytes = max_frame_bytes
        self.max_inflight = max_inflight
        self.metrics = metrics
        self.limits = limits
        self.connections = 0
        # What this listener serves, each request with the versions of it (HelloOk says so).
        self.versions = NODE_VERSIONS if peer_auth is not None else CLIENT_VERSIONS
        self._noted: set[tuple[int | None, tuple[str, ...]]] = set()

    async def serve(self, host: str, port: int, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        task_status.started(listeners)
        await trio.serve_listeners(self._serve_connection, listeners)

    async def _serve_connection(self, raw: trio.SocketStream) -> None:
        addr = remote_addr(raw)
        self.connections += 1
        try:
            async with contained(raw, addr, RemoteProtocolError, self.metrics):
                what = "peer connection" if self.peer_auth is not None else "client connection"
                stream = await secured(raw, self.ssl_context, addr, what, self.metrics)
                if stream is None:
                    return
                if self.connections > self.limits.max_connections:
                    if self.metrics:
                        self.metrics.connections_refused.inc()
                    limit = self.limits.max_connections
                    refusal = ConnectionLimitError(f"node {self.node_id} has {limit} connections open; retry later")
                    with trio.move_on_after(1):
                        await stream.send_all(encode_frame(0, error_body(refusal)))
                    return
                await self._run(stream, addr)
        finally:
            self.connections -= 1

    async def _run(self, stream: trio.abc.Stream, addr: str) -> None:
        # Until Hello is accepted a frame may be small: an unauthenticated stranger must
        # not make the node buffer and decode megabytes.
        decoder = FrameDecoder(HELLO_MAX_FRAME_BYTES)
        receive_some = (
            SocketReader(stream.socket).receive_some if type(stream) is trio.SocketStream else stream.receive_some
        )

        async def next_frame() -> tuple[int, NodeEnvelope | UnknownMessageError] | None:
            """(version, envelope) of the next frame, or an envelope of a message this
            build does not know, to answer; None at EOF."""
            while True:
                frame = decoder.next_frame()
                if frame is not None:
                    try:
                        return frame[0], decode_node_payload(frame[1])
                    except UnknownMessageError as exc:
                        return frame[0], exc
                data = await receive_some(_READ_CHUNK)
                if not data:
                    return None
                decoder.feed(bytes(data))

        async def next_envelope() -> NodeEnvelope | None:
            """The next handshake envelope (nothing unknown is answered before Hello)."""
            got = await next_frame()
            if got is None:
                return None
            if isinstance(got[1], UnknownMessageError):
                raise got[1]
            return got[1]

        with trio.move_on_after(HELLO_TIMEOUT_S) as cs:
            try:
                first = await next_frame()
            except RemoteProtocolError as exc:
                if exc.details.get("tag") == tag_of(Hello):  # a Hello that does not decode: say why, then close
                    with trio.move_on_after(1):
                        await stream.send_all(encode_frame(0, error_body(exc)))
                raise
            if first is None:
                return
            hello_version, hello = first
            if isinstance(hello, UnknownMessageError):
                raise RemoteProtocolError(f"first frame must be Hello, got {hello.tag}")
            if not isinstance(hello.body, Hello):
                raise RemoteProtocolError(f"first frame must be Hello, got {type(hello.body).__name__}")
            hello_id, body = hello.id, hello.body
            admitted = await self._admit(body, hello_version, stream, next_envelope, addr)
        if cs.cancelled_caught:
            raise RemoteProtocolError(f"no Hello within {HELLO_TIMEOUT_S}s")
        if isinstance(admitted, TideMQError):
            if self.metrics:
                self.metrics.auth_failures.inc()
            await stream.send_all(encode_frame(hello_id, error_body(admitted)))
            return
        principal, server_final = admitted
        await stream.send_all(encode_frame(hello_id, HelloOk(self.node_id, versions=self.versions, scram=server_final)))
        decoder.max_frame_bytes = self.max_frame_bytes
        client = ClientInfo(
            addr,
            body.client_id,
            body.peer_node if self.peer_auth is not None else None,
            zero_copy=isinstance(stream, trio.SocketStream) and hasattr(os, "sendfile"),
            principal=principal,
        )
        if client.peer_node is not None:
            self._note_versions(client.peer_node, body)

        outbox = _Outbox(self.limits.max_queued_bytes)
        outbox.eager = EagerWriter(stream)
        inflight = trio.Semaphore(self.max_inflight)
        idle_s = None if client.peer_node is not None else self.limits.idle_timeout_s

        async def next_request():
            """The next (version, envelope); None at EOF, or once the connection sat idle
            too long (nothing asked, nothing owed)."""
            while True:
                await outbox.wait_below_budget()  # a client that never reads is not read either
                if self.throttle is not None and (wait := self.throttle(client.principal)) > 0:
                    if self.metrics:
                        self.metrics.throttle_seconds.inc(wait)
                    await trio.sleep(wait)  # over a quota: slowed, never refused
                if idle_s is None:  # a peer: no cancel scope on every frame of every hop
                    return await next_frame()
                with trio.move_on_after(idle_s) as idle:
                    return await next_frame()
                if idle.cancelled_caught and inflight.value == self.max_inflight and not outbox.queued:
                    log.info("closing connection from %s: idle for %ss", addr, idle_s)
                    return None

        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer, stream, outbox, self.metrics)
            async with outbox.send:
                while (got := await next_request()) is not None:
                    version, env = got
                    if isinstance(env, UnknownMessageError):
                        refusal = UnsupportedVersionError(
                            f"node {self.node_id} does not speak {env.tag!r} at any version (a newer peer's request?)",
                            request=env.tag,
                        )
                        outbox.put(encode_frame(env.request_id, error_body(refusal), version))
                        continue
                    if client.peer_node is not None and isinstance(env.body, PeerMessages):
                        if (refused := self._refuse_version(env.body, version)) is not None:
                            log.warning("dropping Raft messages from node %s: %s", client.peer_node, refused)
                            continue
                        self.on_peer_messages(client.peer_node, env.body.payload)
                        continue
                    try:  # at once when free: acquire() yields a loop iteration before the dispatch
                        inflight.acquire_nowait()
                    except trio.WouldBlock:
                        await inflight.acquire()
                    pending: Awaitable[object | None]
                    if client.peer_node is None and isinstance(env.body, PEER_ONLY):
                        pending = _raise(
                            ClusterAuthorizationError(
                                f"{type(env.body).__name__} is for the cluster's nodes only, on their peer listener"
                            )
                        )
                    elif (refused := self._refuse_version(env.body, version)) is not None:
                        pending = _raise(refused)
                    else:
                        try:
                            pending = self.handler.dispatch(at_version(env.body, version), client)
                        except Exception as exc:
                            pending = _raise(exc)
                    nursery.start_soon(self._answer, env, version, pending, outbox, inflight)
                # Reader done (EOF): let in-flight requests finish, then the writer drains.
            nursery.cancel_scope.deadline = trio.current_time() + 30

    def _refuse_version(self, body: object, version: int) -> UnsupportedVersionError | None:
        """The refusal of a request this listener serves, but not at `version`; None to
        go on (a body it does not serve at all is the handler's to refuse)."""
        name = type(body).__name__
        served = self.versions.get(name)
        if served is None or served[0] <= version <= served[1]:
            return None
        return UnsupportedVersionError(
            f"{name} v{version}: node {self.node_id} speaks {name} {describe_range(served)}",
            request=name,
            theirs=served,
        )

    def _note_versions(self, peer: int, hello: Hello) -> None:
        """Log, once per peer and difference, where a peer speaks other versions than
        this node (an operator's view of a rolling upgrade)."""
        notes = tuple(version_notes(self.versions, hello.versions, f"node {self.node_id}", f"node {peer}"))
        if notes and (peer, notes) not in self._noted:
            self._noted.add((peer, notes))
            log.info("peer node %s speaks other protocol versions: %s", peer, "; ".join(notes))

    async def _admit(
        self, hello: Hello, frame_version: int, stream: trio.abc.Stream, next_envelope, addr: str
    ) -> TideMQError | tuple[str, str | None]:
        """Check a Hello (on the client listener, log a user in; on the peer listener,
        run the secret's challenge): the refusal to answer with, or the connection's
        principal and the SCRAM server-final message to send in HelloOk."""
        refusal = await self._check_hello(hello, frame_version, stream, next_envelope)
        if refusal is not None:
            return refusal
        if self.peer_auth is not None:
            return f"Node:{hello.peer_node}", None
        if hello.user is not None:
            return await self._log_in(hello, stream, next_envelope, addr)
        if (named := certificate_user(stream)) is not None:
            return f"User:{named}", None  # a client certificate the cluster's CA signed
        if self.token is not None:
            return TOKEN_USER, None  # the deprecated single user (the token was checked)
        return ANONYMOUS, None

    async def _log_in(
        self, hello: Hello, stream: trio.abc.Stream, next_envelope, addr: str
    ) -> TideMQError | tuple[str, str | None]:
        """SCRAM-SHA-256 (client/scram.py): challenge, proof, and the node's own proof."""
        if hello.user and self.users(hello.user) is None and not self.loaded():
            return CoordinatorNotAvailableError(
                f"node {self.node_id} is still loading the cluster's users; retry or ask another node"
            )
        server = ScramServer(self.users, self._scram_secret)
        try:
            await stream.send_all(encode_frame(0, ScramChallenge(server.first(hello.scram or ""))))
            answer = await next_envelope()
            if answer is None or not isinstance(answer.body, ScramProof):
                raise ScramError("no SCRAM proof came")
            server_final = server.final(answer.body.message)
        except ScramError as exc:
            log.warning("authentication failed for user %r from %s: %s", hello.user, addr, exc)
            return AuthFailedError(f"authentication failed for user {hello.user!r}: wrong user or password")
        return f"User:{server.user}", server_final

    async def _check_hello(
        self, hello: Hello, frame_version: int, stream: trio.abc.Stream, next_envelope
    ) -> TideMQError | None:
        """The protocol version, the token, and the peer secret's challenge."""
        if hello.version != PROTOCOL_VERSION or frame_version != PROTOCOL_VERSION:
            return UnsupportedVersionError(
                f"node speaks handshake (protocol) version {PROTOCOL_VERSION}, "
                f"client sent {hello.version} in a frame of version {frame_version}",
                request=tag_of(Hello),
                theirs=(PROTOCOL_VERSION, PROTOCOL_VERSION),
            )
        if self.peer_auth is None:
            if hello.peer_node is not None:
                return ClusterAuthorizationError(
                    "this is the client listener: nodes reach each other on their --peer-listen address"
                )
            if hello.user is not None:
                return None  # logs in next (`_log_in`)
            if self.token is not None and hmac.compare_digest((hello.token or "").encode(), self.token.encode()):
                return None
            if certificate_user(stream) is not None:
                return None  # mutual TLS: the certificate's name is the user
            if self.require_users:
                return AuthFailedError(
                    "this cluster admits users only: pass username= and password= "
                    "(or set TIDEMQ_USER and TIDEMQ_PASSWORD)"
                )
            if self.token is not None:
                return AuthFailedError("missing or wrong cluster token: pass token= or set TIDEMQ_TOKEN")
            return None
        if hello.peer_node is None or not hello.nonce or len(hello.nonce) > 256:
            return ClusterAuthorizationError("the peer listener serves only the cluster's nodes; clients use --listen")
        if hello.peer_node not in self.peer_ids:
            return ClusterAuthorizationError(f"node {hello.peer_node} is not a member of this cluster")
        if isinstance(stream, trio.SSLStream):
            named = node_id_of(stream.getpeercert())
            if named != hello.peer_node:
                log.warning(
                    "refused a peer connection claiming to be node %s: its certificate names node %s",
                    hello.peer_node,
                    named,
                )
                return ClusterAuthorizationError(
                    f"the certificate presented names node {named}, not node {hello.peer_node}"
                )
        challenge, expected = self.peer_auth.challenge(hello)
        await stream.send_all(encode_frame(0, challenge))
        answer = await next_envelope()
        if answer is None:  # (a link cut mid-handshake, as when a partition heals: not a wrong secret)
            log.info("a peer connection claiming to be node %s closed during the handshake", hello.peer_node)
            return AuthFailedError("the connection closed during the peer handshake")
        if not isinstance(answer.body, PeerProof) or not self.peer_auth.verify(expected, answer.body.proof):
            log.warning("refused a peer connection claiming to be node %s: wrong peer secret", hello.peer_node)
            return AuthFailedError("wrong peer secret")
        return None

    async def _answer(
        self, env, version: int, pending: Awaitable[object | None], outbox: _Outbox, inflight: trio.Semaphore
    ) -> None:
        kind = type(env.body).__name__
        start = trio.current_time()
        resp = None
        try:
            try:
                resp = await pending
            except TideMQError as exc:
                resp = error_body(exc)
            except ExceptionGroup as group:
                # A handler fanned out (markers to many partitions) and its tasks failed
                # with typed errors: answer with the first, as if it had been raised alone.
                typed = _typed_leaves(group)
                if typed is None:
                    log.exception("request %s failed", kind)
                    resp = ErrorResponse(int(ErrorCode.UNKNOWN), f"{type(group).__name__}: {group}")
                else:
                    resp = error_body(typed[0])
            except Exception as exc:  # the node must keep serving everyone else
                log.exception("request %s failed", kind)
                resp = ErrorResponse(int(ErrorCode.UNKNOWN), f"{type(exc).__name__}: {exc}")
        finally:  # (counted before the answer leaves: a client that has it finds it counted)
            inflight.release()
            if self.metrics:
                self.metrics.observe_request(
                    kind, trio.current_time() - start, "error" if isinstance(resp, ErrorResponse) else "ok"
                )
        if isinstance(resp, Spliced):  # a fetch's answer with bytes to send from the files
            outbox.put(resp.frame(env.id, version))
        elif resp is not None:
            outbox.put(encode_frame(env.id, resp, version))

    @staticmethod
    async def _writer(stream: trio.abc.Stream, outbox: _Outbox, metrics=None) -> None:
        """Write answers as they come, every frame queued meanwhile in one send. A
        spliced frame's regions go from their files with `os.sendfile` on a plain TCP
        socket (read into memory on any other stream)."""
        sock = stream.socket if isinstance(stream, trio.SocketStream) else None
        try:
            async with outbox.receive:
                async for frame in outbox.receive:
                    frames = [frame]
                    while len(frames) < 64:
                        try:
                            frames.append(outbox.receive.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):  # nothing more now / the reader finished
                            break
                    if all(type(f) is bytes for f in frames):
                        await stream.send_all(b"".join(frames))  # type: ignore[arg-type]
                    else:
                        sent = await _send_spliced(stream, sock, frames)
                        if metrics is not None and sent:
                            metrics.sendfile_bytes.inc(sent)
                    outbox.sent(sum(len(f) for f in frames))
        finally:
            outbox.discard()


async def _send_spliced(stream: trio.abc.Stream, sock: trio.socket.SocketType | None, frames: list) -> int:
    """Frames some of which are spliced: bytes gathered up to each region, the region
    from its file; every region is closed whatever happens. The bytes sent from files."""
    from_files = 0
    try:
        pending: list[bytes] = []
        for frame in frames:
            if isinstance(frame, bytes):
                pending.append(frame)
                continue
            if sock is None:
                pending.append(frame.read())
                continue
            for part in frame.parts:
                if isinstance(part, bytes):
                    pending.append(part)
                    continue
                if pending:
                    await stream.send_all(b"".join(pending))
                    pending = []
                region = part.slice
                assert region is not None
                await sendfile_all(sock, region.fd, region.position, region.length)
                from_files += region.length
                part.close()
        if pending:
            await stream.send_all(b"".join(pending))
        return from_files
    finally:
        for frame in frames:
            if isinstance(frame, SplicedFrame):
                frame.close()
