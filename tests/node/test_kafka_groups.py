"""Kafka's classic group protocol on the coordinator (node.kafka_groups): joins gathered
into one generation, the leader's assignment handed on, rebalances, expiry, fencing."""

from __future__ import annotations

import pytest
import trio

from node.kafka_groups import (
    ILLEGAL_GENERATION,
    INCONSISTENT_GROUP_PROTOCOL,
    INVALID_SESSION_TIMEOUT,
    REBALANCE_IN_PROGRESS,
    UNKNOWN_MEMBER_ID,
    ClassicGroups,
    GroupError,
)

RANGE = [("range", b"meta-range"), ("roundrobin", b"meta-rr")]


async def join(groups, member_id="", protocols=RANGE, instance=None, session_ms=6000):
    return await groups.join("g", member_id, instance, "consumer", protocols, session_ms, 3000, 1)


async def join_together(groups, *args_list):
    results = {}

    async def one(i, args):
        results[i] = await join(groups, *args)

    async with trio.open_nursery() as n:
        for i, args in enumerate(args_list):
            n.start_soon(one, i, args)
    return [results[i] for i in range(len(args_list))]


async def test_members_joining_together_share_one_generation_and_the_leader_sees_everyone():
    groups = ClassicGroups()
    a, b = await join_together(groups, (), ())
    assert a.generation == b.generation == 1 and a.protocol == "range" and a.leader == b.leader
    leader, follower = (a, b) if a.member_id == a.leader else (b, a)
    assert sorted(m for m, _, _ in leader.members) == sorted([a.member_id, b.member_id])
    assert all(md == b"meta-range" for _, _, md in leader.members) and follower.members == []

    async def follower_sync(out):
        out.append(await groups.sync("g", follower.member_id, 1, {}))

    got: list[bytes] = []
    async with trio.open_nursery() as n:
        n.start_soon(follower_sync, got)
        await trio.sleep(0.05)  # the follower waits for the leader's assignment
        mine = await groups.sync("g", leader.member_id, 1, {leader.member_id: b"p0", follower.member_id: b"p1"})
    assert mine == b"p0" and got == [b"p1"]
    groups.heartbeat("g", follower.member_id, 1)


async def test_a_new_member_starts_a_rebalance_the_others_learn_from_their_heartbeat():
    groups = ClassicGroups()
    (a,) = await join_together(groups, ())
    await groups.sync("g", a.member_id, 1, {a.member_id: b"all"})

    async def newcomer(out):
        out.append(await join(groups))

    got: list = []
    async with trio.open_nursery() as n:
        n.start_soon(newcomer, got)
        await trio.sleep(0.05)
        with pytest.raises(GroupError) as exc:
            groups.heartbeat("g", a.member_id, 1)
        assert exc.value.kafka_code == REBALANCE_IN_PROGRESS
        again = await join(groups, a.member_id)
    assert again.generation == got[0].generation == 2
    with pytest.raises(GroupError) as exc:
        groups.heartbeat("g", a.member_id, 1)
    assert exc.value.kafka_code == ILLEGAL_GENERATION


async def test_a_silent_member_is_dropped_after_its_session_and_the_group_rebalances(autojump_clock):
    groups = ClassicGroups()
    a, b = await join_together(groups, (), ())
    await trio.sleep(2)
    groups.heartbeat("g", a.member_id, 1)  # b says nothing
    await trio.sleep(4.5)
    groups.expire()
    with pytest.raises(GroupError) as exc:
        groups.heartbeat("g", b.member_id, 1)
    assert exc.value.kafka_code == UNKNOWN_MEMBER_ID
    with pytest.raises(GroupError) as exc:
        groups.heartbeat("g", a.member_id, 1)
    assert exc.value.kafka_code == REBALANCE_IN_PROGRESS


async def test_refusals():
    groups = ClassicGroups()
    with pytest.raises(GroupError) as exc:
        await join(groups, session_ms=10)
    assert exc.value.kafka_code == INVALID_SESSION_TIMEOUT
    (a,) = await join_together(groups, ())
    with pytest.raises(GroupError) as exc:
        await join(groups, protocols=[("sticky", b"")])  # nothing in common with the group
    assert exc.value.kafka_code == INCONSISTENT_GROUP_PROTOCOL
    with pytest.raises(GroupError) as exc:
        await join(groups, "made-up-id")
    assert exc.value.kafka_code == UNKNOWN_MEMBER_ID
    with pytest.raises(GroupError) as exc:
        groups.check_commit("g", "", -1)  # a simple commit while the group has members
    assert exc.value.kafka_code == UNKNOWN_MEMBER_ID
    groups.check_commit("g", a.member_id, 1)
    groups.leave("g", a.member_id)
    groups.check_commit("g", "", -1)  # no members: simple commits are fine


async def test_a_static_member_back_under_a_new_id_takes_its_old_place():
    groups = ClassicGroups()
    (a,) = await join_together(groups, ("", RANGE, "instance-1"))
    back = await join(groups, "", RANGE, "instance-1")
    assert back.member_id != a.member_id and [m for m, _, _ in back.members] == [back.member_id]
    with pytest.raises(GroupError):
        groups.heartbeat("g", a.member_id, back.generation)


async def test_a_static_member_back_into_a_stable_group_keeps_its_assignment_without_a_rebalance():
    groups = ClassicGroups()
    a, b = await join_together(groups, ("", RANGE, "ia"), ("", RANGE, "ib"))
    leader, other = (a, b) if a.member_id == a.leader else (b, a)
    assignments = {leader.member_id: b"p0", other.member_id: b"p1"}
    async with trio.open_nursery() as n:
        n.start_soon(groups.sync, "g", other.member_id, 1, {})
        await trio.sleep(0.01)
        await groups.sync("g", leader.member_id, 1, assignments)
    # `other` restarts: a join with no id and its instance id, within its session.
    back = await join(groups, "", RANGE, "ia" if other is a else "ib")
    assert back.generation == 1 and back.member_id != other.member_id and back.members == []
    assert await groups.sync("g", back.member_id, 1, {}) == b"p1"
    groups.heartbeat("g", leader.member_id, 1)  # no rebalance: the leader goes on
    with pytest.raises(GroupError):
        groups.heartbeat("g", other.member_id, 1)  # its old id is gone
    # The leader back: the same, and it keeps leading.
    again = await join(groups, "", RANGE, "ia" if leader is a else "ib")
    assert again.generation == 1 and again.leader == again.member_id and len(again.members) == 2
    assert await groups.sync("g", again.member_id, 1, {again.member_id: b"other"}) == b"p0"
    # Back with other metadata: a rebalance after all.
    changed = [("range", b"meta-new"), ("roundrobin", b"meta-rr")]
    async with trio.open_nursery() as n:
        n.start_soon(join, groups, "", changed, "ia" if other is a else "ib")
        await trio.sleep(0.01)
        with pytest.raises(GroupError) as exc:
            groups.heartbeat("g", again.member_id, 1)
        assert exc.value.kafka_code == REBALANCE_IN_PROGRESS
        await join(groups, again.member_id, RANGE, "ia" if leader is a else "ib")


async def test_a_forgotten_group_sends_its_members_to_join_again():
    groups = ClassicGroups()
    (a,) = await join_together(groups, ())
    groups.forget("g")
    with pytest.raises(GroupError) as exc:
        groups.heartbeat("g", a.member_id, 1)
    assert exc.value.kafka_code == UNKNOWN_MEMBER_ID
