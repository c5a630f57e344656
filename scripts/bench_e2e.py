"""End-to-end: a producer and a consumer run at once on a three-node cluster
(replication 3, acks=all); latency is from `submit()` to the consumer receiving the
message (both in this process, one clock).

    scripts/bench e2e [--messages 200000] [--size 100] [--partitions 6] [--rate 0]

`--rate N` paces the producer to N msgs/s (0: as fast as it goes) so latency can be
read at a load below saturation.
"""

from __future__ import annotations

import argparse
import struct
import time

import trio
from _benchlib import bench_cluster, console, create_topic, report
from rich.progress import Progress

from client import Consumer, Producer


async def end_to_end(
    bootstrap: str, topic: str, messages: int, size: int, rate: int = 0, progress=None
) -> tuple[float, list[float]]:
    """A producer and a consumer of `topic` at once, in this task's process: every
    message stamped at `submit()` and timed to the consumer receiving it (one clock).
    `rate`: pace the producer to that many msgs/s (0: as fast as it goes). Returns
    (seconds from the first submission to the last message received, latencies)."""
    pad = b"x" * max(0, size - 8)
    latencies: list[float] = []
    async with (
        Consumer(bootstrap, topics=[topic], offset_reset="latest") as consumer,
        Producer(bootstrap, linger=0.002, buffer_bytes=4 << 20) as producer,
    ):
        task = progress.add_task("producing and consuming", total=messages) if progress else None
        start = time.perf_counter()

        async def produce() -> None:
            for i in range(messages):
                if rate and i % 100 == 0:
                    ahead = start + i / rate - time.perf_counter()
                    if ahead > 0:
                        await trio.sleep(ahead)
                await producer.submit(topic, struct.pack(">d", time.perf_counter()) + pad)
            await producer.flush()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            async for msg in consumer:
                latencies.append(time.perf_counter() - struct.unpack_from(">d", msg.value)[0])
                if progress and len(latencies) % 10_000 == 0:
                    progress.update(task, completed=len(latencies))
                if len(latencies) == messages:
                    break
        elapsed = time.perf_counter() - start
    return elapsed, latencies


async def main(args) -> None:
    async with bench_cluster(fsync=args.fsync) as c:
        await create_topic(c.bootstrap, "e2e", args.partitions, 3)
        with Progress(console=console, transient=True) as progress:
            elapsed, latencies = await end_to_end(c.bootstrap, "e2e", args.messages, args.size, args.rate, progress)
    report(
        f"end to end: 3 nodes, replication 3, acks=all, {args.partitions} partitions"
        + (f", paced at {args.rate:,} msgs/s" if args.rate else ""),
        args.messages,
        args.size,
        elapsed,
        latencies,
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="scripts/bench e2e", description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--rate", type=int, default=0)
    p.add_argument("--fsync", choices=["always", "interval", "never"], default="always")
    trio.run(main, p.parse_args())
