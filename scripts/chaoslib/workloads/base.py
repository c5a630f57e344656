"""The workload interface: what the runner gives a workload and expects of it.

A workload is a class with a `name`, the `topics` it owns, `setup()` and `run(stop)`;
it writes what happened into the run's history (docs/chaos.md has the event types) and
leaves the judging to the checker.

The run's contract with a workload:

1. `setup()` once the cluster is up, before the clock starts (create topics);
2. `run(stop)` from time 0 while faults are injected. When `stop` is set the faults are
   over and healed: finish every send (each ends as acked, failed or unknown), read the
   final committed log of every owned topic (`read_final_logs`), let readers catch up
   and record where they ended, then return. The runner cancels a workload that has not
   returned within its drain timeout, and the checker then reports the run incomplete.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import trio

from client import Admin
from client.cluster import ClusterClient
from client.errors import TideMQError, TopicExistsError
from client.protocol import EARLIEST, READ_COMMITTED, AbortedTxn, Fetch, FetchPartition, ListOffsets
from scripts.chaoslib.history import History, text
from segments import Record, decode_records, iter_batches

LOG_CHUNK = 2000  # records per `log` event


@dataclass
class Context:
    """What a workload gets from the runner."""

    bootstrap: str  # the client proxies: every client byte crosses a fault point
    history: History
    seed: int
    say: Callable[[str], None]  # one line to the console
    partitions: int = 6
    replication: int = 3
    kafka_bootstrap: str = ""  # the Kafka client proxies, when the nodes serve Kafka's protocol
    kafka_security: dict[str, str] = field(default_factory=dict)  # librdkafka's TLS and SASL settings, if any

    def rng(self, name: str) -> random.Random:
        """A random stream of its own for each part of a workload, from the run's seed."""
        return random.Random(f"tidemq-chaos-{self.seed}-{name}")


class Workload(ABC):
    name: ClassVar[str]
    partitions: ClassVar[int | None] = None  # per topic; None: the run's default (Context.partitions)
    needs_kafka: ClassVar[bool] = False  # the nodes must serve Kafka's protocol (Context.kafka_bootstrap)

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @property
    @abstractmethod
    def topics(self) -> list[str]:
        """The topics this workload writes and reads (created by `setup`, compared across
        replicas at the end)."""

    async def setup(self) -> None:
        """Create the workload's topics (a retry after a lost answer finds them made)."""
        async with Admin(self.ctx.bootstrap, request_timeout=30) as admin:
            for topic in self.topics:
                try:
                    await admin.create_topic(
                        topic, partitions=self.partitions or self.ctx.partitions, replication=self.ctx.replication
                    )
                except TopicExistsError:
                    await admin.wait_for_leaders(topic)

    @abstractmethod
    async def run(self, stop: trio.Event) -> None:
        """Work until `stop`, then drain (see the module docstring) and return."""


async def read_final_logs(ctx: Context, topics: list[str], timeout: float = 60.0) -> dict[tuple[str, int], int]:
    """Read every partition of `topics` from its log start to its high watermark
    (read_committed, through the client proxies) into `log` events. Returns, per
    partition, the offset after its last data record (what a consumer group that has
    everything commits). Raises trio.TooSlowError after `timeout`."""

    def record(topic: str, p: int, hw: int, records: list[list], last: bool) -> None:
        ctx.history.record(
            "log", topic=topic, partition=p, high_watermark=hw, isolation="read_committed", records=records, last=last
        )

    return await _read_logs(ctx, topics, timeout, record)


async def committed_values(ctx: Context, topics: list[str], timeout: float = 60.0) -> set[str]:
    """Every value in the committed logs of `topics` now (read as `read_final_logs` does,
    recording nothing): for a workload waiting until something has landed."""
    values: set[str] = set()

    def collect(topic: str, p: int, hw: int, records: list[list], last: bool) -> None:
        values.update(r[2] for r in records if r[2] is not None)

    await _read_logs(ctx, topics, timeout, collect)
    return values


async def wait_landed(ctx: Context, topics: list[str], values: set[str], timeout: float) -> int:
    """Wait (at most `timeout`) until every one of `values` is in the committed logs of
    `topics`; how many are still missing then (0: all landed)."""
    missing = len(values)
    with trio.move_on_after(timeout):
        while True:
            try:
                landed = await committed_values(ctx, topics, timeout=timeout)
            except trio.TooSlowError:
                landed = set()
            missing = len(values - landed)
            if not missing:
                return 0
            await trio.sleep(1.0)
    return missing


Sink = Callable[[str, int, int, list, bool], None]


async def _read_logs(ctx: Context, topics: list[str], timeout: float, sink: Sink) -> dict[tuple[str, int], int]:
    ends: dict[tuple[str, int], int] = {}
    with trio.fail_after(timeout):
        async with ClusterClient(ctx.bootstrap, request_timeout=5, client_id="chaos-final-read") as cluster:
            for topic in topics:
                for p in range(await cluster.partition_count(topic)):
                    ends[(topic, p)] = await _read_partition(cluster, topic, p, sink)
    return ends


async def _read_partition(cluster: ClusterClient, topic: str, p: int, sink: Sink) -> int:
    """Read one partition to its high watermark as a read_committed consumer sees it:
    batches of aborted transactions are dropped (Kafka's rule, written here on its own
    rather than borrowed from the Consumer, so a mistake there cannot hide here), and a
    transaction still open holds the read at the last stable offset until it ends."""
    offset = (await cluster.leader_request(topic, p, ListOffsets(topic, p, EARLIEST))).offset
    chunk: list[list] = []
    after_data = 0
    while True:
        try:
            resp = await cluster.leader_request(
                topic, p, Fetch([FetchPartition(topic, p, offset, 1 << 20)], max_wait_ms=0, isolation=READ_COMMITTED)
            )
        except TideMQError:
            await trio.sleep(0.1)
            continue
        res = resp.results[0]
        if res.error:
            await cluster.refresh_metadata([topic])
            await trio.sleep(0.1)
            continue
        for record in _committed(res.records, res.aborted):
            if record.offset >= offset:
                chunk.append([record.offset, text(record.key), text(record.value)])
                after_data = record.offset + 1
        for header, _ in iter_batches(res.records):
            offset = max(offset, header.last_offset + 1)
        done = offset >= res.high_watermark
        if len(chunk) >= LOG_CHUNK or done:
            sink(topic, p, res.high_watermark, chunk, done)
            chunk = []
        if done:
            return after_data
        if not res.records:
            await trio.sleep(0.1)  # held at the last stable offset by an open transaction


def _committed(records: bytes, aborted: list[AbortedTxn]) -> Iterator[Record]:
    """Every data record a read_committed reader keeps: from an
    aborted transaction's first offset to its abort marker, that producer's
    transactional batches are dropped; control batches are never data."""
    pending = sorted((a.first_offset, a.producer_id) for a in aborted)
    aborting: set[int] = set()
    for header, data in iter_batches(records):
        while pending and pending[0][0] <= header.base_offset:
            aborting.add(pending.pop(0)[1])
        if header.is_control:
            if header.is_transactional:
                aborting.discard(header.producer_id)
            continue
        if header.is_transactional and header.producer_id in aborting:
            continue
        yield from decode_records(data)
