"""The time and throughput of a replica move, on real node processes on loopback.

    scripts/bench move [--mb 100] [--throttle MB/s] [--load 2000] [--fsync always]

Three nodes and a fourth that joins (`--join`, `Admin.add_node`); one partition of
replication 3 filled with `--mb` MB of 1 KiB messages; then `Admin.reassign` moves it
off its leader's node onto the new one (a full copy: the new replica catches up as a
learner, is promoted, the old leader hands over and leaves). Meanwhile a producer keeps
writing to the partition, one send at a time and at most `--load` a second, so the figures say
what clients see during a move: sends failed, and their latency before and during it.
Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from client import Admin, Producer  # noqa: E402
from client.errors import TideMQError  # noqa: E402
from tests.cluster import ProcessCluster, admit  # noqa: E402

console = Console()
SIZE = 1024


def pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(int(len(xs) * q), len(xs) - 1)] if xs else float("nan")


async def run(mb: int, throttle: float, load: int, fsync: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="tidemq-move-") as tmp:
        c = ProcessCluster(Path(tmp), 3, fsync=fsync, tick_ms=50)
        try:
            for n in c.peers:
                c.start(n)
            await c.wait_ready()
            async with Admin(c.bootstrap, request_timeout=60) as admin:
                await admin.create_topic("move", 1, 3)
                count = mb * 1024 * 1024 // SIZE
                with console.status(f"writing {mb} MB to move-0...") as status:
                    async with Producer(c.bootstrap) as producer:
                        for i in range(0, count, 1000):
                            await producer.submit_many("move", [b"v" * SIZE] * min(1000, count - i))
                            status.update(f"writing {mb} MB to move-0: {i * SIZE / 1e6:.0f} MB")
                        await producer.flush()
                n4 = c.add_node()
                c.start(n4)
                await admit(admin, c, n4)
                info = await admin.describe_topic("move")
                before = info.partitions[0]
                target = [n4, *(r for r in before.replicas if r != before.leader)]
                latencies: dict[str, list[float]] = {"before": [], "during": []}
                failed = {"before": 0, "during": 0}
                phase = "before"
                stop = trio.Event()

                async def writer() -> None:
                    async with Producer(c.bootstrap, delivery_timeout=30) as p:
                        while not stop.is_set():
                            t0 = time.perf_counter()
                            try:
                                await p.send("move", b"w" * SIZE)
                                latencies[phase].append(time.perf_counter() - t0)
                            except TideMQError:
                                failed[phase] += 1
                            await trio.sleep(max(0.0, 1 / load - (time.perf_counter() - t0)))

                async with trio.open_nursery() as nursery:
                    if load:
                        nursery.start_soon(writer)
                    await trio.sleep(3.0)
                    phase = "during"
                    with console.status("moving...") as status:

                        def show(moves) -> None:
                            lag = ", ".join(f"node {n} {b:,} behind" for m in moves for n, b in m.behind.items())
                            status.update(f"moving move-0 {before.replicas} -> {target}: {lag or 'switching over'}")

                        t0 = time.perf_counter()
                        await admin.reassign("move", 0, target, throttle=int(throttle * 1e6), wait=3600, progress=show)
                        took = time.perf_counter() - t0
                    stop.set()
            return {
                "bench": "move",
                "mb": mb,
                "throttle_mb_s": throttle or None,
                "fsync": fsync,
                "seconds": round(took, 2),
                "mb_per_s": round(mb * 1.048576 / took, 1),
                "from": before.replicas,
                "to": target,
                "load_per_s": load,
                "sends_before": len(latencies["before"]),
                "sends_during": len(latencies["during"]),
                "failed_during": failed["during"],
                "p50_ms_before": round(statistics.median(latencies["before"]) * 1000, 2)
                if latencies["before"]
                else None,
                "p99_ms_before": round(pct(latencies["before"], 0.99) * 1000, 2) if latencies["before"] else None,
                "p50_ms_during": round(statistics.median(latencies["during"]) * 1000, 2)
                if latencies["during"]
                else None,
                "p99_ms_during": round(pct(latencies["during"], 0.99) * 1000, 2) if latencies["during"] else None,
                "max_ms_during": round(max(latencies["during"]) * 1000, 2) if latencies["during"] else None,
            }
        finally:
            await c.aclose()


def main() -> None:
    p = argparse.ArgumentParser(prog="scripts/bench move", description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=int, default=100, help="MB in the partition before the move (default 100)")
    p.add_argument("--throttle", type=float, default=0.0, metavar="MB/s", help="the move's throttle (default none)")
    p.add_argument("--load", type=int, default=2000, help="sends/s to the partition during the move (0: none)")
    p.add_argument("--fsync", choices=["always", "interval", "never"], default="always")
    args = p.parse_args()
    r = trio.run(run, args.mb, args.throttle, args.load, args.fsync)
    table = Table("measure", "value", title="a replica move: one partition onto a node that just joined")
    table.add_row("moved", f"{r['mb']} MB, replicas {r['from']} -> {r['to']} (the leader's node leaves)")
    table.add_row(
        "took",
        f"{r['seconds']} s: {r['mb_per_s']} MB/s" + (f" (throttle {args.throttle} MB/s)" if args.throttle else ""),
    )
    if args.load:
        table.add_row("sends during the move", f"{r['sends_during']:,} ok, {r['failed_during']} failed")
        table.add_row("send latency before", f"p50 {r['p50_ms_before']} / p99 {r['p99_ms_before']} ms")
        table.add_row(
            "send latency during",
            f"p50 {r['p50_ms_during']} / p99 {r['p99_ms_during']} / max {r['max_ms_during']} ms",
        )
    console.print(table)
    print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
