"""The node option the chaos proxies need: `advertise` tells clients an address per node
(metadata, NOT_LEADER and coordinator hints) other than the one peers dial."""

import pytest
import trio

from client.connection import open_connection
from client.errors import CoordinatorNotAvailableError, NotControllerError, NotLeaderError, UnknownTopicError
from client.protocol import CreateTopic, FindCoordinator, Metadata, Produce
from node.config import NodeConfig
from segments import build_batch
from tests.cluster import local_cluster

NOT_READY = (NotControllerError, CoordinatorNotAvailableError)  # a controller or coordinator being elected
FAKE = {1: "127.0.0.1:1101", 2: "127.0.0.1:1102", 3: "127.0.0.1:1103"}


def test_advertise_flag_parses_and_is_checked(tmp_path):
    cfg = NodeConfig.from_args(
        [
            "--id",
            "1",
            "--listen",
            "127.0.0.1:9401",
            "--data",
            str(tmp_path),
            "--peers",
            "1=127.0.0.1:9501,2=127.0.0.1:9502",
            "--peer-secret",
            "s" * 16,
            "--advertise",
            "1=127.0.0.1:7001,2=127.0.0.1:7002",
        ]
    )
    assert cfg.advertise == {1: "127.0.0.1:7001", 2: "127.0.0.1:7002"}
    assert cfg.client_addr(2) == "127.0.0.1:7002"
    plain = NodeConfig(node_id=1, listen="127.0.0.1:9401", data_dir=tmp_path, peers={1: "127.0.0.1:9501"})
    assert plain.client_addr(1) == "127.0.0.1:9401", "without advertise, clients are told --listen"
    with pytest.raises(ValueError, match="names nodes"):
        NodeConfig(node_id=1, listen="127.0.0.1:9401", data_dir=tmp_path, advertise={5: "127.0.0.1:7005"})
    toml = tmp_path / "node.toml"
    toml.write_text(
        'node_id = 1\nlisten = "127.0.0.1:9401"\ndata_dir = "d"\npeer_secret = "0123456789abcdef"\n'
        'peers = "1=127.0.0.1:9501,2=127.0.0.1:9502"\nadvertise = { 2 = "127.0.0.1:7002" }\n'
    )
    assert NodeConfig.from_args(["--config", str(toml)]).advertise == {1: "127.0.0.1:9401", 2: "127.0.0.1:7002"}


async def test_clients_are_told_the_advertised_addresses(tmp_path):
    async with local_cluster(tmp_path, n=3, advertise=FAKE) as c:
        ctrl = await c.wait_controller()
        async with open_connection(c.peers[ctrl]) as conn:
            md = await conn.request(Metadata([]))
            assert {n.node_id: n.addr for n in md.nodes} == FAKE
            with trio.fail_after(10):
                while True:
                    try:
                        await conn.request(CreateTopic("adv", partitions=1, replication=1))
                        break
                    except NOT_READY:
                        await trio.sleep(0.05)
        leaders = await c.wait_leaders("adv")
        owner = leaders[0]
        other = next(n for n in c.peers if n != owner)
        async with open_connection(c.peers[other]) as conn:
            with trio.fail_after(10):
                while True:  # the topic, then the leader's gossip, reach `other` within half a second
                    with pytest.raises((NotLeaderError, UnknownTopicError)) as err:
                        await conn.request(Produce("adv", 0, build_batch([(None, b"x", (), None)])))
                    if isinstance(err.value, NotLeaderError) and err.value.leader_addr is not None:
                        break
                    await trio.sleep(0.05)
            assert err.value.leader_addr == FAKE[owner]
            with trio.fail_after(10):
                while True:
                    try:
                        resp = await conn.request(FindCoordinator("some-group"))
                        break
                    except NOT_READY:
                        await trio.sleep(0.05)
            assert resp.addr == FAKE[resp.node_id]
