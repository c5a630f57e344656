"""Outgoing links to the other nodes: one connection per peer, to its peer listener,
carries the Raft messages of every group, batched. Each link first runs the peer
secret's challenge-response (node.peerauth) both ways.

A drain larger than a frame goes in several; a single message larger than a frame (a big
snapshot) goes in pieces the receiver's `Reassembler` puts back together.

Raft tolerates lost messages, so a link never blocks its caller: `send()` appends to the
peer's outbox and returns. The link task drains the whole outbox into one frame per
write (so a tick's heartbeats for a thousand groups travel as one frame), reconnects
with capped exponential backoff, and drops the outbox while the peer is unreachable
rather than growing without bound: Raft will resend what matters.

The handshake negotiates versions as a client's does (client.connection): the link's
Hello offers this node's ranges, the peer's HelloOk answers its own, and `PeerMessages`
goes at the highest version both speak (`PeerLink.versions`). Where the two nodes differ
(a rolling upgrade), the link says so in the log when it comes up.
"""

from __future__ import annotations

import logging
import ssl
import struct
from collections.abc import Callable

import trio

from client.errors import AuthFailedError, RemoteProtocolError, TideMQError, UnsupportedVersionError, error_for
from client.protocol import (
    ErrorResponse,
    FrameDecoder,
    HelloOk,
    PeerChallenge,
    PeerProof,
    agree,
    decode_payload,
    describe_range,
    encode_frame,
    tag_of,
    version_notes,
)
from node.config import parse_addr
from node.eager import EagerWriter
from node.peerauth import PeerCredential
from node.peerprotocol import PeerMessages
from node.tls import connect as tls_connect
from node.tls import node_id_of

log = logging.getLogger(__name__)

MAX_OUTBOX = 100_000
CONNECT_TIMEOUT_S = 2.0
HANDSHAKE_MAX_FRAME_BYTES = 64 * 1024
DEFAULT_MAX_PAYLOAD = 8 * 1024 * 1024  # half the default frame limit: room for the envelope
MAX_MESSAGE_BYTES = 512 * 1024 * 1024  # one message sent in pieces (a snapshot) at most


class PeerLink:
    def __init__(
        self,
        node_id: int,
        peer_id: int,
        addr: str,
        credential: PeerCredential,
        encode: Callable[[list], bytes],
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.node_id = node_id
        self.max_payload = max_payload
        self.peer_id = peer_id
        self.addr = addr
        self.credential = credential
        self.encode = encode
        self.ssl_context = ssl_context  # mutual TLS (node/tls.py)
        self.outbox: list = []
        self.wakeup = trio.Event()
        self.connected = False
        self.dropped = 0
        self.frames_sent = 0  #: (the broker's node-level heartbeat rides on any frame)
        self._fragments = 0
        self.versions: dict[str, int] = {}  # what the link agreed with the peer, per request
        # While connected over plain TCP and the link task waits for work, a message
        # goes out from the sender's task at once when nothing else is runnable
        # (node/eager.py).
        self._eager: EagerWriter | None = None
        self._rest: bytes | memoryview = b""  # what an eager write left, to go first
        self._version = 0

    def send(self, item: object) -> None:
        if (
            self._eager is not None
            and not self.outbox
            and self.wakeup.statistics().tasks_waiting  # the link task is parked, not mid-send
            and self._eager.ready()
        ):
            payload = self.encode([item])
            if len(payload) <= self.max_payload:
                rest = self._eager.write(encode_frame(0, PeerMessages(payload), self._version))
                if rest is not None:
                    self.frames_sent += 1
                    if rest:  # the link task sends it before anything else
                        self._rest = rest
                        self.wakeup.set()
                    return
        if len(self.outbox) >= MAX_OUTBOX:
            self.dropped += len(self.outbox)
            self.outbox.clear()
        self.outbox.append(item)
        self.wakeup.set()

    def _payloads(self, items: list) -> list[bytes]:
        """The outbox encoded in as few frames as fit the peer's frame limit: a follower
        far behind gets its catch-up in pieces instead of one frame it must refuse (and
        the link dropped and redialed, again and again). Halving re-encodes, but only
        when a drain is that large."""
        if not items:
            return []
        payload = self.encode(items)
        if len(payload) <= self.max_payload:
            return [payload]
        if len(items) == 1:  # one message larger than a frame (a big snapshot): in pieces
            if len(payload) > MAX_MESSAGE_BYTES:
                log.warning(
                    "link %s -> %s: a message of %d bytes exceeds %d; dropped (Raft resends)",
                    self.node_id,
                    self.peer_id,
                    len(payload),
                    MAX_MESSAGE_BYTES,
                )
                return []
            self._fragments += 1
            return fragments(self._fragments, payload, self.max_payload)
        half = len(items) // 2
        return self._payloads(items[:half]) + self._payloads(items[half:])

    async def _connect(self, host: str, port: int) -> trio.abc.Stream:
        """A stream to the peer's listener: TLS where configured, and then only to a
        listener whose certificate names the node this link is for."""
        stream = await trio.open_tcp_stream(host, port)
        if self.ssl_context is None:
            return stream
        try:
            tls = await tls_connect(stream, self.ssl_context, host)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        named = node_id_of(tls.getpeercert())
        if named != self.peer_id:
            await trio.aclose_forcefully(tls)
            raise AuthFailedError(f"{self.addr} presents a certificate of node {named}, not node {self.peer_id}")
        return tls

    async def _handshake(self, stream: trio.abc.Stream) -> int:
        """Prove ourselves to the peer's listener and check it holds the secret too; the
        version `PeerMessages` goes at on this link."""
        decoder = FrameDecoder(HANDSHAKE_MAX_FRAME_BYTES)

        async def answer() -> object:
            while (frame := decoder.next_frame()) is None:
                data = await stream.receive_some(HANDSHAKE_MAX_FRAME_BYTES)
                if not data:
                    raise trio.BrokenResourceError("closed during the handshake")
                decoder.feed(bytes(data))
            return decode_payload(frame[1]).body

        hello = self.credential.hello(f"node-{self.node_id}")
        await stream.send_all(encode_frame(0, hello))
        challenge = await answer()
        if isinstance(challenge, ErrorResponse):
            raise error_for(challenge.code, challenge.message)
        if not isinstance(challenge, PeerChallenge) or challenge.node_id != self.peer_id:
            raise AuthFailedError(f"{self.addr} is not node {self.peer_id}'s peer listener")
        await stream.send_all(encode_frame(0, PeerProof(self.credential.prove(hello, challenge))))
        ok = await answer()
        if isinstance(ok, ErrorResponse):
            raise error_for(ok.code, ok.message)
        if not isinstance(ok, HelloOk):
            raise RemoteProtocolError(f"node {self.peer_id} answered the handshake with {type(ok).__name__}")
        self.versions = agree(hello.versions, ok.versions)
        notes = version_notes(hello.versions, ok.versions, f"node {self.node_id}", f"node {self.peer_id}")
        log.info(
            "link %s -> %s up; %s",
            self.node_id,
            self.peer_id,
            "protocol versions differ: " + "; ".join(notes) if notes else "same protocol versions",
        )
        name = tag_of(PeerMessages)
        if name not in self.versions:
            raise UnsupportedVersionError(
                f"no version of {name} both nodes speak (node {self.node_id} "
                f"{describe_range(hello.versions.get(name))}, node {self.peer_id} "
                f"{describe_range(ok.versions.get(name))})"
            )
        return self.versions[name]

    async def run(self) -> None:
        backoff = 0.05
        host, port = parse_addr(self.addr)
        while True:
            try:
                with trio.fail_after(CONNECT_TIMEOUT_S):
                    stream = await self._connect(host, port)
            except TideMQError as exc:
                log.warning("link %s -> %s refused: %s", self.node_id, self.peer_id, exc)
                self.outbox.clear()
                await trio.sleep(1.0)
                continue
            except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
                if isinstance(exc, trio.BrokenResourceError):  # a TLS handshake the peer refused
                    log.warning("link %s -> %s: TLS handshake failed: %s", self.node_id, self.peer_id, exc.__cause__)
                self.outbox.clear()
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            try:
                async with stream:
                    with trio.fail_after(CONNECT_TIMEOUT_S):
                        version = await self._handshake(stream)
                    self.connected = True
                    backoff = 0.05
                    self._eager, self._version = EagerWriter(stream), version
                    while True:
                        await self.wakeup.wait()
                        self.wakeup = trio.Event()
                        if self._rest:
                            rest, self._rest = self._rest, b""
                            await stream.send_all(rest)
                        items, self.outbox = self.outbox, []
                        for payload in self._payloads(items):
                            await stream.send_all(encode_frame(0, PeerMessages(payload), version))
                            self.frames_sent += 1
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError) as exc:
                log.info("link %s -> %s lost: %s", self.node_id, self.peer_id, exc)
            except TideMQError as exc:  # refused: wrong secret, not a member, not a peer listener
                log.warning("link %s -> %s refused: %s", self.node_id, self.peer_id, exc)
                self.outbox.clear()
            finally:
                self.connected = False
                self._eager, self._rest = None, b""
            await trio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)


_FRAGMENT = struct.Struct(">4sQII")  # magic, message number, piece index, piece count
_MAGIC = b"TFRG"


def fragments(number: int, payload: bytes, max_payload: int) -> list[bytes]:
    """One encoded peer batch cut into pieces that each fit a frame."""
    size = max(1, max_payload - _FRAGMENT.size)
    count = -(-len(payload) // size)
    return [_FRAGMENT.pack(_MAGIC, number, i, count) + payload[i * size : (i + 1) * size] for i in range(count)]


class Reassembler:
    """The receiving side of `fragments`: one message in pieces per peer at a time, at
    most MAX_MESSAGE_BYTES; a piece out of turn drops what was gathered (Raft resends
    what it still needs), so a peer can never make this node hold more than that."""

    def __init__(self) -> None:
        self._partial: dict[int, tuple[int, int, list[bytes], int]] = {}  # peer -> (number, count, pieces, size)

    def feed(self, frm: int, payload: bytes) -> bytes | None:
        """The whole payload once complete; None while gathering or for a bad piece.
        Payloads that are not pieces come back as they are."""
        if not payload.startswith(_MAGIC) or len(payload) < _FRAGMENT.size:
            return payload
        _, number, index, count = _FRAGMENT.unpack_from(payload)
        piece = payload[_FRAGMENT.size :]
        cur = self._partial.get(frm)
        if index == 0:
            cur = (number, count, [], 0)
        if cur is None or cur[0] != number or cur[1] != count or len(cur[2]) != index:
            self._partial.pop(frm, None)
            log.warning("dropping a message in pieces from node %s: piece %d of %d out of turn", frm, index, count)
            return None
        pieces, size = cur[2], cur[3] + len(piece)
        if size > MAX_MESSAGE_BYTES:
            self._partial.pop(frm, None)
            log.warning("dropping a message in pieces from node %s: over %d bytes", frm, MAX_MESSAGE_BYTES)
            return None
        pieces.append(piece)
        if len(pieces) < count:
            self._partial[frm] = (number, count, pieces, size)
            return None
        self._partial.pop(frm, None)
        return b"".join(pieces)


class PeerTransport:
    """One link per peer; the roster (node/roster.py) adds and drops peers while it runs."""

    def __init__(
        self,
        node_id: int,
        peers: dict[int, str],
        credential: PeerCredential,
        encode: Callable[[list], bytes],
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.node_id = node_id
        self._link = lambda pid, addr: PeerLink(node_id, pid, addr, credential, encode, max_payload, ssl_context)
        self.links = {pid: self._link(pid, addr) for pid, addr in peers.items() if pid != node_id}
        self._scopes: dict[int, trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None

    def send(self, to: int, item: object) -> None:
        link = self.links.get(to)
        if link is not None:
            link.send(item)

    def add(self, pid: int, addr: str) -> None:
        """Link to a new peer, or to a known one at its new address."""
        link = self.links.get(pid)
        if pid == self.node_id or (link is not None and link.addr == addr):
            return
        self.drop(pid)
        self.links[pid] = self._link(pid, addr)
        if self._nursery is not None:
            self._nursery.start_soon(self._run_link, self.links[pid])

    def drop(self, pid: int) -> None:
        """Stop talking to a peer that left the cluster."""
        self.links.pop(pid, None)
        scope = self._scopes.pop(pid, None)
        if scope is not None:
            scope.cancel()

    async def _run_link(self, link: PeerLink) -> None:
        with trio.CancelScope() as scope:
            self._scopes[link.peer_id] = scope
            await link.run()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for link in self.links.values():
                nursery.start_soon(self._run_link, link)
