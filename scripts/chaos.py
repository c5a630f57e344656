"""Chaos testing: faults against a three-node cluster while clients work, then a verdict.

    scripts/chaos [--duration 300] [--seed S] [--faults kill,pause,partition,...] [--kafka] [--secure]
    scripts/chaos --check RUN_DIR/history.jsonl      # judge an existing history again

Starts three `python -m node` processes on loopback with a fault-injecting TCP proxy on
every link (node to node, client to node), runs the workloads, injects the faults of a
schedule drawn from the seed (printed as they happen), heals, drains, compares the
replicas, and checks the history. Writes `history.jsonl`, `schedule.json`,
`summary.json`, the clients' log and each node's log into the run directory. Exits 1 on
any violation, 2 when the run itself could not finish (or on bad arguments), so a
failing seed is a bug report: `--seed S --duration D --faults F` replays the same
schedule. `--kafka` adds the kafka workload (librdkafka through the nodes' Kafka
listeners) to the chosen ones. `--secure` runs them over TLS as a user the ACLs allow
only the workloads' own names. docs/chaos.md explains the faults, the history and the checks.
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
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.chaoslib.checker import Report, check_history  # noqa: E402
from scripts.chaoslib.history import read_history  # noqa: E402
from scripts.chaoslib.nemesis import FAULTS  # noqa: E402
from scripts.chaoslib.runner import Options, run_chaos  # noqa: E402
from scripts.chaoslib.workloads import DEFAULT_WORKLOADS, WORKLOADS  # noqa: E402

console = Console(highlight=False)


def render(report: Report, console: Console) -> None:
    """The summary: one row per check, then availability and throughput."""
    checks = Table("check", "found", "must be", "", title="checks")
    for v in report.verdicts:
        if not v.exercised:
            checks.add_row(v.name, "-", "0", "[dim]not exercised[/]")
        else:
            checks.add_row(v.name, str(v.count), "0", "[green]ok[/]" if v.ok else "[red]VIOLATION[/]")
    console.print(checks)
    for v in report.violations:
        console.print(f"[red]{v.name}[/] ({v.count}):")
        for e in v.examples:
            console.print(f"    {e}")
    m = report.metrics
    stats = Table("measure", "value", title="availability and throughput")
    stats.add_row(
        "sends: acked / failed / unknown",
        f"{m['acked']} / {m['failed']} / {m['unknown']} ({m['unknown_in_log']} unknown found in the log)",
    )
    stats.add_row("acknowledged writes per second", f"{m['acked_per_second']} over {m['write_seconds']} s")
    window = m["longest_no_ack_window"]
    stats.add_row(
        "longest window with no acknowledged write",
        f"{m['longest_no_ack_seconds']:.2f} s (t={window[0]}..{window[1]})"
        + (f" during {', '.join(m['faults_during_longest_window'])}" if m["faults_during_longest_window"] else ""),
    )
    if m["longest_partition_wait"]:
        pw = m["longest_partition_wait_window"]
        stats.add_row(
            "longest wait on one partition (a write outstanding, none acknowledged)",
            f"{m['longest_partition_wait_seconds']:.2f} s on {m['longest_partition_wait']} (t={pw[0]}..{pw[1]})",
        )
    if m.get("delayed_lateness_ms"):
        lat = m["delayed_lateness_ms"]
        stats.add_row(
            "delayed messages: first delivery after due (ms)",
            f"p50 {lat['p50']}, p99 {lat['p99']}, max {lat['max']} ({lat['delivered']} delivered)",
        )
    stats.add_row("deliveries (redelivered)", f"{m['deliveries']} ({m['redeliveries']})")
    if m.get("pipeline"):
        pipe = m["pipeline"]
        stats.add_row(
            "pipeline: inputs / outputs / dead letters",
            f"{pipe['inputs']} / {pipe['outputs']} / {pipe['dead_letters']}; "
            f"{pipe['zombies']} zombies staged ({pipe['zombies_expired']} expired by the coordinator)",
        )
    if m["client_errors"]:
        stats.add_row(
            "errors that escaped the client library",
            ", ".join(f"{k} {n}" for k, n in sorted(m["client_errors"].items()))
            + f"; first: {m['client_error_example']}",
        )
    stats.add_row("faults injected", ", ".join(f"{k} {n}" for k, n in sorted(m["faults"].items())) or "none")
    console.print(stats)


def parse_faults(spec: str) -> list[str]:
    if spec in ("all", ""):
        return list(FAULTS) if spec == "all" else []
    faults = [f.strip() for f in spec.split(",") if f.strip()]
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown fault(s) {', '.join(unknown)}; choose from {', '.join(FAULTS)}")
    return faults


def main() -> int:
    p = argparse.ArgumentParser(
        prog="scripts/chaos",
        description=__doc__.split("\n\n")[0],
        epilog="faults: " + "; ".join(f"{k}: {v}" for k, v in FAULTS.items()),
    )
    p.add_argument("--duration", type=float, default=300.0, help="seconds of faults and traffic (default 300)")
    p.add_argument("--seed", type=int, default=None, help="schedule seed (default: random, printed)")
    p.add_argument(
        "--faults",
        type=parse_faults,
        default=list(FAULTS),
        help=f"comma-separated subset of {','.join(FAULTS)}; 'all' (default) or '' for none",
    )
    p.add_argument(
        "--workloads",
        default=",".join(DEFAULT_WORKLOADS),
        help=f"comma-separated subset of {','.join(WORKLOADS)} (default: {','.join(DEFAULT_WORKLOADS)})",
    )
    p.add_argument(
        "--kafka",
        action="store_true",
        help="add the kafka workload: librdkafka producers and a consumer group through the nodes' Kafka listeners",
    )
    p.add_argument(
        "--secure",
        action="store_true",
        help="TLS-only nodes that require users; the workloads log in as a user ACLs restrict to their names",
    )
    p.add_argument("--dir", type=Path, default=None, help="run directory (default .chaos/<time>-seed<S>)")
    p.add_argument("--tick-ms", type=int, default=50, help="the nodes' Raft tick (default 50, the node default)")
    p.add_argument("--check", type=Path, metavar="HISTORY", help="only check an existing history.jsonl")
    args = p.parse_args()

    if args.check:
        report = check_history(read_history(args.check))
        render(report, console)
        return 0 if report.ok else 1

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    if args.dir is None:
        runs = ROOT / ".chaos"
        runs.mkdir(exist_ok=True)
        (runs / ".gitignore").write_text("*\n")  # run directories are not source
    run_dir = args.dir or ROOT / ".chaos" / f"{time.strftime('%Y%m%d-%H%M%S')}-seed{seed}"
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if args.kafka and "kafka" not in workloads:
        workloads.append("kafka")
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown:
        p.error(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(sorted(WORKLOADS))}")
    run_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=run_dir / "clients.log", level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    opts = Options(
        run_dir=run_dir,
        duration=args.duration,
        seed=seed,
        faults=args.faults,
        workloads=workloads,
        tick_ms=args.tick_ms,
        secure=args.secure,
    )
    try:
        report = trio.run(run_chaos, opts, console.print)
    except Exception as exc:  # noqa: BLE001 - the run itself broke: say how, judge what was recorded
        console.print(f"[red]the run stopped early: {type(exc).__name__}: {exc}[/]")
        history = run_dir / "history.jsonl"
        if history.exists():
            render(check_history(read_history(history)), console)
        console.print(f"seed {seed}: [red]no verdict[/]; node logs and history in {run_dir}")
        return 2
    render(report, console)
    verdict = "[green]no violations[/]" if report.ok else f"[red]{len(report.violations)} check(s) violated[/]"
    console.print(f"seed {seed}: {verdict}; history in {run_dir / 'history.jsonl'}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
