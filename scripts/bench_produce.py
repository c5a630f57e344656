"""Produce throughput and latency on a three-node cluster (replication 3, acks=all,
idempotent, fsync=always by default).

    scripts/bench produce [--messages 200000] [--size 100] [--partitions 6]

One task submits every message (`Producer.submit`, backpressured by the producer's
buffer); each message's latency is from its submission to its acknowledgement.
"""

from __future__ import annotations

import argparse
import time

import trio
from _benchlib import bench_cluster, console, create_topic, report
from rich.progress import Progress

from client import Producer


async def produce(
    bootstrap: str, topic: str, messages: int, size: int, progress=None, buffer_bytes: int = 4 << 20
) -> tuple[float, list[float]]:
    """Submit every message from one task (no task per message) and time each from its
    submission to its acknowledgement."""
    payload = b"x" * size
    submitted: list[tuple[float, object]] = []
    async with Producer(bootstrap, linger=0.005, buffer_bytes=buffer_bytes) as producer:
        task = progress.add_task("producing", total=messages) if progress else None
        start = time.perf_counter()
        for i in range(messages):
            submitted.append((time.monotonic(), await producer.submit(topic, payload)))
            if progress and i % 5000 == 0:
                progress.update(task, completed=sum(1 for _, d in submitted[-5000:] if d.done) + i - 5000)
        for _, delivery in submitted:
            await delivery
        elapsed = time.perf_counter() - start
    return elapsed, [d.acked_at - t for t, d in submitted]


async def main(args) -> None:
    async with bench_cluster(fsync=args.fsync) as c:
        await create_topic(c.bootstrap, "bench", args.partitions, 3)
        with Progress(console=console, transient=True) as progress:
            elapsed, lat = await produce(c.bootstrap, "bench", args.messages, args.size, progress)
    report(
        f"produce: 3 nodes, replication 3, acks=all, fsync={args.fsync}, {args.partitions} partitions",
        args.messages,
        args.size,
        elapsed,
        lat,
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="scripts/bench produce", description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--fsync", choices=["always", "interval", "never"], default="always")
    trio.run(main, p.parse_args())
