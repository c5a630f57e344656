"""Delay precision: N messages with random delays, on a three-node cluster with the
default ladder; reports how late each arrived (delivered minus due) at p50/p99/max, and
how many came early (must be 0).

    scripts/bench delay [--messages 10000] [--min 1] [--max 20] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import struct
import time

import trio
from _benchlib import bench_cluster, console, create_topic, percentile
from rich.progress import Progress
from rich.table import Table

from client import Admin, Consumer, Producer
from client.conventions import DEFAULT_TIERS_MS, tier_name


async def main(args) -> None:
    rng = random.Random(args.seed)
    errors: list[float] = []
    async with bench_cluster() as c:
        await create_topic(c.bootstrap, "later", 6, 3)
        async with Admin(c.bootstrap) as admin:  # the ladder is created at start-up
            with trio.fail_after(60):
                while not {tier_name(t) for t in DEFAULT_TIERS_MS} <= set(await admin.list_topics(internal=True)):
                    await trio.sleep(0.2)
                for t in DEFAULT_TIERS_MS:
                    await admin.wait_for_leaders(tier_name(t))
        async with (
            Consumer(c.bootstrap, topics=["later"], offset_reset="earliest") as consumer,
            Producer(c.bootstrap) as producer,
        ):
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task("delivered", total=args.messages)
                start = time.time()
                for _ in range(args.messages):
                    delay = rng.uniform(args.min, args.max)
                    due = time.time() + delay
                    await producer.submit("later", struct.pack(">d", due), delay=delay)
                await producer.flush()
                sent = time.time() - start
                async for msg in consumer:
                    errors.append(time.time() - struct.unpack(">d", msg.value)[0])
                    if len(errors) % 200 == 0:
                        progress.update(task, completed=len(errors))
                    if len(errors) == args.messages:
                        break
    errors.sort()
    early = sum(1 for e in errors if e < 0)
    table = Table(
        "messages",
        "delays s",
        "submitted in s",
        "p50 late ms",
        "p99 late ms",
        "max late ms",
        "early",
        title="delayed delivery: delivered minus due (3 nodes, replication 3, default ladder)",
    )
    table.add_row(
        f"{len(errors):,}",
        f"{args.min:g}-{args.max:g}",
        f"{sent:.1f}",
        f"{percentile(errors, 0.5) * 1000:.1f}",
        f"{percentile(errors, 0.99) * 1000:.1f}",
        f"{errors[-1] * 1000:.1f}",
        str(early),
    )
    console.print(table)


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="scripts/bench delay", description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=10_000)
    p.add_argument("--min", type=float, default=1.0)
    p.add_argument("--max", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=1)
    trio.run(main, p.parse_args())
