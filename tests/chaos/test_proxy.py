"""The fault-injecting proxy: forwards faithfully, and each fault does what it says."""

import functools

import pytest
import trio

from scripts.chaoslib.proxy import DOWN, UP, LinkProxy, ProxyNet


async def echo_server(nursery: trio.Nursery, received: list[bytes] | None = None) -> str:
    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                async for data in stream:
                    if received is not None:
                        received.append(data)
                    await stream.send_all(data)
            except trio.BrokenResourceError:
                pass

    listeners = await nursery.start(functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    return f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"


async def start_proxy(nursery: trio.Nursery, target: str) -> tuple[LinkProxy, str, int]:
    proxy = LinkProxy("test", target)
    addr = await nursery.start(proxy.serve)
    host, port = addr.split(":")
    return proxy, host, int(port)


async def read_exactly(stream: trio.SocketStream, n: int) -> bytes:
    out = b""
    while len(out) < n:
        data = await stream.receive_some(n - len(out))
        if not data:
            break
        out += data
    return out


async def test_forwards_both_ways_and_half_close():
    async with trio.open_nursery() as nursery:
        proxy, host, port = await start_proxy(nursery, await echo_server(nursery))
        stream = await trio.open_tcp_stream(host, port)
        payload = bytes(range(256)) * 1000
        async with trio.open_nursery() as inner:
            inner.start_soon(stream.send_all, payload)
            with trio.fail_after(5):
                assert await read_exactly(stream, len(payload)) == payload
        await stream.send_eof()
        with trio.fail_after(5):
            assert await stream.receive_some(10) == b""  # the echo server saw EOF and closed
        await stream.aclose()
        assert proxy.forwarded[UP] == proxy.forwarded[DOWN] == len(payload)
        nursery.cancel_scope.cancel()


async def test_cut_holds_bytes_and_heal_delivers_them_in_order():
    received: list[bytes] = []
    async with trio.open_nursery() as nursery:
        proxy, host, port = await start_proxy(nursery, await echo_server(nursery, received))
        stream = await trio.open_tcp_stream(host, port)
        await stream.send_all(b"before")
        with trio.fail_after(5):
            assert await read_exactly(stream, 6) == b"before"
        proxy.cut()
        await stream.send_all(b"during-1 ")
        await stream.send_all(b"during-2")
        with trio.move_on_after(0.5) as waited:
            await stream.receive_some(100)
        assert waited.cancelled_caught, "nothing may come back through a cut link"
        assert b"".join(received) == b"before", "nothing may go through a cut link"
        proxy.heal()
        with trio.fail_after(5):
            assert await read_exactly(stream, 17) == b"during-1 during-2"
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_new_connection_waits_while_cut_and_proceeds_on_heal():
    received: list[bytes] = []
    async with trio.open_nursery() as nursery:
        proxy, host, port = await start_proxy(nursery, await echo_server(nursery, received))
        proxy.cut()
        stream = await trio.open_tcp_stream(host, port)  # the proxy accepts, but does not dial on
        await stream.send_all(b"hello")
        await trio.sleep(0.3)
        assert received == [] and proxy.connections == 1
        proxy.heal()
        with trio.fail_after(5):
            assert await read_exactly(stream, 5) == b"hello"
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_one_way_cut_delivers_requests_but_holds_answers():
    received: list[bytes] = []
    async with trio.open_nursery() as nursery:
        proxy, host, port = await start_proxy(nursery, await echo_server(nursery, received))
        stream = await trio.open_tcp_stream(host, port)
        proxy.cut(DOWN)
        await stream.send_all(b"request")
        with trio.fail_after(5):
            while b"".join(received) != b"request":
                await trio.sleep(0.01)
        with trio.move_on_after(0.3) as waited:
            await stream.receive_some(100)
        assert waited.cancelled_caught
        proxy.heal()
        with trio.fail_after(5):
            assert await read_exactly(stream, 7) == b"request"
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_latency_delays_each_direction():
    async with trio.open_nursery() as nursery:
        proxy, host, port = await start_proxy(nursery, await echo_server(nursery))
        proxy.set_delay(1.0)
        stream = await trio.open_tcp_stream(host, port)
        start = trio.current_time()
        await stream.send_all(b"ping")
        with trio.fail_after(10):
            assert await read_exactly(stream, 4) == b"ping"
        assert trio.current_time() - start >= 2.0  # up and down
        proxy.heal()
        start = trio.current_time()
        await stream.send_all(b"pong")
        with trio.fail_after(10):
            assert await read_exactly(stream, 4) == b"pong"
        assert trio.current_time() - start < 1.0, "healed: no delay left in either direction"
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_drop_resets_open_connections_and_new_ones_work():
    async with trio.open_nursery() as nursery:
        proxy, host, port = await start_proxy(nursery, await echo_server(nursery))
        stream = await trio.open_tcp_stream(host, port)
        await stream.send_all(b"x")
        with trio.fail_after(5):
            assert await read_exactly(stream, 1) == b"x"
        assert proxy.drop_connections() == 1
        with trio.fail_after(5):
            with pytest.raises(trio.BrokenResourceError):  # RST, not a clean EOF
                while True:
                    if not await stream.receive_some(10):
                        raise AssertionError("a dropped connection must be reset, not closed cleanly")
        await stream.aclose()
        again = await trio.open_tcp_stream(host, port)
        await again.send_all(b"y")
        with trio.fail_after(5):
            assert await read_exactly(again, 1) == b"y"
        await again.aclose()
        nursery.cancel_scope.cancel()


async def test_target_down_closes_the_dialers_connection():
    async with trio.open_nursery() as nursery:
        dead = trio.socket.socket()
        await dead.bind(("127.0.0.1", 0))
        target = f"127.0.0.1:{dead.getsockname()[1]}"
        dead.close()  # nothing listens there
        _, host, port = await start_proxy(nursery, target)
        stream = await trio.open_tcp_stream(host, port)
        with trio.fail_after(5):
            try:
                assert await stream.receive_some(10) == b""
            except trio.BrokenResourceError:
                pass
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_proxy_net_wires_every_link():
    real = {1: "127.0.0.1:1", 2: "127.0.0.1:2", 3: "127.0.0.1:3"}
    real_peer = {1: "127.0.0.1:11", 2: "127.0.0.1:12", 3: "127.0.0.1:13"}
    net = ProxyNet(real, real_peer)
    async with trio.open_nursery() as nursery:
        await net.start(nursery)
        assert len(net.links) == 6 + 3
        peers = net.peers_for(2)
        assert peers[2] == real_peer[2]
        assert peers[1] == net.peer[(2, 1)].addr and peers[3] == net.peer[(2, 3)].addr
        assert net.peer[(2, 1)].target == real_peer[1]
        assert set(net.advertised()) == {1, 2, 3} and net.client[3].target == real[3]
        assert len({link.addr for link in net.links}) == 9
        touching = net.touching(1)
        assert {link.name for link in touching} == {"n1->n2", "n1->n3", "n2->n1", "n3->n1", "clients->n1"}
        net.cut(touching)
        net.client[2].set_delay(0.1)
        assert sorted(net.faulty) == sorted([link.name for link in touching] + ["clients->n2"])
        net.heal()
        assert net.faulty == []
        nursery.cancel_scope.cancel()


async def test_kafka_client_links_are_client_links(tmp_path):
    """With Kafka listeners each node has a second client link: the faults on a node's
    clients (isolate, its answers cut, a node's latency and drops) reach it too, and the
    node advertises that proxy to Kafka clients."""
    from scripts.chaoslib.cluster import ChaosCluster

    real = {1: "127.0.0.1:1", 2: "127.0.0.1:2", 3: "127.0.0.1:3"}
    real_peer = {1: "127.0.0.1:11", 2: "127.0.0.1:12", 3: "127.0.0.1:13"}
    real_kafka = {1: "127.0.0.1:21", 2: "127.0.0.1:22", 3: "127.0.0.1:23"}
    net = ProxyNet(real, real_peer, real_kafka)
    async with trio.open_nursery() as nursery:
        await net.start(nursery)
        assert len(net.links) == 6 + 3 + 3 and len({link.addr for link in net.links}) == 12
        assert [link.name for link in net.client_links(2)] == ["clients->n2", "kafka-clients->n2"]
        assert net.kafka[2].target == real_kafka[2]
        assert net.kafka_bootstrap == ",".join(net.kafka[j].addr for j in (1, 2, 3))
        assert "kafka-clients->n1" in {link.name for link in net.touching(1)}
        assert "kafka-clients->n1" not in {link.name for link in net.touching(1, clients=False)}
        cmd = ChaosCluster(tmp_path, real, net).command(3)
        assert cmd[cmd.index("--kafka-listen") + 1] == real_kafka[3]
        assert cmd[cmd.index("--kafka-advertise") + 1] == net.kafka[3].addr
        nursery.cancel_scope.cancel()
    plain = ProxyNet(real, real_peer)
    assert plain.kafka_bootstrap == "" and plain.client_links(1) == [plain.client[1]]
    assert ChaosCluster(tmp_path, real, plain).kafka_flags(1) == [], "no Kafka listener unless a workload needs one"


async def test_a_joining_node_gets_links_of_its_own_and_one_shared_inbound_proxy(tmp_path):
    """The nemesis's membership fault: the new node dials each node through its own link;
    every node reaches it at the one address the roster names, so cutting that cuts all
    its inbound links at once; a joined node starts with --join and the nodes of the moment."""
    from scripts.chaoslib.cluster import ChaosCluster

    real = {1: "127.0.0.1:1", 2: "127.0.0.1:2"}
    real_peer = {1: "127.0.0.1:11", 2: "127.0.0.1:12"}
    net = ProxyNet(real, real_peer)
    async with trio.open_nursery() as nursery:
        await net.start(nursery)
        inbound = await net.add_node(3, "127.0.0.1:3", "127.0.0.1:13")
        assert net.peer[(1, 3)] is net.peer[(2, 3)] and net.peer[(1, 3)].addr == inbound
        assert net.peer[(3, 1)].target == real_peer[1] and net.peer[(3, 2)].target == real_peer[2]
        assert len(net.links) == 2 + 2 + 1 + 2 + 1  # (the shared one counted once)
        net.cut(net.touching(3, clients=False))
        assert set(net.faulty) == {"peers->n3", "n3->n1", "n3->n2"}
        net.heal()
        cluster = ChaosCluster(tmp_path, real, net)
        cluster.joined.add(3)
        cluster.nodes = [1, 2, 3]
        cluster.real[3] = "127.0.0.1:3"
        cluster.procs = {1: _Alive(), 2: _Alive()}  # type: ignore[dict-item]
        cmd = cluster.command(3)
        assert cmd[cmd.index("--join") + 1] == net.peer[(3, 1)].addr
        peers = dict(p.split("=") for p in cmd[cmd.index("--peers") + 1].split(","))
        assert peers == {"1": net.peer[(3, 1)].addr, "2": net.peer[(3, 2)].addr, "3": "127.0.0.1:13"}
        founder = cluster.command(1)
        assert "--join" not in founder and "3=" not in founder[founder.index("--peers") + 1]
        nursery.cancel_scope.cancel()


class _Alive:
    """A stand-in process that is running."""

    def poll(self) -> None:
        return None
