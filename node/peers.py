"""Outgoing links to the other nodes: one connection per peer carries the Raft messages
of every group, batched.

Raft tolerates lost messages, so a link never blocks its caller: `send()` appends to the
peer's outbox and returns. The link task drains the whole outbox into one frame per
write (so a tick's heartbeats for a thousand groups travel as one frame), reconnects
with capped exponential backoff, and drops the outbox while the peer is unreachable
rather than growing without bound: Raft will resend what matters.
"""

from __future__ import annotations

import logging
from typing import Callable

import trio

from client.protocol import Hello, PeerMessages, PROTOCOL_VERSION, encode_frame
from node.config import parse_addr

log = logging.getLogger(__name__)

MAX_OUTBOX = 100_000
CONNECT_TIMEOUT_S = 2.0


class PeerLink:
    def __init__(self, node_id: int, peer_id: int, addr: str, token: str | None,
                 encode: Callable[[list], bytes]) -> None:
        self.node_id = node_id
        self.peer_id = peer_id
        self.addr = addr
        self.token = token
        self.encode = encode
        self.outbox: list = []
        self.wakeup = trio.Event()
        self.connected = False
        self.dropped = 0

    def send(self, item: object) -> None:
        if len(self.outbox) >= MAX_OUTBOX:
            self.dropped += len(self.outbox)
            self.outbox.clear()
        self.outbox.append(item)
        self.wakeup.set()

    async def run(self) -> None:
        backoff = 0.05
        host, port = parse_addr(self.addr)
        while True:
            try:
                with trio.fail_after(CONNECT_TIMEOUT_S):
                    stream = await trio.open_tcp_stream(host, port)
            except (OSError, trio.TooSlowError):
                self.outbox.clear()
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            try:
                async with stream:
                    await stream.send_all(encode_frame(0, Hello(PROTOCOL_VERSION, f"node-{self.node_id}",
                                                                self.token, peer_node=self.node_id)))
                    # The server answers Hello; a refusal closes the stream, which the
                    # next send notices. The answer itself needs no reading for peers.
                    self.connected = True
                    backoff = 0.05
                    while True:
                        await self.wakeup.wait()
                        self.wakeup = trio.Event()
                        items, self.outbox = self.outbox, []
                        if items:
                            await stream.send_all(encode_frame(0, PeerMessages(self.encode(items))))
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                log.info("link %s -> %s lost: %s", self.node_id, self.peer_id, exc)
            finally:
                self.connected = False
            await trio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)


class PeerTransport:
    def __init__(self, node_id: int, peers: dict[int, str], token: str | None,
                 encode: Callable[[list], bytes]) -> None:
        self.links = {pid: PeerLink(node_id, pid, addr, token, encode)
                      for pid, addr in peers.items() if pid != node_id}

    def send(self, to: int, item: object) -> None:
        link = self.links.get(to)
        if link is not None:
            link.send(item)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            for link in self.links.values():
                nursery.start_soon(link.run)
