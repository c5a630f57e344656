"""Produce throughput and latency on a three-node cluster (replication 3, acks=all,
idempotent, fsync=always by default).

    scripts/bench produce [--messages 200000] [--size 100] [--partitions 6] [--bulk N] [--secure]

One task submits every message (`Producer.submit`, backpressured by the producer's
buffer; with `--bulk N`, `Producer.submit_many` N at a time); each message's latency is
from its submission to its acknowledgement. `--secure` runs again on a TLS cluster
(scripts/certs.py's certificates, mutual TLS between nodes) that requires users, as a
user the ACLs allow, and prints what TLS, the login and the checks cost.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import trio
from _benchlib import bench_cluster, console, create_topic, report
from rich.progress import Progress

from client import Delivery, Producer

PROGRESS_EVERY = 5000


async def submit_all(
    producer: Producer,
    topic: str,
    payload: bytes,
    messages: int,
    tick: Callable[[int], None] | None = None,
    bulk: int = 0,
) -> list[tuple[float, Sequence[Delivery]]]:
    """The measured call: queue `messages` copies of `payload` from this one task, each
    group with the time it was submitted: one by one through `Producer.submit`, or with
    `bulk` > 0 lists of that many through `Producer.submit_many`."""
    submitted: list[tuple[float, Sequence[Delivery]]] = []
    sent = 0
    while sent < messages:
        n = min(bulk, messages - sent) if bulk else 1
        at = time.monotonic()
        if bulk:
            submitted.append((at, await producer.submit_many(topic, [payload] * n)))
        else:
            submitted.append((at, (await producer.submit(topic, payload),)))
        if tick is not None and sent // PROGRESS_EVERY != (sent + n) // PROGRESS_EVERY:
            tick(sent)
        sent += n
    return submitted


async def produce(
    bootstrap: str,
    topic: str,
    messages: int,
    size: int,
    progress=None,
    buffer_bytes: int = 4 << 20,
    bulk: int = 0,
) -> tuple[float, list[float]]:
    """Submit every message from one task (no task per message; `bulk` > 0: lists of
    that many through `submit_many`) and time each from its submission to its
    acknowledgement; (seconds from the first submission to the last acknowledgement,
    latencies)."""
    payload = b"x" * size
    async with Producer(bootstrap, linger=0.005, buffer_bytes=buffer_bytes) as producer:
        task = progress.add_task("producing", total=messages) if progress else None
        tick = (lambda i: progress.update(task, completed=i)) if progress else None
        start = time.perf_counter()
        submitted = await submit_all(producer, topic, payload, messages, tick, bulk)
        for _, deliveries in submitted:
            await (deliveries if bulk else deliveries[0])  # type: ignore[misc]
        elapsed = time.perf_counter() - start
        if progress:
            progress.update(task, completed=messages)
    return elapsed, [d.acked_at - t for t, ds in submitted for d in ds]  # type: ignore[operator]


async def run(args, secure: bool) -> float:
    """One cluster, one run, its table; the messages per second."""
    async with bench_cluster(fsync=args.fsync, secure=secure) as c:
        await create_topic(c.bootstrap, "bench", args.partitions, 3)
        with Progress(console=console, transient=True) as progress:
            elapsed, lat = await produce(c.bootstrap, "bench", args.messages, args.size, progress, bulk=args.bulk)
    report(
        f"produce{' over TLS' if secure else ''}: 3 nodes, replication 3, acks=all, fsync={args.fsync}, "
        f"{args.partitions} partitions" + (f", submit_many x{args.bulk}" if args.bulk else ", submit"),
        args.messages,
        args.size,
        elapsed,
        lat,
    )
    return args.messages / elapsed


async def main(args) -> None:
    """With --secure: plain TCP, then TLS (mutual between nodes) on a second cluster,
    and what TLS costs as the ratio of the two."""
    plain = await run(args, secure=False)
    if args.secure:
        tls = await run(args, secure=True)
        console.print(f"TLS: {tls:,.0f} msgs/s against {plain:,.0f} plain: {tls / plain:.2f}x")


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="scripts/bench produce", description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--fsync", choices=["always", "interval", "never"], default="always")
    p.add_argument("--bulk", type=int, default=0, help="submit_many N messages at a time (0: submit one by one)")
    p.add_argument("--secure", action="store_true", help="also over TLS, on a second cluster, and the ratio")
    trio.run(main, p.parse_args())
