"""Run the deterministic Raft simulator over many seeds (see raft/simulator.py).

    scripts/simulate --seeds 10000 [--nodes K] [--start S] [--jobs J] [--storage KIND]
    scripts/simulate --seed 1234 --trace      # replay one seed and print its trace

Each seed is a whole simulated world; a failing seed replays exactly, so the
seed number is the bug report. Every seed drives its cores through the production
Ready driver (raft/driver.py). `--storage` picks the disks under it:

- `segments`: the node's own `LogStorage` over a segments log on a simulated file
  system that loses unsynced data and tears writes on a crash (node/simstorage.py);
  about half the model's speed;
- `model`: the fast in-memory model of that storage (raft/simdisk.py);
- `mixed` (the default): even seeds `segments`, odd seeds `model`, so a sweep covers
  the production path on half its seeds and the model's speed on the rest.

Prints a summary: seeds run, steps, faults injected by kind, violations (with the
seed and the last events before each).
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from node.simstorage import SegmentsDisks  # noqa: E402
from raft.simulator import SimOptions, SimResult, run_seed  # noqa: E402

STORAGES = ("mixed", "segments", "model")
_nodes: int | None = None
_storage = "mixed"


def storage_of(seed: int, storage: str) -> str:
    """Which disks a seed runs on (`mixed`: even seeds the production storage)."""
    if storage == "mixed":
        return "segments" if seed % 2 == 0 else "model"
    return storage


def _init(nodes: int | None, storage: str = "mixed") -> None:
    global _nodes, _storage
    _nodes, _storage = nodes, storage


def _run(seed: int) -> SimResult:
    disks = SegmentsDisks() if storage_of(seed, _storage) == "segments" else None
    return run_seed(seed, SimOptions(nodes=_nodes, disks=disks))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=1000, help="how many seeds to run (default 1000)")
    ap.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    ap.add_argument("--seed", type=int, help="run just this seed")
    ap.add_argument(
        "--nodes", type=int, choices=range(3, 8), metavar="3..7", help="nodes per world (default: drawn per seed)"
    )
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default: all cores)")
    ap.add_argument(
        "--storage",
        choices=STORAGES,
        default="mixed",
        help="segments: the node's LogStorage on a simulated file system; model: the in-memory model; "
        "mixed (default): even seeds segments, odd seeds model",
    )
    ap.add_argument("--trace", action="store_true", help="print the trace tail even when a seed passes (with --seed)")
    args = ap.parse_args(argv)
    console = Console(stderr=False)

    if args.seed is not None:
        seeds = [args.seed]
    else:
        seeds = list(range(args.start, args.start + args.seeds))

    started = time.monotonic()
    steps = 0
    faults: collections.Counter[str] = collections.Counter()
    failures: list[SimResult] = []
    elections = proposals = committed = snapshots = 0
    quiet_seeds = quiesced = peer_downs = 0
    with Progress(
        TextColumn("[bold]simulating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[red]{task.fields[bad]} violations"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("seeds", total=len(seeds), bad=0)
        jobs = max(1, min(args.jobs, len(seeds)))
        if jobs == 1:
            _init(args.nodes, args.storage)
            results = map(_run, seeds)
            pool = None
        else:
            pool = multiprocessing.get_context("fork").Pool(
                jobs, initializer=_init, initargs=(args.nodes, args.storage)
            )
            results = pool.imap_unordered(_run, seeds, chunksize=4)
        try:
            for r in results:
                steps += r.steps
                faults.update(r.faults)
                elections += r.elections
                proposals += r.proposals
                committed += r.committed
                snapshots += r.snapshots
                quiet_seeds += r.quiesced > 0
                quiesced += r.quiesced
                peer_downs += r.peer_downs
                if not r.ok:
                    failures.append(r)
                progress.update(task, advance=1, bad=len(failures))
        finally:
            if pool is not None:
                pool.close()
                pool.join()
    elapsed = time.monotonic() - started

    table = Table(title="Raft simulation", show_header=False)
    table.add_row("seeds run", f"{len(seeds)} (from {seeds[0]})")
    table.add_row("nodes", str(args.nodes) if args.nodes else "3..7 per seed")
    on_segments = sum(storage_of(s, args.storage) == "segments" for s in seeds)
    table.add_row(
        "storage", f"{args.storage}: {on_segments} seeds on segments, {len(seeds) - on_segments} on the model"
    )
    table.add_row("steps (events)", f"{steps:,}")
    table.add_row("faults injected", f"{sum(faults.values()):,}")
    for k, v in sorted(faults.items()):
        table.add_row(f"  {k}", f"{v:,}")
    table.add_row("elections", f"{elections:,}")
    table.add_row("proposals / committed offsets", f"{proposals:,} / {committed:,}")
    table.add_row("snapshots installed", f"{snapshots:,}")
    table.add_row("leaders gone quiet (in seeds)", f"{quiesced:,} ({quiet_seeds:,})")
    table.add_row("peers found down or restarted", f"{peer_downs:,}")
    table.add_row("violations", f"[red]{len(failures)}" if failures else "[green]0")
    if failures:
        table.add_row("failing seeds", ", ".join(str(r.seed) for r in sorted(failures, key=lambda r: r.seed)))
    table.add_row("wall time", f"{elapsed:.1f} s ({len(seeds) / elapsed:.1f} seeds/s)")
    console.print(table)

    for r in sorted(failures, key=lambda r: r.seed)[:5]:
        console.print(f"\n[red bold]seed {r.seed}[/] ({r.nodes} nodes): {r.violation}")
        console.print(
            f"replay: scripts/simulate --seed {r.seed} --storage {args.storage}"
            + (f" --nodes {args.nodes}" if args.nodes else "")
        )
        console.print("\n".join(r.trace[-25:]), markup=False, highlight=False)
    if args.seed is not None and args.trace and not failures:
        console.print("(seed passed; the trace is recorded only on failure)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
