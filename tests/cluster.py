"""Test helpers: a cluster of brokers inside the test's trio run, on loopback ports."""

from __future__ import annotations

import json
import os
import random
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import trio

from client import Consumer
from client.cluster import ClusterClient
from client.connection import open_connection
from client.errors import TideMQError
from client.protocol import Metadata
from client.tls import tls_context
from node.broker import Broker
from node.config import NodeConfig
from node.peerauth import PeerCredential


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


_handed_out: set[int] = set()


def port_range() -> tuple[int, int]:
    """[first, end) of the ports this process hands out: below the kernel's ephemeral
    range, and, under pytest-xdist, a slice of it of its own per worker, so two workers
    never pick the same port for servers that bind it only later."""
    low, _ = _ephemeral_range()
    floor = 10000 if low > 12000 else 1024
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if not worker.startswith("gw") or count <= 1:
        return floor, low
    index = int(worker[2:]) % count
    width = (low - floor) // count
    return floor + index * width, floor + (index + 1) * width


def claim(ports: list[int]) -> bool:
    """Hand out `ports` if every one is free now and none was handed out before."""
    if any(port in _handed_out for port in ports):
        return False
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    _handed_out.update(ports)
    return True


def free_ports(n: int) -> list[int]:
    """Ports for servers that start (and restart) later, from `port_range()`.

    A port taken from bind(0) and closed again is one the kernel may hand to the next
    bind(0) (a chaos proxy) or use as the source port of an outgoing connection before the
    node binds it, or while a killed node is down: "Address already in use". Ports below the
    ephemeral range are never chosen by the kernel; this process never hands one out twice.
    """
    first, end = port_range()
    rng = random.Random()
    ports: list[int] = []
    for _ in range(5000):
        if len(ports) == n:
            return ports
        port = rng.randrange(first, end)
        if claim([port]):
            ports.append(port)
    raise RuntimeError(f"no {n} free loopback ports between {first} and {end}")


PEER_SECRET = "tidemq-tests-peer-secret-0123456789"


def peer_client(peer_addrs: dict[int, str], as_node: int = 1) -> ClusterClient:
    """A client that speaks as node `as_node` on the peer listeners (for tests of
    broker-to-broker requests, which clients may not send)."""
    return ClusterClient(
        list(peer_addrs.values()), peer=PeerCredential(as_node, PEER_SECRET), node_addrs=dict(peer_addrs)
    )


class LocalCluster:
    """`peers` are the nodes' client addresses (what tests connect to); `peer_addrs`
    their peer listeners."""

    def __init__(self, nursery: trio.Nursery, base: Path, n: int, **overrides) -> None:
        self.nursery = nursery
        self.base = base
        ports = free_ports(2 * n)
        self.peers = {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(ports[:n])}
        self.peer_addrs = {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(ports[n:])}
        self.advertise = overrides.pop("advertise", None) or dict(self.peers)
        self.overrides = overrides
        self.brokers: dict[int, Broker] = {}
        self._scopes: dict[int, trio.CancelScope] = {}
        self._done: dict[int, trio.Event] = {}

    @property
    def bootstrap(self) -> str:
        return ",".join(self.peers.values())

    def config(self, node: int) -> NodeConfig:
        settings = {"fsync": "never", "tick_ms": 20, **self.overrides}
        return NodeConfig(
            node_id=node,
            listen=self.peers[node],
            data_dir=self.base / f"n{node}",
            peer_listen=self.peer_addrs[node],
            peers=dict(self.peer_addrs),
            advertise=dict(self.advertise),
            peer_secret=PEER_SECRET,
            **settings,
        )

    def peer_client(self, as_node: int = 1) -> ClusterClient:
        return peer_client(self.peer_addrs, as_node)

    async def start(self, node: int) -> Broker:
        broker = Broker(self.config(node))

        done = trio.Event()
        self._done[node] = done

        async def run(task_status=trio.TASK_STATUS_IGNORED):
            try:
                with trio.CancelScope() as scope:
                    self._scopes[node] = scope
                    await broker.run(task_status=task_status)
            finally:
                done.set()

        await self.nursery.start(run)
        self.brokers[node] = broker
        return broker

    async def stop(self, node: int, graceful: bool = True) -> None:
        broker = self.brokers.pop(node)
        if graceful:
            await broker.shutdown()
        self._scopes.pop(node).cancel()
        await self._done.pop(node).wait()
        if (
            not graceful
        ):  # what the OS does for a killed process: close the files, unsynced data stays in the page cache
            for r in broker.replicas.values():
                r.storage.log.close()

    async def wait_controller(self, timeout: float = 10) -> int:
        with trio.fail_after(timeout):
            while True:
                for b in self.brokers.values():
                    if b.controller.ready_for_writes():
                        return b.id
                await trio.sleep(0.02)

    async def wait_roster(self, timeout: float = 30) -> None:
        """Until every node has the founding nodes in its roster (the controller's first
        leader writes them: moves and removals name nodes of the roster)."""
        with trio.fail_after(timeout):
            while any(len(b.state.members) < len(self.peers) for b in self.brokers.values()):
                await trio.sleep(0.05)

    async def wait_leaders(self, topic: str, timeout: float = 10) -> dict[int, int]:
        """partition -> leader, once every partition has a writable leader."""
        with trio.fail_after(timeout):
            while True:
                leaders = {}
                for b in self.brokers.values():
                    for (t, p), part in b.partitions.items():
                        if t == topic and part.ready_for_writes():
                            leaders[p] = b.id
                meta = next(iter(self.brokers.values())).state.topics.get(topic)
                if meta is not None and len(leaders) == len(meta.replicas):
                    return leaders
                await trio.sleep(0.02)


@asynccontextmanager
async def local_cluster(tmp_path: Path, n: int = 3, **overrides):
    async with trio.open_nursery() as nursery:
        cluster = LocalCluster(nursery, tmp_path, n, **overrides)
        for node in cluster.peers:
            await cluster.start(node)
        await cluster.wait_controller()
        try:
            yield cluster
        finally:
            for node in list(cluster.brokers):
                await cluster.stop(node, graceful=False)
            nursery.cancel_scope.cancel()


class ProcessCluster:
    """Real `python -m node` processes on loopback; every process is killed on exit."""

    def __init__(
        self,
        base: Path,
        n: int = 3,
        fsync: str = "always",
        token: str | None = None,
        tick_ms: int = 20,
        settings: dict[str, int | str] | None = None,
    ) -> None:
        self.base = base
        self.python = sys.executable
        ports = free_ports(2 * n)
        self.peers = {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(ports[:n])}  # client addresses
        self.peer_addrs = {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(ports[n:])}
        self.fsync = fsync
        self.token = token
        self.tick_ms = tick_ms
        self.extra_args: list[str] = []
        # NodeConfig fields without a flag, for every node, and per node on top
        self.settings: dict[str, int | str] = dict(settings or {})
        self.node_settings: dict[int, dict[str, int | str]] = {}
        # what runs a node instead of `python -m node` (its flags follow), per node: a
        # node of another build (tests/nextversion.py)
        self.node_commands: dict[int, list[str]] = {}
        self.procs: dict[int, subprocess.Popen] = {}
        self.joined: set[int] = set()  # nodes added after the start (`add_node`): they start with --join
        self.kafka: dict[int, str] = {}  # node -> its Kafka listener (`serve_kafka`)
        self.tls_ca: str | None = None  # the CA's certificate (`secure`)
        self.tls_files: dict[int, tuple[str, str]] = {}  # node -> the certificate and key it is started with
        self.ssl_context: ssl.SSLContext | None = None  # what this harness's own requests use

    @property
    def bootstrap(self) -> str:
        return ",".join(self.peers.values())

    def serve_kafka(self) -> str:
        """Give every node a Kafka listener from its next start; the Kafka bootstrap."""
        self.kafka = {node: f"127.0.0.1:{port}" for node, port in zip(self.peers, free_ports(len(self.peers)))}
        return ",".join(self.kafka.values())

    def secure(self) -> str:
        """Serve TLS from the next start: a CA and node certificates under `<base>/tls`
        (scripts/certs.py); the CA certificate's path. Tests may swap `tls_files`."""
        from scripts.certs import Authority

        ca = Authority(self.base / "tls")
        self.tls_files = {n: (str((i := ca.node(n)).cert), str(i.key)) for n in self.peers}
        self.tls_ca = str(ca.cert_path)
        self.ssl_context = tls_context(tls_ca=self.tls_ca)
        return self.tls_ca

    def add_node(self) -> int:
        """A new node's id and addresses; `start` it: it asks to join through a founding
        node (`Admin.add_node` admits it)."""
        node = max([*self.peers, *self.joined]) + 1
        client, peer = free_ports(2)
        self.peers[node], self.peer_addrs[node] = f"127.0.0.1:{client}", f"127.0.0.1:{peer}"
        self.joined.add(node)
        return node

    def start(self, node: int) -> None:
        """Start one node process (plain subprocess, so sync tests can use it too)."""
        root = Path(__file__).resolve().parent.parent
        founders = [i for i in self.peer_addrs if i not in self.joined]
        if node in self.joined:
            through = next((i for i in self.peers if i != node and self.alive(i)), founders[0])
            membership = ["--join", self.peer_addrs[through]]
        else:
            peers = ",".join(f"{i}={self.peer_addrs[i]}" for i in founders)
            advertise = ",".join(f"{i}={self.peers[i]}" for i in founders)
            membership = ["--peers", peers, "--advertise", advertise]
        cmd = [
            self.python,
            *self.node_commands.get(node, ["-m", "node"]),
            "--id",
            str(node),
            "--listen",
            self.peers[node],
            "--peer-listen",
            self.peer_addrs[node],
            *membership,
            "--data",
            str(self.base / f"n{node}"),
            "--fsync",
            self.fsync,
            "--tick-ms",
            str(self.tick_ms),
        ]
        if self.token:
            cmd += ["--token", self.token]
        if node in self.kafka:
            cmd += ["--kafka-listen", self.kafka[node]]
        if node in self.tls_files and self.tls_ca is not None:
            cert, key = self.tls_files[node]
            cmd += ["--tls-cert", cert, "--tls-key", key, "--tls-ca", self.tls_ca]
        cmd += self.extra_args
        settings = {**self.settings, **self.node_settings.get(node, {})}
        if settings:
            toml = self.base / f"n{node}.toml"
            toml.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
            cmd += ["--config", str(toml)]
        env = dict(os.environ, TIDEMQ_PEER_SECRET=PEER_SECRET)
        with open(self.base / f"n{node}.log", "ab") as logf:
            self.procs[node] = subprocess.Popen(cmd, cwd=root, stdout=logf, stderr=logf, env=env)

    def peer_client(self, as_node: int = 1) -> ClusterClient:
        return peer_client(self.peer_addrs, as_node)

    def alive(self, node: int) -> bool:
        proc = self.procs.get(node)
        return proc is not None and proc.poll() is None

    def kill(self, node: int, sig: int = 9) -> None:
        if self.alive(node):
            self.procs[node].send_signal(sig)

    async def wait_exit(self, node: int, timeout: float = 15) -> int:
        with trio.fail_after(timeout):
            while (code := self.procs[node].poll()) is None:
                await trio.sleep(0.02)
        return code

    async def request(self, node: int, body, timeout: float = 10):
        with trio.fail_after(timeout):
            async with open_connection(
                self.peers[node], token=self.token, connect_timeout=2, ssl_context=self.ssl_context
            ) as conn:
                return await conn.request(body)

    async def wait_ready(self, timeout: float = 60) -> int:
        """The controller leader's id, once every started node answers."""
        with trio.fail_after(timeout):
            while True:
                try:
                    answers = [
                        await self.request(n, Metadata(topics=[]), timeout=2) for n in self.procs if self.alive(n)
                    ]
                    ctrl = {a.controller for a in answers}
                    if len(ctrl) == 1 and None not in ctrl:
                        return ctrl.pop()
                except (TideMQError, OSError, trio.TooSlowError):
                    pass
                await trio.sleep(0.1)

    async def leader_of(self, topic: str, partition: int, timeout: float = 20, poll_s: float = 0.1) -> int:
        with trio.fail_after(timeout):
            while True:
                for n in self.procs:
                    if not self.alive(n):
                        continue
                    try:
                        md = await self.request(n, Metadata([topic]), timeout=2)
                        leader = md.topics[0].partitions[partition].leader if md.topics else None
                        if leader and self.alive(leader):
                            return leader
                    except (TideMQError, OSError, trio.TooSlowError):
                        pass
                await trio.sleep(poll_s)

    def close(self) -> None:
        """Kill every node and reap it (bounded)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    async def aclose(self) -> None:
        self.close()


@contextmanager
def running_cluster(base: Path, n: int = 3, **kw):
    """A process cluster for synchronous tests (asyncio clients, blocking facades)."""
    cluster = ProcessCluster(base, n, **kw)
    try:
        for node in cluster.peers:
            cluster.start(node)
        trio.run(cluster.wait_ready)
        yield cluster
    finally:
        cluster.close()


@asynccontextmanager
async def process_cluster(
    tmp_path: Path, n: int = 3, *, kafka: bool = False, secure: bool = False, args: tuple[str, ...] = (), **kw
):
    """Node processes (with `kafka`, each with a Kafka listener: `cluster.kafka`; with
    `secure`, TLS only: `cluster.tls_ca`; `args`: more flags for every node)."""
    cluster = ProcessCluster(tmp_path, n, **kw)
    cluster.extra_args += args
    if kafka:
        cluster.serve_kafka()
    if secure:
        cluster.secure()
    try:
        for node in cluster.peers:
            cluster.start(node)
        yield cluster
    finally:
        with trio.CancelScope(shield=True):
            await cluster.aclose()


async def read_all(
    bootstrap: str, topics: list[str], *, isolation: str = "read_committed", quiet: float = 1.5, timeout: float = 30
) -> list:
    """Every message of `topics` from the start, once nothing new came for `quiet` s."""
    out = []
    with trio.fail_after(timeout):
        async with Consumer(bootstrap, topics=list(topics), offset_reset="earliest", isolation=isolation) as cons:
            while True:
                with trio.move_on_after(quiet) as idle:
                    out.append(await cons.__anext__())
                if idle.cancelled_caught:
                    return out


async def admit(admin, cluster: ProcessCluster, node: int, timeout: float = 30) -> None:
    """`Admin.add_node` for a node `start`ed with --join: back once it votes."""
    await admin.add_node(node, cluster.peer_addrs[node], wait=timeout)


def tidemq_cli(**env: str) -> Callable[..., subprocess.CompletedProcess]:
    """`tidemq ARGS...` in a subprocess with only these TIDEMQ_* variables (bootstrap,
    token, ...) set: what a user's shell would run. Returns a runner."""
    root = Path(__file__).resolve().parent.parent
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TIDEMQ_")}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "client.cli", *args],
            cwd=root,
            env={**clean, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run
