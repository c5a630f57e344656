"""The cluster under test: real `python -m node` processes wired through a `ProxyNet`.

Each node listens on its real loopback port, dials its peers through the proxies of its
outgoing links (`--peers`) and tells clients the client proxies (`--advertise`), so every
byte between two nodes, and between a client and a node, crosses a proxy the nemesis
controls. With `kafka`, each node also serves Kafka's protocol on a real port of its own
and advertises its Kafka proxy (`--kafka-advertise`): a Kafka client dials what Metadata
names, so that is the address that keeps it behind the proxies. The runner itself (leader lookups, settle checks, the final high watermarks)
talks to the nodes' real ports: what it observes is not subject to the faults.

With spare nodes (`spares`), the nemesis can grow and shrink the cluster: `join_spare`
starts one with `--join` behind links of its own and admits it; `leaving` takes a node
off the roster of nodes the faults and the checks look at (node/roster.py removes it;
its process stops by itself).

Every process is started in its own session (a ^C to the runner does not reach it) and
killed by `close()`, which the runner calls in a `finally`.
"""

from __future__ import annotations

import glob
import os
import secrets
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import trio

from client.connection import open_connection
from client.errors import TideMQError
from client.protocol import Metadata, MetadataResponse
from scripts.chaoslib.proxy import ProxyNet

ROOT = Path(__file__).resolve().parents[2]
STOP_TIMEOUT_S = 20.0  # graceful stop: 5 s of leadership transfer, then closing logs


def partition_path(data_dir: Path, topic: str, partition: int) -> Path:
    """A partition's directory on a node: `<topic>-<p>.g<raft group>` (docs/node.md), the
    newest incarnation of the name if a deleted one is still there."""
    found = [d for d in data_dir.glob(f"{glob.escape(topic)}-{partition}.g*") if d.name.rsplit(".g", 1)[1].isdigit()]
    return max(found, key=lambda d: int(d.name.rsplit(".g", 1)[1])) if found else data_dir / f"{topic}-{partition}"


class NodeError(Exception):
    """A node process did what the runner cannot work around (it would not start)."""


class ChaosCluster:
    def __init__(
        self, run_dir: Path, real: dict[int, str], net: ProxyNet, *, tick_ms: int = 50, fsync: str = "always"
    ) -> None:
        self.run_dir = run_dir
        self.real = dict(real)
        self.net = net
        self.tick_ms = tick_ms
        self.fsync = fsync
        self.nodes = sorted(real)
        self.founders = list(self.nodes)
        self.joined: set[int] = set()
        self.left: set[int] = set()  # removed from the cluster (their processes stop by themselves)
        self.spares: dict[int, tuple[str, str, str | None]] = {}  # id -> real client, peer, Kafka listener
        self.procs: dict[int, subprocess.Popen] = {}
        self.paused: set[int] = set()
        self.peer_secret = secrets.token_urlsafe(32)  # the nodes' shared peer secret for this run
        self.unsettled: list[str] = []  # what the latest `settle` still missed (read if it is cancelled)
        self.unsettled_first: list[str] = []  # ... and what it missed when it began
        # With `secure()`: TLS only, users required; the harness itself holds the token.
        self.tls: dict | None = None
        self.token: str | None = None
        self.ssl_context: ssl.SSLContext | None = None

    def secure(self) -> str:
        """From the next start: a CA and node certificates under `<run dir>/tls`, TLS-only
        listeners, users required (ACLs apply); the harness's own requests use a token
        (a super-user). Returns the CA certificate's path."""
        from client.tls import tls_context
        from scripts.certs import Authority

        ca = Authority(self.run_dir / "tls")
        self.tls = {"ca": str(ca.cert_path), "nodes": {n: ca.node(n) for n in self.nodes}}
        self.token = secrets.token_urlsafe(24)
        self.ssl_context = tls_context(tls_ca=self.tls["ca"])
        return self.tls["ca"]

    @classmethod
    def on_loopback(cls, run_dir: Path, nodes: int, *, kafka: bool = False, spares: int = 0, **kw) -> ChaosCluster:
        """`nodes` nodes on free loopback ports, every link through its own proxy; with
        `kafka`, each node with a Kafka listener too (behind a proxy of its own); and the
        ports of `spares` nodes that may join later."""
        from tests.cluster import free_ports  # the one place that hands out ports, never twice

        total = nodes + spares
        ports = free_ports((3 if kafka else 2) * total)
        real = {i + 1: f"127.0.0.1:{port}" for i, port in enumerate(ports[:total])}
        real_peer = {i + 1: f"127.0.0.1:{port}" for i, port in enumerate(ports[total : 2 * total])}
        real_kafka = {i + 1: f"127.0.0.1:{port}" for i, port in enumerate(ports[2 * total :])}
        founding = range(1, nodes + 1)
        cluster = cls(
            run_dir,
            {n: real[n] for n in founding},
            ProxyNet(
                {n: real[n] for n in founding},
                {n: real_peer[n] for n in founding},
                {n: real_kafka[n] for n in founding if n in real_kafka},
            ),
            **kw,
        )
        cluster.spares = {n: (real[n], real_peer[n], real_kafka.get(n)) for n in range(nodes + 1, total + 1)}
        return cluster

    async def start_all(self, nursery: trio.Nursery, timeout: float) -> None:
        """Start the proxies and every node; return once all answer with a controller."""
        await self.net.start(nursery)
        for n in self.nodes:
            self.start(n)
        with trio.fail_after(timeout):
            await self.wait_ready(timeout)

    def data_dir(self, node: int) -> Path:
        return self.run_dir / f"n{node}" / "data"

    # -- processes ------------------------------------------------------------------------

    def command(self, node: int) -> list[str]:
        """A founding node's flags name the founding nodes; a joined one's name the nodes
        of the moment (how it reaches them) and the node it joins through."""
        among = self.founders if node not in self.joined else [n for n in self.nodes if n not in self.left]
        peers = ",".join(f"{i}={a}" for i, a in self.net.peers_for(node, among).items())
        advertise = ",".join(f"{i}={a}" for i, a in self.net.advertised([*among, node]).items())
        join: list[str] = []
        if node in self.joined:
            through = next(n for n in among if n != node and self.alive(n))
            join = ["--join", self.net.peer[(node, through)].addr or ""]
        return (
            [
                sys.executable,
                "-m",
                "node",
                "--id",
                str(node),
                "--listen",
                self.real[node],
                "--peer-listen",
                self.net.real_peer[node],
                "--peers",
                peers,
                "--advertise",
                advertise,
                *join,
                "--data",
                str(self.data_dir(node)),
                "--fsync",
                self.fsync,
                "--tick-ms",
                str(self.tick_ms),
            ]
            + self.kafka_flags(node)
            + self.secure_flags(node)
        )

    async def join_spare(self) -> tuple[int, str] | None:
        """Start a spare node asking to join: (its id, the address the others reach it
        at, for `Admin.add_node`), or None when no spare is left."""
        if not self.spares:
            return None
        node = min(self.spares)
        real, real_peer, real_kafka = self.spares.pop(node)
        inbound = await self.net.add_node(node, real, real_peer, real_kafka)
        self.real[node] = real
        self.joined.add(node)
        if self.tls is not None:
            from scripts.certs import Authority

            self.tls["nodes"][node] = Authority(self.run_dir / "tls").node(node)
        self.nodes = sorted([*self.nodes, node])
        self.start(node)
        return node, inbound

    def leaving(self, node: int) -> None:
        """`node` is being removed from the cluster: no fault, heal or check counts it any more."""
        self.left.add(node)
        self.nodes = [n for n in self.nodes if n != node]

    def admin(self):
        """An Admin on the nodes' real ports (the harness's own view, not subject to faults)."""
        from client import Admin

        admin = Admin(
            ",".join(self.real[n] for n in self.nodes),
            token=self.token,
            tls_ca=self.tls["ca"] if self.tls else None,
        )
        admin.cluster.username = None  # (the token, not the workloads' user in the environment)
        return admin

    def secure_flags(self, node: int) -> list[str]:
        if self.tls is None or self.token is None:
            return []
        issued = self.tls["nodes"][node]
        return ["--tls-cert", str(issued.cert), "--tls-key", str(issued.key), "--tls-ca", self.tls["ca"]] + [
            "--require-users",
            "--token",
            self.token,
        ]

    def kafka_flags(self, node: int) -> list[str]:
        """The node's Kafka listener on its real port, advertising its Kafka proxy."""
        if node not in self.net.kafka:
            return []
        return ["--kafka-listen", self.net.kafka[node].target, "--kafka-advertise", self.net.kafka_advertised()[node]]

    def start(self, node: int) -> None:
        if self.alive(node):
            raise NodeError(f"node {node} is already running")
        (self.run_dir / f"n{node}").mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / f"n{node}" / "node.log", "ab") as logf:
            self.procs[node] = subprocess.Popen(
                self.command(node),
                cwd=ROOT,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=dict(os.environ, TIDEMQ_PEER_SECRET=self.peer_secret),
            )
        self.paused.discard(node)

    def alive(self, node: int) -> bool:
        proc = self.procs.get(node)
        return proc is not None and proc.poll() is None

    def pid(self, node: int) -> int | None:
        return self.procs[node].pid if self.alive(node) else None

    def signal(self, node: int, sig: int) -> None:
        if not self.alive(node):
            return
        if sig in (signal.SIGTERM, signal.SIGINT) and node in self.paused:
            self.signal(node, signal.SIGCONT)  # a stopped process cannot handle SIGTERM
        self.procs[node].send_signal(sig)
        if sig == signal.SIGSTOP:
            self.paused.add(node)
        elif sig == signal.SIGCONT:
            self.paused.discard(node)

    async def wait_exit(self, node: int, timeout: float) -> int | None:
        """The exit code, or None if it is still running after `timeout`."""
        with trio.move_on_after(timeout):
            while (code := self.procs[node].poll()) is None:
                await trio.sleep(0.02)
            self.paused.discard(node)
            return code
        return None

    async def kill(self, node: int) -> None:
        self.signal(node, signal.SIGKILL)
        if node in self.procs:
            await self.wait_exit(node, 10)

    async def stop(self, node: int) -> tuple[int | None, bool]:
        """Graceful stop (SIGTERM); SIGKILL after STOP_TIMEOUT_S. Returns (exit code,
        whether it stopped by itself)."""
        self.signal(node, signal.SIGTERM)
        code = await self.wait_exit(node, STOP_TIMEOUT_S)
        if code is None:
            await self.kill(node)
            return self.procs[node].poll(), False
        return code, True

    def close(self) -> None:
        """Kill every node and reap it (bounded); safe to call twice."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.paused.clear()

    # -- looking at it (real ports, bounded) ------------------------------------------------

    def reachable(self) -> list[int]:
        return [n for n in self.nodes if self.alive(n) and n not in self.paused]

    async def metadata(
        self, node: int, topics: list[str] | None = None, timeout: float = 2.0
    ) -> MetadataResponse | None:
        try:
            with trio.fail_after(timeout):
                async with open_connection(
                    self.real[node], connect_timeout=timeout, token=self.token, ssl_context=self.ssl_context
                ) as conn:
                    return await conn.request(Metadata(topics))
        except (TideMQError, OSError, trio.TooSlowError):
            return None

    async def all_metadata(self) -> dict[int, MetadataResponse]:
        out: dict[int, MetadataResponse] = {}

        async def one(n: int) -> None:
            md = await self.metadata(n)
            if md is not None:
                out[n] = md

        async with trio.open_nursery() as nursery:
            for n in self.reachable():
                nursery.start_soon(one, n)
        return out

    def log_tail(self, node: int, lines: int = 5) -> str:
        try:
            with open(self.run_dir / f"n{node}" / "node.log", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    async def wait_ready(self, timeout: float) -> int:
        """The controller's id, once every running node answers and they agree on it."""
        with trio.fail_after(timeout):
            while True:
                for n, proc in self.procs.items():
                    if proc.poll() is not None:
                        raise NodeError(
                            f"node {n} exited with code {proc.returncode} while starting:\n" + self.log_tail(n)
                        )
                answers = await self.all_metadata()
                ctrl = {md.controller for md in answers.values()}
                if answers and len(answers) == len(self.reachable()) and len(ctrl) == 1 and None not in ctrl:
                    return ctrl.pop()
                await trio.sleep(0.1)

    async def partitions(self, answers: dict[int, MetadataResponse] | None = None) -> dict[tuple[str, int], dict]:
        """(topic, partition) -> {"leader", "replicas", "in_sync", "hw", "internal"}, each
        partition as its self-declared leader reports it (nobody leads it: leader None)."""
        if answers is None:
            answers = await self.all_metadata()
        out: dict[tuple[str, int], dict] = {}
        for node, md in answers.items():
            for t in md.topics:
                for p in t.partitions:
                    key = (t.name, p.partition)
                    mine = p.leader == node
                    if key not in out or (mine and out[key]["leader"] is None):
                        out[key] = {
                            "leader": node if mine else None,
                            "replicas": list(p.replicas),
                            "in_sync": list(p.in_sync) if mine else [],
                            "hw": p.high_watermark if mine else None,
                            "internal": t.internal,
                        }
        return out

    async def controller(self) -> int | None:
        answers = await self.all_metadata()
        for node, md in answers.items():
            if md.controller == node:
                return node
        return None

    async def settle(self, timeout: float, caught_up: bool = False) -> tuple[bool, float, list[str]]:
        """Wait until every node answers and every partition has a leader; with
        `caught_up`, also until every replica of every partition has been seen caught up
        (lag 0, by the leader of the moment) at least once since the wait began: then
        every replica holds everything committed before it. Returns (settled, seconds,
        what was still missing)."""
        start = trio.current_time()
        seen: dict[tuple[str, int], set[int]] = {}
        missing: list[str] = ["no answer yet"]
        self.unsettled_first = []
        first = True
        with trio.move_on_after(timeout):
            while True:
                answers = await self.all_metadata()
                parts = await self.partitions(answers)
                for key, p in parts.items():
                    if p["leader"] is not None:
                        seen.setdefault(key, set()).update(p["in_sync"], [p["leader"]])
                if caught_up:
                    missing = [
                        f"{t}-{p}"
                        for (t, p), info in sorted(parts.items())
                        if not set(info["replicas"]) <= seen.get((t, p), set())
                    ]
                else:
                    missing = [
                        f"{t}-{p} has no leader" for (t, p), info in sorted(parts.items()) if info["leader"] is None
                    ]
                if len(answers) < len(self.nodes):
                    missing.append(f"{len(self.nodes) - len(answers)} node(s) not answering")
                if first:
                    self.unsettled_first, first = list(missing), False
                self.unsettled = missing
                if parts and not missing:
                    return True, trio.current_time() - start, []
                await trio.sleep(0.2)
        return False, trio.current_time() - start, missing
