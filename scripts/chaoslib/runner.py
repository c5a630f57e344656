"""One chaos run from start to verdict: cluster and proxies up, workloads on, the
nemesis's schedule, heal, drain, replica comparison, every process stopped, the checker.

    report = await run_chaos(Options(duration=120, seed=7, run_dir=Path("...")), say=print)

Everything the run does is bounded in time: setup, each fault (its duration), each
settle, the drain and the replica comparison have their own limits and the whole run an
overall one; whatever happens, `finally` kills every node process the run started.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import trio

from scripts.chaoslib.checker import Report, check_history
from scripts.chaoslib.cluster import ChaosCluster, partition_path
from scripts.chaoslib.history import FORMAT_VERSION, History, read_history
from scripts.chaoslib.nemesis import FAULTS, Nemesis, make_schedule
from scripts.chaoslib.proxy import ProxyNet
from scripts.chaoslib.workloads import DEFAULT_WORKLOADS, WORKLOADS, Context
from segments import Log, LogConfig


@dataclass
class Options:
    run_dir: Path
    duration: float = 300.0
    seed: int = 0
    faults: list[str] = field(default_factory=lambda: list(FAULTS))
    workloads: list[str] = field(default_factory=lambda: list(DEFAULT_WORKLOADS))
    nodes: int = 3
    tick_ms: int = 50
    settle_timeout: float = 30.0  # before each fault, after the last
    drain_timeout: float = 150.0  # workloads finishing after `stop`
    setup_timeout: float = 90.0
    secure: bool = False  # TLS only, users and ACLs: the workloads run as a user allowed only their own names


async def run_chaos(opts: Options, say: Callable[[str], None] = print) -> Report:
    """Run, then check the history; the report says what (if anything) went wrong."""
    unknown = set(opts.workloads) - set(WORKLOADS)
    if unknown:
        raise ValueError(f"unknown workloads {sorted(unknown)}; choose from {', '.join(sorted(WORKLOADS))}")
    run_dir = opts.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    schedule = make_schedule(opts.seed, opts.duration, opts.faults, opts.nodes)
    (run_dir / "schedule.json").write_text(json.dumps([s.to_json() for s in schedule], indent=1))
    history = History(run_dir / "history.jsonl")
    history.record(
        "run",
        t=0.0,
        version=FORMAT_VERSION,
        seed=opts.seed,
        duration=opts.duration,
        faults=opts.faults,
        workloads=opts.workloads,
        nodes=opts.nodes,
        tick_ms=opts.tick_ms,
    )
    history.record("schedule", t=0.0, steps=[s.to_json() for s in schedule])
    say(
        f"seed {opts.seed}: {len(schedule)} faults over {opts.duration:.0f}s ({', '.join(opts.faults) or 'none'}); "
        f"run directory {run_dir}"
    )
    kafka = any(WORKLOADS[name].needs_kafka for name in opts.workloads)
    # Membership steps each need a spare node; moves (and membership) a node beyond the
    # replication factor, which one spare joined before the workloads start gives.
    elastic = "move" in opts.faults or "membership" in opts.faults
    spares = elastic + min(sum(s.kind == "membership" for s in schedule), MAX_SPARES)
    cluster = ChaosCluster.on_loopback(run_dir, opts.nodes, kafka=kafka, tick_ms=opts.tick_ms, spares=spares)
    if opts.secure:
        cluster.secure()
    net = cluster.net
    saved_env = {k: os.environ.get(k) for k in SECURE_ENV}
    limit = opts.setup_timeout + opts.duration + 2 * opts.settle_timeout + opts.drain_timeout + 180
    try:
        with trio.fail_after(limit):
            async with trio.open_nursery() as nursery:
                await cluster.start_all(nursery, opts.setup_timeout)
                if elastic:
                    await grow(cluster, history, opts.setup_timeout, say)
                with trio.fail_after(opts.setup_timeout):
                    kafka_security = await secure_clients(cluster) if opts.secure else {}
                    ctx = Context(
                        net.bootstrap,
                        history,
                        opts.seed,
                        say,
                        kafka_bootstrap=net.kafka_bootstrap,
                        kafka_security=kafka_security,
                    )
                    workloads = [WORKLOADS[name](ctx) for name in opts.workloads]
                    for w in workloads:
                        await w.setup()
                    await cluster.settle(opts.settle_timeout)
                say(
                    f"cluster up (nodes {', '.join(f'n{n}={a}' for n, a in cluster.real.items())}); clients via {net.bootstrap}"
                    + (f"; Kafka clients via {net.kafka_bootstrap}" if kafka else "")
                )
                await _chaos(opts, cluster, net, history, workloads, schedule, say)
                await compare_replicas(cluster, history, opts.settle_timeout, say)
                record_node_errors(cluster, history, say)
                nursery.cancel_scope.cancel()
        history.record("end")
    finally:
        cluster.close()
        history.close()
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    report = check_history(read_history(history.path))
    (run_dir / "summary.json").write_text(
        json.dumps(
            {
                "seed": opts.seed,
                "ok": report.ok,
                "metrics": report.metrics,
                "checks": [
                    {"name": v.name, "count": v.count, "exercised": v.exercised, "examples": v.examples}
                    for v in report.verdicts
                ],
            },
            indent=1,
        )
    )
    return report


MAX_SPARES = 4


async def grow(cluster: ChaosCluster, history: History, timeout: float, say: Callable[[str], None]) -> None:
    """One spare joins before the workloads: replicas then have somewhere to move."""
    joining = await cluster.join_spare()
    assert joining is not None
    node, addr = joining
    history.record("node", node=node, event="start", joined=True)
    with trio.fail_after(timeout):
        async with cluster.admin() as admin:
            await admin.add_node(node, addr, wait=timeout)
    say(f"node {node} joined: {len(cluster.nodes)} nodes")


async def _chaos(
    opts: Options,
    cluster: ChaosCluster,
    net: ProxyNet,
    history: History,
    workloads: list,
    schedule: list,
    say: Callable[[str], None],
) -> None:
    nemesis = Nemesis(cluster, net, history, say, opts.settle_timeout)
    stop = trio.Event()
    history.start()
    history.record("phase", name="start")
    async with trio.open_nursery() as work:
        for w in workloads:
            work.start_soon(w.run, stop)
        with trio.move_on_after(opts.duration):
            await nemesis.run(schedule)
            await trio.sleep_forever()
        with trio.CancelScope(shield=True):
            await nemesis.heal()
        history.record("phase", name="healed")
        settled, seconds, missing = await cluster.settle(opts.settle_timeout)
        history.record("settle", step=None, ok=settled, caught_up=False, seconds=seconds, missing=missing[:10])
        say(
            f"[{history.now():7.2f}s] faults over, all healed; cluster settled: {settled} ({seconds:.1f}s)"
            + (f" still missing {', '.join(missing[:5])}" if missing else "")
        )
        history.record("phase", name="writes_stopped")
        stop.set()
        work.cancel_scope.deadline = trio.current_time() + opts.drain_timeout
    if work.cancel_scope.cancelled_caught:
        say(f"[red]workloads did not drain within {opts.drain_timeout:.0f}s[/]")
        history.record("drain", workload="*", ok=False, detail=f"cancelled after {opts.drain_timeout:.0f}s")
    history.record("phase", name="drained")
    say(f"[{history.now():7.2f}s] workloads drained")


async def compare_replicas(
    cluster: ChaosCluster, history: History, settle_timeout: float, say: Callable[[str], None]
) -> None:
    """Stop every node gracefully and compare each partition's committed bytes (up to the
    high watermark its leader reported before the stop) across its replicas."""
    settled, seconds, missing = await cluster.settle(settle_timeout, caught_up=True)
    parts = await cluster.partitions()
    history.record(
        "settle",
        step=None,
        ok=settled,
        caught_up=True,
        seconds=seconds,
        missing=missing[:10],
        views={f"{t}-{p}": parts[(t, p)] for t, p in parts if f"{t}-{p}" in missing[:10]},
    )
    for n in cluster.nodes:
        code, by_itself = await cluster.stop(n)
        history.record("node_stop", node=n, code=code, by_itself=by_itself, step=None)
    differ = 0
    for (topic, p), info in sorted(parts.items()):
        if info["hw"] is None:
            history.record(
                "replicas",
                topic=topic,
                partition=p,
                high_watermark=None,
                equal=True,
                compared=False,
                detail="no leader answered before the stop",
            )
            continue
        result = await trio.to_thread.run_sync(
            _compare, [partition_path(cluster.data_dir(n), topic, p) for n in info["replicas"]], info["hw"]
        )
        history.record(
            "replicas", topic=topic, partition=p, high_watermark=info["hw"], compared=True, settled=settled, **result
        )
        differ += not result["equal"]
    say(
        f"[{history.now():7.2f}s] compared {len(parts)} partitions across replicas: "
        + ("all equal" if not differ else f"[red]{differ} differ[/]")
    )


_TRACEBACK = re.compile(r"^([\s|]*)Traceback \(most recent call last\):")


def exception_lines(lines: Iterable[str]) -> Iterator[str]:
    """The exception line ending each traceback in a log (`trio.EndOfChannel`,
    `raft.log.RaftInvariantError: commit 6 ...`), also inside exception groups' boxes:
    it is the first line after the frames at the traceback header's own indentation."""
    col: int | None = None
    for line in lines:
        line = line.rstrip("\n")
        if m := _TRACEBACK.match(line):
            col = len(m.group(1))
        elif col is not None and len(line) > col and not line[col].isspace() and set(line[:col]) <= set(" |"):
            yield line[col:].strip()
            col = None


SECURE_ENV = ("TIDEMQ_TLS_CA", "TIDEMQ_USER", "TIDEMQ_PASSWORD", "TIDEMQ_TOKEN")
CHAOS_USER = "chaos"


async def secure_clients(cluster: ChaosCluster) -> dict[str, str]:
    """The workloads' user, allowed everything on names starting `chaos-` (their topics,
    groups, transactional and producer-group ids) and to create topics, nothing else;
    every client of this process logs in as it over TLS (the environment the client
    library reads). Returns librdkafka's settings for the same."""
    from client import Admin
    from client.protocol import AclBinding

    assert cluster.tls is not None
    password = secrets.token_urlsafe(16)
    async with Admin(cluster.net.bootstrap, token=cluster.token, tls_ca=cluster.tls["ca"]) as admin:
        await admin.add_user(CHAOS_USER, password)
        grants = [AclBinding(f"User:{CHAOS_USER}", "cluster", "kafka-cluster", "create")]
        for rtype in ("topic", "group", "transactional-id"):
            grants.append(AclBinding(f"User:{CHAOS_USER}", rtype, "chaos-", "all", "prefixed"))
        await admin.create_acls(grants)
    os.environ.pop("TIDEMQ_TOKEN", None)
    os.environ.update(TIDEMQ_TLS_CA=cluster.tls["ca"], TIDEMQ_USER=CHAOS_USER, TIDEMQ_PASSWORD=password)
    return {
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": cluster.tls["ca"],
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": CHAOS_USER,
        "sasl.password": password,
    }


def record_node_errors(cluster: ChaosCluster, history: History, say: Callable[[str], None]) -> None:
    """Scan every node's log for ERROR lines and the exceptions under them: a clean
    run logs none (faults are expected; a node failing while handling them is not)."""
    for n in sorted({*cluster.nodes, *cluster.left}):  # (the nodes removed on the way too)
        path = cluster.run_dir / f"n{n}" / "node.log"
        if not path.exists():
            continue
        with open(path, errors="replace") as f:
            lines = f.readlines()
        errors = Counter(line.split(" ERROR ", 1)[1].strip()[:160] for line in lines if " ERROR " in line)
        exceptions = Counter(e[:200] for e in exception_lines(lines))
        if errors or exceptions:
            history.record(
                "node_errors",
                node=n,
                errors=sum(errors.values()),
                lines=errors.most_common(20),
                exceptions=exceptions.most_common(20),
            )
            say(
                f"[red]n{n} logged {sum(errors.values())} error(s)[/]: "
                + "; ".join(e for e, _ in (exceptions.most_common(2) or errors.most_common(2)))
            )


def _compare(paths: list[Path], hw: int) -> dict:
    """Read each replica's log (`<run>/n<i>/data/<topic>-<p>`) from the latest common log
    start to `hw` and compare the batches byte for byte."""
    opened: list[tuple[str, Log]] = []
    try:
        for path in paths:
            opened.append((path.parent.parent.name, Log.open(str(path), LogConfig(fsync="never"))))
        start = max(log.log_start_offset for _, log in opened)
        batches: dict[str, list[tuple[int, bytes]]] = {}
        lagging = []
        for name, log in opened:
            if log.next_offset < hw:
                lagging.append(name)
            elif start < hw:
                batches[name] = [(h.base_offset, bytes(d)) for h, d in log.batches(start) if h.base_offset < hw]
            else:
                batches[name] = []
    finally:
        for _, log in opened:
            log.close()
    digests = {name: hashlib.sha256(b"".join(d for _, d in bs)).hexdigest()[:16] for name, bs in batches.items()}
    first_difference = None
    if len(set(digests.values())) > 1:
        names = list(batches)
        for i, (offset, data) in enumerate(batches[names[0]]):
            if any(i >= len(batches[n]) or batches[n][i] != (offset, data) for n in names[1:]):
                first_difference = offset
                break
        else:
            first_difference = min(
                bs[len(batches[names[0]])][0] for bs in batches.values() if len(bs) > len(batches[names[0]])
            )
    return {
        "equal": len(set(digests.values())) <= 1,
        "start": start,
        "digests": digests,
        "lagging": lagging,
        "first_difference": first_difference,
    }
