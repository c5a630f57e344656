"""ACLs on real node processes over TLS, users required: each operation allowed and
refused per binding (produce, delayed produce, consume, commit, create and delete a
topic, transactions, half messages, dead-letter replay, describe), deny over allow,
prefix patterns, the refusals audited in the node logs, and `tidemq acl` itself."""

from __future__ import annotations

import urllib.request

import pytest
import trio

from client import Admin, Consumer, Producer
from client.conventions import dead_letter_topic
from client.dlq import replay_dead_letters
from client.errors import AuthFailedError, AuthorizationFailedError
from client.protocol import AclBinding, AclFilter
from tests.cluster import free_ports, process_cluster, tidemq_cli

pytestmark = pytest.mark.timeout(240)
TOKEN = "acl-token"


def grant(who: str, rtype: str, name: str, *ops: str, pattern: str = "literal", permission: str = "allow"):
    return [AclBinding(f"User:{who}", rtype, name, op, pattern, permission) for op in ops]


async def first(consumer: Consumer, timeout: float = 20):
    with trio.fail_after(timeout):
        return await consumer.__anext__()


async def test_acls_on_every_kind_of_request(tmp_path):
    async with process_cluster(
        tmp_path, secure=True, token=TOKEN, args=("--require-users", "--super-users", "User:admin")
    ) as c:
        await c.wait_ready()
        tls = {"tls_ca": c.tls_ca}

        def as_user(name: str) -> dict:
            return {**tls, "username": name, "password": f"pw-{name}"}

        async with Admin(c.bootstrap, token=TOKEN, **tls) as root:
            for name in ("admin", "alice", "bob", "carol", "dave"):
                await root.add_user(name, f"pw-{name}")
        async with Admin(c.bootstrap, **as_user("admin")) as admin:  # a super-user
            for topic in ("orders", "pay", "logs.app", "logs.secret", dead_letter_topic("g1")):
                await admin.create_topic(topic, 1, 3)
            await admin.create_acls(
                grant("alice", "topic", "orders", "write")
                + grant("alice", "topic", "pay", "describe")
                + grant("bob", "topic", "orders", "read")
                + grant("bob", "group", "g1", "read")
                + grant("bob", "topic", "pay", "describe")  # sees it, may not read it
                + grant("bob", "topic", "logs.", "read", pattern="prefixed")
                + grant("bob", "topic", "logs.secret", "read", permission="deny")
                + grant("carol", "transactional-id", "tx-carol", "write")
                + grant("carol", "transactional-id", "pg-carol", "write")
                + grant("carol", "topic", "pay", "write")
                + grant("carol", "topic", "orders", "describe")
                + grant("dave", "cluster", "kafka-cluster", "create")
            )

        # Produce: write on the topic implies the idempotent producer; a delayed
        # message needs write on the topic it is for, not on the tier.
        async with Producer(c.bootstrap, **as_user("alice")) as alice:
            await alice.send("orders", b"o1")
            await alice.send("orders", b"o2", delay=0.2)
            with pytest.raises(AuthorizationFailedError, match="User:alice may not write topic 'pay'"):
                await alice.send("pay", b"nope")
            with pytest.raises(AuthorizationFailedError, match="write topic 'pay'"):  # (through the tier)
                await alice.send("pay", b"nope", delay=0.2)

        # Consume and commit: read on the topic and on the group.
        async with Consumer(
            c.bootstrap, group="g1", topics=["orders"], offset_reset="earliest", **as_user("bob")
        ) as bob:
            got = {(await first(bob)).value, (await first(bob)).value}
            assert got == {b"o1", b"o2"}
            await bob.commit()
        with pytest.raises(AuthorizationFailedError, match="describe group 'g2'"):
            async with Consumer(c.bootstrap, group="g2", topics=["orders"], **as_user("bob")) as other:
                await first(other)
        with pytest.raises(AuthorizationFailedError, match="read topic 'pay'"):
            async with Consumer(c.bootstrap, topics=["pay"], offset_reset="earliest", **as_user("bob")) as reader:
                await first(reader)

        # Prefix allows, and deny wins over it.
        async with Producer(c.bootstrap, **as_user("admin")) as admin_producer:
            await admin_producer.send("logs.app", b"line")
            await admin_producer.send("logs.secret", b"key")
        async with Consumer(c.bootstrap, topics=["logs.app"], offset_reset="earliest", **as_user("bob")) as reader:
            assert (await first(reader)).value == b"line"
        with pytest.raises(AuthorizationFailedError, match="read topic 'logs.secret'"):
            async with Consumer(c.bootstrap, topics=["logs.secret"], offset_reset="earliest", **as_user("bob")) as rd:
                await first(rd)

        # Transactions: write on the transactional id and on the topics.
        async with Producer(c.bootstrap, transactional_id="tx-carol", **as_user("carol")) as carol:
            await carol.begin_transaction()
            await carol.send("pay", b"paid")
            await carol.commit_transaction()
        with pytest.raises(AuthorizationFailedError, match="transactional-id 'tx-eve'"):
            async with Producer(c.bootstrap, transactional_id="tx-eve", **as_user("carol")) as eve:
                await eve.begin_transaction()
        async with Producer(c.bootstrap, transactional_id="tx-carol", **as_user("carol")) as carol:
            await carol.begin_transaction()
            with pytest.raises(AuthorizationFailedError, match="write topic 'orders'"):
                await carol.send("orders", b"not hers")

        # Half messages: the producer group is a transactional id.
        async with Producer(c.bootstrap, producer_group="pg-carol", **as_user("carol")) as carol:
            half = await carol.send_half("pay", b"half")
            await half.commit()
            with pytest.raises(AuthorizationFailedError, match="write topic 'orders'"):
                await carol.send_half("orders", b"half")
        async with Producer(c.bootstrap, producer_group="pg-other", **as_user("carol")) as carol:
            with pytest.raises(AuthorizationFailedError, match="transactional-id 'pg-other'"):
                await carol.send_half("pay", b"half")

        # Topics: create by a cluster grant; delete, describe and list need their own.
        async with Admin(c.bootstrap, **as_user("dave")) as dave:
            await dave.create_topic("daves", 1, 3)
            with pytest.raises(AuthorizationFailedError, match="delete topic 'orders'"):
                await dave.delete_topic("orders")
            with pytest.raises(AuthorizationFailedError, match="describe topic 'orders'"):
                await dave.describe_topic("orders")
            assert await dave.list_topics() == []  # nothing he may describe
            with pytest.raises(AuthorizationFailedError, match="alter the cluster"):
                await dave.create_acls(grant("dave", "topic", "daves", "all"))
            with pytest.raises(AuthorizationFailedError, match="alter the cluster"):
                await dave.add_user("mallory", "pw")
        async with Admin(c.bootstrap, **as_user("bob")) as bob_admin:
            # (a deny of read leaves describe, as in Kafka)
            assert sorted(await bob_admin.list_topics()) == ["logs.app", "logs.secret", "orders", "pay"]

        # Dead-letter replay: read the dead letters, write back to their topic.
        async with Producer(c.bootstrap, **as_user("admin")) as admin_producer:
            await admin_producer.send(
                dead_letter_topic("g1"),
                b"dead",
                headers=[("tidemq.origin.topic", b"orders"), ("tidemq.origin.partition", b"0")],
            )
        bob_opts = {k: v for k, v in as_user("bob").items()}
        with pytest.raises(AuthorizationFailedError):
            await replay_dead_letters(c.bootstrap, "g1", security=bob_opts)
        async with Admin(c.bootstrap, **as_user("admin")) as admin:
            await admin.create_acls(
                grant("bob", "topic", dead_letter_topic("g1"), "read")
                + grant("bob", "group", "g1.", "read", pattern="prefixed")
                + grant("bob", "topic", "orders", "write")
            )
        replayed = await replay_dead_letters(c.bootstrap, "g1", security=bob_opts)
        assert [d.message.value for d in replayed] == [b"dead"]

        # Removing a binding takes the right away again.
        async with Admin(c.bootstrap, **as_user("admin")) as admin:
            gone = await admin.delete_acls([AclFilter(principal="User:alice", resource_type="topic", name="orders")])
            assert [b.operation for b in gone] == ["write"]
        with pytest.raises(AuthorizationFailedError, match="idempotent-write the cluster"):  # (no write left)
            async with Producer(c.bootstrap, **as_user("alice")) as alice:
                await alice.send("orders", b"after")

    logs = "".join((tmp_path / f"n{n}.log").read_text() for n in (1, 2, 3))
    assert "refused User:alice from 127.0.0.1:" in logs and "write on topic 'pay'" in logs


def test_tidemq_acl_commands(tmp_path):
    """`tidemq acl add|list|remove` against node processes, as the issue names them."""

    async def main():
        (metrics_port,) = free_ports(1)
        metrics = ("--metrics", f"127.0.0.1:{metrics_port}", "--metrics-token", "scrape")
        async with process_cluster(tmp_path, 1, token=TOKEN, args=("--require-users", *metrics)) as c:
            await c.wait_ready()
            tidemq = tidemq_cli(TIDEMQ_BOOTSTRAP=c.bootstrap, TIDEMQ_TOKEN=TOKEN)

            add = tidemq(
                "acl",
                "add",
                "--principal",
                "User:erin",
                "--operation",
                "read",
                "--operation",
                "describe",
                "--topic",
                "orders",
            )
            assert add.returncode == 0, add.stderr
            assert "added: User:erin may read topic orders" in add.stdout
            deny = tidemq(
                "acl",
                "add",
                "--principal",
                "User:erin",
                "--operation",
                "write",
                "--topic",
                "logs.",
                "--prefix",
                "--deny",
            )
            assert deny.returncode == 0, deny.stderr
            listed = tidemq("acl", "list", "--principal", "User:erin", "--format", "json")
            assert listed.returncode == 0, listed.stderr
            assert '"operation": "write", "pattern": "prefixed", "permission": "deny"' in listed.stdout
            table = tidemq("acl", "list")
            assert "User:erin" in table.stdout and "prefixed" in table.stdout
            removed = tidemq("acl", "remove", "--principal", "User:erin", "--topic", "orders")
            assert removed.returncode == 0 and removed.stdout.count("removed:") == 2, removed.stdout
            bad = tidemq("acl", "add", "--principal", "erin", "--operation", "read", "--topic", "t")
            assert bad.returncode == 1 and "User:NAME" in bad.stderr

            # The audit: refusals and failed logins are logged and counted.
            async with Admin(c.bootstrap, token=TOKEN) as admin:
                await admin.add_user("erin", "pw-erin")
            with pytest.raises(AuthorizationFailedError):
                async with Admin(c.bootstrap, username="erin", password="pw-erin") as erin:
                    await erin.create_topic("t", 1, 1)
            with pytest.raises(AuthFailedError):
                async with Admin(c.bootstrap, username="erin", password="wrong") as erin:
                    await erin.list_topics()
            scrape = urllib.request.Request(
                f"http://127.0.0.1:{metrics_port}/metrics", headers={"Authorization": "Bearer scrape"}
            )
            text = (await trio.to_thread.run_sync(lambda: urllib.request.urlopen(scrape, timeout=5).read())).decode()
            assert 'tidemq_authorization_failures_total{operation="create",resource_type="topic"} 1.0' in text
            assert "tidemq_auth_failures_total 1.0" in text
            log = (tmp_path / "n1.log").read_text()
            assert "refused User:erin from 127.0.0.1:" in log and "authentication failed for user 'erin'" in log

    trio.run(main)


def rd_acl_view(bootstrap: str, user: str, password: str) -> dict:
    """What a librdkafka client logged in as `user` may do: produce to `kt` and `secret`,
    consume `kt` in groups `kg` and `other`, see the topics."""
    from confluent_kafka import Consumer as RdConsumer
    from confluent_kafka import KafkaError
    from confluent_kafka import Producer as RdProducer

    auth = {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": user,
        "sasl.password": password,
    }
    seen: dict = {}
    producer = RdProducer({**auth, "message.timeout.ms": 5000})
    for topic in ("kt", "secret"):
        producer.produce(topic, value=b"v", on_delivery=lambda e, m, t=topic: seen.__setitem__(f"produce {t}", e))
    producer.flush(10)
    seen["topics"] = sorted(t for t in producer.list_topics(timeout=10).topics if not t.startswith("__"))
    for group in ("kg", "other"):
        consumer = RdConsumer({**auth, "group.id": group, "auto.offset.reset": "earliest"})
        try:
            consumer.subscribe(["kt"])
            for _ in range(40):
                msg = consumer.poll(0.25)
                if msg is None:
                    continue
                seen[f"consume {group}"] = msg.error() if msg.error() else msg.value()
                break
        finally:
            consumer.close()
    return {k: (v.code() if isinstance(v, KafkaError) else v) for k, v in seen.items()}


async def test_acls_on_the_kafka_listener(tmp_path):
    from confluent_kafka import KafkaError

    async with process_cluster(tmp_path, 1, kafka=True, token=TOKEN, args=("--require-users",)) as c:
        await c.wait_ready()
        async with Admin(c.bootstrap, token=TOKEN) as admin:
            await admin.add_user("kbob", "pw-kbob")
            for topic in ("kt", "secret"):
                await admin.create_topic(topic, 1, 1)
            await admin.create_acls(
                grant("kbob", "topic", "kt", "read", "write") + grant("kbob", "group", "kg", "read")
            )
        async with Producer(c.bootstrap, token=TOKEN) as producer:
            await producer.send("kt", b"first")
        seen = await trio.to_thread.run_sync(rd_acl_view, c.kafka[1], "kbob", "pw-kbob")
        assert seen["produce kt"] is None
        assert seen["produce secret"] == KafkaError.TOPIC_AUTHORIZATION_FAILED
        assert seen["topics"] == ["kt"]
        assert seen["consume kg"] == b"first"
        assert seen["consume other"] == KafkaError.GROUP_AUTHORIZATION_FAILED
