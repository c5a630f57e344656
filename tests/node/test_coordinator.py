"""Group coordinators in an in-process cluster: finding them, membership through raw
heartbeats, offsets through commits, failover and restart."""

import msgspec
import pytest
import trio

import node.coordinator as coordinator_module
from client.cluster import ClusterClient
from client.connection import open_connection
from client.errors import (
    GroupNotEmptyError,
    GroupNotFoundError,
    GroupSubscribedError,
    IllegalGenerationError,
    InvalidRequestError,
    InvalidTxnStateError,
    NotCoordinatorError,
    RequestTimeoutError,
    UnknownMemberError,
    UnknownTopicError,
    UnstableOffsetCommitError,
)
from client.partitioner import partition_for_key
from client.protocol import (
    CreateTopic,
    DeleteGroup,
    DeleteOffsets,
    DeleteTopic,
    DescribeGroup,
    Fetch,
    FetchPartition,
    FindCoordinator,
    GroupHeartbeat,
    ListGroups,
    OffsetCommit,
    OffsetFetch,
    Produce,
    TopicPartition,
)
from node.coordinator import OFFSETS_TOPIC, OffsetsState, epoch_record, member_record, offset_record, pending_record
from node.peerprotocol import EndTxnOffsets, PendTxnOffsets
from segments import build_batch
from tests.cluster import local_cluster

OFFSETS_PARTITIONS = 2


def cluster(tmp_path, n=3, **overrides):
    return local_cluster(tmp_path, n, offsets_partitions=OFFSETS_PARTITIONS, **overrides)


async def setup(c, client, topic="t", partitions=4):
    await c.wait_leaders(OFFSETS_TOPIC)
    with trio.fail_after(10):
        await client.controller_request(CreateTopic(topic, partitions, min(3, len(c.peers))))
    await c.wait_leaders(topic)


def coordinator_of(c, group):
    n = len(next(iter(c.brokers.values())).state.topics[OFFSETS_TOPIC].replicas)
    p = partition_for_key(group.encode(), n)
    return next(
        b.id
        for b in c.brokers.values()
        if (part := b.partitions.get((OFFSETS_TOPIC, p))) is not None and part.ready_for_writes()
    )


class Member:
    """A group member driven by hand, one heartbeat at a time."""

    def __init__(self, client, group, member_id, topics=("t",), session_ms=10_000, rebalance_ms=30_000):
        self.client, self.group, self.member_id = client, group, member_id
        self.topics, self.session_ms, self.rebalance_ms = list(topics), session_ms, rebalance_ms
        self.epoch = 0
        self.owned: set = set()
        self.assignment: set = set()
        self.interval_ms = 0

    async def beat(self, owned=None, epoch=None):
        if owned is not None:
            self.owned = set(owned)
        req = GroupHeartbeat(
            self.group,
            self.member_id,
            self.epoch if epoch is None else epoch,
            self.topics,
            [TopicPartition(t, p) for t, p in sorted(self.owned)],
            "test",
            self.session_ms,
            self.rebalance_ms,
        )
        with trio.fail_after(10):
            resp = await self.client.coordinator_request(self.group, req)
        self.epoch = resp.member_epoch
        self.assignment = {(tp.topic, tp.partition) for tp in resp.assignment}
        self.interval_ms = resp.heartbeat_interval_ms
        return self.assignment

    async def take(self):
        """Heartbeat, hold what is assigned (and release what is not), report it."""
        self.owned = set(await self.beat())
        return await self.beat()

    async def leave(self):
        return await self.beat(owned=set(), epoch=-1)


async def settle(members, rounds=6):
    """Every member takes what it is given and lets go of the rest, until stable."""
    for _ in range(rounds):
        for m in members:
            await m.take()
    return [m.owned for m in members]


async def test_find_coordinator_and_internal_topic_rules(tmp_path):
    async with cluster(tmp_path) as c, ClusterClient(c.bootstrap) as client:
        await setup(c, client)
        meta = next(iter(c.brokers.values())).state.topics[OFFSETS_TOPIC]
        assert meta.internal and len(meta.replicas) == OFFSETS_PARTITIONS
        assert all(len(r) == 3 for r in meta.replicas)
        expected = coordinator_of(c, "billing")
        for node, addr in c.peers.items():
            async with open_connection(addr) as conn:
                resp = await conn.request(FindCoordinator("billing"))
                assert (resp.node_id, resp.addr) == (expected, c.peers[expected]), f"asked node {node}"
                with pytest.raises(InvalidRequestError):
                    await conn.request(FindCoordinator(""))
        other = next(n for n in c.peers if n != expected)
        async with open_connection(c.peers[other]) as conn:
            with pytest.raises(NotCoordinatorError):
                await conn.request(OffsetFetch("billing"))
        leader = (await c.wait_leaders(OFFSETS_TOPIC))[0]
        async with open_connection(c.peers[leader]) as conn:
            with pytest.raises(InvalidRequestError, match="internal"):
                await conn.request(Produce(OFFSETS_TOPIC, 0, build_batch([(b"k", b"v", (), None)])))
            resp = await conn.request(Fetch([FetchPartition(OFFSETS_TOPIC, 0, 0)], max_wait_ms=0))
            assert resp.results[0].error == 0, "internal topics can be read"
        with pytest.raises(InvalidRequestError, match="internal"):
            with trio.fail_after(10):
                await client.controller_request(DeleteTopic(OFFSETS_TOPIC))


async def test_join_split_leave_moves_only_what_must_move(tmp_path):
    async with cluster(tmp_path) as c, ClusterClient(c.bootstrap) as client:
        await setup(c, client)
        everything = {("t", p) for p in range(4)}
        a = Member(client, "g", "a")
        assert await a.take() == everything
        assert a.epoch == 1 and a.interval_ms > 250, "a stable member heartbeats at the steady pace"
        b = Member(client, "g", "b")
        assert await b.beat() == set(), "b gets nothing while a holds it all"
        assert b.interval_ms <= 250, "a member waiting for partitions heartbeats fast"
        kept = await a.beat()
        assert len(kept) == 2 and kept < everything
        assert await b.beat() == set(), "a has not released yet"
        await a.beat(owned=kept)
        assert await b.beat() == everything - kept
        await settle([a, b])
        assert a.owned == kept and b.owned == everything - kept, "only two partitions moved"
        assert a.epoch == b.epoch == 2
        await a.leave()
        assert await b.take() == everything
        with pytest.raises(UnknownMemberError):
            await a.beat(epoch=2)
        # The client rejoins with epoch 0 and its member id: accepted as a rejoin.
        await a.beat(owned=set(), epoch=0)
        await settle([a, b])
        assert a.owned | b.owned == everything and len(a.owned) == len(b.owned) == 2


async def test_a_silent_member_expires_and_a_stubborn_one_is_fenced(tmp_path):
    async with cluster(tmp_path, n=1) as c, ClusterClient(c.bootstrap) as client:
        await setup(c, client, partitions=2)
        a = Member(client, "g", "a", session_ms=600)
        b = Member(client, "g", "b", session_ms=600)
        await settle([a, b], rounds=3)
        assert len(a.owned) == len(b.owned) == 1
        # b stops heartbeating: after its session timeout a gets its partition.
        with trio.fail_after(5):
            while len(await a.take()) < 2:
                await trio.sleep(0.1)
        with pytest.raises(UnknownMemberError):
            await b.beat()
        # c joins; a never gives anything back: past its rebalance timeout it is fenced.
        a.rebalance_ms = 500
        await a.beat(epoch=0)  # timeouts are taken at (re)join
        cm = Member(client, "g", "c", session_ms=5000)
        await cm.beat()
        with trio.fail_after(5):
            with pytest.raises(UnknownMemberError):
                while True:
                    await a.beat(owned={("t", 0), ("t", 1)})
                    await trio.sleep(0.1)
        with trio.fail_after(5):
            while len(await cm.take()) < 2:
                await trio.sleep(0.05)


async def test_commits_fetches_and_who_may_commit(tmp_path):
    async with cluster(tmp_path) as c, ClusterClient(c.bootstrap) as client:
        await setup(c, client)

        async def commit(offsets, member_id="", group="g"):
            with trio.fail_after(10):
                return await client.coordinator_request(group, OffsetCommit(group, offsets, member_id))

        async def fetch(partitions=None, group="g"):
            with trio.fail_after(10):
                resp = await client.coordinator_request(group, OffsetFetch(group, partitions))
            return {(t, p): o for t, p, o in resp.offsets}

        await commit([("t", 0, 5), ("t", 1, 7)])  # a simple (group-less) commit
        await commit([("t", 0, 6)])
        assert await fetch() == {("t", 0): 6, ("t", 1): 7}
        assert await fetch([TopicPartition("t", 1), TopicPartition("t", 3)]) == {("t", 1): 7}
        assert await fetch(group="other") == {}
        with pytest.raises(UnknownMemberError):
            await commit([("t", 0, 9)], member_id="nobody")
        a = Member(client, "g", "a")
        b = Member(client, "g", "b")
        await settle([a, b])
        mine, theirs = sorted(a.owned)[0], sorted(b.owned)[0]
        await commit([(*mine, 11)], member_id="a")
        with pytest.raises(IllegalGenerationError):
            await commit([(*mine, 12), (*theirs, 12)], member_id="a")
        with pytest.raises(UnknownTopicError):
            await commit([("nope", 0, 1)])
        with pytest.raises(InvalidRequestError):
            await commit([("t", 0, -1)])
        assert (await fetch())[mine] == 11
        # A late copy of a's earlier commit (resent after a timeout, overtaken by its
        # commit on revoke) must not move the offset back; a tool's reset may.
        await commit([(*mine, 10)], member_id="a")
        assert (await fetch())[mine] == 11
        await commit([(*mine, 13)], member_id="a")
        assert (await fetch())[mine] == 13
        await commit([(*mine, 4)])
        assert (await fetch())[mine] == 4


async def test_a_stable_fetch_waits_for_a_commit_still_in_flight(tmp_path, monkeypatch):
    """A member's commit proposed before its partition moves, committed after: the next
    owner's first (stable) fetch must not read the offset from before it, or it would
    start there and commit that older offset over the newer one. That holds after the
    commit's own answer gave up waiting too: the write is still in the log."""
    monkeypatch.setattr(coordinator_module, "WRITE_TIMEOUT_S", 0.5)
    async with cluster(tmp_path, election_ticks=200) as c, ClusterClient(c.bootstrap) as client:
        await setup(c, client)
        a = Member(client, "g", "a")
        await settle([a])
        tp = sorted(a.owned)[0]

        async def fetch(stable=True):
            with trio.fail_after(10):
                resp = await client.coordinator_request("g", OffsetFetch("g", [TopicPartition(*tp)], stable))
            return {(t, p): o for t, p, o in resp.offsets}.get(tp)

        await client.coordinator_request("g", OffsetCommit("g", [(*tp, 19)], "a"))
        leader = coordinator_of(c, "g")
        coord = c.brokers[leader].partitions[(OFFSETS_TOPIC, partition_for_key(b"g", OFFSETS_PARTITIONS))]
        followers = [n for n in c.peers if n != leader]
        for n in followers:  # the next commit cannot reach a quorum until they are back
            await c.stop(n, graceful=False)
        before = coord.storage.last_index()
        answers = []

        async def commit():
            with pytest.raises(RequestTimeoutError) as answer:
                await client.request(c.peers[leader], OffsetCommit("g", [(*tp, 20)], "a"))
            answers.append(answer.value)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(commit)
                while coord.storage.last_index() == before:  # proposed, not committed
                    await trio.sleep(0.01)
                with pytest.raises(UnstableOffsetCommitError, match="not committed yet"):
                    await fetch()
                assert await fetch(stable=False) == 19  # tools still see the committed offset
        assert answers, "the commit's answer timed out"  # and the write may still commit:
        with pytest.raises(UnstableOffsetCommitError, match="not committed yet"):
            await fetch()
        for n in followers:
            await c.start(n)
        with trio.fail_after(20):
            while True:
                try:
                    assert await fetch() == 20
                    break
                except UnstableOffsetCommitError:
                    await trio.sleep(0.05)


async def test_transactional_offsets_are_checked_held_pending_and_written_once(tmp_path):
    """KIP-447: a transaction's offsets are checked against the member that sends them
    and held pending; a consumer starting there waits for the outcome."""
    async with cluster(tmp_path) as c, ClusterClient(c.bootstrap) as client, c.peer_client() as node:
        await setup(c, client)

        async def ask(body):
            with trio.fail_after(10):
                # Pend and End come from a transaction coordinator: a node, on the peer listener.
                return await (
                    node if isinstance(body, (PendTxnOffsets, EndTxnOffsets)) else client
                ).coordinator_request("g", body)

        async def fetch(stable=True):
            resp = await ask(OffsetFetch("g", [TopicPartition(*mine)], stable))
            return {(t, p): o for t, p, o in resp.offsets}.get(mine)

        def pend(tid, number, member="a", tps=None, epoch=None):
            tps = tps or [mine]
            return PendTxnOffsets(
                "g",
                tid,
                number,
                [TopicPartition(*tp) for tp in tps],
                member,
                [a.epoch if epoch is None else epoch] * len(tps),
            )

        a, b = Member(client, "g", "a"), Member(client, "g", "b")
        await settle([a, b])
        mine, theirs = sorted(a.owned)[0], sorted(b.owned)[0]
        await ask(OffsetCommit("g", [(*mine, 5)]))
        with pytest.raises(UnknownMemberError):
            await ask(pend("tx", 1, member="nobody"))
        with pytest.raises(IllegalGenerationError):
            await ask(pend("tx", 1, tps=[mine, theirs]))
        assert await fetch() == 5  # refusals leave nothing pending

        await ask(pend("tx", 1))
        await ask(pend("tx", 1))  # a retry is fine
        with pytest.raises(UnstableOffsetCommitError, match="'tx' will commit the offset"):
            await fetch()
        assert await fetch(stable=False) == 5  # tools still see the committed offset
        with pytest.raises(InvalidTxnStateError, match="'tx' is still committing"):
            await ask(pend("other", 1))
        await ask(EndTxnOffsets("g", "tx", 1, commit=True, offsets=[(*mine, 8)]))
        assert await fetch() == 8
        await ask(OffsetCommit("g", [(*mine, 9)], "a"))  # the owner moves on
        await ask(EndTxnOffsets("g", "tx", 1, commit=True, offsets=[(*mine, 8)]))
        assert await fetch() == 9, "a redone end must not move a later commit back"

        await ask(pend("tx", 2))
        await ask(EndTxnOffsets("g", "tx", 2, commit=False, offsets=[(*mine, 12)]))
        assert await fetch() == 9  # aborted: unchanged, and stable again
        await ask(EndTxnOffsets("g", "never-pended", 1, commit=True, offsets=[(*mine, 20)]))
        assert await fetch() == 9

        # a rejoins (same member id, having given everything up) and gets its partitions
        # back: a handler still running from before must not commit what it read then.
        before = a.epoch
        await a.beat(owned=set(), epoch=0)
        await settle([a, b])
        assert mine in a.owned and a.epoch > before
        with pytest.raises(IllegalGenerationError, match="stale"):
            await ask(pend("tx", 3, epoch=before))
        await ask(pend("tx", 3))
        assert await fetch(stable=False) == 9


async def test_offsets_and_members_survive_failover_and_restart(tmp_path):
    async with cluster(tmp_path) as c, ClusterClient(c.bootstrap) as client:
        await setup(c, client)
        a = Member(client, "g", "a")
        await settle([a])
        offsets = [("t", p, 100 + p) for p in range(4)]
        with trio.fail_after(10):
            await client.coordinator_request("g", OffsetCommit("g", offsets, "a"))
        old = coordinator_of(c, "g")
        await c.stop(old, graceful=False)
        # The new coordinator has every offset, and knows a: a keeps its partitions.
        with trio.fail_after(10):
            resp = await client.coordinator_request("g", OffsetFetch("g"))
        assert sorted(resp.offsets) == offsets
        assert await a.beat() == a.owned
        assert coordinator_of(c, "g") != old
        # ...while a newcomer waits until a has reported, then gets its share.
        b = Member(client, "g", "b")
        await settle([a, b])
        assert len(a.owned) == len(b.owned) == 2
        with trio.fail_after(10):
            desc = await client.coordinator_request("g", DescribeGroup("g"))
        assert desc.state == "stable" and {m.member_id for m in desc.members} == {"a", "b"}
        await c.start(old)
        for node in list(c.brokers):
            await c.stop(node, graceful=False)
        for node in c.peers:
            await c.start(node)
        with trio.fail_after(15):
            resp = await client.coordinator_request("g", OffsetFetch("g"))
        assert sorted(resp.offsets) == offsets


async def test_describe_and_list_groups(tmp_path):
    async with cluster(tmp_path) as c, ClusterClient(c.bootstrap) as client:
        await setup(c, client)
        a = Member(client, "g1", "a")
        b = Member(client, "g1", "b", topics=("t", "u"))
        await a.take()
        await b.beat()
        with trio.fail_after(10):
            await client.coordinator_request("g2", OffsetCommit("g2", [("t", 0, 3)]))
            desc = await client.coordinator_request("g1", DescribeGroup("g1"))
        assert desc.state == "reconciling" and desc.epoch == 2
        members = {m.member_id: m for m in desc.members}
        assert set(members) == {"a", "b"} and members["b"].topics == ["t", "u"]
        assert len(members["a"].assignment) == 4 and members["b"].assignment == []
        await settle([a, b])
        with trio.fail_after(10):
            desc = await client.coordinator_request("g1", DescribeGroup("g1"))
            empty = await client.coordinator_request("g3", DescribeGroup("g3"))
            g2 = await client.coordinator_request("g2", DescribeGroup("g2"))
        assert desc.state == "stable"
        assert sorted(tp.partition for m in desc.members for tp in m.assignment) == [0, 1, 2, 3]
        assert (empty.state, empty.members, empty.offsets) == ("empty", [], [])
        assert (g2.state, g2.offsets) == ("empty", [("t", 0, 3)])
        listed = set()
        for addr in c.peers.values():
            async with open_connection(addr) as conn:
                names = (await conn.request(ListGroups())).groups
            assert not listed & set(names), "each group is listed by its coordinator only"
            listed |= set(names)
        assert listed == {"g1", "g2"}


async def test_deleting_groups_and_offsets(tmp_path):
    async with cluster(tmp_path) as c, ClusterClient(c.bootstrap) as client:
        await setup(c, client)
        await setup(c, client, topic="u", partitions=2)

        async def ask(group, body):
            with trio.fail_after(10):
                return await client.coordinator_request(group, body)

        await ask("idle", OffsetCommit("idle", [("t", 0, 3), ("u", 1, 4)]))
        with pytest.raises(GroupNotFoundError):
            await ask("nobody", DeleteGroup("nobody"))
        a = Member(client, "busy", "a", topics=("t",))
        await a.take()
        await ask("busy", OffsetCommit("busy", [("t", 1, 2)], "a"))
        await ask("busy", OffsetCommit("busy", [("u", 0, 9)]))  # (a tool's reset: no member)
        with pytest.raises(GroupNotEmptyError):
            await ask("busy", DeleteGroup("busy"))
        with pytest.raises(GroupSubscribedError):  # its member reads t
            await ask("busy", DeleteOffsets("busy", [TopicPartition("t", 1)]))
        await ask("busy", DeleteOffsets("busy", [TopicPartition("u", 0), TopicPartition("u", 1)]))
        assert (await ask("busy", OffsetFetch("busy"))).offsets == [("t", 1, 2)]

        await ask("idle", DeleteGroup("idle"))
        assert (await ask("idle", OffsetFetch("idle"))).offsets == []
        with pytest.raises(GroupNotFoundError):
            await ask("idle", DeleteGroup("idle"))
        names = set()
        for addr in c.peers.values():
            async with open_connection(addr) as conn:
                names |= set((await conn.request(ListGroups())).groups)
        assert "idle" not in names and "busy" in names


def test_offsets_state_applies_records_and_round_trips():
    s = OffsetsState()
    for key, value in [
        offset_record("g", "t", 0, 5),
        offset_record("g", "t", 1, 9),
        offset_record("g", "t", 0, 6),
        member_record("g", "m1", ("c", 1000, 2000)),
        member_record("g", "m2", ("c", 1000, 2000)),
        member_record("g", "m2", None),
        epoch_record("g", 4),
        epoch_record("g", 3),
        offset_record("h", "u", 2, 1),
        offset_record("h", "u", 2, None),
        (b"\xc1garbage", b"1"),
        (msgspec.msgpack.encode((9, "g")), b"\x01"),
        pending_record("g", "t", 2, ("txn-1", 3, 10**13)),
        pending_record("g", "t", 3, ("txn-2", 1, 10**13)),
        pending_record("g", "t", 3, None),
    ]:
        s.apply(key, value)
    g = s.groups["g"]
    assert g.offsets == {("t", 0): 6, ("t", 1): 9}
    assert g.members == {"m1": ("c", 1000, 2000)}
    assert g.epoch == 4, "epochs never go back"
    assert "h" not in s.groups, "a None value deletes, and a group with nothing left goes"
    assert g.pending == {("t", 2): ("txn-1", 3, 10**13)}
    back = OffsetsState.decode(s.encode())
    assert {n: vars(d) for n, d in back.groups.items()} == {n: vars(d) for n, d in s.groups.items()}


async def test_offsets_are_snapshotted_not_expired_and_a_lagging_replica_installs_the_snapshot(tmp_path, monkeypatch):
    monkeypatch.setattr(coordinator_module.GroupShard, "snapshot_every", 20)
    async with (
        local_cluster(tmp_path, 3, offsets_partitions=1, retention_check_ms=50) as c,
        ClusterClient(c.bootstrap) as client,
    ):
        await setup(c, client)
        leader = coordinator_of(c, "g")
        controller = await c.wait_controller()
        lagger = next(n for n in c.peers if n not in (leader, controller))
        await c.stop(lagger, graceful=False)
        for i in range(60):
            with trio.fail_after(10):
                await client.coordinator_request("g", OffsetCommit("g", [("t", i % 4, i)]))
        expected = {("t", p): 56 + p for p in range(4)}
        part = c.brokers[leader].partitions[(OFFSETS_TOPIC, 0)]
        with trio.fail_after(10):
            while part.storage.first_index() <= 40:
                await trio.sleep(0.05)
        await c.start(lagger)
        with trio.fail_after(15):
            while True:
                behind = c.brokers[lagger].partitions.get((OFFSETS_TOPIC, 0))  # once the controller log replayed
                data = behind.shard.offsets.groups.get("g") if behind is not None else None
                if data is not None and data.offsets == expected:
                    break
                await trio.sleep(0.05)
        assert behind.storage.first_index() > 1, "it caught up from the leader's snapshot, not by replaying the log"
        for node in list(c.brokers):
            await c.stop(node, graceful=False)
        for node in c.peers:
            await c.start(node)
        with trio.fail_after(15):
            resp = await client.coordinator_request("g", OffsetFetch("g"))
        assert {(t, p): o for t, p, o in resp.offsets} == expected


def test_dead_groups_and_deleted_topics_lose_their_offsets_by_the_logs_clock():
    import msgspec

    day = 86_400_000
    st = OffsetsState()
    st.apply(*offset_record("dead", "t", 0, 5), 1_000)
    st.apply(*offset_record("live", "t", 0, 7), 1_000)
    st.apply(*member_record("live", "m1", ("c", 3000, 60_000)), 1_000)
    st.apply(*offset_record("moved-on", "old-topic", 0, 1), 1_000)
    st.apply(*offset_record("moved-on", "t", 1, 2), 1_000)
    st.apply(*member_record("moved-on", "m2", ("c", 3000, 60_000)), 1_000)
    st.apply(*offset_record("fresh", "new-topic", 0, 1), 8 * day)  # just written: a topic not heard of yet
    expired = st.expired(8 * day + 1_000, 7 * day, lambda topic: topic == "t")
    keys = sorted(tuple(msgspec.msgpack.decode(k)[1:]) for k, v in expired)
    assert keys == [("dead", "t", 0), ("moved-on", "old-topic", 0)] and all(v is None for _, v in expired)
    for k, v in expired:
        st.apply(k, v, 8 * day + 2_000)
    assert "dead" not in st.groups  # nothing left of it: gone from the state
    assert st.groups["moved-on"].offsets == {("t", 1): 2} and st.groups["live"].offsets == {("t", 0): 7}
    again = OffsetsState.decode(st.encode())  # the clock survives a snapshot
    assert again.groups["fresh"].last_write_ms == 8 * day


async def test_the_coordinator_expires_a_dead_groups_offsets(tmp_path, monkeypatch):
    import node.coordinator

    monkeypatch.setattr(node.coordinator, "DELETED_TOPIC_GRACE_MS", 500)
    async with cluster(tmp_path, offsets_retention_ms=1000) as c, ClusterClient(c.bootstrap) as client:
        await client.controller_request(CreateTopic("exp", 1, 3))
        await c.wait_leaders("exp")
        await client.coordinator_request("forgotten", OffsetCommit("forgotten", [("exp", 0, 5)]))
        fetched = await client.coordinator_request("forgotten", OffsetFetch("forgotten"))
        assert fetched.offsets == [("exp", 0, 5)]
        with trio.fail_after(20):
            while (await client.coordinator_request("forgotten", OffsetFetch("forgotten"))).offsets:
                await trio.sleep(0.2)
