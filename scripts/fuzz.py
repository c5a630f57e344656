"""Hostile-input fuzzing against a live three-node cluster (issue 13).

    scripts/fuzz [--duration 300] [--seed S] [--clients 8] [--max-rss-mb 1024]

Starts three `python -m node` processes on loopback (as a chaos run does), and drives
them with well-formed but hostile requests from `--clients` concurrent clients, each
seeded from `--seed`, beside a canary producer and consumer. At the end: every node is
still up, no request was answered UNKNOWN (an exception the node did not expect) or
left unanswered, the canary lost and duplicated nothing, replicas are byte-identical up
to the committed high watermark, and no node's memory went above `--max-rss-mb`.

Exits 0 when all of that holds, 1 on any violation (printing the seed and the replay
command), 2 when the run itself could not finish. Node logs are in the run directory.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from pathlib import Path

import trio
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from client.errors import ErrorCode  # noqa: E402
from scripts.fuzzlib.runner import Options, Report, run_fuzz  # noqa: E402
from scripts.fuzzlib.shapes import RAW, SHAPES  # noqa: E402


def replay_command(opts: Options) -> str:
    extra = f" --max-rss-mb {opts.max_rss_mb:g}" if opts.max_rss_mb != 1024 else ""
    return f"scripts/fuzz --seed {opts.seed} --duration {opts.duration:g} --clients {opts.clients}{extra}"


def render(report: Report, opts: Options, console: Console) -> None:
    """The summary: what was sent and how the nodes took it, then the checks."""
    table = Table("measure", "value", title=f"fuzz run, seed {report.seed}", show_lines=False)
    table.add_row("shapes exercised", f"{len(report.shapes)} of {len(SHAPES) + len(RAW)}")
    table.add_row("requests (well-formed)", str(sum(report.outcomes.values())))
    table.add_row("answered normally", str(report.outcomes["ok"] + report.outcomes["sent"]))
    refusals = sorted(((k, n) for k, n in report.outcomes.items() if k in ErrorCode.__members__), key=lambda kv: -kv[1])
    table.add_row("typed refusals by code", "\n".join(f"{k}: {n}" for k, n in refusals) or "none")
    others = [
        f"{k}: {n}" for k, n in report.outcomes.items() if k not in ErrorCode.__members__ and k not in ("ok", "sent")
    ]
    if others:
        table.add_row("[red]closed / unanswered / other[/]", "\n".join(others))
    raw = sorted(report.raw.items(), key=lambda kv: -kv[1])
    table.add_row(f"raw frames ({sum(report.raw.values())})", "\n".join(f"{k}: {n}" for k, n in raw[:12]) or "none")
    c = report.canary
    if c:
        table.add_row(
            "canary",
            f"{c['acked']} acknowledged, {c['failed']} failed sends, {c['read']} read back; "
            f"lost {c['lost']}, duplicated {c['duplicated']}",
        )
        table.add_row("canary live consumer", f"saw {c['live consumer saw']} ({c['live redeliveries']} redelivered)")
    if report.replicas:
        table.add_row(
            "replicas compared", f"{report.replicas['compared']} partitions, {len(report.replicas['differ'])} differ"
        )
    table.add_row(
        "max node RSS (MB)",
        ", ".join(f"n{n} {mb:.0f}" for n, mb in sorted(report.rss_mb.items())) + f" (limit {opts.max_rss_mb:g})",
    )
    logged = [f"n{n}: {line}" for n, lines in sorted(report.node_log.items()) for line in lines[:3]]
    table.add_row("node log errors (first per node)", "\n".join(logged) or "none")
    console.print(table)
    checks = Table("violation", "count", "examples", title="violations" if report.violations else None)
    for kind, n in report.violations.most_common():
        checks.add_row(f"[red]{kind}[/]", str(n), "\n".join(report.examples.get(kind, [])))
    if report.violations:
        console.print(checks)
    for text in report.exits.values():
        console.print(text, markup=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=300.0, help="seconds of hostile traffic (default 300)")
    p.add_argument("--seed", type=int, default=None, help="seed of every client (default: random, printed)")
    p.add_argument("--clients", type=int, default=8, help="concurrent hostile clients (default 8)")
    p.add_argument("--max-rss-mb", type=float, default=1024.0, help="node memory limit in MB (default 1024)")
    p.add_argument(
        "--fsync",
        choices=("always", "interval", "never"),
        default="never",
        help="the nodes' fsync policy (default never: no node is killed here)",
    )
    p.add_argument("--dir", type=Path, default=None, help="run directory (default .fuzz/<time>-seed<S>)")
    args = p.parse_args(argv)
    if args.clients < 1 or args.duration <= 0:
        p.error("--clients must be >= 1 and --duration > 0")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    if args.dir is None:
        (ROOT / ".fuzz").mkdir(exist_ok=True)
        (ROOT / ".fuzz" / ".gitignore").write_text("*\n")  # run directories are not source
    run_dir = args.dir or ROOT / ".fuzz" / f"{time.strftime('%Y%m%d-%H%M%S')}-seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=run_dir / "clients.log", level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    opts = Options(
        run_dir=run_dir,
        seed=seed,
        duration=args.duration,
        clients=args.clients,
        max_rss_mb=args.max_rss_mb,
        fsync=args.fsync,
    )
    console = Console(highlight=False)
    console.print(f"seed {seed}: replay with [bold]{replay_command(opts)}[/]")
    columns = (
        TextColumn("fuzzing"),
        BarColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    )
    last_line = [0.0]

    def plain_progress(fraction: float, status: str) -> None:  # no terminal: a line every 15 s
        if time.monotonic() - last_line[0] >= 15 or fraction >= 1.0:
            last_line[0] = time.monotonic()
            console.print(f"{fraction * 100:5.1f}% {status}")

    try:
        with Progress(*columns, console=console, disable=not console.is_terminal) as bar:
            task = bar.add_task("fuzz", total=1.0, status="starting")

            def progress(fraction: float, status: str) -> None:
                if console.is_terminal:
                    bar.update(task, completed=fraction, status=status)
                else:
                    plain_progress(fraction, status)

            report = trio.run(run_fuzz, opts, console.print, progress)
    except Exception as exc:  # noqa: BLE001 - the run itself broke: say how
        console.print(f"[red]the run stopped early: {type(exc).__name__}: {exc}[/]")
        console.print(f"seed {seed}: [red]no verdict[/]; node logs in {run_dir}; replay: {replay_command(opts)}")
        return 2
    render(report, opts, console)
    if report.ok:
        console.print(f"seed {seed}: [green]no violations[/]; node logs in {run_dir}")
        return 0
    console.print(
        f"seed {seed}: [red]{sum(report.violations.values())} violation(s)[/]; node logs in {run_dir}\n"
        f"replay: [bold]{replay_command(opts)}[/]"
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
