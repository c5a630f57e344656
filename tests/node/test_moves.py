"""Replica moves on in-process brokers: a move held back by its throttle is cancelled
and the partition goes back to its replicas, the new node's copy dropped; a cancel of a
partition that is not moving is refused."""

from __future__ import annotations

import pytest
import trio

from client import Admin, Producer
from client.errors import InvalidRequestError
from tests.cluster import local_cluster

pytestmark = pytest.mark.timeout(60)


async def test_a_cancelled_move_goes_back_to_its_replicas(tmp_path):
    async with local_cluster(tmp_path) as cluster:
        await cluster.wait_roster()
        async with Admin(cluster.bootstrap) as admin:
            info = await admin.create_topic("back", 1, 2)
            assert info is not None
            before = info.partitions[0].replicas
            spare = next(n for n in (1, 2, 3) if n not in before)
            async with Producer(cluster.bootstrap) as producer:
                await producer.submit_many("back", [b"x" * 1000] * 300)
                await producer.flush()
            with pytest.raises(InvalidRequestError, match="not moving"):
                await admin.cancel_reassignment("back", 0, wait=None)
            # 300 KB at 10 KB/s: still catching up when it is cancelled.
            await admin.reassign("back", 0, [before[0], spare], throttle=10_000, wait=None)
            with trio.fail_after(20):
                while not await admin.moves():
                    await trio.sleep(0.05)
            [moving] = await admin.moves()
            assert moving.target == [before[0], spare] and moving.behind.get(spare, 0) > 0
            assert await admin.cancel_reassignment("back", 0, wait=30) == before
            assert (await admin.describe_topic("back")).partitions[0].replicas == before
            assert not await admin.moves()
            with trio.fail_after(10):  # the spare drops the copy it had begun
                while ("back", 0) in cluster.brokers[spare].partitions:
                    await trio.sleep(0.05)
