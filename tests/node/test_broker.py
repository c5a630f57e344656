"""Brokers in one trio run: create topics, produce with every acks, fetch, errors."""

import pytest
import trio

from client import Admin, Producer
from client.cluster import ClusterClient
from client.connection import open_connection
from client.errors import (
    CorruptBatchError,
    ErrorCode,
    InvalidConfigError,
    NotControllerError,
    NotLeaderError,
    OffsetOutOfRangeError,
    OutOfOrderSequenceError,
    TopicExistsError,
    UnknownTopicError,
)
from client.protocol import (
    ACKS_LEADER,
    ACKS_NONE,
    EARLIEST,
    LATEST,
    CreateTopic,
    DeleteTopic,
    Fetch,
    FetchPartition,
    InitProducerId,
    ListOffsets,
    Metadata,
    Produce,
)
from segments import build_batch, decode_records, iter_batches
from tests.cluster import local_cluster


def batch(values, **kw):
    return build_batch([(None, v, (), None) for v in values], **kw)


async def controller_conn_addr(cluster):
    cid = await cluster.wait_controller()
    return cluster.peers[cid]


async def test_create_produce_fetch(tmp_path):
    async with local_cluster(tmp_path) as cluster:
        addr = await controller_conn_addr(cluster)
        async with open_connection(addr) as conn:
            await conn.request(CreateTopic("orders", partitions=3, replication=3))
            with pytest.raises(TopicExistsError):
                await conn.request(CreateTopic("orders", partitions=1, replication=1))
            with pytest.raises(InvalidConfigError):
                await conn.request(CreateTopic("bad/name", partitions=1, replication=1))
        leaders = await cluster.wait_leaders("orders")
        assert sorted(leaders) == [0, 1, 2]
        assert len(set(leaders.values())) == 3, "preferred leaders spread over the three nodes"
        leader = leaders[0]
        async with open_connection(cluster.peers[leader]) as conn:
            r1 = await conn.request(Produce("orders", 0, batch([b"a", b"b"])))
            r2 = await conn.request(Produce("orders", 0, batch([b"c"]), acks=ACKS_LEADER))
            await conn.send_only(Produce("orders", 0, batch([b"d"]), acks=ACKS_NONE))
            assert (r1.base_offset, r1.last_offset) == (1, 2)  # offset 0 is the leader's no-op
            assert r2.base_offset == 3
            with trio.fail_after(5):
                values = []
                offset = 0
                while len(values) < 4:
                    resp = await conn.request(Fetch([FetchPartition("orders", 0, offset)], max_wait_ms=200))
                    res = resp.results[0]
                    assert res.error == 0, res.error_message
                    for header, data in iter_batches(res.records):
                        offset = header.last_offset + 1
                        if not header.is_control:
                            values += [r.value for r in decode_records(data)]
            assert values == [b"a", b"b", b"c", b"d"]
            assert (await conn.request(ListOffsets("orders", 0, LATEST))).offset == 5
            assert (await conn.request(ListOffsets("orders", 0, EARLIEST))).offset == 0
        follower = next(n for n in cluster.peers if n != leader)
        async with open_connection(cluster.peers[follower]) as conn:
            with pytest.raises(NotLeaderError) as err:
                await conn.request(Produce("orders", 0, batch([b"x"])))
            assert err.value.leader_addr == cluster.peers[leader]
            md = await conn.request(Metadata(["orders", "nope"]))
            assert md.missing == ["nope"]
            assert [p.leader for p in md.topics[0].partitions] == [leaders[p] for p in range(3)]


@pytest.mark.parametrize("thrifty", [True, False])
async def test_partitions_send_new_entries_to_a_quorum_first_unless_told_not_to(tmp_path, thrifty):
    """docs/raft.md, "Thrifty appends": every replica of a partition follows the node's
    setting; the controller group always sends to every node at once."""
    async with local_cluster(tmp_path, thrifty_appends=thrifty) as cluster:
        async with open_connection(await controller_conn_addr(cluster)) as conn:
            await conn.request(CreateTopic("t", partitions=1, replication=3))
        await cluster.wait_leaders("t")
        for b in cluster.brokers.values():
            assert b.partitions[("t", 0)].core.cfg.thrifty is thrifty
            assert b.controller.core.cfg.thrifty is False


async def test_bad_input_gets_typed_errors(tmp_path):
    async with local_cluster(tmp_path, n=1) as cluster:
        async with open_connection(cluster.peers[1]) as conn:
            await conn.request(CreateTopic("t", partitions=1, replication=1))
            await cluster.wait_leaders("t")
            with pytest.raises(UnknownTopicError):
                await conn.request(Produce("missing", 0, batch([b"x"])))
            with pytest.raises(UnknownTopicError):
                await conn.request(Produce("t", 5, batch([b"x"])))
            good = bytearray(batch([b"hello"]))
            good[-1] ^= 0xFF
            with pytest.raises(CorruptBatchError, match="CRC"):
                await conn.request(Produce("t", 0, bytes(good)))
            with pytest.raises(CorruptBatchError):
                await conn.request(Produce("t", 0, b"garbage"))
            resp = await conn.request(Fetch([FetchPartition("t", 0, 99)], max_wait_ms=0))
            assert resp.results[0].error == OffsetOutOfRangeError.code
            ok = await conn.request(Produce("t", 0, batch([b"fine"])))
            assert ok.base_offset == 1


async def test_a_fetch_past_the_high_watermark_but_in_the_log_waits_instead_of_failing(tmp_path, monkeypatch):
    # A new leader may not yet know the commit its predecessor told a consumer about:
    # the consumer's position is in its log but above its high watermark. Kafka answers
    # nothing there (out of range is past the log end), and so does a node.
    from node.replica import Replica

    async with local_cluster(tmp_path, n=1) as cluster:
        async with open_connection(cluster.peers[1]) as conn:
            await conn.request(CreateTopic("t", partitions=1, replication=1))
            await cluster.wait_leaders("t")
            for i in range(3):
                await conn.request(Produce("t", 0, batch([b"m%d" % i])))
            monkeypatch.setattr(Replica, "high_watermark", property(lambda self: 2))
            for isolation in (0, 1):
                resp = await conn.request(Fetch([FetchPartition("t", 0, 3)], max_wait_ms=0, isolation=isolation))
                assert (resp.results[0].error, resp.results[0].records, resp.results[0].high_watermark) == (0, b"", 2)
            resp = await conn.request(Fetch([FetchPartition("t", 0, 5)], max_wait_ms=0))
            assert resp.results[0].error == OffsetOutOfRangeError.code


async def test_idempotent_retries_do_not_duplicate(tmp_path):
    async with local_cluster(tmp_path, n=1) as cluster:
        async with open_connection(cluster.peers[1]) as conn:
            await conn.request(CreateTopic("t", partitions=1, replication=1))
            await cluster.wait_leaders("t")
            pid = (await conn.request(InitProducerId())).producer_id
            b0 = batch([b"a", b"b"], producer_id=pid, producer_epoch=0, base_sequence=0)
            b1 = batch([b"c"], producer_id=pid, producer_epoch=0, base_sequence=2)
            r0 = await conn.request(Produce("t", 0, b0))
            r0_again = await conn.request(Produce("t", 0, b0))
            assert r0_again.duplicate and r0_again.base_offset == r0.base_offset
            with pytest.raises(OutOfOrderSequenceError):
                await conn.request(Produce("t", 0, batch([b"z"], producer_id=pid, producer_epoch=0, base_sequence=7)))
            r1 = await conn.request(Produce("t", 0, b1))
            assert r1.base_offset == r0.last_offset + 1
            assert (await conn.request(ListOffsets("t", 0))).offset == r1.last_offset + 1


async def test_controller_only_commands_redirect(tmp_path):
    async with local_cluster(tmp_path) as cluster:
        cid = await cluster.wait_controller()
        other = next(n for n in cluster.peers if n != cid)
        async with open_connection(cluster.peers[other]) as conn:
            with pytest.raises(NotControllerError) as err:
                await conn.request(CreateTopic("x", 1, 1))
            assert err.value.details["leader_addr"] == cluster.peers[cid]


async def test_retention_and_follower_restart_from_log_start(tmp_path):
    """A follower that was down while retention dropped the prefix it lacks restarts
    from the leader's log start (a snapshot of the partition) and then catches up."""
    async with local_cluster(tmp_path, retention_check_ms=50, min_segment_bytes=1024) as cluster:
        addr = await controller_conn_addr(cluster)
        async with open_connection(addr) as conn:
            with pytest.raises(InvalidConfigError, match="unknown topic config"):
                await conn.request(CreateTopic("r", 1, 3, {"retention.hours": "1"}))
            await conn.request(CreateTopic("r", 1, 3, {"segment.bytes": "4096", "retention.bytes": "8192"}))
        leader = (await cluster.wait_leaders("r"))[0]
        ctrl = await cluster.wait_controller()
        lagger = next(n for n in cluster.peers if n not in (leader, ctrl))
        await cluster.stop(lagger, graceful=False)
        async with open_connection(cluster.peers[leader]) as conn:
            for i in range(60):
                await conn.request(Produce("r", 0, batch([b"%04d" % i + b"x" * 500])))
            leader_log = cluster.brokers[leader].partitions[("r", 0)].storage.log
            with trio.fail_after(10):
                while leader_log.segment_count > 4:  # ~8 KiB kept in 4 KiB segments + the active one
                    await trio.sleep(0.05)
            start = (await conn.request(ListOffsets("r", 0, EARLIEST))).offset
            end = (await conn.request(ListOffsets("r", 0, LATEST))).offset
        assert start > 0
        await cluster.start(lagger)
        with trio.fail_after(15):
            while True:
                part = cluster.brokers[lagger].partitions.get(("r", 0))
                if part is not None and part.storage.log.next_offset >= end:
                    break
                await trio.sleep(0.05)
        log = part.storage.log
        assert log.log_start_offset >= start
        ours = log.read(max(log.log_start_offset, start), 1 << 20)
        theirs = (
            cluster.brokers[leader].partitions[("r", 0)].storage.log.read(max(log.log_start_offset, start), 1 << 20)
        )
        assert ours and ours[: len(theirs)] == theirs[: len(ours)]


async def test_altered_configs_apply_live_on_every_replica(tmp_path):
    async with local_cluster(tmp_path, retention_check_ms=50, min_segment_bytes=1024) as cluster:
        async with Admin(cluster.bootstrap) as admin:
            await admin.create_topic("live", 1, 3, {"segment.bytes": "4096"})
            with pytest.raises(InvalidConfigError, match="unknown topic config"):
                await admin.alter_topic_configs("live", {"retention.hours": "1"})
            with pytest.raises(UnknownTopicError):
                await admin.alter_topic_configs("nope", {"retention.ms": "1000"})
            async with Producer(cluster.bootstrap) as producer:  # one batch each: segments of ~7
                first = (await producer.send("live", b"0000" + b"x" * 500)).offset
                for i in range(1, 40):
                    await producer.send("live", b"%04d" % i + b"x" * 500)
            logs = [b.partitions[("live", 0)].storage.log for b in cluster.brokers.values()]
            # The default keeps a week: every record stays (a first segment holding only
            # the leader's no-op may go: its batch time is not a record's).
            assert all(log.log_start_offset <= first for log in logs)
            await admin.alter_topic_configs("live", {"retention.bytes": "8192"})
            with trio.fail_after(10):  # every replica trims to its newest ~8 KiB
                while not all(log.log_start_offset > first and log.segment_count <= 4 for log in logs):
                    await trio.sleep(0.05)
            await admin.alter_topic_configs("live", delete=["retention.bytes", "segment.bytes"])
            info = await admin.describe_topic("live")
            assert info.configs == {}
            assert all(
                b.partitions[("live", 0)].storage.log.config.segment_bytes == b.cfg.segment_bytes
                for b in cluster.brokers.values()
            )


async def test_deleted_records_go_on_every_replica_and_stay_gone(tmp_path):
    async with local_cluster(tmp_path, min_segment_bytes=1024) as cluster:
        async with Admin(cluster.bootstrap) as admin:
            await admin.create_topic("dr", 1, 3, {"segment.bytes": "4096"})
            async with Producer(cluster.bootstrap) as producer:
                sent = [await producer.submit("dr", b"%04d" % i + b"x" * 200) for i in range(60)]
                await producer.flush()
            offsets = [(await d).offset for d in sent]
            leader = (await cluster.wait_leaders("dr"))[0]
            lagger = next(n for n in cluster.peers if n != leader)
            await cluster.stop(lagger, graceful=False)  # down while the records go
            cut = offsets[30]
            assert await admin.delete_records("dr", 0, cut) == cut
            with pytest.raises(OffsetOutOfRangeError):
                await admin.delete_records("dr", 0, offsets[-1] + 100)
            assert await admin.delete_records("dr", 0, 5) == cut  # below the start: nothing more goes
            async with open_connection(cluster.peers[leader]) as conn:
                assert (await conn.request(ListOffsets("dr", 0, EARLIEST))).offset == cut
                below = (await conn.request(Fetch([FetchPartition("dr", 0, offsets[0], 1 << 20)]))).results[0]
                assert below.error == ErrorCode.OFFSET_OUT_OF_RANGE
                first = (await conn.request(Fetch([FetchPartition("dr", 0, cut, 1 << 20)]))).results[0]
                # (whole batches, as in Kafka: a consumer skips the records before its offset)
                assert [r.value[:4] for r in decode_records(first.records) if r.offset >= cut][:1] == [b"0030"]
            await cluster.start(lagger)
            with trio.fail_after(15):  # the one that was down applies the deletion as it catches up
                while True:
                    part = cluster.brokers[lagger].partitions.get(("dr", 0))
                    if part is not None and part.storage.log.log_start_offset >= cut:
                        break
                    await trio.sleep(0.05)
            assert all(b.partitions[("dr", 0)].storage.log.log_start_offset == cut for b in cluster.brokers.values())
            await cluster.stop(lagger)
            await cluster.start(lagger)  # and it stays gone after a restart
            with trio.fail_after(15):
                while ("dr", 0) not in cluster.brokers[lagger].partitions:
                    await trio.sleep(0.05)
            assert cluster.brokers[lagger].partitions[("dr", 0)].storage.log.log_start_offset == cut


async def test_controller_snapshot_brings_a_lagging_node_up_to_date(tmp_path):
    async with local_cluster(tmp_path, controller_snapshot_every=5) as cluster:
        ctrl = await cluster.wait_controller()
        lagger = next(n for n in cluster.peers if n != ctrl)
        await cluster.stop(lagger, graceful=False)
        async with open_connection(cluster.peers[ctrl]) as conn:
            for i in range(12):
                await conn.request(CreateTopic(f"t{i}", partitions=1, replication=2))
            await conn.request(DeleteTopic("t0"))
        assert cluster.brokers[ctrl].controller.storage.first_index() > 5  # the log was compacted
        await cluster.start(lagger)
        with trio.fail_after(15):
            while True:
                b = cluster.brokers[lagger]
                # the deletion follows the creations in the log: it may apply a batch later
                if set(b.state.topics) >= {f"t{i}" for i in range(1, 12)} and "t0" not in b.state.topics:
                    break
                await trio.sleep(0.05)


async def test_a_restarted_node_is_loading_until_it_has_caught_up_with_the_controller(tmp_path):
    """The commit index on disk lags (it is saved only with a term or a vote), so a
    restarted node must not call itself loaded before a live controller leader told it
    how far to apply: until then it would call existing topics missing, and a delay
    scheduler or a transaction coordinator would act on that."""
    async with local_cluster(tmp_path) as cluster:
        addr = await controller_conn_addr(cluster)
        async with open_connection(addr) as conn:
            await conn.request(CreateTopic("kept", partitions=1, replication=3))
        ctrl = await cluster.wait_controller()
        node = next(n for n in cluster.peers if n != ctrl)
        await cluster.stop(node, graceful=False)
        broker = await cluster.start(node)
        with trio.fail_after(10):
            while not broker.metadata_loaded():
                await trio.sleep(0)
        assert "kept" in broker.state.topics


async def test_only_the_controller_answers_whether_a_topic_exists(tmp_path):
    from client.cluster import ClusterClient

    async with local_cluster(tmp_path) as cluster:
        addr = await controller_conn_addr(cluster)
        async with open_connection(addr) as conn:
            await conn.request(CreateTopic("here", partitions=1, replication=3))
        ctrl = await cluster.wait_controller()
        follower = next(a for n, a in cluster.peers.items() if n != ctrl)
        with trio.fail_after(20):
            async with ClusterClient(follower) as client:
                assert await client.topic_exists("here") and not await client.topic_exists("gone")
                with pytest.raises(NotControllerError):
                    await client.request(follower, Metadata(["here"], authoritative=True))


async def test_a_topic_deleted_and_created_again_keeps_its_new_data_across_restarts(tmp_path):
    """Each incarnation of a name has its own directories: the old one's cleanup, also
    replayed after a restart, never touches the new one's data."""
    async with local_cluster(tmp_path) as cluster:
        async with ClusterClient(cluster.bootstrap) as client:
            await client.controller_request(CreateTopic("again", 1, 3))
            await cluster.wait_leaders("again")
            await client.leader_request("again", 0, Produce("again", 0, batch([b"old"])))
            await client.controller_request(DeleteTopic("again"))
            await client.controller_request(CreateTopic("again", 1, 3))
            await cluster.wait_leaders("again")
            await client.leader_request("again", 0, Produce("again", 0, batch([b"new"])))
        dirs = sorted(p.name for p in (tmp_path / "n1").iterdir() if p.name.startswith("again-"))
        assert len(dirs) == 1 and dirs[0].startswith("again-0.g")
        for node in list(cluster.brokers):
            await cluster.stop(node, graceful=False)
        for node in cluster.peers:
            await cluster.start(node)
        leaders = await cluster.wait_leaders("again", timeout=20)
        part = cluster.brokers[leaders[0]].partitions[("again", 0)]
        with trio.fail_after(10):
            while part.high_watermark < 2:  # the new incarnation's leader-change batch and "new"
                await trio.sleep(0.05)
        values, log, at = [], part.storage.log, 0
        while at < log.next_offset:  # a read stays within one segment
            for h, data in iter_batches(log.read(at, 1 << 20)):
                values += [] if h.is_control else [r.value for r in decode_records(data)]
                at = h.last_offset + 1
        assert values == [b"new"]


async def test_a_partition_directory_of_the_old_layout_is_adopted(tmp_path):
    async with local_cluster(tmp_path, n=1) as cluster:
        async with ClusterClient(cluster.bootstrap) as client:
            await client.controller_request(CreateTopic("old", 1, 1))
            await cluster.wait_leaders("old")
            await client.leader_request("old", 0, Produce("old", 0, batch([b"kept"])))
        await cluster.stop(1, graceful=False)
        (new,) = (tmp_path / "n1").glob("old-0.g*")
        new.rename(tmp_path / "n1" / "old-0")  # as a node before topic incarnations left it
        broker = await cluster.start(1)
        await cluster.wait_leaders("old")
        assert not (tmp_path / "n1" / "old-0").exists() and new.exists()
        assert broker.partitions[("old", 0)].storage.log.next_offset >= 2


async def test_replicas_open_after_a_restart_whose_controller_log_ends_on_a_no_op(tmp_path):
    async with local_cluster(tmp_path, n=1) as cluster:
        async with ClusterClient(cluster.bootstrap) as client:
            await client.controller_request(CreateTopic("kept", 1, 1))
        for _ in range(2):  # the second restart replays a log that ends on the first's no-op
            await cluster.stop(1, graceful=True)
            await cluster.start(1)
            await cluster.wait_controller()
        await cluster.wait_leaders("kept")


async def test_a_controller_snapshot_larger_than_a_peer_frame_arrives_in_pieces(tmp_path):
    frame = 16 * 1024
    async with local_cluster(tmp_path, controller_snapshot_every=5, max_frame_bytes=frame) as cluster:
        ctrl = await cluster.wait_controller()
        lagger = next(n for n in cluster.peers if n != ctrl)
        await cluster.stop(lagger, graceful=False)
        names = [f"{i:03d}-" + "n" * 190 for i in range(60)]  # the state alone is several frames
        async with ClusterClient(cluster.bootstrap) as client:
            for name in names:
                await client.controller_request(CreateTopic(name, partitions=1, replication=1))
        snap = cluster.brokers[ctrl].controller.storage.snapshot()
        assert len(snap.data) > frame
        await cluster.start(lagger)
        with trio.fail_after(20):
            while not set(names) <= set(cluster.brokers[lagger].state.topics):
                await trio.sleep(0.05)
