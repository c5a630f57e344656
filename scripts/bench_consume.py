"""Consume throughput on a three-node cluster (replication 3): fill a topic, then read
it back from the beginning through a Consumer.

    scripts/bench consume [--messages 500000] [--size 100] [--partitions 6] [--bulk]

`--bulk` reads with `Consumer.getmany()` (and fills the topic with `submit_many`)
instead of the iterator.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import trio
from _benchlib import bench_cluster, console, create_topic, report
from bench_produce import produce
from rich.progress import Progress

from client import Consumer

SETTLE_S = 2.0
PROGRESS_EVERY = 10_000


async def read_count(
    consumer: Consumer, messages: int, tick: Callable[[int], None] | None = None, bulk: bool = False
) -> None:
    """The measured call: take `messages` messages from the consumer, one by one through
    its iterator, or with `bulk` whole fetches at a time through `getmany()`."""
    count = 0
    if bulk:
        while count < messages:
            before = count
            for batch in (await consumer.getmany()).values():
                count += len(batch)
            if tick is not None and before // PROGRESS_EVERY != count // PROGRESS_EVERY:
                tick(count)
        return
    async for _ in consumer:
        count += 1
        if tick is not None and count % PROGRESS_EVERY == 0:
            tick(count)
        if count == messages:
            return


async def consume(bootstrap: str, topic: str, messages: int, progress=None, bulk: bool = False) -> float:
    """Seconds to read `messages` messages of `topic` from its first offset (the
    consumer's start, its connection and metadata, not counted)."""
    async with Consumer(bootstrap, topics=[topic], offset_reset="earliest") as consumer:
        task = progress.add_task("consuming", total=messages) if progress else None
        tick = (lambda i: progress.update(task, completed=i)) if progress else None
        start = time.perf_counter()
        await read_count(consumer, messages, tick, bulk)
        return time.perf_counter() - start


async def main(args) -> None:
    async with bench_cluster(fsync=args.fsync) as c:
        await create_topic(c.bootstrap, "bench", args.partitions, 3)
        with Progress(console=console, transient=True) as progress:
            await produce(c.bootstrap, "bench", args.messages, args.size, progress, bulk=1000 if args.bulk else 0)
            await trio.sleep(SETTLE_S)  # followers finish applying and syncing: time the reads alone
            elapsed = await consume(c.bootstrap, "bench", args.messages, progress, args.bulk)
    report(
        f"consume: 3 nodes, replication 3, {args.partitions} partitions, from the beginning"
        + (", getmany" if args.bulk else ", iterator"),
        args.messages,
        args.size,
        elapsed,
        None,
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="scripts/bench consume", description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=500_000)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--fsync", choices=["always", "interval", "never"], default="always")
    p.add_argument("--bulk", action="store_true", help="getmany() instead of the iterator")
    trio.run(main, p.parse_args())
