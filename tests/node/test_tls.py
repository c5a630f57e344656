"""TLS against real node processes with generated certificates (scripts/certs.py): TLS
clients served, plain-text and untrusting ones refused, the CLI and a Kafka client over
TLS, and a node holding another node's certificate kept out by its peers."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from client import Admin, Consumer, Producer
from client.connection import open_connection
from client.errors import AuthFailedError, ConnectionClosedError, CoordinatorNotAvailableError, TideMQError
from client.protocol import Metadata
from client.tls import tls_context
from node.tls import node_id_of
from scripts.certs import Authority
from tests.cluster import process_cluster

ROOT = Path(__file__).resolve().parents[2]


def test_certificates_name_their_node(tmp_path):
    ca = Authority(tmp_path)
    issued = ca.node(2)
    decoded = ssl._ssl._test_decode_cert(str(issued.cert))  # type: ignore[attr-defined]
    assert node_id_of(decoded) == 2
    assert ("IP Address", "127.0.0.1") in decoded["subjectAltName"]
    assert node_id_of({"subjectAltName": (("URI", "https://example.com"),)}) is None
    assert node_id_of(None) is None
    again = Authority(tmp_path)  # the CA is kept, not made again
    assert again.cert == ca.cert


async def test_a_tls_cluster_serves_tls_clients_and_refuses_others(tmp_path):
    async with process_cluster(tmp_path, 3, kafka=True, secure=True) as c:
        await c.wait_ready()
        ca = c.tls_ca
        async with Admin(c.bootstrap, tls_ca=ca) as admin:
            await admin.create_topic("secret", 2, 3)
        async with Producer(c.bootstrap, tls_ca=ca) as producer:
            sent = {(await producer.send("secret", b"m%d" % i, key=b"k%d" % i)).offset for i in range(10)}
        async with Consumer(c.bootstrap, topics=["secret"], offset_reset="earliest", tls_ca=ca) as consumer:
            got = []
            with trio.fail_after(20):
                async for msg in consumer:
                    got.append(msg.value)
                    if len(got) == 10:
                        break
        assert sorted(got) == sorted(b"m%d" % i for i in range(10)) and len(sent) >= 5

        addr = c.peers[1]
        with pytest.raises(ConnectionClosedError, match="TLS listener"):  # plain text: the node hangs up
            async with open_connection(addr, connect_timeout=5):
                pass
        with pytest.raises(AuthFailedError, match="TLS with"):  # the system's CAs do not know ours
            async with open_connection(addr, connect_timeout=5, ssl_context=ssl.create_default_context()):
                pass
        async with open_connection(addr, ssl_context=c.ssl_context) as conn:  # hostname checked: 127.0.0.1
            assert (await conn.request(Metadata(["secret"]))).topics[0].name == "secret"
        log = (tmp_path / "n1.log").read_text()
        assert "TLS handshake failed" in log

        # The CLI, with the CA from its flag.
        listed = await trio.to_thread.run_sync(
            lambda: subprocess.run(
                [sys.executable, "-m", "client.cli", "--bootstrap", c.bootstrap, "--tls-ca", ca, "topic", "list"],
                capture_output=True,
                text=True,
                cwd=ROOT,
                timeout=60,
            )
        )
        assert listed.returncode == 0 and "secret" in listed.stdout, listed.stderr

        # A Kafka client over TLS (Kafka's SSL security protocol).
        values = await trio.to_thread.run_sync(kafka_read, ",".join(c.kafka.values()), ca)
        assert sorted(values) == sorted(got)


def kafka_read(bootstrap: str, ca: str) -> list[bytes]:
    from confluent_kafka import Consumer as RdConsumer
    from confluent_kafka import TopicPartition as RdTopicPartition

    consumer = RdConsumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "tls-reader",
            "security.protocol": "SSL",
            "ssl.ca.location": ca,
            "ssl.endpoint.identification.algorithm": "https",
        }
    )
    try:
        consumer.assign([RdTopicPartition("secret", p, 0) for p in range(2)])
        got: list[bytes] = []
        for _ in range(120):
            msg = consumer.poll(0.25)
            if msg is not None and msg.error() is None:
                got.append(msg.value())
            if len(got) >= 10:
                break
        return got
    finally:
        consumer.close()


async def test_a_node_with_another_nodes_certificate_is_kept_out(tmp_path):
    async with process_cluster(tmp_path, 3, secure=True) as c:
        c.close()  # (started with their own certificates; start again with a stolen one)
        c.tls_files[3] = c.tls_files[2]  # node 3 holds node 2's certificate
        for node in c.peers:
            c.start(node)
        with trio.fail_after(60):  # nodes 1 and 2 form the cluster
            while True:
                try:
                    answers = [await c.request(n, Metadata(topics=[]), timeout=2) for n in (1, 2)]
                    if all(a.controller in (1, 2) for a in answers):
                        break
                except (OSError, trio.TooSlowError, TideMQError):
                    pass
                await trio.sleep(0.2)
        async with Admin(",".join(c.peers[n] for n in (1, 2)), tls_ca=c.tls_ca) as admin:
            await admin.create_topic("t", 1, 2)
        await trio.sleep(1.0)
        logs = {n: (tmp_path / f"n{n}.log").read_text() for n in c.peers}
        # Its peers refuse it: it claims node 3 with node 2's certificate; and they will
        # not talk to its listener either, which presents node 2's certificate as node 3.
        for n in (1, 2):
            assert "claiming to be node 3: its certificate names node 2" in logs[n], n
            assert "presents a certificate of node 2, not node 3" in logs[n], n
        assert "refused" in logs[3]
        try:
            answer = await c.request(3, Metadata(topics=[]), timeout=5)
            assert "t" not in {t.name for t in answer.topics}  # it never heard of the topic
        except CoordinatorNotAvailableError:
            pass  # cut off: it has not even caught up on the cluster's metadata


async def test_a_client_certificate_stands_for_its_user(tmp_path):
    # A cluster for users only: a certificate the cluster's CA signed for "alice" logs
    # her in (its common name), no password needed; without one, users only.
    async with process_cluster(
        tmp_path, 1, secure=True, token="harness", settings={"require_users": True, "super_users": ["User:alice"]}
    ) as c:
        await c.wait_ready()
        alice = Authority(tmp_path / "tls").client("alice")
        async with Admin(c.bootstrap, tls_ca=c.tls_ca, tls_cert=str(alice.cert), tls_key=str(alice.key)) as admin:
            await admin.create_topic("mtls", 1, 1)
        with pytest.raises(AuthFailedError, match="admits users only"):
            async with open_connection(c.peers[1], ssl_context=tls_context(tls_ca=c.tls_ca)):
                pass
        # A certificate from another CA does not even get through the handshake.
        stranger = Authority(tmp_path / "other-ca").client("alice")
        foreign = tls_context(tls_ca=c.tls_ca, tls_cert=str(stranger.cert), tls_key=str(stranger.key))
        with pytest.raises((AuthFailedError, ConnectionClosedError)):
            async with open_connection(c.peers[1], ssl_context=foreign, connect_timeout=5):
                pass
