"""librdkafka (confluent-kafka) against the nodes' Kafka listeners, beside the native
client, in one run on one cluster: pipelined publish, consume from the first offset and
one message in flight.

    scripts/bench kafka [--messages 50000] [--size 256] [--sync-messages 2000]
                        [--partitions 1] [--json FILE] [--markdown FILE]

Three node processes on loopback, each with a Kafka listener; replication 3, acks=all,
idempotent producers, fsync=always by default. In order:

- publish: librdkafka's `produce()` of `--messages` messages from one thread, then
  `flush()`, into topic `kafka`; then the native `Producer.submit` of as many, one by
  one from one task, then `flush()`, into topic `native`. Each producer is connected and
  has its producer id (one message to another topic) before the clock starts.
- consume: both clients read topic `kafka` (what librdkafka wrote: the same batches
  for both) from its first offset, librdkafka by `assign()` (no group) through
  `consume()`, the native `Consumer` without a group through `getmany()`; each timed
  once connected and told the topic's leaders (as bench_consume times ours), with the
  time from creating it to its first message beside, and the values' bytes checked.
- one in flight: produce one, wait for its acknowledgement, repeat, `--sync-messages`
  times to partition 0 of a topic each (librdkafka with linger.ms=0, waiting in
  `poll()`; native `await producer.send()`), after `--warmup` sends not counted.

librdkafka blocks, so it runs in a worker thread; every phase is bounded by
`--phase-timeout`, and an error or Ctrl-C stops the worker (a flag it checks between
calls) and kills the nodes before the run ends.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import trio
from _benchlib import console, create_topic, percentile, progress_display, publish
from bench_compare import machine
from bench_consume import SETTLE_S
from bench_produce import submit_all
from bench_send import send_loop
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition
from confluent_kafka import Consumer as RdConsumer
from confluent_kafka import Producer as RdProducer
from rich.progress import Progress
from rich.table import Table

from client import Consumer, Producer
from tests.cluster import ProcessCluster

T = TypeVar("T")

# librdkafka's settings, printed with the results. Both producers: acks=all, idempotent,
# Nagle off (trio, and so the native client and the listener, set TCP_NODELAY), and
# errors within a minute rather than librdkafka's five.
RD_COMMON: dict[str, Any] = {
    "socket.nagle.disable": True,
    "client.id": "tidemq-bench-kafka",
}
RD_PRODUCER: dict[str, Any] = {
    **RD_COMMON,
    "acks": "all",
    "enable.idempotence": True,
    "partitioner": "murmur2_random",  # the Java client's, and ours (its default is CRC32)
    "compression.type": "none",
    "message.timeout.ms": 60_000,
}
# Pipelined: librdkafka's defaults for batching, written out so the run shows them.
RD_PUBLISH = {**RD_PRODUCER, "linger.ms": 5, "batch.size": 1_000_000, "batch.num.messages": 10_000}
RD_PUBLISH |= {"queue.buffering.max.messages": 100_000, "max.in.flight.requests.per.connection": 5}
# One in flight: no linger (the native producer sends at once to an idle partition too).
RD_ONE = {**RD_PRODUCER, "linger.ms": 0}
# No group is joined (assign), nothing committed; librdkafka's fetch defaults written out.
RD_CONSUMER: dict[str, Any] = {
    **RD_COMMON,
    "group.id": "tidemq-bench-kafka",  # required by confluent-kafka; unused with assign()
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "isolation.level": "read_committed",
    "fetch.wait.max.ms": 500,
    "fetch.max.bytes": 52_428_800,
    "max.partition.fetch.bytes": 1_048_576,
}
RD_CONSUME_BATCH = 10_000  # messages per Consumer.consume() call: its bulk face, as getmany is ours

# The native client's, as bench_produce and bench_consume run it.
NATIVE_PUBLISH: dict[str, Any] = {"linger": 0.005, "buffer_bytes": 4 << 20}
NATIVE_CONSUMER: dict[str, Any] = {"fetch_max_bytes": 1024 * 1024, "max_wait": 0.5, "isolation": "read_committed"}

THREAD_STOP_S = 10.0  # for a stopped librdkafka worker to close its client
PROGRESS_EVERY = 1000
WARMUP_TOPIC = "warmup"
PROBE_TOPIC = "tidemq-bench-probe"  # asked about, never created


# -- the cluster -------------------------------------------------------------------------------


@asynccontextmanager
async def kafka_cluster(fsync: str, nodes: int = 3) -> AsyncIterator[ProcessCluster]:
    """`_benchlib.bench_cluster` with a Kafka listener on every node: yields the cluster
    once every node answers and a Kafka client is told of every node's listener (peers'
    addresses come by gossip), so no phase pays for that wait. Every node is killed on
    the way out, whatever the way."""
    with tempfile.TemporaryDirectory(prefix="tidemq-bench-kafka-") as tmp:
        c = ProcessCluster(Path(tmp), nodes, fsync=fsync, tick_ms=int(os.environ.get("TICK", "50")))
        c.serve_kafka()
        try:
            for n in c.peers:
                c.start(n)
            await c.wait_ready()
            await in_thread(wait_kafka_brokers, kafka_bootstrap(c), nodes, 30.0)
            yield c
        finally:
            with trio.CancelScope(shield=True):
                await c.aclose()


def kafka_bootstrap(c: ProcessCluster) -> str:
    return ",".join(c.kafka.values())


class Stopped(Exception):
    """The trio side gave up on a librdkafka worker (an error, a timeout, Ctrl-C)."""


def check(stop: threading.Event) -> None:
    if stop.is_set():
        raise Stopped


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args, stop)` in a worker thread. The wait is abandoned on cancellation (so
    Ctrl-C and timeouts act at once), and then `stop` is set and the worker given
    THREAD_STOP_S to notice and close its librdkafka client before the nodes go."""
    stop, finished = threading.Event(), threading.Event()

    def run() -> T:
        try:
            return fn(*args, stop)
        finally:
            finished.set()

    try:
        return await trio.to_thread.run_sync(run, abandon_on_cancel=True)
    finally:
        stop.set()
        with trio.CancelScope(shield=True), trio.move_on_after(THREAD_STOP_S):
            while not finished.is_set():
                await trio.sleep(0.05)


def wait_kafka_brokers(bootstrap: str, nodes: int, timeout: float, stop: threading.Event) -> None:
    """Until librdkafka's metadata names `nodes` brokers. It asks about one topic that
    need not exist: its all-topics Metadata v12 request carries 3 bytes after the body,
    and the listener closes a connection on those."""
    producer = RdProducer({**RD_COMMON, "bootstrap.servers": bootstrap})
    try:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            check(stop)
            try:
                seen = len(producer.list_topics(PROBE_TOPIC, timeout=2).brokers)
            except KafkaException:
                seen = 0
            if seen >= nodes:
                return
            time.sleep(0.2)
        raise RuntimeError(f"Kafka metadata named {seen} of {nodes} brokers after {timeout:g} s")
    finally:
        producer.close()


# -- the figures -----------------------------------------------------------------------------


@dataclass
class Figure:
    """One client's result in one measure."""

    measure: str  # "publish", "consume", "one_in_flight"
    client: str  # "librdkafka", "native"
    msgs: int
    size: int
    secs: float
    latencies: list[float] = field(default_factory=list, repr=False)  # seconds, one in flight
    first_s: float | None = None  # consume: from creating the consumer to its first message

    @property
    def msgs_per_s(self) -> float:
        return self.msgs / self.secs

    @property
    def mb_per_s(self) -> float:
        return self.msgs * self.size / self.secs / 1e6

    def latency_ms(self, q: float) -> float | None:
        return round(percentile(sorted(self.latencies), q) * 1000, 3) if self.latencies else None

    def json(self) -> dict:
        return {
            "measure": self.measure,
            "client": self.client,
            "msgs": self.msgs,
            "size": self.size,
            "secs": round(self.secs, 3),
            "msgs_per_s": round(self.msgs_per_s),
            "MB_per_s": round(self.mb_per_s, 2),
            "p50_ms": self.latency_ms(0.5),
            "p99_ms": self.latency_ms(0.99),
            "p999_ms": self.latency_ms(0.999),
            "first_message_ms": None if self.first_s is None else round(self.first_s * 1000, 1),
        }


MEASURES = {
    "publish": "publish, pipelined from one client",
    "consume": "consume from the first offset",
    "one_in_flight": "one in flight (send, await, repeat)",
}


def ratios(figures: list[Figure]) -> dict[str, float]:
    """Kafka/native msgs/s of each measure both clients ran."""
    by = {(f.measure, f.client): f for f in figures}
    return {
        m: round(by[m, "librdkafka"].msgs_per_s / by[m, "native"].msgs_per_s, 3)
        for m in MEASURES
        if (m, "librdkafka") in by and (m, "native") in by
    }


# -- librdkafka (in a worker thread) -----------------------------------------------------------


class Read(NamedTuple):
    """What a consumer's read came to."""

    secs: float  # from the timed start to the last message
    nbytes: int  # of the values: checked against messages x size
    first_s: float  # from creating the consumer to its first message: what its start costs


def delivered(producer: RdProducer, stop: threading.Event) -> None:
    """flush() in short steps, so a stop is noticed."""
    while producer.flush(0.5) > 0:
        check(stop)


def close_producer(producer: RdProducer) -> None:
    """Whatever is left (a stop) is purged rather than awaited, and the client closed
    now: left to the garbage collector, it would outlive the nodes after an error (the
    traceback holds it) and log their going."""
    producer.purge()
    producer.flush(1)
    producer.close()


def rd_publish(
    bootstrap: str, topic: str, messages: int, size: int, tick: Callable[[int], None] | None, stop: threading.Event
) -> float:
    """The measured call: `messages` produce() calls from this thread (polling for
    delivery reports between them, waiting in poll() when librdkafka's queue is full),
    then flush(); seconds from the first produce() to the last acknowledgement."""
    payload = b"x" * size
    acked = 0
    failed: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        nonlocal acked
        if err is None:
            acked += 1
        else:
            failed.append(err)

    producer = RdProducer({**RD_PUBLISH, "bootstrap.servers": bootstrap, "on_delivery": on_delivery})
    try:
        producer.produce(WARMUP_TOPIC, payload)  # connected, producer id in hand: not timed
        delivered(producer, stop)
        if failed:
            raise KafkaException(failed[0])
        acked = 0
        start = time.perf_counter()
        for i in range(messages):
            while True:
                try:
                    producer.produce(topic, payload)
                    break
                except BufferError:  # queue.buffering.max.messages reached: wait for reports
                    producer.poll(0.05)
                    check(stop)
            if i % PROGRESS_EVERY == 0:
                producer.poll(0)
                check(stop)
                if tick is not None:
                    tick(i)
        delivered(producer, stop)
        elapsed = time.perf_counter() - start
    finally:
        close_producer(producer)
    if failed or acked != messages:
        raise RuntimeError(f"librdkafka: {acked} of {messages} acknowledged; first error {failed[:1]}")
    return elapsed


def rd_consume(
    bootstrap: str,
    topic: str,
    partitions: int,
    messages: int,
    tick: Callable[[int], None] | None,
    stop: threading.Event,
) -> Read:
    """The measured call: assign every partition of `topic` at its first offset and
    consume() until `messages` came. Timed from assign(), once the consumer is connected
    and knows the topic's leaders, as bench_consume times the native consumer from the
    end of its `__aenter__`: a client's start is not its reading."""
    created = time.perf_counter()
    consumer = RdConsumer({**RD_CONSUMER, "bootstrap.servers": bootstrap})
    try:
        count = nbytes = 0
        first = None
        # Assigned before it knows the leaders, librdkafka would look the offsets up only
        # after its 500 ms offset query backoff.
        consumer.list_topics(topic, timeout=10)
        start = time.perf_counter()
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        while count < messages:
            check(stop)
            before = count
            # consume() waits out its timeout for a full batch: ask for no more than is left.
            for msg in consumer.consume(num_messages=min(RD_CONSUME_BATCH, messages - count), timeout=0.5):
                if msg.error() is not None:
                    raise KafkaException(msg.error())
                count += 1
                nbytes += len(msg.value() or b"")
            if first is None and count:
                first = time.perf_counter()
            if tick is not None and before // PROGRESS_EVERY != count // PROGRESS_EVERY:
                tick(count)
        elapsed = time.perf_counter() - start
    finally:
        consumer.close()
    if count != messages or first is None:
        raise RuntimeError(f"librdkafka read {count} messages of {topic}, not {messages}")
    return Read(elapsed, nbytes, first - created)


def rd_one_in_flight(
    bootstrap: str,
    topic: str,
    messages: int,
    size: int,
    warmup: int,
    tick: Callable[[int], None] | None,
    stop: threading.Event,
) -> tuple[float, list[float]]:
    """produce() one message to partition 0, poll() until its delivery report, repeat;
    (seconds of the `messages` counted, each one's latency)."""
    payload = b"x" * size
    reports: list[KafkaError | None] = []
    producer = RdProducer(
        {**RD_ONE, "bootstrap.servers": bootstrap, "on_delivery": lambda err, _msg: reports.append(err)}
    )

    def one() -> float:
        t0 = time.perf_counter()
        producer.produce(topic, payload, partition=0)
        while not reports:
            producer.poll(0.5)  # returns as soon as the report is served
            check(stop)
        err = reports.pop()
        if err is not None:
            raise KafkaException(err)
        return time.perf_counter() - t0

    try:
        for _ in range(warmup):
            one()
        latencies = []
        start = time.perf_counter()
        for i in range(messages):
            latencies.append(one())
            if tick is not None and i % 100 == 0:
                tick(i)
        elapsed = time.perf_counter() - start
    finally:
        close_producer(producer)
    return elapsed, latencies


# -- the native client -------------------------------------------------------------------------


async def native_publish(
    bootstrap: str, topic: str, messages: int, size: int, tick: Callable[[int], None] | None
) -> float:
    """The measured call: `Producer.submit` of every message from this one task
    (`bench_produce.submit_all`), then `flush()`; seconds from the first submission to
    the last acknowledgement, as `rd_publish` times librdkafka."""
    payload = b"x" * size
    async with Producer(bootstrap, **NATIVE_PUBLISH) as producer:
        await producer.send(WARMUP_TOPIC, payload)  # as librdkafka's warm-up
        start = time.perf_counter()
        submitted = await submit_all(producer, topic, payload, messages, tick)
        await producer.flush()
        elapsed = time.perf_counter() - start
    for _, deliveries in submitted:
        deliveries[0].result()  # raises what a send failed with
    return elapsed


async def native_consume(bootstrap: str, topic: str, messages: int, tick: Callable[[int], None] | None) -> Read:
    """The measured call: a `Consumer` without a group reads `topic` from its first
    offset through `getmany()` until `messages` came, timed as bench_consume times it:
    from the end of its `__aenter__` (connected, offsets looked up, first fetches sent)."""
    created = time.perf_counter()
    async with Consumer(bootstrap, topics=[topic], offset_reset="earliest", **NATIVE_CONSUMER) as consumer:
        count = nbytes = 0
        first = None
        start = time.perf_counter()
        while count < messages:
            before = count
            for batch in (await consumer.getmany()).values():
                count += len(batch)
                nbytes += sum(len(m.value or b"") for m in batch)
            if first is None and count:
                first = time.perf_counter()
            if tick is not None and before // PROGRESS_EVERY != count // PROGRESS_EVERY:
                tick(count)
        elapsed = time.perf_counter() - start
    if count != messages or first is None:
        raise RuntimeError(f"the native consumer read {count} messages of {topic}, not {messages}")
    return Read(elapsed, nbytes, first - created)


# -- the run -----------------------------------------------------------------------------------


@dataclass
class Run:
    """What main() hands to the report: the figures and the settings they came from."""

    figures: list[Figure]
    settings: dict
    machine: dict


async def measure(args: argparse.Namespace, progress: Progress, phase: Callable[[str], None]) -> list[Figure]:
    """Every measure, both clients, on one cluster."""
    n, size, parts = args.messages, args.size, args.partitions
    figures: list[Figure] = []

    def ticker(description: str, total: int) -> Callable[[int], None]:
        task = progress.add_task(description, total=total)
        return lambda i: progress.update(task, completed=i)

    phase(f"starting 3 nodes with Kafka listeners (fsync={args.fsync})")
    async with kafka_cluster(args.fsync) as c:
        kafka = kafka_bootstrap(c)
        topics = {"kafka": parts, "native": parts, "send-kafka": 1, "send-native": 1, WARMUP_TOPIC: 1}
        for topic, count in topics.items():
            await create_topic(c.bootstrap, topic, count, 3)
        for topic, count in topics.items():  # every partition has a leader before any clock starts
            for p in range(count):
                await c.leader_of(topic, p)

        phase("publish: librdkafka")
        with trio.fail_after(args.phase_timeout):
            secs = await in_thread(rd_publish, kafka, "kafka", n, size, ticker("librdkafka producing", n))
        figures.append(Figure("publish", "librdkafka", n, size, secs))
        await trio.sleep(SETTLE_S)  # followers done with the first run before the second

        phase("publish: native")
        with trio.fail_after(args.phase_timeout):
            secs = await native_publish(c.bootstrap, "native", n, size, ticker("native producing", n))
        figures.append(Figure("publish", "native", n, size, secs))
        await trio.sleep(SETTLE_S)  # followers finish applying and syncing: time the reads alone

        phase("consume: librdkafka")
        with trio.fail_after(args.phase_timeout):
            read = await in_thread(rd_consume, kafka, "kafka", parts, n, ticker("librdkafka consuming", n))
        if read.nbytes != n * size:
            raise RuntimeError(f"librdkafka read {read.nbytes} bytes of values, not {n * size}")
        figures.append(Figure("consume", "librdkafka", n, size, read.secs, first_s=read.first_s))

        phase("consume: native")
        with trio.fail_after(args.phase_timeout):
            read = await native_consume(c.bootstrap, "kafka", n, ticker("native consuming", n))
        if read.nbytes != n * size:
            raise RuntimeError(f"the native consumer read {read.nbytes} bytes of values, not {n * size}")
        figures.append(Figure("consume", "native", n, size, read.secs, first_s=read.first_s))

        k = args.sync_messages
        phase("one in flight: librdkafka")
        with trio.fail_after(args.phase_timeout):
            secs, lat = await in_thread(
                rd_one_in_flight, kafka, "send-kafka", k, size, args.warmup, ticker("librdkafka one at a time", k)
            )
        figures.append(Figure("one_in_flight", "librdkafka", len(lat), size, secs, lat))

        phase("one in flight: native")
        with trio.fail_after(args.phase_timeout):
            secs, lat = await send_loop(c.bootstrap, "send-native", k, size, 1, args.warmup, None, progress)
        figures.append(Figure("one_in_flight", "native", len(lat), size, secs, lat))
    return figures


def results_table(run: Run) -> Table:
    s, m = run.settings, run.machine
    t = Table(
        "measure",
        "client",
        "messages",
        "seconds",
        "msgs/s",
        "MB/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "1st msg ms",
        "Kafka/native",
        title=f"librdkafka {s['librdkafka']} beside the native client: 3 nodes, replication 3, acks=all, "
        f"fsync={s['fsync']}, {s['size']}-byte messages, {s['partitions']} partition(s)",
        caption=f"load average {m['loadavg'][0]:g} at the start, {m['loadavg_end'][0]:g} at the end; "
        f"{m['cores']} cores, {m['cpu']}",
    )
    r = ratios(run.figures)

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    for f in run.figures:
        t.add_row(
            MEASURES[f.measure] if f.client == "librdkafka" else "",
            f.client,
            f"{f.msgs:,}",
            f"{f.secs:.2f}",
            f"{f.msgs_per_s:,.0f}",
            f"{f.mb_per_s:.1f}",
            ms(f.latency_ms(0.5)),
            ms(f.latency_ms(0.99)),
            ms(f.latency_ms(0.999)),
            "-" if f.first_s is None else f"{f.first_s * 1000:.0f}",
            f"{r[f.measure]:.2f}x" if f.client == "librdkafka" and f.measure in r else "",
            end_section=f.client == "native",
        )
    return t


def markdown(line: dict) -> str:
    """The run's JSON line as a Markdown table with its settings under it: for
    docs/kafka.md and the issue's closing note."""
    by = {(f["measure"], f["client"]): f for f in line["results"]}
    out = ["| measure | librdkafka | native | Kafka/native |", "|---|---|---|---|"]

    def cell(f: dict | None) -> str:
        if f is None:
            return "-"
        text = f"{f['msgs_per_s']:,}/s, {f['MB_per_s']:.1f} MB/s"
        if f["p50_ms"] is not None:
            text += f"; p50 {f['p50_ms']:.2f} / p99 {f['p99_ms']:.2f} / p99.9 {f['p999_ms']:.2f} ms"
        if f.get("first_message_ms") is not None:
            text += f"; first message {f['first_message_ms']:.0f} ms after creating the consumer"
        return text

    for key, name in MEASURES.items():
        ratio = line["ratios"].get(key)
        out.append(
            f"| {name} | {cell(by.get((key, 'librdkafka')))} | {cell(by.get((key, 'native')))} | "
            + ("-" if ratio is None else f"{ratio:.2f}x")
            + " |"
        )
    s, m = line["settings"], line["machine"]
    rd = ", ".join(f"{k}={v}" for k, v in s["librdkafka_publish"].items() if k not in RD_COMMON)
    native = ", ".join(f"{k}={v}" for k, v in s["native_publish"].items())
    out += [
        "",
        f"{s['messages']:,} messages of {s['size']} bytes ({s['sync_messages']:,} one in flight), "
        f"{s['partitions']} partition(s), 3 nodes, replication 3, fsync={s['fsync']}; "
        f"librdkafka {s['librdkafka']} ({rd}); native publish ({native}). "
        f"Machine: {m['cores']} cores, {m['cpu']}, Python {m['python']}; {m['date']}; "
        f"load average {m['loadavg'][0]:g} at the start, {m['loadavg_end'][0]:g} at the end.",
    ]
    return "\n".join(out) + "\n"


def json_line(run: Run) -> dict:
    return {
        "bench": "kafka",
        "settings": run.settings,
        "machine": run.machine,
        "results": [f.json() for f in run.figures],
        "ratios": ratios(run.figures),
    }


async def main(args: argparse.Namespace) -> int:
    import confluent_kafka

    started = machine()
    settings = {
        "messages": args.messages,
        "size": args.size,
        "sync_messages": args.sync_messages,
        "warmup": args.warmup,
        "partitions": args.partitions,
        "fsync": args.fsync,
        "librdkafka": confluent_kafka.libversion()[0],
        "confluent_kafka": confluent_kafka.__version__,
        "librdkafka_publish": RD_PUBLISH,
        "librdkafka_one_in_flight": RD_ONE,
        "librdkafka_consumer": {**RD_CONSUMER, "consume_batch": RD_CONSUME_BATCH},
        "native_publish": NATIVE_PUBLISH,
        "native_consumer": NATIVE_CONSUMER,
    }
    with progress_display() as (progress, phase):
        figures = await measure(args, progress, phase)
    run = Run(figures, settings, {**started, "loadavg_end": [round(x, 2) for x in os.getloadavg()]})
    line = json_line(run)
    publish(results_table(run), json.dumps(line), args.json, args.markdown, lambda: markdown(line))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scripts/bench kafka", description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=50_000, help="published by each producer, read by each consumer")
    p.add_argument("--size", type=int, default=256, help="bytes per message")
    p.add_argument("--sync-messages", type=int, default=2000, help="one-in-flight sends counted, per client")
    p.add_argument("--warmup", type=int, default=100, help="one-in-flight sends not counted")
    p.add_argument("--partitions", type=int, default=1, help="of the publish topics")
    p.add_argument("--fsync", choices=["always", "interval", "never"], default="always")
    p.add_argument("--phase-timeout", type=float, default=300.0, help="seconds before a phase is given up")
    p.add_argument("--json", help="also write the JSON line to this file")
    p.add_argument("--markdown", help="also write the table and settings in Markdown to this file")
    p.add_argument("--markdown-from", help="print the Markdown table of a saved --json file and stop")
    return p


if __name__ == "__main__":
    cli = parser().parse_args()
    if cli.markdown_from:
        sys.stdout.write(markdown(json.loads(Path(cli.markdown_from).read_text())))
        sys.exit(0)
    try:
        sys.exit(trio.run(main, cli))
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
