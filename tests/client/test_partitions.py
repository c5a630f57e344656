"""A topic grows: the controller places the new partitions (each its own Raft group),
every node opens its replicas of them, a live group takes them into its assignment,
and keyed producers see the new count; never fewer."""

from __future__ import annotations

import pytest
import trio

from client import Admin, Consumer, Producer
from client.errors import InvalidRequestError
from node.metadata import AddPartitionsCmd, ClusterState, CreateTopicCmd, decode_state, encode_state
from tests.cluster import local_cluster


def test_added_partitions_get_groups_of_their_own():
    s = ClusterState()
    s.apply(CreateTopicCmd("t", [[1, 2], [2, 3]]))
    s.apply(CreateTopicCmd("u", [[1, 2]]))
    meta = s.apply(AddPartitionsCmd("t", [[3, 1], [1, 2]]))
    assert [meta.group(p) for p in range(4)] == [1, 2, 4, 5]  # (3 is u's)
    assert len({m.group(p) for m in s.topics.values() for p in range(len(m.replicas))}) == 5
    assert decode_state(encode_state(s)).topics["t"] == meta
    assert isinstance(s.apply(AddPartitionsCmd("gone", [[1]])), Exception)


async def test_a_topic_grows_under_a_live_group(tmp_path):
    async with local_cluster(tmp_path) as c:
        async with Admin(c.bootstrap) as admin:
            await admin.create_topic("growing", partitions=1, replication=3)
            got: list[tuple[int, bytes]] = []
            async with Consumer(c.bootstrap, group="g", topics=["growing"], offset_reset="earliest") as consumer:

                async def read() -> None:
                    async for msg in consumer:
                        got.append((msg.partition, msg.value))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read)
                    info = await admin.add_partitions("growing", 3)
                    assert info is not None and len(info.partitions) == 3
                    assert all(len(p.replicas) == 3 for p in info.partitions)
                    async with Producer(c.bootstrap) as producer:
                        for p in range(3):
                            await producer.send("growing", b"to %d" % p, partition=p)
                    with trio.fail_after(30):
                        while len(got) < 3:
                            await trio.sleep(0.05)
                    nursery.cancel_scope.cancel()
            assert sorted(got) == [(0, b"to 0"), (1, b"to 1"), (2, b"to 2")]
            with pytest.raises(InvalidRequestError, match="never shrink"):
                await admin.add_partitions("growing", 2)
