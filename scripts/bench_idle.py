"""What idle partitions cost: CPU per node with no traffic, and how long a node that hosts
them takes to serve again after a restart, on a real three-node cluster on loopback.

    scripts/bench idle [--partitions 1000] [--sample 30] [--restart one|all] [--kill]
                       [--batches 0] [--producers N] [--fsync always] [--tick-ms 50]

The cluster (fsync=always, the node's default tick) gets one topic of `--partitions`
partitions at replication 3, so every node hosts every partition and leads a third of
them. Once every partition has a leader that every node names and the leaders have not
moved for a few seconds, each node process's CPU time is read from /proc/PID/stat over
the `--sample` window (no client traffic at all; the CPU of the node's worker threads
counts too).

Then `--restart one` stops node 1 (SIGTERM: it hands its leaderships over first) and
starts it again; `--restart all` stops every node and starts them together; with
`--kill` they are killed (SIGKILL) instead, as in a crash. Start-up is
timed from the start of the process(es) to

* "listening": the node answers Metadata;
* "leaders": every partition has a leader, named alike by every node;
* "serving": a produce and a fetch succeed on a partition the restarted node leads
  (with `--restart one`, once the balancer handed its preferred partitions back).

`--batches N` first writes N single-record idempotent batches from `--producers` producer
ids (InitProducerId; default one per batch), each producer writing its sequence to one
partition, the producers spread over the partitions, so the restarted node has that
many producer ids' state to load (or a log of N batches to replay). `--fsync never`
makes the nodes (and so the filling) faster, for large N.

The last line is the result as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

import trio
from _benchlib import cpu_seconds
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from client.errors import TideMQError  # noqa: E402
from client.protocol import (  # noqa: E402
    ACKS_ALL,
    READ_UNCOMMITTED,
    CreateTopic,
    Fetch,
    FetchPartition,
    InitProducerId,
    Metadata,
    Produce,
)
from segments import build_batch  # noqa: E402
from tests.cluster import ProcessCluster  # noqa: E402

console = Console()
TOPIC = "idle"


async def leaders(c: ProcessCluster, nodes: list[int], partitions: int) -> dict[int, int] | None:
    """Partition -> leader, if every node in `nodes` names one and all agree."""
    agreed: dict[int, int] | None = None
    for n in nodes:
        try:
            md = await c.request(n, Metadata([TOPIC]), timeout=5)
        except (TideMQError, OSError, trio.TooSlowError):
            return None
        if not md.topics or len(md.topics[0].partitions) != partitions:
            return None
        seen = {p.partition: p.leader for p in md.topics[0].partitions}
        if any(v is None for v in seen.values()):
            return None
        if agreed is None:
            agreed = {k: v for k, v in seen.items() if v is not None}
        elif agreed != seen:
            return None
    return agreed


async def wait_settled(c: ProcessCluster, partitions: int, progress: Progress, quiet_s: float = 5.0) -> dict[int, int]:
    """Every partition led, the same leaders for `quiet_s` seconds (the balancer is done)."""
    task = progress.add_task(f"wait for {partitions} leaders, unchanged for {quiet_s:.0f} s", total=None)
    last: dict[int, int] | None = None
    since = time.monotonic()
    while True:
        now = await leaders(c, list(c.procs), partitions)
        if now is None or now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            progress.remove_task(task)
            return now
        await trio.sleep(0.5)


async def sample_cpu(c: ProcessCluster, seconds: float, progress: Progress) -> dict[int, float]:
    """Each node's CPU over `seconds`, as a share of one core."""
    task = progress.add_task(f"sample CPU for {seconds:.0f} s", total=seconds)
    pids = {n: p.pid for n, p in c.procs.items()}
    before = {n: cpu_seconds(pid) for n, pid in pids.items()}
    t0 = time.monotonic()
    while (elapsed := time.monotonic() - t0) < seconds:
        progress.update(task, completed=elapsed)
        await trio.sleep(min(1.0, seconds - elapsed))
    wall = time.monotonic() - t0
    progress.remove_task(task)
    return {n: (cpu_seconds(pid) - before[n]) / wall for n, pid in pids.items()}


async def fill(c: ProcessCluster, partitions: int, batches: int, producers: int, progress: Progress) -> None:
    """`batches` idempotent batches from `producers` producer ids, each producer writing
    its sequence to one partition (producer i to partition i mod `partitions`)."""
    task = progress.add_task(f"write {batches} batches from {producers} producer ids", total=batches)
    known = await leaders(c, list(c.procs), partitions) or {}
    ctrl = [await c.wait_ready()]  # producer ids come from the controller leader
    shares = [batches // producers + (i < batches % producers) for i in range(producers)]
    next_producer = 0

    async def writer() -> None:
        nonlocal next_producer
        while next_producer < producers:
            i, next_producer = next_producer, next_producer + 1
            p = i % partitions
            pid = None
            seq = 0
            while seq < shares[i]:
                leader = known.get(p, 1)
                try:
                    if pid is None:
                        pid = (await c.request(ctrl[0], InitProducerId())).producer_id
                    data = build_batch(
                        [(None, b"x" * 20, (), None)], producer_id=pid, producer_epoch=0, base_sequence=seq
                    )
                    await c.request(leader, Produce(TOPIC, p, data, acks=ACKS_ALL, timeout_ms=10_000), timeout=15)
                    seq += 1
                    progress.advance(task)
                except (TideMQError, OSError, trio.TooSlowError):
                    if pid is None:
                        ctrl[0] = await c.wait_ready()
                    else:
                        known[p] = await c.leader_of(TOPIC, p)

    async with trio.open_nursery() as nursery:
        for _ in range(min(producers, 128)):
            nursery.start_soon(writer)
    progress.remove_task(task)


async def produce_and_fetch(c: ProcessCluster, node: int, partition: int) -> bool:
    data = build_batch([(None, b"after restart", (), None)])
    try:
        ack = await c.request(node, Produce(TOPIC, partition, data, acks=ACKS_ALL, timeout_ms=2000), timeout=3)
        got = await c.request(
            node, Fetch([FetchPartition(TOPIC, partition, ack.base_offset)], max_wait_ms=0, isolation=READ_UNCOMMITTED)
        )
        return bool(got.results and got.results[0].records)
    except (TideMQError, OSError, trio.TooSlowError):
        return False


async def time_restart(
    c: ProcessCluster,
    restarted: list[int],
    partitions: int,
    preferred: dict[int, int],
    progress: Progress,
    sig: int = signal.SIGTERM,
) -> dict[str, float]:
    """Stop `restarted` (`sig`), start them again, and time listening, leaders, serving."""
    task = progress.add_task(f"restart node(s) {restarted}", total=None)
    for n in restarted:
        c.kill(n, sig)
    for n in restarted:
        await c.wait_exit(n, timeout=60)
    t0 = time.monotonic()
    for n in restarted:
        c.start(n)
    out: dict[str, float] = {}
    mine = [p for p, lead in sorted(preferred.items()) if lead == restarted[0]]
    with trio.fail_after(300):
        while "listening" not in out:
            try:
                for n in restarted:
                    await c.request(n, Metadata(topics=[]), timeout=2)
                out["listening"] = time.monotonic() - t0
            except (TideMQError, OSError, trio.TooSlowError):
                await trio.sleep(0.02)
        while "leaders" not in out:
            if await leaders(c, list(c.procs), partitions) is not None:
                out["leaders"] = time.monotonic() - t0
            else:
                await trio.sleep(0.05)
        while "serving" not in out:
            now = await leaders(c, restarted, partitions) or {}
            led = [p for p in mine if now.get(p) == restarted[0]]
            if led and await produce_and_fetch(c, restarted[0], led[0]):
                out["serving"] = time.monotonic() - t0
            else:
                await trio.sleep(0.05)
    progress.remove_task(task)
    return out


async def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="tidemq-idle-") as tmp:
        c = ProcessCluster(Path(tmp), 3, fsync=args.fsync, tick_ms=args.tick_ms)
        try:
            with Progress(console=console, transient=True) as progress:
                for n in c.peers:
                    c.start(n)
                ctrl = await c.wait_ready()
                task = progress.add_task(f"create {args.partitions} partitions", total=None)
                t0 = time.monotonic()
                await c.request(ctrl, CreateTopic(TOPIC, args.partitions, 3), timeout=120)
                progress.remove_task(task)
                settled = await wait_settled(c, args.partitions, progress)
                created_s = time.monotonic() - t0
                cpu = await sample_cpu(c, args.sample, progress)
                fill_s = 0.0
                if args.batches:
                    t1 = time.monotonic()
                    await fill(c, args.partitions, args.batches, args.producers or args.batches, progress)
                    fill_s = time.monotonic() - t1
                    settled = await wait_settled(c, args.partitions, progress)
                restarted = [1] if args.restart == "one" else sorted(c.peers)
                sig = signal.SIGKILL if args.kill else signal.SIGTERM
                startup = await time_restart(c, restarted, args.partitions, settled, progress, sig)
                cpu_after = await sample_cpu(c, min(args.sample, 10), progress) if args.sample_after else {}
            return {
                "bench": "idle",
                "partitions": args.partitions,
                "replication": 3,
                "tick_ms": args.tick_ms,
                "sample_s": args.sample,
                "settled_s": round(created_s, 2),
                "cpu": {str(n): round(v, 4) for n, v in sorted(cpu.items())},
                "cpu_after_restart": {str(n): round(v, 4) for n, v in sorted(cpu_after.items())},
                "restart": args.restart + (" (killed)" if args.kill else ""),
                "fill_s": round(fill_s, 1),
                "batches": args.batches,
                "producers": (args.producers or args.batches) if args.batches else 0,
                "fsync": args.fsync,
                "startup_s": {k: round(v, 2) for k, v in startup.items()},
            }
        finally:
            await c.aclose()


def main() -> None:
    p = argparse.ArgumentParser(prog="scripts/bench idle", description=__doc__.split("\n\n")[0])
    p.add_argument("--partitions", type=int, default=1000)
    p.add_argument("--sample", type=float, default=30.0, help="seconds of CPU sampling with no traffic")
    p.add_argument("--restart", choices=["one", "all"], default="one")
    p.add_argument("--kill", action="store_true", help="restart after SIGKILL (a crash) instead of SIGTERM")
    p.add_argument(
        "--batches", type=int, default=0, help="idempotent batches (one producer id each) before the restart"
    )
    p.add_argument("--producers", type=int, default=0, help="producer ids writing the batches (default: one each)")
    p.add_argument("--fsync", choices=["always", "interval", "never"], default="always", help="the nodes' --fsync")
    p.add_argument("--tick-ms", type=int, default=50, help="Raft tick of the nodes (the node's default is 50)")
    p.add_argument("--sample-after", action="store_true", help="sample CPU again (10 s) after the restart")
    args = p.parse_args()
    result = trio.run(run, args)
    table = Table("node", "idle CPU (% of a core)", title=f"{args.partitions} idle partitions, replication 3")
    for n, v in result["cpu"].items():
        table.add_row(n, f"{v * 100:.1f}")
    console.print(table)
    if result["cpu_after_restart"]:
        console.print(
            "after the restart: "
            + ", ".join(f"node {n} {v * 100:.1f}%" for n, v in result["cpu_after_restart"].items())
        )
    st = Table("restart", "batches", "listening s", "leaders s", "serving s", title="start-up")
    s = result["startup_s"]
    st.add_row(
        result["restart"], str(args.batches), f"{s['listening']:.2f}", f"{s['leaders']:.2f}", f"{s['serving']:.2f}"
    )
    console.print(st)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
