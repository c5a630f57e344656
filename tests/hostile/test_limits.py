"""Limits that need their own cluster settings, against real node processes: a full disk
refuses produce on that node only; a follower far behind catches up through peer frames
capped small; idle producer ids and dead groups' offsets expire."""

from __future__ import annotations

import signal

import pytest
import trio

from client import Admin, Producer
from client.cluster import ClusterClient
from client.errors import OutOfOrderSequenceError, StorageError
from client.protocol import InitProducerId, OffsetCommit, OffsetFetch, Produce
from scripts.chaoslib.cluster import partition_path
from scripts.fuzzlib.runner import compare_partition
from segments import build_batch
from tests.cluster import process_cluster, read_all
from tests.hostile.conftest import assert_unharmed

pytestmark = pytest.mark.timeout(240)


async def test_a_full_disk_refuses_produce_on_that_node_while_the_rest_goes_on(tmp_path):
    async with process_cluster(tmp_path, 3, fsync="never") as c:
        c.node_settings[1] = {"min_free_bytes": 1 << 60}  # node 1's disk is "full"
        c.kill(1)
        await c.wait_exit(1)
        c.start(1)
        await c.wait_ready()
        async with Admin(c.bootstrap) as admin:
            await admin.create_topic("spread", partitions=3, replication=3)
        with trio.fail_after(30):
            while True:  # preferred leaders settle one per node
                leaders = {p: await c.leader_of("spread", p) for p in range(3)}
                if set(leaders.values()) == {1, 2, 3}:
                    break
                await trio.sleep(0.2)
        for p, leader in leaders.items():
            request = Produce("spread", p, build_batch([(None, b"at %d" % p, (), None)]), timeout_ms=5000)
            if leader == 1:
                with pytest.raises(StorageError) as refused:
                    await c.request(leader, request)
                assert refused.value.retriable
            else:  # node 1 still follows: Raft's own writes go on
                await c.request(leader, request)
        got = await read_all(c.bootstrap, ["spread"], quiet=1.0)
        assert sorted(m.value for m in got) == sorted(b"at %d" % p for p, n in leaders.items() if n != 1)
        assert all(c.alive(n) for n in c.procs)
        c.node_settings.pop(1)  # space freed: the node takes writes again
        c.kill(1)
        await c.wait_exit(1)
        c.start(1)
        await c.wait_ready()
        await assert_unharmed(c)


async def test_a_follower_far_behind_catches_up_through_small_peer_frames(tmp_path):
    frame = 256 * 1024  # peer frames carry at most half: 128 KiB
    async with process_cluster(tmp_path, 3, fsync="never", settings={"max_frame_bytes": frame}) as c:
        await c.wait_ready()
        async with Admin(c.bootstrap) as admin:
            await admin.create_topic("behind", partitions=1, replication=3)
        c.kill(3, signal.SIGKILL)
        await c.wait_exit(3)
        value = bytes(range(256)) * 160  # 40 KiB
        async with Producer(c.bootstrap, batch_bytes=100_000) as producer:
            for i in range(100):  # 4 MB the follower has to fetch in pieces
                await producer.submit("behind", value, key=b"%d" % i)
            await producer.flush()
        c.start(3)
        async with ClusterClient(c.bootstrap) as client:
            with trio.fail_after(60):
                while True:
                    md = await client.refresh_metadata(["behind"])
                    info = md.topics[0].partitions[0]
                    if 3 in info.in_sync and info.high_watermark >= 100:
                        break
                    await trio.sleep(0.2)
        hw = info.high_watermark
        assert all(c.alive(n) for n in c.procs)
        c.close()
        paths = {n: partition_path(c.base / f"n{n}", "behind", 0) for n in c.procs}
        assert compare_partition(paths, hw) is None


async def test_idle_producer_ids_and_dead_groups_offsets_expire(tmp_path):
    settings = {"producer_id_expiration_ms": 2000, "offsets_retention_ms": 2000}
    async with process_cluster(tmp_path, 3, fsync="never", settings=settings) as c:
        ctrl = await c.wait_ready()
        async with Admin(c.bootstrap) as admin:
            await admin.create_topic("idle", partitions=1, replication=3)
        leader = await c.leader_of("idle", 0)
        pid = (await c.request(ctrl, InitProducerId())).producer_id

        def batch(seq: int) -> Produce:
            data = build_batch(
                [(None, b"seq %d" % seq, (), None)], producer_id=pid, producer_epoch=0, base_sequence=seq
            )
            return Produce("idle", 0, data, timeout_ms=5000)

        await c.request(leader, batch(0))
        with pytest.raises(OutOfOrderSequenceError):
            await c.request(leader, batch(5))  # a gap: refused while remembered
        async with ClusterClient(c.bootstrap) as client:
            await client.coordinator_request("gone", OffsetCommit("gone", [("idle", 0, 1)]))
            assert (await client.coordinator_request("gone", OffsetFetch("gone"))).offsets == [("idle", 0, 1)]
            await trio.sleep(2.5)
            async with Producer(c.bootstrap) as other:  # moves the log's clock on
                await other.send("idle", b"later")
            await c.request(leader, batch(5))  # forgotten: a fresh start
            with trio.fail_after(30):
                while (await client.coordinator_request("gone", OffsetFetch("gone"))).offsets:
                    await trio.sleep(0.3)
        await assert_unharmed(c)
