"""Time from SIGKILL of a partition leader to the first acknowledged write on its
successor, over N kills, on a real three-node cluster on loopback.

    scripts/bench failover [--kills 20] [--tick-ms 20]

The writer keeps one idempotent acks=all batch in flight; after the kill it retries on
whichever node metadata names as leader until a write is acknowledged. The killed node
is restarted with its data and allowed to catch up before the next round.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from client.errors import TideMQError  # noqa: E402
from client.protocol import CreateTopic, InitProducerId, Produce  # noqa: E402
from segments import build_batch  # noqa: E402
from tests.cluster import ProcessCluster  # noqa: E402

console = Console()


async def run(kills: int, tick_ms: int) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="tidemq-failover-") as tmp:
        c = ProcessCluster(Path(tmp), 3, fsync="always", tick_ms=tick_ms)
        try:
            for n in c.peers:
                c.start(n)
            ctrl = await c.wait_ready()
            await c.request(ctrl, CreateTopic("failover", partitions=1, replication=3))
            pid = (await c.request(ctrl, InitProducerId())).producer_id
            seq = 0
            leader = await c.leader_of("failover", 0)

            async def write() -> None:
                nonlocal seq, leader
                data = build_batch([(None, b"x" * 100, (), None)], producer_id=pid, producer_epoch=0, base_sequence=seq)
                while True:
                    try:
                        await c.request(leader, Produce("failover", 0, data, timeout_ms=2000), timeout=3)
                        seq += 1
                        return
                    except (TideMQError, OSError, trio.TooSlowError):
                        leader = await c.leader_of("failover", 0, timeout=30, poll_s=0.01)

            times = []
            with Progress(console=console) as progress:
                task = progress.add_task("kill the leader, time the next ack", total=kills)
                for _ in range(kills):
                    for _ in range(20):
                        await write()
                    victim = leader
                    t0 = time.perf_counter()
                    c.kill(victim)
                    await write()
                    times.append(time.perf_counter() - t0)
                    await c.wait_exit(victim)
                    c.start(victim)
                    await c.wait_ready()
                    await trio.sleep(1.0)  # let it catch up before the next kill
                    progress.advance(task)
            return times
        finally:
            await c.aclose()


def main() -> None:
    p = argparse.ArgumentParser(prog="scripts/bench failover", description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--tick-ms", type=int, default=50, help="Raft tick of the nodes (the default node setting is 50)")
    args = p.parse_args()
    times = trio.run(run, args.kills, args.tick_ms)
    table = Table("kills", "median s", "p90 s", "max s", "min s", title="leader kill -> first acknowledged write")
    times.sort()
    table.add_row(
        str(len(times)),
        f"{statistics.median(times):.3f}",
        f"{times[int(len(times) * 0.9) - 1]:.3f}",
        f"{max(times):.3f}",
        f"{min(times):.3f}",
    )
    console.print(table)


if __name__ == "__main__":
    main()
