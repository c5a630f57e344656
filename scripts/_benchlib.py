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

import trio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from client import Admin  # noqa: E402
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
            yield c
        finally:
            with trio.CancelScope(shield=True):
                await c.aclose()
            for k, v in before.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


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
