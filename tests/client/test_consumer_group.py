"""Consumers in groups against in-process brokers: sharing, rebalancing, resuming from
committed offsets, and the commit point staying at the lowest unfinished offset."""

from functools import partial

import trio

from client import Admin, Consumer, Producer
from tests.cluster import local_cluster


async def fill(c, topic, n, partitions=4):
    async with Admin(c.bootstrap) as admin:
        await admin.create_topic(topic, partitions=partitions, replication=3)
    async with Producer(c.bootstrap) as producer:
        for i in range(n):
            await producer.submit(topic, b"%d" % i, key=b"k%d" % i)
        await producer.flush()


async def take(consumer, n, into):
    async for msg in consumer:
        into.append(int(msg.value))
        if len(into) >= n:
            return


async def test_members_share_partitions_and_rebalance_on_join_and_leave(tmp_path):
    async with local_cluster(tmp_path) as c:
        await fill(c, "g", 0)
        kw = dict(topics=["g"], group="grp", offset_reset="earliest", session_timeout=3.0)
        async with Consumer(c.bootstrap, **kw) as a:
            with trio.fail_after(10):
                while len(a.assignment) != 4:
                    await trio.sleep(0.02)
            async with Consumer(c.bootstrap, **kw) as b:
                with trio.fail_after(10):
                    while not (len(a.assignment) == 2 and len(b.assignment) == 2):
                        await trio.sleep(0.02)
                assert not a.assignment & b.assignment
                kept = set(a.assignment)
            with trio.fail_after(10):  # b left: a gets everything back, keeping what it had
                while len(a.assignment) != 4:
                    await trio.sleep(0.02)
            assert kept <= a.assignment


async def test_group_resumes_from_committed_offsets(tmp_path):
    async with local_cluster(tmp_path) as c:
        await fill(c, "r", 100)
        first: list[int] = []
        async with Consumer(c.bootstrap, topics=["r"], group="resume", offset_reset="earliest") as consumer:
            with trio.fail_after(10):
                await take(consumer, 40, first)
            await consumer.commit()
        rest: list[int] = []
        async with Consumer(c.bootstrap, topics=["r"], group="resume", offset_reset="earliest") as consumer:
            with trio.fail_after(10):
                await take(consumer, 60, rest)
            with trio.move_on_after(0.5):
                await take(consumer, 1, rest)  # nothing more: no message twice
        assert sorted(first + rest) == list(range(100))


async def test_commit_point_is_lowest_unfinished_then_redelivered(tmp_path):
    async with local_cluster(tmp_path) as c:
        await fill(c, "cc", 30, partitions=1)
        release = trio.Event()
        done: list[int] = []

        async def handler(msg):
            if int(msg.value) == 5:
                await release.wait()  # offset of "5" stays unfinished
            done.append(int(msg.value))

        async with Consumer(c.bootstrap, topics=["cc"], group="cc", offset_reset="earliest") as consumer:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(consumer.run, handler, mode="concurrent", concurrency=8))
                with trio.fail_after(10):
                    while len(done) < 29:
                        await trio.sleep(0.01)
                await trio.sleep(1.5)  # a periodic commit happens meanwhile
                nursery.cancel_scope.cancel()
            assert 5 not in done
        # The crashed-out member's commit stopped at "5": a new member starts there.
        again: list[int] = []
        async with Consumer(c.bootstrap, topics=["cc"], group="cc", offset_reset="earliest") as consumer:
            with trio.fail_after(10):
                await take(consumer, 1, again)
        assert again == [5]


async def test_committed_position_steps_over_control_batches(tmp_path):
    from client.cluster import ClusterClient
    from client.group import fetch_offsets

    async with local_cluster(tmp_path) as c:
        await fill(c, "ctl", 3, partitions=1)  # offset 0 is the leader's no-op, then 1..3
        leader = next(n for n, b in c.brokers.items() if b.partitions[("ctl", 0)].is_leader)
        got: list[int] = []
        async with Consumer(c.bootstrap, topics=["ctl"], group="ctl", offset_reset="earliest") as consumer:
            with trio.fail_after(10):
                await take(consumer, 3, got)
            await consumer.commit()
            async with ClusterClient(c.bootstrap) as cluster:
                assert await fetch_offsets(cluster, "ctl") == {("ctl", 0): 4}
                await c.stop(leader)  # the next leader writes its no-op at 4
                with trio.fail_after(15):
                    while (await fetch_offsets(cluster, "ctl")).get(("ctl", 0)) != 5:
                        with trio.move_on_after(0.3):
                            await consumer.__anext__()
                        await consumer.commit()
