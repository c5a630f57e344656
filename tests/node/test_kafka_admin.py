"""Kafka's admin clients against real node processes: topic and broker configs described
and altered (librdkafka's incremental alter, kafka-python's legacy alter), seen by the
native side too; the producers of partitions and the transactions of coordinators."""

from __future__ import annotations

from typing import Any

import trio
from kafka import TopicPartition

from client import Admin, Consumer, Producer
from client.protocol import OffsetCommit, OffsetFetch
from tests.cluster import read_all
from tests.node.test_kafka_process import PARTITIONS, kafka_cluster
from tests.node.test_kafka_transactions import rd_producer


def rd_configs(bootstrap: str, topic: str) -> tuple[dict, dict, str]:
    """(the topic's configs, after an incremental alter, the error of a refused alter)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ResourceType.TOPIC, topic)

    def describe() -> dict:
        (future,) = admin.describe_configs([resource]).values()
        return {k: (e.value, e.is_read_only, e.source) for k, e in future.result(30).items()}

    before = describe()
    change = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("segment.ms", None, incremental_operation=AlterConfigOpType.DELETE),
        ],
    )
    (future,) = admin.incremental_alter_configs([change]).values()
    future.result(30)
    after = describe()
    bad = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[ConfigEntry("retention.ms", "0", incremental_operation=AlterConfigOpType.SET)],
    )
    (future,) = admin.incremental_alter_configs([bad]).values()
    try:
        future.result(30)
        refused = ""
    except KafkaException as exc:
        refused = exc.args[0].name()
    return before, after, refused


def kafka_python_configs(bootstrap: str, topic: str) -> tuple[dict, dict, dict]:
    """(a node's configs, the topic's modified ones after a legacy AlterConfigs, which
    replaces the whole set: kafka-python fills in the modified ones it does not change,
    then the same after a reset of one through IncrementalAlterConfigs)."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","))
    try:
        node = admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, "1")], config_filter="all")
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs={"retention.bytes": "1048576"})
        admin.alter_configs([resource], incremental=False)
        altered = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        admin.reset_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={"retention.ms": None})])
        reset = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        return (
            {k: c["value"] for k, c in node["broker"]["1"].items()},
            {k: c["value"] for k, c in altered["topic"][topic].items()},
            {k: c["value"] for k, c in reset["topic"][topic].items()},
        )
    finally:
        admin.close()


def kafka_python_partitions(bootstrap: str, topic: str) -> tuple[str | None, str | None]:
    """(error growing `topic` to 4 partitions, error shrinking it to 1) with kafka-python."""
    from kafka.admin import KafkaAdminClient, NewPartitions
    from kafka.errors import KafkaError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","))
    outcomes: list[str | None] = []
    try:
        for count in (4, 1):
            try:
                admin.create_partitions({topic: NewPartitions(count)})
                outcomes.append(None)
            except KafkaError as exc:
                outcomes.append(type(exc).__name__)
    finally:
        admin.close()
    return outcomes[0], outcomes[1]


async def test_kafka_admin_clients_describe_and_alter_configs(tmp_path):
    async with kafka_cluster(tmp_path) as (c, kafka_bootstrap):
        async with Admin(c.bootstrap) as admin:
            await admin.create_topic("cfg", 2, 3, {"segment.ms": "600000"})
        before, after, refused = await trio.to_thread.run_sync(rd_configs, kafka_bootstrap, "cfg")
        # Settable configs with what the partitions run with, and where that comes from.
        assert before["segment.ms"] == ("600000", False, 1)  # set on the topic
        assert before["retention.ms"] == (str(7 * 86_400_000), False, 5)  # the default
        assert before["retention.bytes"][0] == "-1"
        assert before["cleanup.policy"] == ("delete", True, 5) and before["min.insync.replicas"][0] == "2"
        assert after["retention.ms"] == ("3600000", False, 1) and after["segment.ms"][2] == 5
        assert refused == "INVALID_CONFIG"
        async with Admin(c.bootstrap) as admin:
            assert (await admin.describe_topic("cfg")).configs == {"retention.ms": "3600000"}

        node, altered, reset = await trio.to_thread.run_sync(kafka_python_configs, kafka_bootstrap, "cfg")
        assert node["broker.id"] == "1" and int(node["message.max.bytes"]) > 0
        assert altered == {"retention.bytes": "1048576", "retention.ms": "3600000"}  # only those set on the topic
        assert reset == {"retention.bytes": "1048576"}
        async with Admin(c.bootstrap) as admin:
            assert (await admin.describe_topic("cfg")).configs == {"retention.bytes": "1048576"}

        # CreatePartitions grows a topic; it never shrinks one.
        grown, shrunk = await trio.to_thread.run_sync(kafka_python_partitions, kafka_bootstrap, "cfg")
        assert grown is None and shrunk == "InvalidRequestError"
        async with Admin(c.bootstrap) as admin:
            assert len((await admin.describe_topic("cfg")).partitions) == 4


def kafka_python_txn_views(bootstrap: str, topic: str, tid: str) -> tuple[list, Any, dict]:
    """(every node's listing, the id's description, the partitions' producers)."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","))
    try:
        listed = [t for per_node in admin.list_transactions().values() for t in per_node]
        (described,) = admin.describe_transactions([tid]).values()
        producers = admin.describe_producers([TopicPartition(topic, p) for p in range(PARTITIONS)])
        return listed, described, producers
    finally:
        admin.close()


async def test_kafka_admin_clients_see_producers_and_transactions(tmp_path):
    async with kafka_cluster(tmp_path, "orders") as (c, kafka_bootstrap):

        def open_transaction():
            producer = rd_producer(kafka_bootstrap, "shipper")
            producer.begin_transaction()
            producer.produce("orders", value=b"in flight", key=b"k", partition=1)
            producer.flush(30)
            return producer

        producer = await trio.to_thread.run_sync(open_transaction)
        listed, described, producers = await trio.to_thread.run_sync(
            kafka_python_txn_views, kafka_bootstrap, "orders", "shipper"
        )
        (mine,) = [t for t in listed if t.transactional_id == "shipper"]
        assert mine.state.value == "Ongoing"
        assert described.state.value == "Ongoing" and described.producer_id == mine.producer_id
        assert {(tp.topic, tp.partition) for tp in described.topic_partitions} == {("orders", 1)}
        assert described.transaction_start_time_ms > 0
        (active,) = producers[TopicPartition("orders", 1)].active_producers
        assert active.producer_id == mine.producer_id and active.last_sequence == 0
        assert active.current_transaction_start_offset >= 0
        assert producers[TopicPartition("orders", 0)].active_producers == []

        await trio.to_thread.run_sync(producer.commit_transaction, 30)
        listed, described, producers = await trio.to_thread.run_sync(
            kafka_python_txn_views, kafka_bootstrap, "orders", "shipper"
        )
        assert described.state.value == "CompleteCommit"
        (active,) = producers[TopicPartition("orders", 1)].active_producers
        assert active.current_transaction_start_offset == -1 and active.coordinator_epoch >= 0


def kafka_python_delete(bootstrap: str) -> tuple[dict, dict]:
    """(OffsetDelete's per-partition outcome, DeleteGroups' per-group outcome)."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","))
    try:
        offsets = admin.delete_group_offsets("stale", [TopicPartition("orders", 0)])
        groups = admin.delete_groups(["stale", "live", "never"])
        return {tp.partition: err.__name__ for tp, err in offsets.items()}, groups
    finally:
        admin.close()


async def test_kafka_admin_clients_delete_groups_and_offsets(tmp_path):
    async with kafka_cluster(tmp_path, "orders") as (c, kafka_bootstrap):
        async with Admin(c.bootstrap) as admin:
            for group in ("stale", "live"):
                await admin.cluster.coordinator_request(
                    group, OffsetCommit(group, [("orders", 0, 1), ("orders", 2, 1)])
                )
        async with Consumer(c.bootstrap, topics=["orders"], group="live") as member:
            with trio.fail_after(20):
                while not member.assignment:
                    await member.getmany(timeout=0.2)
            offsets, groups = await trio.to_thread.run_sync(kafka_python_delete, kafka_bootstrap)
        assert offsets == {0: "NoError"}
        assert groups == {"stale": "OK", "live": "NonEmptyGroupError", "never": "GroupIdNotFoundError"}
        async with Admin(c.bootstrap) as admin:
            assert (await admin.cluster.coordinator_request("stale", OffsetFetch("stale"))).offsets == []
            live = {
                (t, p): o for t, p, o in (await admin.cluster.coordinator_request("live", OffsetFetch("live"))).offsets
            }
            # Kept: at 1, or further if its member read past a new leader's no-op and
            # committed that on leaving.
            assert live.get(("orders", 0), -1) >= 1 and live.get(("orders", 2), -1) >= 1, live


def rd_delete_records(bootstrap: str, topic: str, upto: dict[int, int]) -> dict[int, int]:
    from confluent_kafka import TopicPartition as RdTopicPartition
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.delete_records([RdTopicPartition(topic, p, o) for p, o in upto.items()])
    return {tp.partition: f.result(30).low_watermark for tp, f in futures.items()}


async def test_kafka_admin_clients_delete_records(tmp_path):
    async with kafka_cluster(tmp_path, "orders") as (c, kafka_bootstrap):
        async with Producer(c.bootstrap) as producer:
            sent = [await producer.send("orders", b"v%d" % i, partition=i % 2) for i in range(20)]
        cut = {0: sent[10].offset, 1: -1}  # partition 1: everything
        low = await trio.to_thread.run_sync(rd_delete_records, kafka_bootstrap, "orders", cut)
        assert low == {0: sent[10].offset, 1: sent[-1].offset + 1}
        left = await read_all(c.bootstrap, ["orders"])
        assert sorted(m.value for m in left) == sorted(b"v%d" % i for i in range(10, 20, 2))
