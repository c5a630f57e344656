"""Transactions on three real node processes (replication 3): a commit over two topics
becomes visible at once, an abort only to read_uncommitted, a zombie producer is fenced,
the coordinator process SIGKILLed between prepare and markers still completes the
transaction (and nothing of it is visible before), and a consume-process-produce
pipeline in a child process SIGKILLed at seeded random points yields each input once.

The nodes share one cluster (module fixture, 2 partitions for each internal topic to keep
the Raft groups few on a small machine); each test uses topics and ids of its own. The
nodes start with $TIDEMQ_TEST_HOLD_MARKERS naming a file: while it exists a decided
transaction waits before its markers (node/transactions.py), which is how a test stops
a real coordinator exactly between prepare and markers.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from client import Admin, Producer
from client.cluster import ClusterClient
from client.errors import ProducerFencedError
from client.protocol import ListOffsets, OffsetFetch
from node.transactions import HOLD_MARKERS_ENV
from tests.cluster import ProcessCluster, read_all

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent.parent
SEED = 20261130


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("txnproc")
    (base / "node.toml").write_text("offsets_partitions = 2\ntxn_partitions = 2\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(HOLD_MARKERS_ENV, str(base / "hold"))  # inherited by the node processes
        c = ProcessCluster(base, 3, fsync="never")
        c.extra_args = ["--config", str(base / "node.toml")]
        c.hold = base / "hold"
        try:
            for n in c.peers:
                c.start(n)
            trio.run(c.wait_ready)
            yield c
        finally:
            c.close()


async def create(c, *specs) -> None:
    async with Admin(c.bootstrap) as admin:
        for name, partitions in specs:
            await admin.create_topic(name, partitions=partitions, replication=3)


async def read(c, names, isolation="read_committed", quiet=1.0, timeout=30):
    return await read_all(c.bootstrap, names, isolation=isolation, quiet=quiet, timeout=timeout)


def values(msgs):
    return sorted(m.value for m in msgs)


async def test_commit_over_two_topics_becomes_visible_together(cluster):
    await create(cluster, ("pa", 2), ("pb", 1))
    with trio.fail_after(60):
        async with Producer(cluster.bootstrap, transactional_id="proc-commit") as producer:
            await producer.begin_transaction()
            for i in range(6):
                await producer.submit("pa", b"a%d" % i, key=b"%d" % i)
            await producer.send("pb", b"b")
            await producer.flush()
            assert await read(cluster, ["pa", "pb"], quiet=0.5) == []  # written, not yet committed
            await producer.commit_transaction()
        # commit_transaction returned: every marker is written, all of it is visible.
        assert values(await read(cluster, ["pa", "pb"], quiet=0.5)) == sorted([b"a%d" % i for i in range(6)] + [b"b"])


async def test_abort_is_invisible_to_read_committed_only(cluster):
    await create(cluster, ("ab", 2))
    with trio.fail_after(60):
        async with Producer(cluster.bootstrap, transactional_id="proc-abort") as producer:
            async with producer.transaction():
                await producer.send("ab", b"kept", key=b"k")
            await producer.begin_transaction()
            await producer.send("ab", b"dropped-0", key=b"k")
            await producer.send("ab", b"dropped-1", key=b"other")
            await producer.abort()
        assert values(await read(cluster, ["ab"])) == [b"kept"]
        assert values(await read(cluster, ["ab"], "read_uncommitted")) == [b"dropped-0", b"dropped-1", b"kept"]


async def test_a_zombie_producer_is_fenced(cluster):
    await create(cluster, ("zz", 2))
    with trio.fail_after(60):
        async with (
            Producer(cluster.bootstrap, transactional_id="proc-zombie") as zombie,
            Admin(cluster.bootstrap) as admin,
        ):
            await zombie.begin_transaction()
            await zombie.send("zz", b"zombie-0", partition=0)
            async with Producer(cluster.bootstrap, transactional_id="proc-zombie") as fresh:
                info = await admin.describe_transaction("proc-zombie")
                assert (info.producer_id, info.producer_epoch) == (zombie.producer_id, fresh.producer_epoch)
                assert fresh.producer_epoch > zombie.producer_epoch
                assert info.state == "empty"  # the zombie's transaction was aborted
                with pytest.raises(ProducerFencedError):
                    await zombie.send("zz", b"zombie-1", partition=1)
                with pytest.raises(ProducerFencedError):
                    await zombie.commit_transaction()
                async with fresh.transaction():
                    await fresh.send("zz", b"fresh", partition=0)
        assert values(await read(cluster, ["zz"])) == [b"fresh"]
        assert values(await read(cluster, ["zz"], "read_uncommitted")) == [b"fresh", b"zombie-0"]


# -- exactly-once pipeline in a process killed at random points ---------------------------------

CHILD = """
import sys, trio
from client import Consumer, Producer

async def main(bootstrap, progress):
    async with Consumer(bootstrap, group="eo", topics=["eo-in"], offset_reset="earliest",
                        session_timeout=2) as consumer, \\
               Producer(bootstrap, transactional_id="eo-1", request_timeout=5, delivery_timeout=30) as producer:
        async def handler(msg):
            await producer.send("eo-out", msg.value, key=msg.key)
            with open(progress, "a") as f:       # the parent times its kills from this
                f.write(f"{msg.partition}:{msg.offset}\\n")
        await consumer.run(handler, producer=producer, dead_letter=False)

trio.run(main, sys.argv[1], sys.argv[2])
"""

INPUTS = 300  # enough that every kill lands mid-stream, however fast the pipeline runs
KILLS = 5


def handled(progress: Path) -> int:
    return len(progress.read_text().splitlines()) if progress.exists() else 0


async def test_pipeline_killed_at_random_points_outputs_each_input_once(cluster, tmp_path):
    """Each round starts the pipeline process, waits until it handles a message, lets it
    run a seeded random while more and SIGKILLs it (mid-handler, mid-commit, anywhere).
    The next process's producer fences the dead one and aborts what it left open; its
    consumer resumes from the offsets committed with the last committed transaction."""
    rng = random.Random(SEED)
    await create(cluster, ("eo-in", 2), ("eo-out", 2))
    async with Producer(cluster.bootstrap) as plain:
        for i in range(INPUTS):
            await plain.submit("eo-in", b"%d" % i, key=b"%d" % i)
        await plain.flush()
    progress = tmp_path / "progress"
    log = (tmp_path / "pipeline.log").open("ab")  # the children's output, closed below

    def spawn() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", CHILD, cluster.bootstrap, str(progress)], cwd=ROOT, stdout=log, stderr=log
        )

    child = None
    try:
        with trio.fail_after(100):
            for _ in range(KILLS):
                before = handled(progress)
                child = spawn()
                while handled(progress) == before:
                    assert child.poll() is None, f"the pipeline exited ({child.returncode}); see {log.name}"
                    await trio.sleep(0.02)
                await trio.sleep(rng.uniform(0.0, 0.5))
                child.kill()
                await trio.to_thread.run_sync(child.wait)
            child = spawn()
            while len(await read(cluster, ["eo-out"], quiet=0.5)) < INPUTS:
                assert child.poll() is None, f"the pipeline exited ({child.returncode}); see {log.name}"
            child.kill()
            await trio.to_thread.run_sync(child.wait)
            out = await read(cluster, ["eo-out"])
            async with ClusterClient(cluster.bootstrap) as client:
                committed = {
                    (t, p): o for t, p, o in (await client.coordinator_request("eo", OffsetFetch("eo"))).offsets
                }
                ends = {
                    ("eo-in", p): (await client.leader_request("eo-in", p, ListOffsets("eo-in", p))).offset
                    for p in (0, 1)
                }
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait(10)
        log.close()
    assert sorted(int(m.value) for m in out) == list(range(INPUTS))  # each input once: none lost, none twice
    assert committed == ends  # offsets commit with (before the markers of) each transaction
    assert handled(progress) >= INPUTS  # more: the inputs whose transaction a kill aborted, handled again


# -- coordinator killed between prepare and markers -----------------------------------------------


async def test_coordinator_process_killed_between_prepare_and_markers(cluster):
    await create(cluster, ("ka", 2), ("kb", 1))
    expected = sorted([b"a%d" % i for i in range(6)] + [b"b"])
    with trio.fail_after(90):
        async with (
            Producer(
                cluster.bootstrap, transactional_id="proc-crashy", request_timeout=10, delivery_timeout=60
            ) as producer,
            Admin(cluster.bootstrap) as admin,
        ):
            await producer.begin_transaction()
            for i in range(6):
                await producer.send("ka", b"a%d" % i, key=b"%d" % i)
            await producer.send("kb", b"b")
            cluster.hold.touch()
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(producer.commit_transaction)
                    while (info := await admin.describe_transaction("proc-crashy")).state != "prepare_commit":
                        await trio.sleep(0.02)
                    # Decided, with no marker anywhere: nothing of it is visible yet.
                    assert await read(cluster, ["ka", "kb"], quiet=0.5) == []
                    assert values(await read(cluster, ["ka", "kb"], "read_uncommitted", quiet=0.5)) == expected
                    doomed = info.coordinator
                    cluster.kill(doomed)
                    await cluster.wait_exit(doomed)
                    cluster.hold.unlink()
                # commit_transaction returned: the next coordinator finished it.
            finally:
                cluster.hold.unlink(missing_ok=True)
            # commit_transaction returned: the next coordinator completed it. Ask until the
            # answer comes from that coordinator (the first answer may come from a node that
            # has not yet heard that it lost the coordination).
            with trio.move_on_after(20):
                while (info := await admin.describe_transaction("proc-crashy")).state != "complete_commit":
                    await trio.sleep(0.2)
            assert (info.state, info.coordinator != doomed) == ("complete_commit", True), info
        assert values(await read(cluster, ["ka", "kb"])) == expected
        cluster.start(doomed)
        await cluster.wait_ready()
