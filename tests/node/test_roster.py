"""The roster's refusals and its founding, on in-process brokers: what `add-node` and
`remove-node` refuse and why, and the founding nodes written into the controller's state
(a restarted node's links follow that state, tests/node/test_roster_process.py)."""

from __future__ import annotations

import pytest
import trio

from client import Admin
from client.errors import InvalidRequestError
from tests.cluster import local_cluster

pytestmark = pytest.mark.timeout(60)


async def test_the_founding_nodes_are_in_the_roster_and_refusals_say_what_to_do(tmp_path):
    async with local_cluster(tmp_path) as cluster:
        with trio.fail_after(10):
            while any(len(b.state.members) < 3 for b in cluster.brokers.values()):
                await trio.sleep(0.05)
        for b in cluster.brokers.values():
            assert {n: e.peer for n, e in b.state.members.items()} == cluster.peer_addrs
            assert b.controller.core.conf.voters == (1, 2, 3)
        async with Admin(cluster.bootstrap) as admin:
            await admin.create_topic("three", 1, 3)
            with pytest.raises(InvalidRequestError, match="has not asked to join"):
                await admin.add_node(4, "127.0.0.1:1", wait=None)
            with pytest.raises(InvalidRequestError, match="add a node first"):
                await admin.remove_node(3, wait=None)  # (every node holds a replica of three-0)
            with pytest.raises(InvalidRequestError, match="not a member"):
                await admin.remove_node(7, wait=None)
            with pytest.raises(InvalidRequestError, match="not members of the cluster"):
                await admin.reassign("three", 0, [1, 2, 9], wait=None)
            with pytest.raises(InvalidRequestError, match="distinct"):
                await admin.reassign("three", 0, [1, 1, 2], wait=None)
            # The same nodes in another order: a new preferred leader, at once, no move.
            await admin.reassign("three", 0, [3, 1, 2], wait=10)
            assert (await admin.describe_topic("three")).partitions[0].replicas == [3, 1, 2]
            assert await admin.rebalance(dry_run=True) == []  # (three nodes, every replica everywhere)
