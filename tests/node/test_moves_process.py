"""Replica moves on real node processes, while a transactional consume-transform-produce
pipeline runs: a data partition moves off its leader (through `tidemq topic reassign`,
throttled), the output partition moves, and so do the group's offsets partition and the
transaction coordinator's; the pipeline outputs each input exactly once, and the
throttle holds the catching-up replica to its rate."""

from __future__ import annotations

import time

import pytest
import trio

from client import Admin, Consumer, Producer
from client.cluster import ClusterClient
from client.conventions import OFFSETS_TOPIC, TXN_TOPIC
from client.partitioner import partition_for_key
from client.protocol import ListOffsets, OffsetFetch
from tests.cluster import admit, process_cluster, read_all, tidemq_cli

pytestmark = pytest.mark.timeout(150)

SMALL = {"offsets_partitions": 2, "txn_partitions": 2, "half_partitions": 1, "delay_partitions": 1}
INPUTS = 400
VALUE = 4000  # bytes: 1.6 MB of input, enough for the throttle to show
THROTTLE_MB = 0.4


async def test_moves_while_a_transactional_pipeline_runs(tmp_path):
    async with process_cluster(tmp_path, 3, fsync="never", settings=SMALL) as cluster:
        await cluster.wait_ready()
        async with Admin(cluster.bootstrap) as admin:
            await admin.create_topic("mv-in", 2, 3)
            await admin.create_topic("mv-out", 2, 3)
            async with Producer(cluster.bootstrap) as plain:
                for i in range(INPUTS):
                    await plain.submit("mv-in", b"%d:" % i + b"x" * VALUE, key=b"%d" % i)
                await plain.flush()
            n4 = cluster.add_node()
            cluster.start(n4)
            await admit(admin, cluster, n4)
            md = await admin.describe_cluster()
            parts = {(t.name, p.partition): p for t in md.topics for p in t.partitions}

            async def pipeline() -> None:
                async with (
                    Consumer(cluster.bootstrap, group="mv", topics=["mv-in"], offset_reset="earliest") as consumer,
                    Producer(cluster.bootstrap, transactional_id="mv-tx", delivery_timeout=60) as producer,
                ):

                    async def handler(msg) -> None:
                        await producer.send("mv-out", msg.value.split(b":")[0], key=msg.key)
                        await trio.sleep(0.005)  # (a pipeline still running while the moves happen)

                    await consumer.run(handler, producer=producer, dead_letter=False)

            def away(topic: str, p: int) -> list[int]:
                """Replicas for the partition: node 4 in place of its leader, which leads it after."""
                info = parts[(topic, p)]
                return [n4, *(r for r in info.replicas if r != info.leader)]

            tidemq = tidemq_cli(TIDEMQ_BOOTSTRAP=cluster.bootstrap)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pipeline)
                await trio.sleep(0.5)
                # The input partition with its data, through the CLI and throttled.
                target = away("mv-in", 0)
                seen: list = []

                async def watch() -> None:  # what `cluster status` shows while it moves
                    while True:
                        seen.extend(m for m in await admin.moves() if m.behind.get(n4, 0) > 0)
                        await trio.sleep(0.2)

                nursery.start_soon(watch)
                start = time.monotonic()
                cli = await trio.to_thread.run_sync(
                    lambda: tidemq(
                        "topic",
                        "reassign",
                        "mv-in",
                        "--partition",
                        "0",
                        "--replicas",
                        ",".join(map(str, target)),
                        "--throttle",
                        str(THROTTLE_MB),
                    )  # fmt: skip
                )
                took = time.monotonic() - start
                assert any(m.topic == "mv-in" and m.target == target for m in seen), seen
                assert cli.returncode == 0, cli.stderr
                assert (
                    f"mv-in-0: moved from replicas {','.join(map(str, parts[('mv-in', 0)].replicas))} to" in cli.stdout
                )
                size = sum(
                    len(m.value) for m in await read_all(cluster.bootstrap, ["mv-in"], quiet=0.3) if m.partition == 0
                )
                assert took >= 0.7 * size / (THROTTLE_MB * 1e6), (took, size)
                # The output partition, the group's offsets and the transaction coordinator.
                offsets_p = partition_for_key(b"mv", len([k for k in parts if k[0] == OFFSETS_TOPIC]))
                txn_p = partition_for_key(b"mv-tx", len([k for k in parts if k[0] == TXN_TOPIC]))
                for topic, p in (("mv-out", 1), (OFFSETS_TOPIC, offsets_p), (TXN_TOPIC, txn_p)):
                    await admin.reassign(topic, p, away(topic, p), wait=60)
                with trio.fail_after(60):
                    while len(await read_all(cluster.bootstrap, ["mv-out"], quiet=0.5)) < INPUTS:
                        pass
                nursery.cancel_scope.cancel()
            md = await admin.describe_cluster()
            now = {(t.name, p.partition): p.replicas for t in md.topics for p in t.partitions}
            for key in (("mv-in", 0), ("mv-out", 1), (OFFSETS_TOPIC, offsets_p), (TXN_TOPIC, txn_p)):
                assert now[key] == away(*key), key
            assert not await admin.moves()
        out = await read_all(cluster.bootstrap, ["mv-out"])
        assert sorted(int(m.value) for m in out) == list(range(INPUTS))  # each input once
        inputs = await read_all(cluster.bootstrap, ["mv-in"], quiet=0.3)
        async with ClusterClient(cluster.bootstrap) as client:
            committed = {(t, p): o for t, p, o in (await client.coordinator_request("mv", OffsetFetch("mv"))).offsets}
            for p in (0, 1):
                end = (await client.leader_request("mv-in", p, ListOffsets("mv-in", p))).offset
                # Past the last input (a move leaves membership entries in the log after
                # it, no record to consume), never past the end.
                after_last = max(m.offset for m in inputs if m.partition == p) + 1
                assert after_last <= committed[("mv-in", p)] <= end, (p, committed, end)
