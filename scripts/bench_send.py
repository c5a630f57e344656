"""One message in flight: `await producer.send(...)` in a loop, on a three-node cluster
(replication 3, acks=all, idempotent, fsync=always by default).

    scripts/bench send [--messages 3000] [--size 256] [--tasks 1] [--linger SECONDS]

What a caller waiting on each acknowledgement gets: sends per second and the latency of
each send (from the call to its return). With `--tasks N`, N tasks each await their own
sends to the same partition at once (N messages in flight): the producer gathers them
into batches, and the broker commits each batch with one fsync. `--linger` overrides
the producer's default linger (a producer that lingers with nothing in flight pays it on
every send here). The first `--warmup` sends (connections, metadata) are not counted.
"""

from __future__ import annotations

import argparse
import json
import time

import trio
from _benchlib import bench_cluster, console, create_topic, percentile, report

from client import Producer


async def send_loop(
    bootstrap: str, topic: str, messages: int, size: int, tasks: int, warmup: int, linger, progress=None
):
    """`tasks` tasks each send `messages // tasks` messages one at a time; the elapsed
    time of the whole and the time of each send."""
    payload = b"x" * size
    options = {} if linger is None else {"linger": linger}
    latencies: list[float] = []
    async with Producer(bootstrap, **options) as producer:
        for _ in range(warmup):
            await producer.send(topic, payload, partition=0)
        task = (
            progress.add_task("one at a time" if tasks == 1 else f"{tasks} at a time", total=messages)
            if progress
            else None
        )

        async def sender(count: int) -> None:
            for i in range(count):
                t0 = time.perf_counter()
                await producer.send(topic, payload, partition=0)
                latencies.append(time.perf_counter() - t0)
                if progress and i % 100 == 0:
                    progress.update(task, completed=len(latencies))

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(tasks):
                nursery.start_soon(sender, messages // tasks)
        elapsed = time.perf_counter() - start
    return elapsed, latencies


async def main(args) -> None:
    async with bench_cluster(fsync=args.fsync) as c:
        await create_topic(c.bootstrap, "send", 1, 3)
        elapsed, lat = await send_loop(
            c.bootstrap, "send", args.messages, args.size, args.tasks, args.warmup, args.linger
        )
    count = len(lat)
    linger = "default" if args.linger is None else f"{args.linger * 1000:g} ms"
    report(
        f"send: {args.tasks} in flight, 3 nodes, replication 3, acks=all, fsync={args.fsync}, linger {linger}",
        count,
        args.size,
        elapsed,
        lat,
    )
    lat.sort()
    line = {
        "bench": "send",
        "in_flight": args.tasks,
        "fsync": args.fsync,
        "linger": args.linger,
        "messages": count,
        "size": args.size,
        "msgs_per_s": round(count / elapsed, 1),
        "p50_ms": round(percentile(lat, 0.5) * 1000, 3),
        "p99_ms": round(percentile(lat, 0.99) * 1000, 3),
        "p999_ms": round(percentile(lat, 0.999) * 1000, 3),
    }
    console.print(json.dumps(line), markup=False, highlight=False)


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="scripts/bench send", description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=3000)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--tasks", type=int, default=1, help="tasks awaiting sends at once (messages in flight)")
    p.add_argument("--linger", type=float, default=None, help="the producer's linger in seconds (default: its own)")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--fsync", choices=["always", "interval", "never"], default="always")
    trio.run(main, p.parse_args())
