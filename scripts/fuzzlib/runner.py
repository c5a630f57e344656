"""One fuzz run: a live three-node cluster, hostile clients beside a canary, then checks.

    report = await run_fuzz(Options(run_dir=Path("..."), seed=7, duration=60, clients=8))

Nodes start exactly as in a chaos run (`ChaosCluster` behind a pass-through `ProxyNet`,
so `--peers`/`--advertise` are wired the same way; no faults are injected). The hostile
clients talk to the nodes' real listeners; the canary producer and consumer use the
advertised addresses like any application. Everything is bounded in time, and the
`finally` kills every node process the run started.
"""

from __future__ import annotations

import random
import re
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import trio

from client import Admin, Consumer, Producer
from client.cluster import ClusterClient
from client.errors import (
    ConnectionClosedError,
    ErrorCode,
    LocalProtocolError,
    RemoteProtocolError,
    TideMQError,
)
from client.protocol import (
    FindCoordinator,
    FindTransactionCoordinator,
    GroupHeartbeat,
    GroupHeartbeatResponse,
    InitProducerId,
    Produce,
    ProducerIdResponse,
)
from scripts.chaoslib.cluster import ChaosCluster
from scripts.chaoslib.proxy import ProxyNet
from scripts.chaoslib.runner import exception_lines
from scripts.fuzzlib.shapes import CANARY, DATA_TOPICS, RAW, RAW_WEIGHT, SHAPES, Finding, Req, Target, prepare_bombs
from segments import Log, LogConfig

PARTITION_DIR = re.compile(r"^(?P<topic>.+)-(?P<partition>\d+)\.g(?P<group>\d+)$")
EXAMPLES = 5  # examples kept per kind of violation


@dataclass
class Options:
    run_dir: Path
    seed: int = 0
    duration: float = 300.0
    clients: int = 8
    max_rss_mb: float = 1024.0
    fsync: str = "never"
    tick_ms: int = 50
    request_timeout: float = 60.0  # a well-formed request unanswered this long is a finding
    setup_timeout: float = 90.0
    canary_wait: float = 30.0  # for the live consumer to see every acknowledged value


@dataclass
class Report:
    seed: int
    duration: float
    clients: int
    violations: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    outcomes: Counter = field(default_factory=Counter)  # well-formed requests: ok, or the refusal's code
    raw: Counter = field(default_factory=Counter)  # raw shapes: how the node took them
    shapes: Counter = field(default_factory=Counter)
    canary: dict = field(default_factory=dict)
    rss_mb: dict[int, float] = field(default_factory=dict)
    replicas: dict = field(default_factory=dict)
    node_log: dict[int, list[str]] = field(default_factory=dict)
    exits: dict[int, str] = field(default_factory=dict)  # node -> what it last got, its log's end
    recent: dict[int, deque] = field(default_factory=dict)  # node -> the last requests sent to it

    def sent(self, node: int, what: str) -> None:
        self.recent.setdefault(node, deque(maxlen=8)).append(what)

    @property
    def ok(self) -> bool:
        return not self.violations

    def violation(self, kind: str, detail: str) -> None:
        self.violations[kind] += 1
        if len(ex := self.examples.setdefault(kind, [])) < EXAMPLES:
            ex.append(detail)

    def status(self) -> str:
        refusals = sum(n for k, n in self.outcomes.items() if k in ErrorCode.__members__)
        top = ", ".join(f"{k} {n}" for k, n in self.outcomes.most_common(6) if k in ErrorCode.__members__)
        bad = sum(self.violations.values())
        return f"{sum(self.outcomes.values())} requests, {refusals} refused ({top}); {sum(self.raw.values())} raw" + (
            f"; [red]{bad} violations[/]" if bad else ""
        )


def describe(body: object, limit: int = 500) -> str:
    """A request, short enough to print: long bytes, strings and lists abbreviated."""

    def short(v: object) -> object:
        if isinstance(v, (bytes, bytearray)):
            return f"<{len(v)} bytes {bytes(v[:48]).hex()}{'…' if len(v) > 48 else ''}>"
        if isinstance(v, str) and len(v) > 60:
            return f"{v[:40]!r}…({len(v)} chars)"
        if isinstance(v, list):
            return [short(x) for x in v[:3]] + ([f"…{len(v)} items"] if len(v) > 3 else [])
        if isinstance(v, msgspec.Struct):
            return describe(v, limit)
        return v

    if not isinstance(body, msgspec.Struct):
        return repr(body)[:limit]
    fields = ", ".join(f"{f}={short(getattr(body, f))!s}" for f in body.__struct_fields__)
    return f"{type(body).__name__}({fields})"[:limit]


class Routes:
    """Partition leaders and the controller, as the nodes last said (refreshed each second)."""

    def __init__(self, cluster: ChaosCluster) -> None:
        self.cluster = cluster
        self.leaders: dict[tuple[str, int], int] = {}
        self.controller: int | None = None

    async def refresh_forever(self) -> None:
        while True:
            for md in (await self.cluster.all_metadata()).values():
                self.controller = md.controller or self.controller
                for t in md.topics:
                    for p in t.partitions:
                        if p.leader is not None:
                            self.leaders[(t.name, p.partition)] = p.leader
            await trio.sleep(1.0)


class HostileClient:
    """One seeded client: draws shapes and sends them until the run's end."""

    def __init__(self, index: int, opts: Options, cluster: ChaosCluster, routes: Routes, report: Report) -> None:
        self.rng = random.Random(opts.seed * 1000 + index)
        self.index, self.opts, self.cluster, self.routes, self.report = index, opts, cluster, routes, report
        self.mem: dict[str, dict] = {"pids": {}, "members": {}}
        self.raw_slots = trio.Semaphore(2)  # raw shapes wait for the node to close: in the background
        self.node_at = {addr: n for n, addr in cluster.real.items()}

    async def run(self, stop_at: float) -> None:
        names = list(SHAPES) + list(RAW)
        weights = [w for w, _ in SHAPES.values()] + [RAW_WEIGHT] * len(RAW)
        async with ClusterClient(
            list(self.cluster.real.values()), client_id=f"fuzz-{self.index}", request_timeout=self.opts.request_timeout
        ) as client:
            async with trio.open_nursery() as background:
                while trio.current_time() < stop_at:
                    name = self.rng.choices(names, weights)[0]
                    node = self.rng.choice(self.cluster.nodes)
                    if name in RAW:
                        await self.raw_slots.acquire()
                        target = Target(self.cluster.real[node], self.cluster.net.real_peer[node])
                        background.start_soon(self.raw, name, random.Random(self.rng.getrandbits(64)), target)
                    else:
                        req = SHAPES[name][1](self.rng, self.mem)
                        self.report.shapes[name] += 1
                        await self.send(client, name, req, node)
                    await trio.sleep(self.rng.uniform(0.02, 0.15))

    async def send(self, client: ClusterClient, name: str, req: Req, node: int) -> None:
        detour = self.rng.random() < 0.15  # sometimes the wrong node, on purpose
        route, addr = req.route, self.cluster.real[node]
        if route[0] == "leader" and not detour and (leader := self.routes.leaders.get((route[1], route[2]))):
            addr = self.cluster.real.get(leader, addr)
        elif route[0] == "controller" and not detour and self.routes.controller in self.cluster.real:
            addr = self.cluster.real[self.routes.controller]
        elif route[0] in ("group", "txn") and not detour:
            find = FindCoordinator(route[1]) if route[0] == "group" else FindTransactionCoordinator(route[1])
            found = await self.call(client, f"{name}/find", addr, find, None)
            if found is not None and found.node_id in self.cluster.real:
                addr = self.cluster.real[found.node_id]
        resp = await self.call(client, name, addr, req.body, req.expect)
        if isinstance(resp, ProducerIdResponse) and isinstance(req.body, InitProducerId) and req.body.transactional_id:
            self.mem["pids"][req.body.transactional_id] = (resp.producer_id, resp.producer_epoch)
        elif isinstance(resp, GroupHeartbeatResponse) and isinstance(req.body, GroupHeartbeat):
            self.mem["members"][req.body.group] = (resp.member_id, resp.member_epoch)

    async def call(self, client: ClusterClient, name: str, addr: str, body: object, expect: ErrorCode | None):
        """Send one request; count how it was taken, and record any violation."""
        rep, node, desc = self.report, self.node_at[addr], describe(body)
        what = f"{name} to {addr}: {desc}"
        rep.sent(node, f"{name}: {desc}")
        outcome, resp = "ok", None
        # The node caps a fetch's long poll (30 s): past that and our own patience, it hangs.
        with trio.move_on_after(self.opts.request_timeout + 35) as hung:
            try:
                if isinstance(body, Produce) and body.acks == 0:
                    await (await client.connection(addr)).send_only(body)
                    outcome = "sent"
                else:
                    resp = await client.request(addr, body)
                    if expect is not None:
                        rep.violation("broker-only request served", what)
            except ConnectionClosedError as exc:
                outcome = "closed"
                if self.cluster.alive(node):  # else the node's exit is the finding
                    rep.violation("connection closed on a well-formed request", f"{what} -> {exc}")
            except TimeoutError:
                outcome = "hung"
            except LocalProtocolError as exc:  # the fuzzer's own bug: say so, it is not the node's
                outcome = "unsendable"
                rep.violation("fuzzer could not encode a request", f"{what} -> {exc}")
            except RemoteProtocolError as exc:
                outcome = "malformed answer"
                rep.violation("node answered with a malformed frame", f"{what} -> {exc}")
            except TideMQError as exc:
                outcome = exc.code.name
                if exc.code == ErrorCode.UNKNOWN:
                    rep.violation("UNKNOWN answer (unexpected exception in the node)", f"{what} -> {exc.message}")
                elif expect is not None and exc.code != expect:
                    rep.violation("broker-only request not refused as such", f"{what} -> {outcome}")
        if hung.cancelled_caught or outcome == "hung":
            outcome = "hung"
            rep.violation("no answer to a well-formed request", what)
        rep.outcomes[outcome] += 1
        return resp

    async def raw(self, name: str, rng: random.Random, target: Target) -> None:
        rep = self.report
        rep.shapes[name] += 1
        rep.sent(self.node_at[target.client], f"{name} (raw, seed-derived)")
        try:
            with trio.fail_after(60):
                rep.raw[f"{name}: {await RAW[name](rng, target)}"] += 1
        except Finding as exc:
            rep.raw[f"{name}: finding"] += 1
            rep.violation(f"raw {name}", f"to {target.client}: {exc}")
        except RemoteProtocolError as exc:
            rep.violation("node answered with a malformed frame", f"raw {name} to {target.client}: {exc}")
        except (OSError, trio.BrokenResourceError, trio.TooSlowError) as exc:
            rep.raw[f"{name}: {type(exc).__name__}"] += 1
        finally:
            self.raw_slots.release()


@dataclass
class Canary:
    """What the canary producer sent and what the live group consumer saw."""

    attempted: set[bytes] = field(default_factory=set)
    acked: list[bytes] = field(default_factory=list)
    failed: int = 0
    seen: Counter = field(default_factory=Counter)

    async def produce(self, bootstrap: str, stop: trio.Event, report: Report) -> None:
        try:
            async with Producer(bootstrap, client_id="canary", delivery_timeout=60) as producer:
                n = 0
                while not stop.is_set():
                    value = b"c-%d" % n
                    self.attempted.add(value)
                    try:
                        await producer.send(CANARY, value, key=b"k%d" % (n % 16))
                        self.acked.append(value)
                    except (TideMQError, TimeoutError):
                        self.failed += 1  # outcome unknown: neither lost nor acknowledged
                    n += 1
                    await trio.sleep(0.03)
        except TideMQError as exc:
            report.violation("canary producer failed", repr(exc))

    async def consume(self, bootstrap: str, stop: trio.Event, report: Report) -> None:
        try:
            async with Consumer(
                bootstrap, topics=[CANARY], group="canary-check", offset_reset="earliest", client_id="canary-consumer"
            ) as consumer:
                committed = trio.current_time()
                while not stop.is_set():
                    with trio.move_on_after(0.5):
                        self.seen[(await consumer.__anext__()).value] += 1
                    if trio.current_time() - committed > 1.0:
                        committed = trio.current_time()
                        try:
                            await consumer.commit()
                        except TideMQError:
                            pass  # a commit lost in a rebalance only means redelivery
        except TideMQError as exc:
            report.violation("canary consumer failed", repr(exc))


async def read_topic(bootstrap: str, topic: str, quiet: float = 3.0, timeout: float = 120.0) -> list[bytes]:
    """Every value of `topic` from the start, by a new consumer without a group."""
    out: list[bytes] = []
    with trio.fail_after(timeout):
        async with Consumer(bootstrap, topics=[topic], offset_reset="earliest", client_id="canary-final") as c:
            while True:
                with trio.move_on_after(quiet) as idle:
                    out.append((await c.__anext__()).value)
                if idle.cancelled_caught:
                    return out


def check_canary(canary: Canary, final: list[bytes], report: Report) -> None:
    counts = Counter(final)
    lost = [v for v in canary.acked if not counts[v]]
    dup = sorted(v for v, n in counts.items() if n > 1)
    phantom = sorted(v for v in counts if v not in canary.attempted)
    late = [v for v in canary.acked if not canary.seen[v]]
    for kind, values in (
        ("canary lost an acknowledged value", lost),
        ("canary value stored twice", dup),
        ("canary value never sent", phantom),
        ("live canary consumer missed acknowledged values", late),
    ):
        if values:
            report.violation(kind, f"{len(values)}: {b', '.join(values[:10]).decode()}")
    report.canary = {
        "acked": len(canary.acked),
        "failed": canary.failed,
        "read": len(final),
        "lost": len(lost),
        "duplicated": len(dup),
        "live consumer saw": sum(canary.seen.values()),
        "live redeliveries": sum(n - 1 for n in canary.seen.values() if n > 1),
    }


def read_rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


async def watch_nodes(cluster: ChaosCluster, report: Report) -> None:
    """Sample each node's memory; a node that exits is a violation at once."""
    gone: set[int] = set()
    while True:
        for n in cluster.nodes:
            pid = cluster.pid(n)
            if pid is not None and (rss := read_rss_mb(pid)) is not None:
                report.rss_mb[n] = max(report.rss_mb.get(n, 0.0), rss)
            elif n not in gone:
                gone.add(n)
                code = cluster.procs[n].poll()
                report.violation("node exited", f"n{n} exited with code {code} (see below)")
                last = "\n".join(f"  {r}" for r in report.recent.get(n, []))
                report.exits[n] = (
                    f"n{n} exited with code {code}; the last requests sent to it:\n{last}\n"
                    f"its log ends ({cluster.run_dir / f'n{n}' / 'node.log'}):\n{cluster.log_tail(n, 15)}"
                )
        await trio.sleep(0.5)


def compare_partition(paths: dict[int, Path], hw: int) -> str | None:
    """Stream the replicas' batches below `hw` side by side; the first difference, or None."""
    logs = {n: Log.open(str(p), LogConfig(fsync="never")) for n, p in paths.items()}
    try:
        start = max(log.log_start_offset for log in logs.values())
        end = min([hw] + [log.next_offset for log in logs.values()])
        if start >= end:
            return None
        iters = {n: log.batches(start) for n, log in logs.items()}
        while True:
            row: dict[int, tuple[int, bytes] | None] = {}
            for n, it in iters.items():
                header, data = next(it, (None, b""))
                row[n] = (header.base_offset, bytes(data)) if header is not None and header.base_offset < end else None
            if len(set(row.values())) > 1:
                return "first difference: " + ", ".join(f"n{n} {r[0] if r else 'end'}" for n, r in row.items())
            if all(r is None for r in row.values()):
                return None
    finally:
        for log in logs.values():
            log.close()


async def compare_replicas(cluster: ChaosCluster, hws: dict[tuple[str, int], int], report: Report) -> None:
    dirs: dict[tuple[str, int], dict[int, dict[int, Path]]] = {}  # (topic, p) -> group -> node -> dir
    for n in cluster.nodes:
        data = cluster.data_dir(n)
        for child in sorted(data.iterdir()) if data.exists() else []:
            if m := PARTITION_DIR.match(child.name):
                key = (m["topic"], int(m["partition"]))
                dirs.setdefault(key, {}).setdefault(int(m["group"]), {})[n] = child
    compared, differ = 0, []
    for key, hw in sorted(hws.items()):
        if key not in dirs:
            report.violation("replica directory missing", f"{key[0]}-{key[1]} (high watermark {hw})")
            continue
        newest = dirs[key][max(dirs[key])]  # a re-created topic's incarnation has the highest group
        problem = await trio.to_thread.run_sync(compare_partition, newest, hw)
        compared += 1
        if problem:
            differ.append(f"{key[0]}-{key[1]}")
            report.violation("replicas differ", f"{key[0]}-{key[1]} on nodes {sorted(newest)}: {problem}")
    report.replicas = {"compared": compared, "differ": differ}


def scan_node_logs(cluster: ChaosCluster, report: Report) -> None:
    for n in cluster.nodes:
        path = cluster.run_dir / f"n{n}" / "node.log"
        if path.exists():
            with open(path, errors="replace") as f:
                lines = f.readlines()
            found = Counter(e[:160] for e in exception_lines(lines))
            found.update(line.split(" ERROR ", 1)[1].strip()[:160] for line in lines if " ERROR " in line)
            report.node_log[n] = [f"{k} (x{c})" for k, c in found.most_common(8)]


async def run_fuzz(
    opts: Options, say: Callable[[str], None] = print, progress: Callable[[float, str], None] | None = None
) -> Report:
    """Run the fuzzer; `progress(fraction, status)` is called twice a second while the
    hostile clients run. Raises if the run itself cannot go on (nodes will not start)."""
    report = Report(opts.seed, opts.duration, opts.clients)
    opts.run_dir.mkdir(parents=True, exist_ok=True)
    cluster = ChaosCluster.on_loopback(opts.run_dir, 3, tick_ms=opts.tick_ms, fsync=opts.fsync)
    net = cluster.net
    canary = Canary()
    limit = opts.setup_timeout + opts.duration + opts.request_timeout + opts.canary_wait + 600
    try:
        with trio.fail_after(limit):
            async with trio.open_nursery() as nursery:
                await cluster.start_all(nursery, opts.setup_timeout)
                with trio.fail_after(opts.setup_timeout):
                    async with Admin(net.bootstrap) as admin:
                        for topic, parts in {CANARY: 3, **DATA_TOPICS}.items():
                            await admin.create_topic(topic, partitions=parts, replication=min(3, parts + 1))
                    await trio.to_thread.run_sync(prepare_bombs)
                say(
                    f"cluster up in {opts.run_dir} (nodes {', '.join(f'n{n}={a}' for n, a in cluster.real.items())}); "
                    f"{opts.clients} hostile clients for {opts.duration:.0f}s"
                )
                routes = Routes(cluster)
                async with trio.open_nursery() as watchers:
                    watchers.start_soon(watch_nodes, cluster, report)
                    watchers.start_soon(routes.refresh_forever)
                    await _fuzz(opts, cluster, net, routes, canary, report, say, progress)
                    settled, _, missing = await cluster.settle(30, caught_up=True)
                    if not settled:
                        say(f"replicas not all caught up after 30 s: {', '.join(missing[:5])}")
                    hws = {k: v["hw"] for k, v in (await cluster.partitions()).items() if v["hw"] is not None}
                    watchers.cancel_scope.cancel()  # stopping the nodes now is no crash
                for n in cluster.nodes:  # with the proxies still up: leadership moves
                    code, by_itself = await cluster.stop(n)
                    if code or not by_itself:
                        say(f"n{n} stopped with exit code {code}" + ("" if by_itself else " (SIGKILLed)"))
                nursery.cancel_scope.cancel()
        await compare_replicas(cluster, hws, report)
        say(
            f"compared {report.replicas['compared']} partitions across replicas: "
            + ("all equal" if not report.replicas["differ"] else f"[red]{len(report.replicas['differ'])} differ[/]")
        )
    finally:
        cluster.close()
    scan_node_logs(cluster, report)
    for n, mb in sorted(report.rss_mb.items()):
        if mb > opts.max_rss_mb:
            report.violation("node memory above the limit", f"n{n} reached {mb:.0f} MB (limit {opts.max_rss_mb:.0f})")
    return report


async def _fuzz(
    opts: Options,
    cluster: ChaosCluster,
    net: ProxyNet,
    routes: Routes,
    canary: Canary,
    report: Report,
    say: Callable[[str], None],
    progress: Callable[[float, str], None] | None,
) -> None:
    """The clients and the canary for `duration`, then the canary's verdict."""
    stop_producing, stop_consuming = trio.Event(), trio.Event()
    start = trio.current_time()
    stop_at = start + opts.duration
    async with trio.open_nursery() as canaries:
        canaries.start_soon(canary.produce, net.bootstrap, stop_producing, report)
        canaries.start_soon(canary.consume, net.bootstrap, stop_consuming, report)
        async with trio.open_nursery() as clients:
            for i in range(opts.clients):
                clients.start_soon(HostileClient(i, opts, cluster, routes, report).run, stop_at)
            while trio.current_time() < stop_at:
                if progress:
                    progress(min(1.0, (trio.current_time() - start) / opts.duration), report.status())
                await trio.sleep(0.5)
            say(f"[{trio.current_time() - start:6.1f}s] duration over; waiting for the clients' last requests")
        if progress:
            progress(1.0, report.status())
        stop_producing.set()
        with trio.move_on_after(opts.canary_wait):
            while any(not canary.seen[v] for v in canary.acked) or len(canary.attempted) - canary.failed > len(
                canary.acked
            ):
                await trio.sleep(0.2)
        stop_consuming.set()
    say(f"[{trio.current_time() - start:6.1f}s] canary: {len(canary.acked)} acknowledged; reading it back afresh")
    check_canary(canary, await read_topic(net.bootstrap, CANARY), report)
