"""The roster on real node processes: a 3-node cluster grows to 5 under a keyed
idempotent load, rebalances onto the new nodes, loses a founding node to `remove-node`,
and never loses, duplicates or reorders an acknowledged message; a founding node
restarted with its old `--peers` and a joined one restarted with `--join` both know the
cluster as it is now."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest
import trio

from client import Admin, Producer
from client.errors import InvalidRequestError, TideMQError
from client.protocol import Metadata
from tests.cluster import admit, process_cluster, read_all

pytestmark = pytest.mark.timeout(150)

#: Fewer internal partitions: the moves are the subject, not the Raft group count.
SMALL = {"offsets_partitions": 2, "txn_partitions": 1, "half_partitions": 1, "delay_partitions": 1}
KEYS = 12


def hosted(md) -> Counter[int]:
    return Counter(r for t in md.topics for p in t.partitions for r in p.replicas)


async def test_grow_to_five_under_load_rebalance_and_remove_a_founding_node(tmp_path):
    async with process_cluster(tmp_path, 3, fsync="never", settings=SMALL) as cluster:
        await cluster.wait_ready()
        acked: dict[bytes, list[bytes]] = defaultdict(list)
        stop = trio.Event()

        async def load() -> None:
            """One idempotent producer, keyed, one send at a time: what it was told is
            stored is what a reader must find, in order per key."""
            async with Producer(cluster.bootstrap, delivery_timeout=60) as producer:
                i = 0
                while not stop.is_set():
                    key = b"k%d" % (i % KEYS)
                    await producer.send("grow", b"%d" % i, key=key)
                    acked[key].append(b"%d" % i)
                    i += 1

        async with Admin(cluster.bootstrap) as admin:
            await admin.create_topic("grow", 4, 3)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(load)
                await trio.sleep(0.5)
                new = [cluster.add_node(), cluster.add_node()]
                for n in new:
                    with pytest.raises(InvalidRequestError, match="has not asked to join"):
                        await admin.add_node(n, cluster.peer_addrs[n], wait=None)  # (not started yet)
                    cluster.start(n)
                for n in new:
                    await admit(admin, cluster, n)

                moved = await admin.rebalance(wait=60)
                assert moved, "a rebalance after two nodes joined moves replicas onto them"
                md = await admin.describe_cluster()
                load_per_node = hosted(md)
                assert set(load_per_node) == {1, 2, 3, 4, 5}
                assert max(load_per_node.values()) - min(load_per_node.values()) <= 1, load_per_node
                assert not await admin.rebalance(dry_run=True), "a balanced cluster has nothing to move"
                assert {n.node_id: n.state for n in md.nodes} == dict.fromkeys(range(1, 6), "voter")

                await admin.remove_node(1, wait=60)
                assert await cluster.wait_exit(1, 20) == 0  # (it stops by itself, cleanly)
                md = await admin.describe_cluster()
                assert [n.node_id for n in md.nodes] == [2, 3, 4, 5]
                assert 1 not in hosted(md)
                with pytest.raises(TideMQError, match="removed"):
                    await admin.add_node(1, cluster.peer_addrs[1], wait=None)
                await trio.sleep(0.5)
                stop.set()

        # Restarted with the flags it was born with, a founding node still knows 4 and 5
        # and not 1; a joined node comes back through --join on the data it has.
        for n in (2, 5):
            cluster.kill(n, 15)
            await cluster.wait_exit(n)
            cluster.start(n)
        with trio.fail_after(30):
            while True:
                try:
                    md = await cluster.request(2, Metadata(topics=[]))
                    if [n.node_id for n in md.nodes] == [2, 3, 4, 5] and all(n.alive for n in md.nodes):
                        break
                except (TideMQError, OSError):
                    pass
                await trio.sleep(0.2)

        live = ",".join(cluster.peers[n] for n in (2, 3, 4, 5))
        got: dict[bytes, list[bytes]] = defaultdict(list)
        for m in await read_all(live, ["grow"], timeout=60):
            got[m.key].append(m.value)
        assert sum(map(len, acked.values())) > 100
        assert got == acked  # every acknowledged message, once, in order per key
