"""TideMQ beside its peers, in one run on one machine: our publish, consume, one message
in flight, end to end and delayed delivery, then the peer brokers from the shared
harness (NATS JetStream, RabbitMQ quorum queue and stream), a table of ratios and
JSON lines.

    scripts/bench compare [--messages 200000] [--size 256] [--sync-messages 5000]
                          [--no-peers] [--peers-dir DIR] [--json FILE]

Ours: three node processes, replication 3, acks=all, one topic of `--partitions` (1:
one log, as a RabbitMQ stream or a JetStream stream is) for publish and consume.
Publish is pipelined from this one process through the bulk face,
`Producer.submit_many` a thousand at a time (`bench_produce.submit_all`), as rstream's
`send_batch` is; consume reads the topic back from its first offset with
`Consumer.getmany` (`bench_consume.read_count`); one in flight is `await producer.send()` in
a loop with fsync=always (p50/p99/p99.9); end to end is produce-to-consumer latency
with the producer paced at `--e2e-rate`; delayed delivery is `--delay-messages` due
within `--delay-max` seconds on the otherwise idle cluster.

Peers: the harness (`--peers-src`, README.md there) is copied to `--peers-dir` and run
with the same message count, size and one-in-flight count; it needs root (apt-get)
the first time and about five minutes on two cores. A second run reuses what the first
installed (Debian packages, its venv, the Go client) unless `--fresh-peers`. Ctrl-C
or `--peers-timeout` stops it: its own trap stops the brokers, or, if that hangs, its
process group is killed (`stop_harness`). See docs/performance.md for what each ratio
compares and why that peer figure is the fair one.
"""

from __future__ import annotations

import argparse
import datetime
import filecmp
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import trio
from _benchlib import ROOT, bench_cluster, console, create_topic, percentile, progress_display, publish
from bench_consume import SETTLE_S, consume
from bench_delay import lateness, summary
from bench_e2e import end_to_end
from bench_produce import produce
from bench_send import send_loop
from rich.progress import Progress
from rich.table import Table

DEFAULT_PEERS_SRC = Path(os.environ.get("TIDEMQ_PEERS_SRC", ROOT.parent / "shared" / "peers"))
DEFAULT_PEERS_DIR = ROOT / "run" / "peers"
# The ports the harness's brokers listen on (NATS client/cluster/http, AMQP, streams,
# Erlang distribution): a busy one means another harness run, whose brokers ours would
# collide with.
PEER_PORTS = (*range(4222, 4225), *range(6222, 6225), *range(8222, 8225), *range(5672, 5675), *range(5552, 5555))
PEER_PORTS += tuple(range(25672, 25675))
PUBLISH_BULK = 1000  # messages per submit_many call in the publish row
STOP_GRACE_S = 60.0  # for the harness's trap to stop its brokers after SIGTERM

# Targets (issue 19): ratios against the like-for-like peer, and latency bounds.
ONE_IN_FLIGHT_P99_MS = 3.0
E2E_P99_MS = 20.0
E2E_PACE_KEPT = 0.95  # the paced run must reach this share of its rate to count
DELAY_P99_MS = 100.0


# -- the peers' output -------------------------------------------------------------------------


@dataclass
class PeerFigure:
    """One line of the harness: which system and client, under which server, what."""

    system: str  # "rstream", "rabbitmq-quorum", "nats-go", "nats-py"
    kind: str  # "publish", "consume", "one_in_flight", or "other"
    test: str
    server: str  # the section it ran under ("NATS nats-server: v2.15.1 R3", "RabbitMQ 3.10.8 3 nodes")
    msgs: int
    secs: float
    msgs_per_s: float

    def brief(self) -> dict:
        return {"system": self.system, "server": self.server, "test": self.test, "msgs_per_s": self.msgs_per_s}


def classify(section: str, test: str) -> tuple[str, str] | None:
    """(system, kind) of a harness test line under the `### ...` section it follows."""
    if section.startswith("NATS"):
        system = "nats-go" if test.startswith("go ") else "nats-py"
        name = test.removeprefix("go ")
        if name.startswith("publish_sync"):
            return system, "one_in_flight"
        if name.startswith("publish_async"):
            return system, "publish"
        if name.startswith("consume_pull") and "AckNone" in name:
            return system, "consume"
        return system, "other"
    if section.startswith("RabbitMQ"):
        stream = "send_wait" in test or "send_batch" in test or "first offset" in test
        system = "rstream" if stream else "rabbitmq-quorum"
        if test.startswith("publish_sync"):
            return system, "one_in_flight"
        if test.startswith("publish_async"):
            return system, "publish"
        if test.startswith("consume") and (stream or "auto-ack" in test):
            return system, "consume"
        return system, "other"
    return None


def server_version(section: str) -> tuple[int, ...]:
    m = re.search(r"v?(\d+(?:\.\d+)+)", section)
    return tuple(int(x) for x in m.group(1).split(".")) if m else ()


@dataclass
class PeerRun:
    """What a harness run printed, parsed; `figures` keeps every test line."""

    figures: list[PeerFigure] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)

    def feed(self, line: str) -> PeerFigure | None:
        """Take one output line; the figure it carried, if any."""
        line = line.strip()
        if line.startswith("### "):
            self.sections.append(line[4:].strip())
            return None
        if not line.startswith("{"):
            return None
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            return None
        if not isinstance(obj, dict) or "test" not in obj or "msgs_per_s" not in obj:
            return None  # e.g. {"stream_leader": ...}
        current = self.sections[-1] if self.sections else ""
        kind = classify(current, obj["test"])
        if kind is None:
            return None
        fig = PeerFigure(
            kind[0], kind[1], obj["test"], current, int(obj["msgs"]), float(obj["secs"]), float(obj["msgs_per_s"])
        )
        self.figures.append(fig)
        return fig

    def newest(self, system: str, kind: str) -> PeerFigure | None:
        """The figure of `system` for `kind`; of several servers (the harness runs
        Debian's and PyPI's nats-server), the newest server's."""
        found = [f for f in self.figures if f.system == system and f.kind == kind]
        return max(found, key=lambda f: server_version(f.server)) if found else None


def parse_harness(lines: Iterable[str]) -> PeerRun:
    run = PeerRun()
    for line in lines:
        run.feed(line)
    return run


# -- the comparison ----------------------------------------------------------------------------


@dataclass
class Row:
    key: str
    measure: str
    ours: dict  # our figures (msgs_per_s, latencies in ms, ...)
    ours_text: str
    target: str
    passed: bool | None  # None: not judged (no peer figure)
    peer: PeerFigure | None = None
    ratio: float | None = None
    info: dict[str, PeerFigure | None] = field(default_factory=dict)
    peer_label: str = ""  # the like-for-like peer, for a ratio row

    def json(self) -> dict:
        return {
            "row": self.key,
            "measure": self.measure,
            "ours": self.ours,
            "ours_text": self.ours_text,
            "peer_label": self.peer_label or None,
            "peer": self.peer.brief() if self.peer else None,
            "ratio": None if self.ratio is None else round(self.ratio, 3),
            "target": self.target,
            "pass": self.passed,
            **{name: (f.brief() if f else None) for name, f in self.info.items()},
        }


def ratio_row(
    key: str,
    measure: str,
    ours: dict,
    peer_label: str,
    peer: PeerFigure | None,
    info: dict[str, PeerFigure | None],
    target: float = 1.0,
) -> Row:
    mine = ours["msgs_per_s"]
    r = mine / peer.msgs_per_s if peer and peer.msgs_per_s > 0 else None
    return Row(
        key,
        measure,
        ours,
        f"{mine:,.0f}/s",
        f"ratio >= {target:g}",
        None if r is None else r >= target,
        peer,
        r,
        info,
        peer_label,
    )


def build_rows(ours: dict[str, dict], peers: PeerRun | None) -> list[Row]:
    """Our figures beside the peers' (None: the peers did not run) and the targets."""

    def peer(system: str, kind: str) -> PeerFigure | None:
        return peers.newest(system, kind) if peers else None

    def info(kind: str) -> dict[str, PeerFigure | None]:
        return {"nats_go": peer("nats-go", kind), "nats_py": peer("nats-py", kind)}

    rows = []
    if "publish" in ours:
        rows.append(
            ratio_row(
                "publish",
                "publish, pipelined from one process",
                ours["publish"],
                "RabbitMQ stream: rstream send_batch",
                peer("rstream", "publish"),
                info("publish"),
            )
        )
    if "consume" in ours:
        rows.append(
            ratio_row(
                "consume",
                "consume from the first offset",
                ours["consume"],
                "RabbitMQ stream: rstream consume",
                peer("rstream", "consume"),
                info("consume"),
            )
        )
    if "one_in_flight" in ours:
        o = ours["one_in_flight"]
        rows.append(
            ratio_row(
                "one_in_flight",
                "one in flight (send, await, repeat)",
                o,
                "RabbitMQ quorum queue: confirm per message",
                peer("rabbitmq-quorum", "one_in_flight"),
                info("one_in_flight"),
            )
        )
        rows.append(
            Row(
                "one_in_flight_latency",
                "one in flight: latency, fsync=always",
                o,
                f"p50 {o['p50_ms']:.2f} / p99 {o['p99_ms']:.2f} / p99.9 {o['p999_ms']:.2f} ms",
                f"p99 < {ONE_IN_FLIGHT_P99_MS:g} ms",
                o["p99_ms"] < ONE_IN_FLIGHT_P99_MS,
            )
        )
    if "e2e" in ours:
        e = ours["e2e"]
        kept = e["msgs_per_s"] >= E2E_PACE_KEPT * e["rate"]
        rows.append(
            Row(
                "e2e",
                f"end to end, paced at {e['rate']:,}/s",
                e,
                f"p50 {e['p50_ms']:.1f} / p99 {e['p99_ms']:.1f} ms at {e['msgs_per_s']:,.0f}/s",
                f"p99 < {E2E_P99_MS:g} ms (pace kept)",
                kept and e["p99_ms"] < E2E_P99_MS,
            )
        )
    if "delay" in ours:
        d = ours["delay"]
        rows.append(
            Row(
                "delay",
                f"delayed: {d['messages']:,} due within {d['max_delay_s']:g} s",
                d,
                f"late p50 {d['p50_late_ms']:.1f} / p99 {d['p99_late_ms']:.1f} / max {d['max_late_ms']:.1f} ms, "
                f"{d['early']} early",
                f"p99 < {DELAY_P99_MS:g} ms, none early",
                d["p99_late_ms"] < DELAY_P99_MS and d["early"] == 0,
            )
        )
    return rows


def _fig(f: PeerFigure | None) -> str:
    return "-" if f is None else f"{f.msgs_per_s:,.0f}/s"


def table(rows: list[Row], peers_note: str) -> Table:
    t = Table(
        "measure",
        "TideMQ",
        "like-for-like peer",
        "peer",
        "ratio",
        "target",
        "result",
        "NATS Go",
        "nats-py",
        title="TideMQ beside its peers (3 nodes, replication 3, acks=all)",
        caption=peers_note,
    )
    for r in rows:
        ratio_kind = bool(r.peer_label)
        result = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "[yellow]no peer[/]"}[r.passed]
        t.add_row(
            r.measure,
            r.ours_text,
            r.peer_label,
            _fig(r.peer) if ratio_kind else "",
            f"{r.ratio:.2f}x" if r.ratio is not None else ("-" if ratio_kind else ""),
            r.target,
            result,
            _fig(r.info.get("nats_go")) if ratio_kind else "",
            _fig(r.info.get("nats_py")) if ratio_kind else "",
        )
    return t


def markdown(lines: list[dict]) -> str:
    """The table of a run's JSON lines (this run's or a saved one) in Markdown, with its
    settings and machine under it: for docs/performance.md and the issue's closing note."""
    verdict = {True: "pass", False: "**FAIL**", None: "no peer"}

    def fig(f: dict | None) -> str:
        return "-" if f is None else f"{f['msgs_per_s']:,.0f}/s"

    out = [
        "| measure | TideMQ | like-for-like peer | peer | ratio | target | result | NATS Go | nats-py |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in (line for line in lines if "row" in line):
        peered = r.get("peer_label") is not None
        out.append(
            "| "
            + " | ".join(
                [
                    r["measure"],
                    r["ours_text"],
                    r["peer_label"] or "",
                    fig(r["peer"]) if peered else "",
                    (f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-") if peered else "",
                    r["target"],
                    verdict[r["pass"]],
                    fig(r.get("nats_go")) if peered else "",
                    fig(r.get("nats_py")) if peered else "",
                ]
            )
            + " |"
        )
    summary = next((line["summary"] for line in lines if "summary" in line), None)
    if summary:
        m = summary["machine"]
        settings = ", ".join(
            f"{k} {v}" for k, v in summary.items() if k not in ("machine", "peers", "passed", "failed", "not_judged")
        )
        out += [
            "",
            f"Settings: {settings}. Machine: {m['cores']} cores, {m['cpu']}, Python {m['python']}, {m['os']}; "
            f"{m['date']}; load average {m['loadavg'][0]:g} at the start, {m['loadavg_end'][0]:g} at the end.",
            f"{summary['peers']}.",
        ]
    return "\n".join(out) + "\n"


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": model or platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "os": platform.platform(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def summary_line(rows: list[Row], settings: dict, peers_note: str, start_machine: dict) -> dict:
    verdicts = [r.passed for r in rows]
    return {
        "summary": {
            **settings,
            "machine": {**start_machine, "loadavg_end": [round(x, 2) for x in os.getloadavg()]},
            "peers": peers_note,
            "passed": verdicts.count(True),
            "failed": verdicts.count(False),
            "not_judged": verdicts.count(None),
        }
    }


# -- our side --------------------------------------------------------------------------------


def latency_ms(sorted_s: list[float], q: float) -> float:
    return round(percentile(sorted_s, q) * 1000, 3)


async def measure_ours(args, progress: Progress, phase: Callable[[str], None]) -> dict[str, dict]:
    size, n = args.size, args.messages
    out: dict[str, dict] = {}

    async def one_in_flight(bootstrap: str) -> None:
        phase("one in flight")
        await create_topic(bootstrap, "send", 1, 3)
        elapsed, lat = await send_loop(bootstrap, "send", args.sync_messages, size, 1, args.warmup, None, progress)
        lat.sort()
        out["one_in_flight"] = {
            "test": "send, one in flight, fsync=always",
            "msgs": len(lat),
            "size": size,
            "secs": round(elapsed, 3),
            "msgs_per_s": round(len(lat) / elapsed),
            "p50_ms": latency_ms(lat, 0.5),
            "p99_ms": latency_ms(lat, 0.99),
            "p999_ms": latency_ms(lat, 0.999),
        }

    phase(f"starting 3 nodes (fsync={args.fsync})")
    async with bench_cluster(fsync=args.fsync) as c:
        phase("publish")
        await create_topic(c.bootstrap, "publish", args.partitions, 3)
        elapsed, lat = await produce(c.bootstrap, "publish", n, size, progress, bulk=PUBLISH_BULK)
        lat.sort()
        out["publish"] = {
            "test": f"submit_many x{PUBLISH_BULK} pipelined, {args.partitions} partition(s), fsync={args.fsync}",
            "msgs": n,
            "size": size,
            "secs": round(elapsed, 3),
            "msgs_per_s": round(n / elapsed),
            "p50_ms": latency_ms(lat, 0.5),
            "p99_ms": latency_ms(lat, 0.99),
        }
        phase("consume")
        await trio.sleep(SETTLE_S)  # followers finish applying and syncing: time the reads alone
        elapsed = await consume(c.bootstrap, "publish", n, progress, bulk=True)
        out["consume"] = {
            "test": "Consumer.getmany from the first offset",
            "msgs": n,
            "size": size,
            "secs": round(elapsed, 3),
            "msgs_per_s": round(n / elapsed),
        }
        if args.fsync == "always":
            await one_in_flight(c.bootstrap)
        if args.e2e_rate > 0:
            phase("end to end")
            await create_topic(c.bootstrap, "e2e", args.partitions, 3)
            elapsed, lat = await end_to_end(c.bootstrap, "e2e", n, size, args.e2e_rate, progress)
            lat.sort()
            out["e2e"] = {
                "test": f"submit to consumer, paced at {args.e2e_rate}/s",
                "msgs": n,
                "size": size,
                "secs": round(elapsed, 3),
                "msgs_per_s": round(n / elapsed),
                "rate": args.e2e_rate,
                "p50_ms": latency_ms(lat, 0.5),
                "p99_ms": latency_ms(lat, 0.99),
            }
        if args.delay_messages > 0:
            phase("delayed messages")
            await create_topic(c.bootstrap, "later", 6, 3)
            await trio.sleep(SETTLE_S)  # on an otherwise idle cluster: followers done with the runs before
            errors, sent = await lateness(
                c.bootstrap, "later", args.delay_messages, args.delay_min, args.delay_max, 1, progress
            )
            out["delay"] = {
                **summary(errors),
                "min_delay_s": args.delay_min,
                "max_delay_s": args.delay_max,
                "submitted_s": round(sent, 2),
            }
    if args.fsync != "always":
        phase("starting 3 nodes (fsync=always)")
        async with bench_cluster(fsync="always") as c:
            await one_in_flight(c.bootstrap)
    return out


# -- the peers' side ---------------------------------------------------------------------------


def ports_in_use(ports: Iterable[int]) -> list[int]:
    busy = []
    for port in ports:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                busy.append(port)
    return busy


def peers_blocker(src: Path, workdir: Path) -> str | None:
    """Why the peers cannot run here, or None."""
    if not (src / "run_all.sh").is_file():
        return f"no peer harness at {src} (--peers-src)"
    installed = (
        shutil.which("nats-server") is not None
        and Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists()
        and (workdir / "gobench" / "jsbench").exists()
    )
    if not installed:
        if shutil.which("apt-get") is None:
            return "the harness installs its brokers with apt-get, and this machine has none"
        if os.geteuid() != 0:
            return "the harness installs its brokers with apt-get, which needs root (run as root once)"
    busy = ports_in_use(PEER_PORTS)
    if busy:
        return f"ports {busy} are in use (another harness run?): not starting brokers beside it"
    return None


def prepare_peers_dir(src: Path, workdir: Path, fresh: bool) -> str:
    """Copy the harness into `workdir`, keeping what an earlier run installed there (its
    venv, the built Go client) unless `fresh`; what was done, in words."""
    if fresh and workdir.exists():
        shutil.rmtree(workdir)
    reused = (workdir / "venv").exists()
    for f in src.rglob("*"):
        if not f.is_file():
            continue
        dest = workdir / f.relative_to(src)
        if dest.exists() and filecmp.cmp(f, dest, shallow=False):
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest)
        if dest.name == "jsbench.go":
            (dest.parent / "jsbench").unlink(missing_ok=True)  # rebuilt from the new source
    return f"reusing {workdir}" if reused else f"fresh copy in {workdir}"


async def stop_harness(proc: trio.Process) -> None:
    """SIGTERM the harness's process group, which holds the brokers it started: its EXIT
    trap stops them. The trap can hang (rabbitmqctl waits for the pid file of a node
    that never started when the run is stopped before RabbitMQ's turn), so after
    STOP_GRACE_S the whole group is killed, and the Erlang port mapper, which detaches
    itself from the group, is told to stop."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with trio.move_on_after(STOP_GRACE_S):
        await proc.wait()
    if proc.returncode is None:
        console.print("[yellow]the peer harness did not stop in time: killing it and its brokers[/]")
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group is left, trap or not
    except ProcessLookupError:
        pass
    await proc.wait()
    if shutil.which("epmd"):
        # It refuses while it still lists a node it has not seen go: ask again a while.
        env = {**os.environ, "ERL_EPMD_ADDRESS": "127.0.0.1"}
        with trio.move_on_after(15):
            while True:
                done = await trio.run_process(
                    ["epmd", "-kill"], env=env, check=False, capture_stdout=True, capture_stderr=True
                )
                said = done.stdout + done.stderr
                if b"Killed" in said or b"Cannot connect" in said:  # stopped now, or not running
                    break
                await trio.sleep(0.5)


async def run_harness(
    workdir: Path, argv: list[str], timeout: float, progress: Progress | None = None
) -> tuple[PeerRun, int | None]:
    """Run `workdir`/run_all.sh with `argv` in a session of its own, its output parsed as
    it comes and kept in `workdir`/last-run.log; (what it printed, its exit status or
    None if `timeout` seconds passed). On a timeout, an error or Ctrl-C it is stopped
    with its brokers before this returns or raises."""
    cmd = ["bash", str(workdir / "run_all.sh"), *argv]
    env = {**os.environ, "MQBENCH": str(workdir), "DEBIAN_FRONTEND": "noninteractive"}
    run = PeerRun()
    task = progress.add_task("peers: installing / starting", total=None) if progress else None
    proc = await trio.lowlevel.open_process(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    assert proc.stdout is not None
    try:
        with (workdir / "last-run.log").open("w") as log, trio.move_on_after(timeout) as scope:
            buf = b""
            async for chunk in proc.stdout:
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    line = raw.decode(errors="replace")
                    log.write(line + "\n")
                    log.flush()
                    fig = run.feed(line)
                    if progress is None:
                        continue
                    if line.startswith("### "):
                        progress.update(task, description=f"peers: {line[4:]}")
                        progress.console.print(f"[dim]{line}[/]")
                    if fig is not None:
                        progress.console.print(f"[dim]  {fig.system}: {fig.test}: {fig.msgs_per_s:,.0f}/s[/]")
            await proc.wait()
    finally:
        if proc.returncode is None:
            with trio.CancelScope(shield=True):
                await stop_harness(proc)
        if progress is not None:
            progress.update(task, visible=False)
    return run, None if scope.cancelled_caught else proc.returncode


async def run_peers(args, progress: Progress, phase: Callable[[str], None]) -> tuple[PeerRun | None, str]:
    """Run the harness (or read `--peers-from`); (what it printed, parsed; a note for the table)."""
    if args.peers_from:
        text = Path(args.peers_from).read_text()
        return parse_harness(text.splitlines()), f"peers: read from {args.peers_from}"
    src, workdir = Path(args.peers_src), Path(args.peers_dir).resolve()
    blocker = peers_blocker(src, workdir)
    if blocker:
        return None, f"peers not run: {blocker}"
    how = prepare_peers_dir(src, workdir, args.fresh_peers)
    phase(f"peers ({how})")
    argv = [str(args.messages), str(args.size), str(args.sync_messages)]
    run, status = await run_harness(workdir, argv, args.peers_timeout, progress)
    log_path = workdir / "last-run.log"
    if status is None:
        return run, f"peers stopped after {args.peers_timeout:g} s (--peers-timeout), partial: see {log_path}"
    if status != 0:
        return run, f"peer harness exited {status}, partial: see {log_path}"
    servers = "; ".join(dict.fromkeys(run.sections))
    return run, f"peers: {servers} ({how}; log {log_path})"


# -- the run -----------------------------------------------------------------------------------


async def main(args) -> int:
    started = machine()
    settings = {
        "messages": args.messages,
        "size": args.size,
        "sync_messages": args.sync_messages,
        "partitions": args.partitions,
        "fsync": args.fsync,
        "e2e_rate": args.e2e_rate,
    }
    with progress_display() as (progress, phase):
        ours = await measure_ours(args, progress, phase)
        if args.no_peers:
            peers, note = None, "peers not run (--no-peers)"
        else:
            peers, note = await run_peers(args, progress, phase)
    rows = build_rows(ours, peers)
    lines = [r.json() for r in rows] + [summary_line(rows, settings, note, started)]
    if peers is not None:
        lines += [{"peer": asdict(f)} for f in peers.figures]
    text = "\n".join(json.dumps(line) for line in lines)
    publish(table(rows, note), text, args.json, args.markdown, lambda: markdown(lines))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scripts/bench compare", description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=200_000, help="publish, consume and end to end (and the peers')")
    p.add_argument("--size", type=int, default=256, help="bytes per message")
    p.add_argument("--sync-messages", type=int, default=5000, help="one-in-flight sends (and the peers')")
    p.add_argument("--partitions", type=int, default=1, help="of our publish and end-to-end topics")
    p.add_argument("--fsync", choices=["always", "interval", "never"], default="always", help="for our throughput")
    p.add_argument("--warmup", type=int, default=100, help="one-in-flight sends not counted")
    p.add_argument("--e2e-rate", type=int, default=50_000, help="msgs/s of the paced end-to-end run (0: skip it)")
    p.add_argument("--delay-messages", type=int, default=10_000, help="delayed messages (0: skip them)")
    p.add_argument("--delay-min", type=float, default=1.0)
    p.add_argument("--delay-max", type=float, default=20.0)
    p.add_argument("--no-peers", action="store_true", help="ours only")
    p.add_argument("--peers-src", default=str(DEFAULT_PEERS_SRC), help="the shared peer harness")
    p.add_argument("--peers-dir", default=str(DEFAULT_PEERS_DIR), help="work dir of the harness (reused)")
    p.add_argument("--fresh-peers", action="store_true", help="recopy the harness (reinstalls its venv, Go client)")
    p.add_argument("--peers-timeout", type=float, default=1200.0, help="seconds before the harness is stopped")
    p.add_argument("--peers-from", help="parse this saved harness output instead of running it")
    p.add_argument("--json", help="also write the JSON lines to this file")
    p.add_argument("--markdown", help="also write the table, settings and machine in Markdown to this file")
    p.add_argument("--markdown-from", help="print the Markdown table of a saved --json file and stop")
    return p


if __name__ == "__main__":
    cli = parser().parse_args()
    if cli.markdown_from:
        lines = [json.loads(line) for line in Path(cli.markdown_from).read_text().splitlines() if line.strip()]
        sys.stdout.write(markdown(lines))
        sys.exit(0)
    try:
        sys.exit(trio.run(main, cli))
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
