"""Static membership (Kafka's KIP-345 on the native protocol): a consumer with an
instance id that closes and comes back within its session timeout gets its partitions
back, and no partition moved meanwhile; what it handled was committed as it closed."""

from __future__ import annotations

import trio

from client import Admin, Consumer, Producer
from client.cluster import ClusterClient
from client.group import describe_group
from tests.cluster import local_cluster


async def holdings(bootstrap: str, group: str) -> dict[str, set[tuple[str, int]]]:
    async with ClusterClient(bootstrap) as cluster:
        desc = await describe_group(cluster, group)
    return {m.member_id: {(a.topic, a.partition) for a in m.assignment} for m in desc.members}


async def settled(consumers: list[Consumer], partitions: int) -> None:
    with trio.fail_after(30):
        while sum(len(c.assignment) for c in consumers) < partitions or any(not c.assignment for c in consumers):
            await trio.sleep(0.05)


async def test_a_static_member_restarting_in_its_session_gets_its_partitions_back(tmp_path):
    async with local_cluster(tmp_path) as c:
        async with Admin(c.bootstrap) as admin:
            await admin.create_topic("shelves", partitions=4, replication=3)
        async with Producer(c.bootstrap) as producer:
            for p in range(4):
                await producer.send("shelves", b"p%d" % p, partition=p)
        common = {"group": "stock", "topics": ["shelves"], "offset_reset": "earliest", "session_timeout": 8.0}
        async with Consumer(c.bootstrap, instance_id="b", **common) as b:
            async with Consumer(c.bootstrap, instance_id="a", **common) as a:
                await settled([a, b], 4)
                mine, theirs = set(a.assignment), set(b.assignment)
                # The group learns what a member holds from its next heartbeat: wait for
                # that before a goes, so what the group shows after is a's going alone.
                with trio.fail_after(10):
                    while await holdings(c.bootstrap, "stock") != {"static-a": mine, "static-b": theirs}:
                        await trio.sleep(0.1)
                with trio.fail_after(10):
                    while len({(await a.__anext__()).partition for _ in range(len(mine))}) < len(mine):
                        pass
            # a is away: still a member (holding nothing it reports), and nothing moved to b.
            away = await holdings(c.bootstrap, "stock")
            assert "static-a" in away and away["static-b"] == theirs and set(b.assignment) == theirs, away
            await trio.sleep(1.0)
            assert set(b.assignment) == theirs
            async with Consumer(c.bootstrap, instance_id="a", **common) as again:
                await settled([again, b], 4)
                assert set(again.assignment) == mine and set(b.assignment) == theirs
                with trio.move_on_after(1.5):  # what it read before was committed as it closed
                    extra = await again.__anext__()
                    raise AssertionError(f"read again after a restart: {extra}")
