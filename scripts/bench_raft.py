"""Throughput of the Raft core alone: proposals committed per second.

Three cores in the deterministic simulator over a perfect network (no loss, no
faults, zero-latency disks), so the figure is the cost of the Raft state
machines themselves: stepping, Ready/advance, log bookkeeping and the safety
bookkeeping of applied offsets, with no sockets, no fsync and no trio (and the
simulator's safety checker off; --check turns it on). A proposal is one record
batch; the node's real cost per batch (CRC, disk, network) comes on top.

    scripts/bench raft [--ticks 200] [--per-tick 200] [--size 256] [--nodes 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from raft.simulator import run_load  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ticks", type=int, default=200, help="ticks of sustained load (default 200)")
    ap.add_argument(
        "--per-tick", type=int, action="append", help="proposals per tick (repeatable; default 10, 100, 500)"
    )
    ap.add_argument("--size", type=int, default=256, help="bytes per proposed batch (default 256)")
    ap.add_argument("--count", type=int, default=10, help="records per batch (default 10)")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--check", action="store_true", help="keep the simulator's safety checker on")
    args = ap.parse_args(argv)
    checker = "checker on" if args.check else "checker off"
    title = f"Raft core throughput: {args.nodes} nodes, perfect network, {args.size}-byte batches, {checker}"
    table = Table(title=title)
    for col in ("per tick", "proposals", "offsets", "steps", "wall s", "proposals/s", "records/s"):
        table.add_column(col, justify="right")
    for per_tick in args.per_tick or [10, 100, 500]:
        start = time.perf_counter()
        proposed, committed, steps = run_load(
            seed=1,
            nodes=args.nodes,
            ticks=args.ticks,
            per_tick=per_tick,
            size=args.size,
            count=args.count,
            check=args.check,
        )
        wall = time.perf_counter() - start
        table.add_row(
            str(per_tick),
            f"{proposed:,}",
            f"{committed:,}",
            f"{steps:,}",
            f"{wall:.2f}",
            f"{proposed / wall:,.0f}",
            f"{proposed * args.count / wall:,.0f}",
        )
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
