"""Shared pieces of the client benchmarks: a real three-node cluster on loopback, a topic,
latency percentiles and the results table."""

from __future__ import annotations

import datetime
import os
import secrets
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

# The benches' own process is the client measured: keep hypothesis out of it, as a
# user's application would (tests.cluster imports the node, whose Kafka schemas import
# hypothesis where installed, and that puts trio's scheduler in its test mode; see
# node/__main__.py). Under pytest it is loaded already and this changes nothing.
sys.modules.setdefault("hypothesis", None)  # type: ignore[arg-type]

import trio  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from client import Admin  # noqa: E402
from client.conventions import (  # noqa: E402
    DEFAULT_TIERS_MS,
    HALF_TOPIC,
    OFFSETS_TOPIC,
    RUNS_TOPIC,
    TXN_TOPIC,
    tier_name,
)
from tests.cluster import ProcessCluster  # noqa: E402

console = Console()


BENCH_USER = "bench"
_SECURE_ENV = ("TIDEMQ_TLS_CA", "TIDEMQ_USER", "TIDEMQ_PASSWORD")


@asynccontextmanager
async def bench_cluster(nodes: int = 3, fsync: str = "always", secure: bool = False):
    """Node processes for a bench; with `secure`, TLS only (mutual between nodes) and
    users required: this process's clients log in as a user whose ACLs allow every
    topic, group and transactional id (so the cost measured includes the checks), and
    trust the cluster's CA, through the environment while it runs."""
    with tempfile.TemporaryDirectory(prefix="tidemq-bench-") as tmp:
        c = ProcessCluster(Path(tmp), nodes, fsync=fsync, tick_ms=int(os.environ.get("TICK", "50")))
        before = {k: os.environ.get(k) for k in _SECURE_ENV}
        if secure:
            c.token = secrets.token_urlsafe(16)  # the harness's own requests
            c.extra_args += ["--require-users"]
            os.environ["TIDEMQ_TLS_CA"] = c.secure()
        try:
            for n in c.peers:
                c.start(n)
            await c.wait_ready()
            if secure:
                await _bench_user(c)
            await settle(c)
            yield c
        finally:
            with trio.CancelScope(shield=True):
                await c.aclose()
            for k, v in before.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


# The internal topics a cluster creates at start-up (each partition a Raft group).
START_UP_TOPICS = (OFFSETS_TOPIC, TXN_TOPIC, HALF_TOPIC, RUNS_TOPIC, *(tier_name(t) for t in DEFAULT_TIERS_MS))
QUIET_CPU = 0.10  # of a core, per node, over QUIET_WINDOW_S
QUIET_WINDOW_S = 0.5
CLK_TCK = os.sysconf("SC_CLK_TCK")


async def settle(c: ProcessCluster, timeout: float = 60) -> None:
    """Until the cluster is done starting: the internal topics it creates exist with
    leaders, then every node process is (near) idle. The nodes answer before they have
    created those topics and elected their leaders, about a second of both cores here;
    a figure taken meanwhile measures the start-up, which no peer's figure includes.
    Past `timeout` it says so and goes on."""
    async with Admin(c.bootstrap) as admin:
        with trio.move_on_after(timeout) as late:
            while not set(START_UP_TOPICS) <= set(await admin.list_topics(internal=True)):
                await trio.sleep(0.1)
            for topic in START_UP_TOPICS:
                await admin.wait_for_leaders(topic)
            while any(share > QUIET_CPU for share in await cpu_shares(c, QUIET_WINDOW_S)):
                pass
    if late.cancelled_caught:
        console.print(f"[yellow]the cluster was still busy starting after {timeout:g}s; measuring anyway")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def cpu_shares(c: ProcessCluster, window: float) -> list[float]:
    """Each live node's CPU over the next `window` seconds, in cores (Linux /proc)."""

    def used(pid: int) -> float:
        try:
            return cpu_seconds(pid)
        except OSError:  # gone, or no /proc: counts as idle
            return 0.0

    pids = [p.pid for p in c.procs.values() if p.poll() is None]
    before = [used(pid) for pid in pids]
    await trio.sleep(window)
    return [(used(pid) - b) / window for pid, b in zip(pids, before, strict=True)]


async def _bench_user(c: ProcessCluster) -> None:
    from client import Admin
    from client.protocol import AclBinding

    password = secrets.token_urlsafe(16)
    async with Admin(c.bootstrap, token=c.token) as admin:
        await admin.add_user(BENCH_USER, password)
        who = f"User:{BENCH_USER}"
        await admin.create_acls(
            [AclBinding(who, "cluster", "kafka-cluster", "create")]
            + [AclBinding(who, rtype, "*", "all") for rtype in ("topic", "group", "transactional-id")]
        )
    os.environ.update(TIDEMQ_USER=BENCH_USER, TIDEMQ_PASSWORD=password)


@contextmanager
def progress_display() -> Iterator[tuple[Progress, Callable[[str], None]]]:
    """A bench's progress: bars that vanish when done, and a timestamped line per phase."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        overall = progress.add_task("TideMQ", total=None)

        def phase(what: str) -> None:
            progress.update(overall, description=f"[bold]{what}[/]")
            progress.console.print(f"[dim]{datetime.datetime.now():%H:%M:%S} {what}[/]")

        yield progress, phase


TABLE_WIDTH = 200  # columns of a bench's table when the output is not a terminal


def publish(table, text: str, json_path: str | None, markdown_path: str | None, markdown_text) -> None:
    """A bench's results: its table (full width when piped into a file, a closing note
    or a log, rather than 80 columns), its JSON on stdout and in `json_path`, and its
    Markdown (`markdown_text()`, made only if asked for) in `markdown_path`."""
    out = console if console.is_terminal else Console(width=TABLE_WIDTH)
    out.print(table)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    if json_path:
        Path(json_path).write_text(text + "\n")
    if markdown_path:
        Path(markdown_path).write_text(markdown_text())


async def create_topic(bootstrap: str, name: str, partitions: int, replication: int) -> None:
    async with Admin(bootstrap) as admin:
        await admin.create_topic(name, partitions, replication)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def report(title: str, count: int, size: int, seconds: float, latencies: list[float] | None) -> None:
    table = Table("messages", "bytes each", "seconds", "msgs/s", "MB/s", "p50 ms", "p99 ms", "p99.9 ms", title=title)
    lat = sorted(latencies or [])
    fmt = (lambda q: f"{percentile(lat, q) * 1000:.1f}") if lat else (lambda q: "-")
    table.add_row(
        f"{count:,}",
        str(size),
        f"{seconds:.2f}",
        f"{count / seconds:,.0f}",
        f"{count * size / seconds / 1e6:.1f}",
        fmt(0.5),
        fmt(0.99),
        fmt(0.999),
    )
    console.print(table)
    if lat:
        console.print(f"mean latency {statistics.mean(lat) * 1000:.1f} ms")
