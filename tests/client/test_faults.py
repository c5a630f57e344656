"""Clients against nodes that go silent: every client link runs through a fault-injecting
TCP proxy (scripts/chaoslib/proxy.py) in the test's own trio run, so a test can blackhole
a node (connection open, nothing comes back) and heal it again.

- a request that times out drops its connection: the other requests on it fail at once
  with a retriable error, and the next one dials afresh;
- an idempotent producer whose batch timed out starts a new sequence line and goes on
  sending, without duplicating anything acknowledged;
- a consumer rides out its group coordinator going silent in the middle of a revoke.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

import pytest
import trio

from client import Admin, Consumer, Producer
from client.cluster import ClusterClient
from client.errors import ConnectionClosedError, NotEnoughReplicasError, RequestTimeoutError
from client.protocol import Metadata
from scripts.chaoslib.proxy import DOWN, UP, ProxyNet
from tests.cluster import LocalCluster


@asynccontextmanager
async def proxied_cluster(tmp_path, n: int = 1, peer_links: bool = False, **overrides):
    """In-process nodes that clients reach only through one proxy per node
    (`net.client[node]`); nodes talk to each other directly, or with `peer_links`
    through a proxy per direction too (`net.peer[(i, j)]`)."""
    async with trio.open_nursery() as nursery:
        cluster = LocalCluster(nursery, tmp_path, n, **overrides)
        net = ProxyNet(cluster.peers, cluster.peer_addrs)
        for link in net.links if peer_links else net.client.values():
            await nursery.start(link.serve)
        cluster.advertise = net.advertised()
        if peer_links:
            direct = cluster.config

            def config(node):
                cfg = direct(node)
                cfg.peers = net.peers_for(node)
                return cfg

            cluster.config = config
        try:
            for node in cluster.peers:
                await cluster.start(node)
            await cluster.wait_controller()
            yield cluster, net
        finally:
            net.heal()
            for node in list(cluster.brokers):
                await cluster.stop(node, graceful=False)
            nursery.cancel_scope.cancel()


async def test_a_timed_out_request_drops_its_connection(tmp_path):
    async with proxied_cluster(tmp_path) as (c, net):
        link = net.client[1]
        with trio.fail_after(30):
            async with ClusterClient(net.bootstrap, request_timeout=1.0) as client:
                addr = net.advertised()[1]
                await client.request(addr, Metadata([]))
                assert link.accepted == 1
                link.cut()
                ended: list[str] = []
                waited = {}

                async def first():
                    start = trio.current_time()
                    with pytest.raises(TimeoutError):
                        await client.request(addr, Metadata([]))
                    waited["first"] = trio.current_time() - start
                    ended.append("first")

                async def second():
                    await trio.sleep(0.5)  # its own timeout would end half a second after the first's
                    start = trio.current_time()
                    with pytest.raises(ConnectionClosedError):  # not TimeoutError: it went with the connection
                        await client.request(addr, Metadata([]))
                    waited["second"] = trio.current_time() - start
                    ended.append("second")

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(first)
                    nursery.start_soon(second)
                assert waited["first"] >= 0.9, "the first waited out its request timeout"
                assert sorted(ended) == ["first", "second"]
                assert waited["second"] < 0.9, "the first's timeout dropped the connection under the second"
                link.heal()
                await client.request(addr, Metadata([]))
                assert link.accepted == 2, "the next request dialed afresh"


async def test_a_caller_giving_up_early_still_drops_a_silent_connection(tmp_path):
    """A shorter cancel scope (a heartbeat, a delivery timeout) does not make a silent
    node look alive: its request was still owed an answer within request_timeout."""
    async with proxied_cluster(tmp_path) as (c, net):
        link = net.client[1]
        with trio.fail_after(30):
            async with ClusterClient(net.bootstrap, request_timeout=1.0) as client:
                addr = net.advertised()[1]
                await client.request(addr, Metadata([]))
                link.cut()
                with trio.move_on_after(0.3):
                    await client.request(addr, Metadata([]))
                with pytest.raises(ConnectionClosedError):  # not its own TimeoutError: the connection went
                    await client.request(addr, Metadata([]))
                link.heal()
                await client.request(addr, Metadata([]))
                assert link.accepted == 2


async def read_values(bootstrap, topic, quiet=1.0, timeout=20, isolation="read_committed"):
    """Every value in `topic` from the start, once nothing new came for `quiet` s."""
    out = []
    with trio.fail_after(timeout):
        async with Consumer(bootstrap, topics=[topic], offset_reset="earliest", isolation=isolation) as consumer:
            while True:
                with trio.move_on_after(quiet) as idle:
                    out.append((await consumer.__anext__()).value)
                if idle.cancelled_caught:
                    return out


@pytest.mark.parametrize("direction", [UP, DOWN], ids=["request-lost", "answer-lost"])
async def test_idempotent_producer_goes_on_after_a_batch_timed_out(tmp_path, direction):
    """The timed-out batch was not written (request lost) or was (answer lost): either
    way later sends succeed, and nothing is written twice."""
    async with proxied_cluster(tmp_path) as (c, net):
        link = net.client[1]
        async with Admin(net.bootstrap) as admin:
            await admin.create_topic("t", partitions=1, replication=1)
        with trio.fail_after(60):
            async with Producer(net.bootstrap, request_timeout=1.0, delivery_timeout=2.0, linger=0) as producer:
                await producer.send("t", b"a")
                first_line = producer._queues[("t", 0)].producer_id
                link.cut(direction)
                with pytest.raises(RequestTimeoutError):
                    await producer.send("t", b"b")
                link.drop_connections()  # what was held back is gone (a request: never written)
                link.heal()
                acked = [await producer.send("t", v) for v in (b"c", b"d")]
                deliveries = [await producer.submit("t", b"e%d" % i) for i in range(20)]
                acked += [await d for d in deliveries]
                assert producer._queues[("t", 0)].producer_id != first_line, "a new sequence line"
        values = await read_values(net.bootstrap, "t")
        expected = [b"a"] + ([b"b"] if direction is DOWN else []) + [b"c", b"d"] + [b"e%d" % i for i in range(20)]
        assert values == expected
        assert [md.offset for md in acked] == sorted({md.offset for md in acked})


async def test_transactional_producer_fails_the_transaction_and_recovers_by_abort(tmp_path):
    """A transactional producer keeps its id and epoch for the transaction: a timed-out
    send fails the commit; the abort starts a new epoch and the next transaction works."""
    async with proxied_cluster(tmp_path, offsets_partitions=1, txn_partitions=1) as (c, net):
        link = net.client[1]
        async with Admin(net.bootstrap) as admin:
            await admin.create_topic("t", partitions=1, replication=1)
        with trio.fail_after(60):
            async with Producer(
                net.bootstrap, transactional_id="tx", request_timeout=1.0, delivery_timeout=2.0, linger=0
            ) as producer:
                async with producer.transaction():
                    await producer.send("t", b"a")
                epoch = producer.producer_epoch
                await producer.begin_transaction()
                await producer.send("t", b"b1")
                link.cut(UP)
                with pytest.raises(RequestTimeoutError):
                    await producer.send("t", b"b2")
                link.drop_connections()
                link.heal()
                with pytest.raises(RequestTimeoutError):
                    await producer.commit_transaction()
                await producer.abort()
                assert producer.producer_epoch > epoch
                async with producer.transaction():
                    await producer.send("t", b"c")
        assert await read_values(net.bootstrap, "t") == [b"a", b"c"]


async def produce(bootstrap, topic, values):
    async with Producer(bootstrap) as producer:
        for v in values:
            await producer.submit(topic, v, key=v)
        await producer.flush()


@pytest.mark.parametrize("when", ["revoke", "assign"])
async def test_consumer_rides_out_a_silent_coordinator(tmp_path, when):
    """The coordinator goes silent while the member gives its partitions up (revoke: the
    commit times out) or just as they are handed to it (assign: the committed-offset
    lookup times out). The consumer lives on, rejoins after the heal, and reads every
    message (some twice is allowed, none lost)."""
    async with proxied_cluster(tmp_path, offsets_partitions=1) as (c, net):
        link = net.client[1]
        async with Admin(net.bootstrap) as admin:
            await admin.create_topic("t", partitions=2, replication=1)
        before = [b"a%d" % i for i in range(10)]
        after = [b"b%d" % i for i in range(10)]
        await produce(net.bootstrap, "t", before)
        seen: list[bytes] = []
        with trio.fail_after(60):
            async with Consumer(
                net.bootstrap,
                group="g",
                topics=["t"],
                offset_reset="earliest",
                session_timeout=1.5,
                request_timeout=1.0,
            ) as consumer:
                if when == "assign":
                    lookup = consumer._member.committed

                    async def silent_lookup(parts):
                        consumer._member.committed = lookup
                        link.cut()  # the coordinator falls silent as the assignment arrives
                        return await lookup(parts)

                    consumer._member.committed = silent_lookup
                else:
                    while set(before) - set(seen):
                        seen.append((await consumer.__anext__()).value)
                    await consumer.commit()
                    link.cut()
                with trio.fail_after(10):  # cut until the member has given up what it held
                    while not link.is_cut or consumer.assignment:
                        await trio.sleep(0.05)
                await trio.sleep(1.0)  # and a little longer: it keeps trying to rejoin
                link.heal()
                await produce(net.bootstrap, "t", after)
                while set(before + after) - set(seen):
                    seen.append((await consumer.__anext__()).value)
        assert set(seen) == set(before + after)


async def test_clients_leave_a_leader_cut_off_from_its_peers(tmp_path):
    """A leader loses its peers but not its clients: it steps down, the other two elect a
    leader, and a producer writes there within seconds, not when the cut heals, although
    the cut-off node still answers (stale) metadata requests and is the first node the
    client knows."""
    async with proxied_cluster(tmp_path, n=3, peer_links=True) as (c, net):
        with trio.fail_after(60):
            async with Admin(net.bootstrap) as admin:
                while True:
                    try:
                        await admin.create_topic("t", partitions=3, replication=3)
                        break
                    except NotEnoughReplicasError:  # the peer links are still coming up
                        await trio.sleep(0.1)
            while 1 not in (leaders := await c.wait_leaders("t")).values():
                await trio.sleep(0.1)  # (partitions spread their leaders; n1's is the case)
            partition = min(p for p, node in leaders.items() if node == 1)
            async with Producer(net.bootstrap, request_timeout=2.0) as producer:
                await producer.send("t", b"before", partition=partition)
                net.cut(net.touching(1, clients=False))
                start = trio.current_time()
                written = await producer.send("t", b"after", partition=partition)
                took = trio.current_time() - start
                net.heal()
        assert took < 10, f"the write waited {took:.1f}s for a leader"
        assert written.offset is not None
