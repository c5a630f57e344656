"""Transactions on a three-node cluster (replication 3, acks=all, fsync=always by
default): transactions per second with 10 messages over 3 partitions each, the latency
of commit, and what read_committed costs a consumer against read_uncommitted on the
same transactional data.

    scripts/bench txn [--transactions 500] [--producers 1,8] [--size 100] [--abort-every 0] [--fill 3000] [--reads 5]

Each producer (its own transactional id) runs its transactions one after another:
begin, 10 `submit`s round-robin over the topic's 3 partitions, `commit_transaction`.
"commit" is the time `commit_transaction` takes (flush the sends, then EndTxn: the
PREPARE record, the markers on the 3 partitions, the COMPLETE record); "txn" is the whole
transaction from begin to committed. Every phase writes to the same topic; `--fill`
more transactions of the same shape follow (untimed: the phases alone leave too little
to read for the two isolations to differ by more than the noise); then the whole topic
is read from the beginning `--reads` times in each isolation, alternating, and the best
and median runs of each are shown (msgs/s of messages delivered).

`--abort-every N` aborts every Nth transaction instead of committing it, so the
read_committed consumer also has aborted ranges to drop.
"""

from __future__ import annotations

import argparse
import statistics
import time

import trio
from _benchlib import bench_cluster, console, create_topic, percentile
from rich.progress import Progress
from rich.table import Column, Table

from client import Consumer, Producer

TOPIC = "txn-bench"
PARTITIONS = 3
PER_TXN = 10


class Phase:
    """What one phase of concurrent transactional producers measured."""

    def __init__(self, producers: int) -> None:
        self.producers = producers
        self.committed = 0
        self.aborted = 0
        self.commit_s: list[float] = []
        self.txn_s: list[float] = []
        self.seconds = 0.0


async def run_phase(
    bootstrap: str, producers: int, transactions: int, size: int, abort_every: int, progress: Progress
) -> Phase:
    """`transactions` transactions spread over `producers` producers running at once."""
    phase = Phase(producers)
    payload = b"x" * size
    task = progress.add_task(f"{producers} producer(s)", total=transactions)
    shares = [transactions // producers + (i < transactions % producers) for i in range(producers)]

    async def one(n: int, count: int, ready: trio.Event, go: trio.Event) -> None:
        async with Producer(bootstrap, transactional_id=f"bench-{producers}-{n}", linger=0.001) as producer:
            ready.set()
            await go.wait()
            for i in range(count):
                begun = time.perf_counter()
                await producer.begin_transaction()
                for m in range(PER_TXN):
                    await producer.submit(TOPIC, payload, partition=m % PARTITIONS)
                if abort_every and (i + 1) % abort_every == 0:
                    await producer.abort()
                    phase.aborted += 1
                else:
                    committing = time.perf_counter()
                    await producer.commit_transaction()
                    done = time.perf_counter()
                    phase.commit_s.append(done - committing)
                    phase.txn_s.append(done - begun)
                    phase.committed += 1
                progress.advance(task)

    go = trio.Event()
    async with trio.open_nursery() as nursery:
        readies = []
        for n, count in enumerate(shares):
            ready = trio.Event()
            readies.append(ready)
            nursery.start_soon(one, n, count, ready, go)
        for ready in readies:  # producer ids and connections first: not timed
            await ready.wait()
        start = time.perf_counter()
        go.set()
    phase.seconds = time.perf_counter() - start
    progress.remove_task(task)
    return phase


async def read_all(bootstrap: str, isolation: str, expected: int, progress: Progress) -> float:
    """Seconds to receive `expected` messages of the topic from its beginning."""
    task = progress.add_task(f"reading ({isolation})", total=expected)
    async with Consumer(
        bootstrap, topics=[TOPIC], offset_reset="earliest", isolation=isolation, fetch_max_bytes=4 << 20
    ) as consumer:
        start = time.perf_counter()
        count = 0
        if expected:
            async for _ in consumer:
                count += 1
                if count % 5000 == 0:
                    progress.update(task, completed=count)
                if count == expected:
                    break
        elapsed = time.perf_counter() - start
    progress.remove_task(task)
    return elapsed


def ms(values: list[float], q: float) -> str:
    return f"{percentile(sorted(values), q) * 1000:.1f}" if values else "-"


async def main(args) -> None:
    counts = [int(p) for p in args.producers.split(",")]
    phases: list[Phase] = []
    reads: dict[str, list[float]] = {"read_committed": [], "read_uncommitted": []}
    async with bench_cluster(fsync=args.fsync) as c:
        await create_topic(c.bootstrap, TOPIC, PARTITIONS, 3)
        with Progress(console=console, transient=True) as progress:
            for producers in counts:
                phases.append(
                    await run_phase(c.bootstrap, producers, args.transactions, args.size, args.abort_every, progress)
                )
            written = list(phases)
            if args.fill:  # more of the same data, so the reads below last long enough to compare
                written.append(
                    await run_phase(c.bootstrap, max(counts), args.fill, args.size, args.abort_every, progress)
                )
            committed = sum(p.committed for p in written) * PER_TXN
            everything = committed + sum(p.aborted for p in written) * PER_TXN
            for _ in range(args.reads):
                reads["read_committed"].append(await read_all(c.bootstrap, "read_committed", committed, progress))
                reads["read_uncommitted"].append(await read_all(c.bootstrap, "read_uncommitted", everything, progress))

    aborted = sum(p.aborted for p in phases)
    table = Table(
        "producers",
        "txns",
        "seconds",
        "txn/s",
        "msgs/s",
        "commit ms p50 / p99 / p99.9",
        "txn ms p50 / p99",
        title=f"transactions: 3 nodes, replication 3, acks=all, fsync={args.fsync}, "
        f"{PER_TXN} x {args.size} B over {PARTITIONS} partitions each"
        + (f", every {args.abort_every}th aborted" if args.abort_every else ""),
    )
    for p in phases:
        done = p.committed + p.aborted
        table.add_row(
            str(p.producers),
            f"{done:,}",
            f"{p.seconds:.2f}",
            f"{done / p.seconds:,.1f}",
            f"{done * PER_TXN / p.seconds:,.0f}",
            f"{ms(p.commit_s, 0.5)} / {ms(p.commit_s, 0.99)} / {ms(p.commit_s, 0.999)}",
            f"{ms(p.txn_s, 0.5)} / {ms(p.txn_s, 0.99)}",
        )
    console.print(table)
    every = [s for p in phases for s in p.commit_s]
    if every:
        console.print(
            f"mean commit latency {statistics.mean(every) * 1000:.1f} ms over {len(every):,} commits"
            + (f" ({aborted:,} transactions aborted)" if aborted else "")
        )

    best = {iso: min(times) for iso, times in reads.items()}
    median = {iso: statistics.median(times) for iso, times in reads.items()}
    delivered = {"read_committed": committed, "read_uncommitted": everything}
    table = Table(
        Column("isolation", no_wrap=True),
        "messages",
        "best s",
        "median s",
        "msgs/s",
        "vs uncommitted",
        title=f"consuming the same transactional data from the beginning ({TOPIC}, {PARTITIONS} "
        f"partitions; best and median of {args.reads} reads; msgs/s and the ratio: best / median)",
    )
    for iso in ("read_uncommitted", "read_committed"):
        vs = [delivered[iso] / m[iso] / (delivered["read_uncommitted"] / m["read_uncommitted"]) for m in (best, median)]
        table.add_row(
            iso,
            f"{delivered[iso]:,}",
            f"{best[iso]:.3f}",
            f"{median[iso]:.3f}",
            f"{delivered[iso] / best[iso]:,.0f} / {delivered[iso] / median[iso]:,.0f}",
            f"{vs[0]:.2f}x / {vs[1]:.2f}x",
        )
    console.print(table)


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="scripts/bench txn", description=__doc__.split("\n\n")[0])
    p.add_argument("--transactions", type=int, default=500, help="per phase (default 500)")
    p.add_argument("--producers", default="1,8", help="a phase per count of concurrent producers (default 1,8)")
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--abort-every", type=int, default=0, metavar="N", help="abort every Nth transaction (0: none)")
    p.add_argument("--reads", type=int, default=5, help="reads of the topic per isolation (best and median shown)")
    p.add_argument(
        "--fill",
        type=int,
        default=3000,
        metavar="N",
        help="untimed transactions of the same shape written before the reads (default 3000), so "
        "they read enough to compare",
    )
    p.add_argument("--fsync", choices=["always", "interval", "never"], default="always")
    trio.run(main, p.parse_args())
