"""The roster's refusals and its founding, on in-process brokers: what `add-node` and
`remove-node` refuse and why, and the founding nodes written into the controller's state
(a restarted node's links follow that state, tests/node/test_roster_process.py)."""

from __future__ import annotations

import pytest
import trio

from client import Admin
from client.errors import InvalidRequestError
from tests.cluster import local_cluster, tidemq_cli

pytestmark = pytest.mark.timeout(60)


async def test_the_founding_nodes_are_in_the_roster_and_refusals_say_what_to_do(tmp_path):
    async with local_cluster(tmp_path) as cluster:
        await cluster.wait_roster()
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
            await admin.reassign("three", 0, [3, 1, 2], wait=30)
            assert (await admin.describe_topic("three")).partitions[0].replicas == [3, 1, 2]
            # Three nodes hosting every replica: a rebalance at most hands leaderships on,
            # and a dry run changes nothing.
            plan = await admin.rebalance(dry_run=True)
            assert all(sorted(m.replicas) == sorted(m.target) for m in plan)
            now = await admin.describe_cluster()
            placed = {(t.name, p.partition): p.replicas for t in now.topics for p in t.partitions}
            assert all(placed[(m.topic, m.partition)] == m.replicas for m in plan)


async def test_the_cli_says_what_a_rebalance_and_a_refused_removal_mean(tmp_path):
    async with local_cluster(tmp_path) as cluster:
        await cluster.wait_roster()
        tidemq = tidemq_cli(TIDEMQ_BOOTSTRAP=cluster.bootstrap)
        async with Admin(cluster.bootstrap) as admin:
            await admin.create_topic("cli", 1, 3)

        def run(*args: str):
            return trio.to_thread.run_sync(lambda: tidemq(*args))

        dry = await run("cluster", "rebalance", "--dry-run")  # (at most leaderships to hand on)
        assert dry.returncode == 0 and ("nothing to move" in dry.stdout or "planned" in dry.stdout), dry.stderr
        refused = await run("cluster", "remove-node", "3")
        assert refused.returncode == 1 and "add a node first" in refused.stderr
        moved = await run("topic", "reassign", "cli", "--partition", "0", "--replicas", "2,3,1")
        assert moved.returncode == 0, moved.stderr
        assert "cli-0: moved from replicas" in moved.stdout and "to 2,3,1" in moved.stdout
        bad = await run("topic", "reassign", "cli", "--partition", "0", "--replicas", "1,1")
        assert bad.returncode == 2 and "distinct" in bad.stderr  # (argparse: before any request)
