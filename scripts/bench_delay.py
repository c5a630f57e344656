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

from client import Consumer, Producer


async def lateness(
    bootstrap: str, topic: str, messages: int, low: float, high: float, seed: int = 1, progress=None
) -> tuple[list[float], float]:
    """Submit `messages` messages to `topic` with delays drawn uniformly from [low, high]
    seconds, each carrying its due time, and read them back; (delivered minus due for
    each, in seconds, sorted; seconds the submitting took)."""
    rng = random.Random(seed)
    errors: list[float] = []
    async with (
        Consumer(bootstrap, topics=[topic], offset_reset="earliest") as consumer,
        Producer(bootstrap) as producer,
    ):
        task = progress.add_task("delayed messages delivered", total=messages) if progress else None
        start = time.time()
        for _ in range(messages):
            delay = rng.uniform(low, high)
            due = time.time() + delay
            await producer.submit(topic, struct.pack(">d", due), delay=delay)
        await producer.flush()
        sent = time.time() - start
        async for msg in consumer:
            errors.append(time.time() - struct.unpack(">d", msg.value)[0])
            if progress and len(errors) % 200 == 0:
                progress.update(task, completed=len(errors))
            if len(errors) == messages:
                break
    errors.sort()
    return errors, sent


def summary(errors: list[float]) -> dict[str, float | int]:
    """p50/p99/max lateness in ms and how many came early, of sorted `errors` (s)."""
    return {
        "messages": len(errors),
        "p50_late_ms": round(percentile(errors, 0.5) * 1000, 1),
        "p99_late_ms": round(percentile(errors, 0.99) * 1000, 1),
        "max_late_ms": round(errors[-1] * 1000, 1) if errors else float("nan"),
        "early": sum(1 for e in errors if e < 0),
    }


async def main(args) -> None:
    async with bench_cluster() as c:
        await create_topic(c.bootstrap, "later", 6, 3)
        with Progress(console=console, transient=True) as progress:
            errors, sent = await lateness(c.bootstrap, "later", args.messages, args.min, args.max, args.seed, progress)
    s = summary(errors)
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
        f"{s['messages']:,}",
        f"{args.min:g}-{args.max:g}",
        f"{sent:.1f}",
        f"{s['p50_late_ms']:.1f}",
        f"{s['p99_late_ms']:.1f}",
        f"{s['max_late_ms']:.1f}",
        str(s["early"]),
    )
    console.print(table)


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="scripts/bench delay", description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=10_000)
    p.add_argument("--min", type=float, default=1.0)
    p.add_argument("--max", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=1)
    trio.run(main, p.parse_args())
