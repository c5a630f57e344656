"""Fault-injecting TCP proxies on loopback: every link of a chaos cluster runs through one.

A `LinkProxy` listens on its own 127.0.0.1 port and forwards each accepted connection to
one target address. It forwards the two directions of a connection separately, so a
fault can hold one direction and not the other:

- UP is what the dialer sends (a node's Raft messages to a peer, a client's requests),
- DOWN is what comes back (HelloOk, responses).

Faults, all reversible by `heal()`:

- `cut(UP, DOWN)`: a blackhole. Bytes are neither forwarded nor read (so the sender's
  socket buffers fill, as behind a dead route), new connections are accepted but not
  dialed onwards. Nothing is dropped: on heal the held bytes flow in order, as TCP
  would retransmit them after a partition that ended within its retry time. A stream is
  never resumed with a hole in it (that would test a garbled protocol, not a network).
- `cut(DOWN)` alone: one way. Requests arrive, answers do not.
- `set_delay(s)`: every chunk is forwarded `s` seconds after it was read; order holds.
- `drop_connections()`: reset (RST) every open connection; the link stays up, so the
  dialer reconnects at once.

`ProxyNet` builds the links of an n-node cluster: one per ordered pair of nodes (node i
dials node j through proxy (i, j), so the two directions of the Raft traffic between
two nodes are two different links) and one per node for clients (every client reaches
node j through proxy ("client", j)). With Kafka listeners, each node has a second client
link (`kafka[j]`, to its Kafka listener); the faults that touch a node's clients touch
both of its client links.

A node that joins later (`add_node`, the nemesis's membership fault) dials the others
through links of its own, (new, j); the others reach it at the one address the roster
gives for it, a shared inbound proxy standing for every (i, new).
"""

from __future__ import annotations

import enum
import socket
import struct
from collections.abc import Iterable

import trio

from client.protocol import split_addr

CHUNK = 64 * 1024
QUEUE_CHUNKS = 64  # per direction: ~4 MiB read ahead of a slow or delayed far end
CONNECT_TIMEOUT_S = 2.0


class Direction(enum.Enum):
    UP = "up"  # dialer -> target
    DOWN = "down"  # target -> dialer


UP, DOWN = Direction.UP, Direction.DOWN


def _reset(stream: trio.SocketStream) -> None:
    """Make the coming close send RST instead of FIN (SO_LINGER 0)."""
    try:
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass


class _Connection:
    __slots__ = ("scope", "streams", "reset")

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.streams: list[trio.SocketStream] = []
        self.reset = False


class LinkProxy:
    """One directed link: listen on loopback, forward to `target`, inject faults."""

    def __init__(self, name: str, target: str) -> None:
        self.name = name
        self.target = target
        self.addr: str | None = None  # HOST:PORT, once `serve` has started
        self.delay = 0.0
        self._open = {UP: True, DOWN: True}
        self._changed = trio.Event()
        self._connections: set[_Connection] = set()
        self.accepted = 0
        self.resets = 0
        self.forwarded = {UP: 0, DOWN: 0}

    def __repr__(self) -> str:
        return f"LinkProxy({self.name} {self.addr} -> {self.target})"

    # -- control (synchronous: called from the runner's task) --------------------------

    @property
    def is_cut(self) -> bool:
        return not (self._open[UP] and self._open[DOWN])

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def cut(self, *directions: Direction) -> None:
        """Hold the given directions (both if none are named) until `heal()`."""
        for d in directions or (UP, DOWN):
            self._open[d] = False
        self._notify()

    def set_delay(self, seconds: float) -> None:
        self.delay = max(0.0, seconds)
        self._notify()

    def heal(self) -> None:
        self._open = {UP: True, DOWN: True}
        self.delay = 0.0
        self._notify()

    def drop_connections(self) -> int:
        """Reset every open connection; returns how many there were."""
        n = 0
        for conn in list(self._connections):
            conn.reset = True
            conn.scope.cancel()
            n += 1
        self.resets += n
        return n

    @property
    def connections(self) -> int:
        return len(self._connections)

    # -- serving --------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        host, port = listeners[0].socket.getsockname()[:2]
        self.addr = f"{host}:{port}"
        async with trio.open_nursery() as nursery:
            task_status.started(self.addr)
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def _wait_open(self, d: Direction) -> None:
        while not self._open[d]:
            await self._changed.wait()

    async def _handle(self, downstream: trio.SocketStream) -> None:
        conn = _Connection()
        conn.streams.append(downstream)
        self._connections.add(conn)
        self.accepted += 1
        try:
            with conn.scope:
                # A connection made while the link is cut waits here, like a SYN that is
                # retransmitted until the route comes back (or the dialer gives up).
                await self._wait_open(UP)
                host, port = split_addr(self.target)
                try:
                    with trio.fail_after(CONNECT_TIMEOUT_S):
                        upstream = await trio.open_tcp_stream(host, port)
                except (OSError, trio.TooSlowError):
                    conn.reset = True  # target down: the dialer sees a refused/reset connection
                    return
                conn.streams.append(upstream)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._direction, downstream, upstream, UP, conn)
                    nursery.start_soon(self._direction, upstream, downstream, DOWN, conn)
        finally:
            self._connections.discard(conn)
            for s in conn.streams:
                if conn.reset:
                    _reset(s)
                with trio.CancelScope(shield=True):
                    await s.aclose()

    async def _direction(self, src: trio.SocketStream, dst: trio.SocketStream, d: Direction, conn: _Connection) -> None:
        """Forward one direction of one connection: a reader and a writer joined by a
        bounded queue of (due time, chunk); b"" marks the end of the stream."""
        send, receive = trio.open_memory_channel[tuple[float, bytes]](QUEUE_CHUNKS)

        async def reader() -> None:
            async with send:
                while True:
                    await self._wait_open(d)
                    data = await src.receive_some(CHUNK)
                    await send.send((trio.current_time() + self.delay, data))
                    if not data:
                        return

        async def writer() -> None:
            async with receive:
                async for due, data in receive:
                    await trio.sleep_until(due)
                    await self._wait_open(d)
                    if not data:
                        try:
                            await dst.send_eof()
                        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                            pass
                        return
                    await dst.send_all(data)
                    self.forwarded[d] += len(data)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                nursery.start_soon(writer)
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            # One end went away abruptly: pass the reset on to the other end.
            conn.reset = True
            conn.scope.cancel()


class ProxyNet:
    """Every link of an n-node cluster through its own proxy (see the module docstring)."""

    def __init__(
        self, real: dict[int, str], real_peer: dict[int, str] | None = None, real_kafka: dict[int, str] | None = None
    ) -> None:
        """`real`: the nodes' client listeners; `real_peer`: their peer listeners;
        `real_kafka`: their Kafka listeners, if they have them."""
        self.real = dict(real)
        self.real_peer = dict(real_peer or real)
        self.nodes = sorted(real)
        self.peer: dict[tuple[int, int], LinkProxy] = {
            (i, j): LinkProxy(f"n{i}->n{j}", self.real_peer[j]) for i in self.nodes for j in self.nodes if i != j
        }
        self.client: dict[int, LinkProxy] = {j: LinkProxy(f"clients->n{j}", real[j]) for j in self.nodes}
        self.kafka: dict[int, LinkProxy] = {
            j: LinkProxy(f"kafka-clients->n{j}", addr) for j, addr in sorted((real_kafka or {}).items())
        }
        self.inbound: dict[int, LinkProxy] = {}  # a joined node: what every other node dials it through
        self._nursery: trio.Nursery | None = None

    @property
    def links(self) -> list[LinkProxy]:
        every = list(self.peer.values()) + list(self.client.values()) + list(self.kafka.values())
        return list({id(link): link for link in every}.values())  # (a shared inbound proxy once)

    def client_links(self, node: int) -> list[LinkProxy]:
        """Every link clients reach `node` by: its native one, and its Kafka one if any."""
        return [self.client[node]] + ([self.kafka[node]] if node in self.kafka else [])

    async def start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        for link in self.links:
            await nursery.start(link.serve)

    async def add_node(self, node: int, real: str, real_peer: str, real_kafka: str | None = None) -> str:
        """Links for a node joining the cluster; returns the address the others reach it at."""
        assert self._nursery is not None, "start the proxies first"
        self.real[node], self.real_peer[node] = real, real_peer
        new = [LinkProxy(f"peers->n{node}", real_peer), LinkProxy(f"clients->n{node}", real)]
        self.inbound[node], self.client[node] = new
        for j in self.nodes:
            self.peer[(j, node)] = self.inbound[node]
            self.peer[(node, j)] = LinkProxy(f"n{node}->n{j}", self.real_peer[j])
            new.append(self.peer[(node, j)])
        if real_kafka is not None:
            self.kafka[node] = LinkProxy(f"kafka-clients->n{node}", real_kafka)
            new.append(self.kafka[node])
        self.nodes.append(node)
        for link in new:
            await self._nursery.start(link.serve)
        assert self.inbound[node].addr is not None
        return self.inbound[node].addr

    def peers_for(self, node: int, among: Iterable[int] | None = None) -> dict[int, str]:
        """The --peers map of `node`: itself at its real peer listener, every other node
        (of `among`, default all) at the proxy of the link node -> other."""
        out = {}
        for j in sorted({*(self.nodes if among is None else among), node}):
            addr = self.real_peer[j] if j == node else self.peer[(node, j)].addr
            assert addr is not None, "start the proxies first"
            out[j] = addr
        return out

    def advertised(self, among: Iterable[int] | None = None) -> dict[int, str]:
        """The --advertise map every node gets: clients reach node j through proxy ("client", j)."""
        out = {}
        for j, link in self.client.items():
            if among is not None and j not in among:
                continue
            assert link.addr is not None, "start the proxies first"
            out[j] = link.addr
        return out

    @property
    def bootstrap(self) -> str:
        return ",".join(self.advertised().values())

    def kafka_advertised(self) -> dict[int, str]:
        """Each node's `--kafka-advertise`: Kafka clients reach node j through proxy `kafka[j]`
        (they dial what Metadata names, so the node must name its proxy)."""
        out = {}
        for j, link in self.kafka.items():
            assert link.addr is not None, "start the proxies first"
            out[j] = link.addr
        return out

    @property
    def kafka_bootstrap(self) -> str:
        """The Kafka clients' bootstrap list ("" without Kafka listeners)."""
        return ",".join(self.kafka_advertised().values())

    def touching(self, node: int, clients: bool = True) -> list[LinkProxy]:
        """Every link into or out of `node` (with its client links if `clients`)."""
        out = [link for (i, j), link in self.peer.items() if node in (i, j)]
        return out + (self.client_links(node) if clients else [])

    @staticmethod
    def cut(links: Iterable[LinkProxy], *directions: Direction) -> None:
        for link in links:
            link.cut(*directions)

    def heal(self) -> None:
        for link in self.links:
            link.heal()

    @property
    def faulty(self) -> list[str]:
        return [link.name for link in self.links if link.is_cut or link.delay]
