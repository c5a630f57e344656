"""What every client class shares: bootstrap, metadata, one connection per node, and
following leaders.

`ClusterClient` keeps one multiplexed connection per node, each owned by a task of the
client's task group (so connections open lazily from any task and close with the
client). Requests to a partition leader, the controller or a group coordinator retry
invisibly on NOT_LEADER, NOT_CONTROLLER, NOT_COORDINATOR and lost connections, following
the leader hint or refreshing metadata, until the caller's deadline (a cancel scope).
"""

from __future__ import annotations

import os
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

from client.connection import Connection, PeerAuth, open_connection
from client.errors import (
    ConnectionClosedError,
    CoordinatorNotAvailableError,
    NotControllerError,
    NotCoordinatorError,
    NotLeaderError,
    RequestTimeoutError,
    ShuttingDownError,
    StorageError,
    TideMQError,
    UnknownTopicError,
)
from client.protocol import (
    CoordinatorResponse,
    FindCoordinator,
    FindTransactionCoordinator,
    Metadata,
    MetadataResponse,
    R,
    Request,
    TopicInfo,
)
from client.tls import tls_context

T = TypeVar("T")
RETRY_BACKOFF_S = (0.02, 0.5)  # first and largest backoff between retries
METADATA_WAIT_S = 1.0  # how long a topic may take to reach every node


def bootstrap_list(bootstrap: str | list[str] | None) -> list[str]:
    if bootstrap is None:
        bootstrap = os.environ.get("TIDEMQ_BOOTSTRAP", "127.0.0.1:9401")
    addrs = bootstrap.split(",") if isinstance(bootstrap, str) else list(bootstrap)
    addrs = [a.strip() for a in addrs if a.strip()]
    if not addrs:
        raise ValueError("bootstrap names no node; pass 'HOST:PORT[,HOST:PORT...]'")
    return addrs


class _NodeLink:
    """The task that owns one node's connection; requests borrow it."""

    def __init__(self, addr: str) -> None:
        self.addr = addr
        self.conn: Connection | None = None
        self.ready = anyio.Event()
        self.error: BaseException | None = None
        self.done = anyio.Event()
        self.close = anyio.Event()


_RETRIED = (
    NotLeaderError,
    NotControllerError,
    NotCoordinatorError,
    CoordinatorNotAvailableError,
    ConnectionClosedError,
    ShuttingDownError,
    RequestTimeoutError,
    StorageError,
    TimeoutError,
)


def retried(exc: BaseException) -> bool:
    """Whether a request that failed with `exc` is tried again (after a backoff, or
    elsewhere): the node could not serve it now (not the leader, closing, cut off, out
    of time), not that the request is wrong."""
    if isinstance(exc, TideMQError) and not exc.retriable:
        return False
    return isinstance(exc, _RETRIED)


class ClusterClient:
    def __init__(
        self,
        bootstrap: str | list[str] | None = None,
        *,
        token: str | None = None,
        client_id: str = "tidemq",
        request_timeout: float = 30.0,
        connect_timeout: float = 5.0,
        peer: PeerAuth | None = None,
        node_addrs: dict[int, str] | None = None,
        tls: bool | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        """`peer` and `node_addrs` are for a node's own services: it connects as a peer,
        and reaches node N at `node_addrs[N]` (its peer listener) whatever address
        metadata and hints name for clients (a live mapping: a node's roster grows). TLS: `tls`, `tls_ca`, `tls_cert`, `tls_key`
        as client/tls.py says, or a ready `ssl_context`. `username` and `password` (by
        default $TIDEMQ_USER and $TIDEMQ_PASSWORD): log in as a user (SCRAM-SHA-256)."""
        self.bootstrap = bootstrap_list(bootstrap)
        # A node's own client takes the node's TLS settings only, never a client's environment.
        self.ssl_context = (
            ssl_context if ssl_context is not None or peer is not None else tls_context(tls, tls_ca, tls_cert, tls_key)
        )
        self.peer = peer
        self.node_addrs = node_addrs if node_addrs is not None else {}
        self.token = token if token is not None else (os.environ.get("TIDEMQ_TOKEN") or None)
        self.username = None if peer is not None else (username or os.environ.get("TIDEMQ_USER") or None)
        self.password = password if password is not None else os.environ.get("TIDEMQ_PASSWORD")
        self.client_id = client_id
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.nodes: dict[int, str] = {}
        self._turn = -1  # where `_candidates` starts next
        self.topics: dict[str, TopicInfo] = {}
        self.controller: int | None = None
        self.metadata_version = 0
        self.last_metadata: MetadataResponse | None = None
        self._links: dict[str, _NodeLink] = {}
        self._coordinators: dict[str, str] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._metadata_lock = anyio.Lock()

    async def __aenter__(self) -> ClusterClient:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        assert self._tg is not None
        for link in self._links.values():
            link.close.set()
        self._tg.cancel_scope.cancel()
        # Not handed the body's exception: it propagates as is, not in an ExceptionGroup.
        await self._tg.__aexit__(None, None, None)
        return None

    # -- connections ----------------------------------------------------------------------

    async def _own(self, link: _NodeLink) -> None:
        try:
            async with open_connection(
                link.addr,
                token=self.token,
                client_id=self.client_id,
                connect_timeout=self.connect_timeout,
                watchdog=True,
                peer=self.peer,
                ssl_context=self.ssl_context,
                user=self.username,
                password=self.password,
            ) as conn:
                link.conn = conn
                link.ready.set()
                await link.close.wait()
        except BaseException as exc:  # recorded for whoever waits; the link is dropped
            link.error = exc
            if not isinstance(exc, Exception):
                raise
        finally:
            link.ready.set()
            link.done.set()
            if self._links.get(link.addr) is link:
                del self._links[link.addr]

    async def connection(self, addr: str) -> Connection:
        link = self._links.get(link_key := addr)
        if link is None or (link.conn is not None and link.conn.closed):
            if link is not None:
                link.close.set()
            link = self._links[link_key] = _NodeLink(addr)
            assert self._tg is not None, "use the client inside `async with`"
            self._tg.start_soon(self._own, link)
        if not link.ready.is_set():  # (a set event's wait() still yields a loop iteration)
            await link.ready.wait()
        if link.conn is None or link.conn.closed:
            err = link.error
            if isinstance(err, TideMQError):
                raise err
            raise ConnectionClosedError(f"cannot reach node at {addr}: {err}")
        return link.conn

    async def request(self, addr: str, body: Request[R], sent: anyio.Event | None = None) -> R:
        """One request to one node, bounded by `request_timeout` (plus the long-poll
        wait of a fetch).

        A request left unanswered that long drops its connection, even if its caller
        gave up sooner (see client.connection): a node that went silent (SIGSTOP, a
        blackholed route) fails every other request on it at once with a retriable
        ConnectionClosedError, and the next request dials afresh.
        """
        patience = self.request_timeout + max(getattr(body, "max_wait_ms", 0) or 0, 0) / 1000
        conn = self._ready(addr)
        if conn is not None:
            # Connected: the connection's watchdog bounds the wait (a cancel scope of our
            # own on every request cost the client more than any other step of a send).
            try:
                return await conn.request(body, sent, timeout=patience)
            except (TimeoutError, ConnectionClosedError):
                self._drop(addr, conn)
                raise
        try:
            with anyio.fail_after(patience):
                conn = await self.connection(addr)
                return await conn.request(body, sent, timeout=patience)
        except TimeoutError:
            if conn is not None:
                conn.abandon(f"no answer within {patience:g}s")
                self._drop(addr, conn)
            raise
        except ConnectionClosedError:
            if conn is not None:
                self._drop(addr, conn)
            raise

    def _ready(self, addr: str) -> Connection | None:
        """The open connection to `addr`, if one is up now (no dialing)."""
        link = self._links.get(addr)
        conn = link.conn if link is not None and link.ready.is_set() else None
        return conn if conn is not None and not conn.closed else None

    def _connected_leader(self, topic: str, partition: int) -> str | None:
        """The address of the partition's leader as last known, when a connection to it
        is up (a request there is bounded by that connection's watchdog); else None."""
        info = self.topics.get(topic)
        if info is None or not 0 <= partition < len(info.partitions):
            return None
        leader = info.partitions[partition].leader
        addr = self.nodes.get(leader) if leader is not None else None
        return addr if addr is not None and self._ready(addr) is not None else None

    def _drop(self, addr: str, conn: Connection) -> None:
        """Close the link that owns `conn` (not a newer one another task dialed since)."""
        link = self._links.get(addr)
        if link is not None and link.conn is conn:
            link.close.set()

    # -- metadata -------------------------------------------------------------------------

    def _candidates(self) -> list[str]:
        """Every node, starting one further each call: a node that answers but is cut off
        from its peers must not be the only one ever asked (its metadata is stale)."""
        known = list(self.nodes.values())
        every = known + [a for a in self.bootstrap if a not in known]
        self._turn = (self._turn + 1) % max(1, len(every))
        return every[self._turn :] + every[: self._turn]

    async def request_any(self, body: Request[R]) -> R:
        """Ask each known node in turn until one answers (metadata, lookups). While some
        node is only still loading (just restarted), go round again, for up to
        `request_timeout`: a whole cluster restarting is busy, not gone."""
        deadline = anyio.current_time() + self.request_timeout
        while True:
            last: Exception | None = None
            loading = False
            candidates = self._candidates()
            for addr in candidates:
                try:
                    return await self.request(addr, body)
                except CoordinatorNotAvailableError as exc:
                    last, loading = exc, True
                except (ConnectionClosedError, ShuttingDownError, TimeoutError) as exc:
                    last = exc  # that node cannot answer now (gone, closing): ask the next
            if not loading or anyio.current_time() >= deadline:
                raise ConnectionClosedError(f"no node answered (tried {', '.join(candidates)}): {last}")
            await anyio.sleep(0.05)

    async def refresh_metadata(self, topics: list[str] | None = None, *, seen: int | None = None) -> MetadataResponse:
        """Ask a node for fresh metadata. With `seen` (a `metadata_version` read before
        the caller decided to refresh), skip it if another task refreshed meanwhile:
        thousands of sends that miss the cache at once cost one round trip."""
        async with self._metadata_lock:
            if seen is not None and self.metadata_version != seen and self.last_metadata is not None:
                return self.last_metadata
            md: MetadataResponse = await self.request_any(Metadata(topics))
            self.metadata_version += 1
            self.nodes = {n.node_id: self.node_addrs.get(n.node_id, n.addr) for n in md.nodes}
            self.controller = md.controller
            for t in md.topics:
                self.topics[t.name] = t
            for name in md.missing:
                self.topics.pop(name, None)
            if topics is None:
                present = {t.name for t in md.topics}
                for name in list(self.topics):
                    if name not in present:
                        del self.topics[name]
            self.last_metadata = md
            return md

    async def topic_exists(self, name: str) -> bool:
        """Whether the topic exists, as the controller leader knows it. Any other node
        may lag behind the controller log (or be replaying it after a restart); ask this
        before acting on a topic being gone."""
        md: MetadataResponse = await self.controller_request(Metadata([name], authoritative=True))
        return name not in md.missing

    async def topic(self, name: str, refresh: bool = False) -> TopicInfo:
        """The topic's metadata. A topic unknown to the node asked may just not have
        reached it yet (nodes apply the controller's log at their own pace): ask again,
        for up to `METADATA_WAIT_S`, before calling it unknown."""
        if refresh or name not in self.topics:
            await self.refresh_metadata([name], seen=None if refresh else self.metadata_version)
            with anyio.move_on_after(METADATA_WAIT_S):
                while name not in self.topics:
                    await anyio.sleep(0.02)
                    await self.refresh_metadata([name], seen=None)
        info = self.topics.get(name)
        if info is None:
            raise UnknownTopicError(f"topic {name!r} does not exist; create it first (Admin.create_topic)")
        return info

    async def partition_count(self, name: str) -> int:
        return len((await self.topic(name)).partitions)

    # -- routing with retries ---------------------------------------------------------------

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run `attempt` until it succeeds or fails with an error it should not retry
        (`retried`); retried failures back off with jitter. Bound it with the caller's
        cancel scope."""
        backoff = RETRY_BACKOFF_S[0]
        while True:
            try:
                return await attempt()
            except Exception as exc:
                if not retried(exc):
                    raise
                await anyio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, RETRY_BACKOFF_S[1])

    async def leader_request(
        self,
        topic: str,
        partition: int,
        body: Request[R],
        sent: anyio.Event | None = None,
        *,
        within: float | None = None,
    ) -> R:
        """Send to the partition's leader, following leadership changes.

        `within` (seconds) bounds the whole, retries included; a first try to the known
        leader on an open connection then goes without a cancel scope of its own (that
        connection's watchdog bounds it: a scope per request was the largest cost of a
        producer's lone send), and one that fails is rerouted and retried as any."""
        hint: list[str | None] = [None]

        async def attempt() -> R:
            addr = hint[0]
            hint[0] = None
            seen = self.metadata_version
            if addr is None:
                info = await self.topic(topic)
                if not 0 <= partition < len(info.partitions):
                    raise UnknownTopicError(f"topic {topic!r} has no partition {partition}")
                leader = info.partitions[partition].leader
                if leader is None or leader not in self.nodes:
                    await self.refresh_metadata([topic], seen=seen)
                    leader = self.topics[topic].partitions[partition].leader if topic in self.topics else None
                    if leader is None:
                        raise NotLeaderError(f"{topic}-{partition} has no leader yet")
                    if leader not in self.nodes:  # (a node just removed, still named by one that lags)
                        raise NotLeaderError(f"{topic}-{partition}: its leader, node {leader}, is not in the cluster")
                addr = self.nodes[leader]
            try:
                return await self.request(addr, body, sent)
            except NotLeaderError as exc:
                hinted = self._hinted(exc)
                hint[0] = hinted if hinted != addr else None
                if hint[0] is None:
                    await self.refresh_metadata([topic], seen=seen)
                raise
            except (ConnectionClosedError, TimeoutError):
                await self.refresh_metadata([topic], seen=seen)
                raise

        if within is None:
            return await self._retrying(attempt)
        start = time.monotonic()
        first = self._connected_leader(topic, partition) if within > self.request_timeout else None
        if first is not None:
            hint[0] = first
            try:
                return await attempt()
            except Exception as exc:
                if not retried(exc):
                    raise
        with anyio.fail_after(max(within - (time.monotonic() - start), 0.001)):
            return await self._retrying(attempt)

    async def controller_request(self, body: Request[R]) -> R:
        hint: list[str | None] = [None]

        async def attempt() -> R:
            seen = self.metadata_version
            addr = hint[0] or (self.nodes.get(self.controller) if self.controller else None)
            hint[0] = None
            if addr is None:
                await self.refresh_metadata([], seen=seen)
                addr = self.nodes.get(self.controller) if self.controller else None
                if addr is None:
                    raise NotControllerError("no controller elected yet")
            try:
                return await self.request(addr, body)
            except NotControllerError as exc:
                hint[0] = self._hinted(exc)
                self.controller = None
                raise
            except (ConnectionClosedError, TimeoutError):
                self.controller = None
                raise

        return await self._retrying(attempt)

    def _hinted(self, exc: TideMQError) -> str | None:
        """Where an error says the leader is (by id first: a node's own client routes
        to peer listeners)."""
        leader = exc.details.get("leader_id")
        if isinstance(leader, int) and leader in self.node_addrs:
            return self.node_addrs[leader]
        return exc.details.get("leader_addr")  # type: ignore[return-value]

    async def coordinator_request(self, group: str, body: Request[R]) -> R:
        """Send to the group's coordinator, following it as it moves."""
        return await self._via_coordinator(group, FindCoordinator(group), body)

    async def transaction_coordinator_request(self, transactional_id: str, body: Request[R]) -> R:
        """Send to the transactional id's coordinator, following it as it moves."""
        return await self._via_coordinator(
            "\0txn:" + transactional_id, FindTransactionCoordinator(transactional_id), body
        )

    async def _via_coordinator(self, cache_key: str, find: Request[CoordinatorResponse], body: Request[R]) -> R:
        async def attempt() -> R:
            addr = self._coordinators.get(cache_key)
            if addr is None:
                resp: CoordinatorResponse = await self.request_any(find)
                addr = self._coordinators[cache_key] = self.node_addrs.get(resp.node_id, resp.addr)
            try:
                return await self.request(addr, body)
            except (NotCoordinatorError, CoordinatorNotAvailableError, ConnectionClosedError, TimeoutError):
                self._coordinators.pop(cache_key, None)
                raise

        return await self._retrying(attempt)
