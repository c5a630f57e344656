"""The Kafka listener (`--kafka-listen`): accept, frame, dispatch, answer in order.

Kafka answers a connection's requests in the order they came. The reader decodes and
dispatches each request at once (a produce proposes its batches then, so pipelined
batches keep their order) and queues what it will answer; the writer awaits the answers
in that order and sends them. At most `MAX_INFLIGHT` requests wait per connection: the
reader stops reading past that (backpressure, as Kafka mutes a busy channel).

A frame that breaks the protocol (a size out of bounds, bytes that do not decode as
the request they claim) closes that connection only. A request for an API or version
this node does not serve is answered UNSUPPORTED_VERSION where Kafka's schema for it
is known (an ApiVersions of a newer version gets our ranges at v0, as Kafka answers it).
"""

from __future__ import annotations

import logging
import ssl
import struct
from collections.abc import Awaitable, Coroutine
from typing import Any

import trio
from kio.index import UnknownAPIKey, UnknownEntity

from client.errors import TideMQError
from client.quotas import REQUEST_RATE
from node.kafka_api import KafkaApi
from node.kafka_sasl import SASL_AUTHENTICATE, SASL_HANDSHAKE, SaslSession
from node.kafka_wire import (
    API_VERSIONS,
    SUPPORTED,
    KafkaError,
    KafkaFrameError,
    api_versions_fallback,
    build,
    decode_request,
    encode_response,
    peek_header,
    response_class,
)
from node.server import contained, remote_addr, secured

log = logging.getLogger(__name__)

MAX_INFLIGHT = 64  # requests read and not yet answered, per connection
READ_CHUNK = 256 * 1024
GROUP_TICK_S = 0.1
_SIZE = struct.Struct(">i")


class KafkaServer:
    def __init__(
        self,
        api: KafkaApi,
        *,
        max_frame_bytes: int,
        max_connections: int = 1000,
        metrics=None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """With `ssl_context`, TLS only (Kafka's SSL security protocol)."""
        self.api = api
        self.ssl_context = ssl_context
        self.max_frame_bytes = max_frame_bytes
        self.max_connections = max_connections
        self.metrics = metrics
        self.connections = 0

    async def serve(self, host: str, port: int, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with self.api.node.internal_client("kafka") as cluster, trio.open_nursery() as nursery:
            self.api.cluster = cluster
            nursery.start_soon(self._group_janitor)
            listeners = await trio.open_tcp_listeners(port, host=host)
            task_status.started(listeners)
            await trio.serve_listeners(self._serve_connection, listeners)

    async def _group_janitor(self) -> None:
        """Members silent past their session, joins that are due (node.kafka_groups)."""
        while True:
            await trio.sleep(GROUP_TICK_S)
            self.api.groups.expire()

    async def _serve_connection(self, raw: trio.SocketStream) -> None:
        addr = remote_addr(raw)
        self.connections += 1
        try:
            async with contained(raw, addr, KafkaFrameError, self.metrics, "Kafka connection"):
                stream = await secured(raw, self.ssl_context, addr, "Kafka connection", self.metrics)
                if stream is None:
                    return
                if self.connections <= self.max_connections:
                    await self._run(stream, addr)
                else:
                    log.warning("refusing a Kafka connection from %s: %d open", addr, self.max_connections)
        finally:
            self.connections -= 1

    async def _run(self, stream: trio.abc.Stream, addr: str) -> None:
        node = self.api.node
        sasl = SaslSession(lambda name: node.state.users.get(name), node.cfg.require_users, addr)
        send, receive = trio.open_memory_channel[tuple[int, Coroutine[Any, Any, bytes]]](MAX_INFLIGHT)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer, stream, receive)
            async with send:
                buf = bytearray()
                while not sasl.failed:  # (a failed login is answered, then the connection goes)
                    if node.state.quotas and (wait := node.quotas.throttle_s(sasl.caller().principal)) > 0:
                        if self.metrics:
                            self.metrics.throttle_seconds.inc(wait)
                        await trio.sleep(wait)  # over a quota: slowed, never refused (node/quotas.py)
                    frame = await self._next_frame(stream, buf)
                    if frame is None:
                        return
                    await send.send(self._dispatch(frame, sasl))
            if sasl.failed and self.metrics:
                self.metrics.auth_failures.inc()

    async def _next_frame(self, stream: trio.abc.Stream, buf: bytearray) -> bytes | None:
        while True:
            if len(buf) >= 4:
                (size,) = _SIZE.unpack_from(buf)
                if not 0 < size <= self.max_frame_bytes:
                    raise KafkaFrameError(f"request size {size} outside 1..{self.max_frame_bytes}")
                if len(buf) >= 4 + size:
                    frame = bytes(buf[4 : 4 + size])
                    del buf[: 4 + size]
                    return frame
            data = await stream.receive_some(READ_CHUNK)
            if not data:
                if buf:
                    raise KafkaFrameError("the connection closed inside a request")
                return None
            buf += data

    def _dispatch(self, frame: bytes, sasl: SaslSession) -> tuple[int, Coroutine[Any, Any, bytes]]:
        """(correlation id, the answer's frame to await: b"" where nothing is answered)."""
        key, version, correlation = peek_header(frame)
        if not sasl.admits(key):
            raise KafkaFrameError(f"API {key} before logging in: this node admits users only (SASL)")
        lo_hi = SUPPORTED.get(key)
        if lo_hi is None or not lo_hi[0] <= version <= lo_hi[1]:
            if key == API_VERSIONS:
                return correlation, _ready(api_versions_fallback(correlation))
            return correlation, _ready(_unsupported(key, version, correlation))
        req = decode_request(frame)._replace(caller=sasl.caller())
        if self.api.node.state.quotas:
            self.api.node.quotas.charge(req.caller.principal, REQUEST_RATE, 1)
        if key == SASL_HANDSHAKE:
            return correlation, _encoded(_ready(sasl.handshake(req)), correlation)
        if key == SASL_AUTHENTICATE:
            return correlation, _encoded(_ready(sasl.authenticate(req)), correlation)
        try:
            body = self.api.dispatch(req)
        except TideMQError as exc:
            # A whole request refused (too many partitions, the node shutting down): the
            # connection goes, as Kafka closes on a request it cannot take.
            raise KafkaFrameError(f"API {key} v{version} refused: {exc.message}") from None
        return correlation, _encoded(body, correlation)

    async def _writer(self, stream: trio.abc.Stream, receive: trio.MemoryReceiveChannel) -> None:
        async with receive:
            try:
                async for _correlation, answer in receive:
                    frame = await answer
                    if frame:
                        await stream.send_all(frame)
            finally:
                # The connection is gone: what was never awaited is closed, not left to
                # warn (a produce's proposals stand; nobody is there to be answered).
                while True:
                    try:
                        receive.receive_nowait()[1].close()
                    except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                        break


async def _ready(frame: bytes) -> bytes:
    return frame


async def _encoded(body: Awaitable[Any], correlation: int) -> bytes:
    answer = await body
    return b"" if answer is None else encode_response(answer, correlation)


def _unsupported(key: int, version: int, correlation: int) -> bytes:
    """UNSUPPORTED_VERSION in the response Kafka's schema defines for that request (its
    top-level error code where it has one); a key no schema knows cannot be answered."""
    try:
        cls = response_class(key, version)
    except (UnknownAPIKey, UnknownEntity):
        raise KafkaFrameError(f"API key {key} v{version} is not a Kafka request this node knows") from None
    return encode_response(build(cls, {"error_code": KafkaError.unsupported_version}), correlation)
