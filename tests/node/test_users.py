"""Users on an in-process cluster: created, listed, changed and deleted through the
controller (only SCRAM keys stored), logging in with SCRAM-SHA-256, the token as the
deprecated single user, and what a cluster that requires users refuses; and Kafka
clients logging in over SASL (SCRAM-SHA-256, PLAIN) on real node processes."""

from __future__ import annotations

import pytest
import trio

from client import Admin, Producer
from client.connection import open_connection
from client.errors import AuthFailedError, AuthorizationFailedError, InvalidRequestError
from client.protocol import AclBinding, Metadata
from client.scram import credential
from node.metadata import ClusterState, DeleteUserCmd, PutUserCmd, decode_state, encode_state
from tests.cluster import local_cluster, process_cluster

TOKEN = "t0ken"


def test_users_in_the_controller_state():
    s = ClusterState()
    cred = credential("pw", iterations=4096)
    assert s.apply(PutUserCmd("alice", cred, create_only=True)) is None
    assert isinstance(s.apply(PutUserCmd("alice", cred, create_only=True)), InvalidRequestError)
    assert s.apply(PutUserCmd("alice", credential("new", iterations=4096))) is None  # a password change
    assert decode_state(encode_state(s)).users == s.users  # kept in controller snapshots
    assert s.apply(DeleteUserCmd("alice")) is None and s.users == {}
    assert isinstance(s.apply(DeleteUserCmd("alice")), InvalidRequestError)


async def log_in(addr: str, user: str | None, password: str | None = None, token: str | None = None) -> None:
    with trio.fail_after(10):
        async with open_connection(addr, user=user, password=password, token=token) as conn:
            await conn.request(Metadata(topics=[]))


async def test_a_cluster_that_requires_users(tmp_path):
    async with local_cluster(tmp_path, require_users=True, token=TOKEN) as c:
        addr = c.peers[1]
        with pytest.raises(AuthFailedError, match="admits users only"):
            await log_in(addr, None)
        async with Admin(c.bootstrap, token=TOKEN) as admin:  # the token: the deprecated single user
            await admin.add_user("alice", "wonderland")
            with pytest.raises(InvalidRequestError, match="exists"):
                await admin.add_user("alice", "again")
            assert await admin.list_users() == ["alice"]
            # Users are bound by ACLs where users are required (tests/node/test_acl_process.py)
            await admin.create_acls(
                [
                    AclBinding("User:alice", "cluster", "kafka-cluster", "create"),
                    AclBinding("User:alice", "topic", "t", "write"),
                ]
            )
        with trio.fail_after(10):  # every node applies the new user
            while not all("alice" in b.state.users for b in c.brokers.values()):
                await trio.sleep(0.05)
        assert all(b"wonderland" not in b.state.users["alice"].stored_key for b in c.brokers.values())

        for addr in c.peers.values():
            await log_in(addr, "alice", "wonderland")
        with pytest.raises(AuthFailedError, match="wrong user or password"):
            await log_in(addr, "alice", "looking-glass")
        with pytest.raises(AuthFailedError, match="wrong user or password"):  # the same answer as a wrong password
            await log_in(addr, "nobody", "wonderland")

        async with Admin(c.bootstrap, username="alice", password="wonderland") as admin:
            await admin.create_topic("t", 1, 3)
            await admin.change_password("alice", "looking-glass")  # anyone may change their own
            with pytest.raises(AuthorizationFailedError, match="User:alice may not alter the cluster"):
                await admin.change_password("bob", "x")
        async with Admin(c.bootstrap, token=TOKEN) as admin:
            with pytest.raises(InvalidRequestError, match="no user"):
                await admin.change_password("bob", "x")
        with trio.fail_after(10):
            while True:
                try:
                    await log_in(addr, "alice", "looking-glass")
                    break
                except AuthFailedError:
                    await trio.sleep(0.05)
        with pytest.raises(AuthFailedError):
            await log_in(addr, "alice", "wonderland")
        async with Producer(c.bootstrap, username="alice", password="looking-glass") as producer:
            await producer.send("t", b"as alice")

        async with Admin(c.bootstrap, token=TOKEN) as admin:
            await admin.delete_user("alice")
            assert await admin.list_users() == []
        with trio.fail_after(10):
            while any("alice" in b.state.users for b in c.brokers.values()):
                await trio.sleep(0.05)
        with pytest.raises(AuthFailedError):
            await log_in(addr, "alice", "looking-glass")


async def test_users_are_optional_where_not_required(tmp_path):
    async with local_cluster(tmp_path, 1) as c:
        await log_in(c.peers[1], None)  # anonymous, as before
        async with Admin(c.bootstrap) as admin:
            await admin.add_user("carol", "pw-carol")
        await log_in(c.peers[1], "carol", "pw-carol")
        with pytest.raises(AuthFailedError):  # a user given is a user checked
            await log_in(c.peers[1], "carol", "wrong")


def rd_sasl(bootstrap: str, mechanism: str, user: str, password: str, reads: int) -> tuple[int, list[bytes]]:
    """(messages acknowledged, messages read back: `reads` at most) for a librdkafka
    client logged in over SASL."""
    from confluent_kafka import Consumer as RdConsumer
    from confluent_kafka import Producer as RdProducer
    from confluent_kafka import TopicPartition as RdTopicPartition

    auth = {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": mechanism,
        "sasl.username": user,
        "sasl.password": password,
    }
    acked: list = []
    producer = RdProducer({**auth, "message.timeout.ms": 5000})
    for i in range(3):
        producer.produce("kt", value=b"%s-%d" % (mechanism.encode(), i), on_delivery=lambda e, m: acked.append(e))
    producer.flush(10)
    consumer = RdConsumer({**auth, "group.id": f"sasl-{mechanism}"})
    try:
        consumer.assign([RdTopicPartition("kt", 0, 0)])
        got: list[bytes] = []
        for _ in range(20):
            msg = consumer.poll(0.25)
            if msg is not None and msg.error() is None:
                got.append(msg.value())
            if len(got) >= reads:
                break
        return sum(e is None for e in acked), got
    finally:
        consumer.close()


async def test_kafka_clients_log_in_with_sasl(tmp_path):
    async with process_cluster(tmp_path, 1, kafka=True, token=TOKEN, settings={"require_users": True}) as c:
        await c.wait_ready()
        async with Admin(c.bootstrap, token=TOKEN) as admin:
            await admin.add_user("kafka-user", "k-pw")
            await admin.create_topic("kt", 1, 1)
            await admin.create_acls(
                [
                    AclBinding("User:kafka-user", "topic", "kt", "all"),
                    AclBinding("User:kafka-user", "group", "sasl-", "read", "prefixed"),
                ]
            )
        kafka = c.kafka[1]
        for reads, mechanism in ((3, "SCRAM-SHA-256"), (6, "PLAIN")):  # (PLAIN's run reads SCRAM's first)
            acked, got = await trio.to_thread.run_sync(rd_sasl, kafka, mechanism, "kafka-user", "k-pw", reads)
            assert acked == 3 and len([v for v in got if v.startswith(mechanism.encode())]) == 3, (mechanism, got)
        acked, got = await trio.to_thread.run_sync(rd_sasl, kafka, "SCRAM-SHA-256", "kafka-user", "wrong", 1)
        assert acked == 0 and got == []
        log = (tmp_path / "n1.log").read_text()
        assert "Kafka SASL SCRAM-SHA-256 login failed for 'kafka-user'" in log
