from collections import Counter

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from client.errors import (
    InvalidConfigError,
    InvalidRequestError,
    NotEnoughReplicasError,
    TideMQError,
    TopicExistsError,
    UnknownTopicError,
)
from node.metadata import (
    AllocateProducerIds,
    AlterTopicConfigsCmd,
    ClusterState,
    CreateTopicCmd,
    DeleteTopicCmd,
    DrainNodeCmd,
    ForgetNodeCmd,
    ReassignCmd,
    ReassignDoneCmd,
    RegisterNodeCmd,
    decode_command,
    decode_state,
    encode_command,
    encode_state,
    validate_topic,
)
from node.placement import assign_replicas


def test_create_delete_and_races_are_deterministic():
    s = ClusterState()
    meta = s.apply(CreateTopicCmd("orders", [[1, 2], [2, 3]]))
    assert meta.group(0) == 1 and meta.group(1) == 2 and s.next_group == 3
    assert isinstance(s.apply(CreateTopicCmd("orders", [[3]])), TopicExistsError)
    assert s.apply(DeleteTopicCmd("orders")) is None
    assert isinstance(s.apply(DeleteTopicCmd("orders")), UnknownTopicError)
    again = s.apply(CreateTopicCmd("orders", [[1]]))
    assert again.first_group == 3  # group ids are never reused


def test_altering_configs_sets_and_deletes():
    s = ClusterState()
    s.apply(CreateTopicCmd("t", [[1]], {"retention.ms": "5", "segment.ms": "60000"}))
    meta = s.apply(AlterTopicConfigsCmd("t", {"retention.bytes": "100", "retention.ms": "7"}, ["segment.ms"]))
    assert meta.configs == {"retention.ms": "7", "retention.bytes": "100"} and s.topics["t"] is meta
    assert meta.first_group == 1 and meta.replicas == [[1]]
    assert isinstance(s.apply(AlterTopicConfigsCmd("gone", {"retention.ms": "1"})), UnknownTopicError)


def test_a_command_of_a_newer_build_does_not_decode():
    # The controller skips such an entry (node/broker.py) rather than failing its apply.
    with pytest.raises(msgspec.ValidationError):
        decode_command(msgspec.msgpack.encode(["SomeFutureCmd", "x"]))


def test_producer_id_blocks_do_not_overlap():
    s = ClusterState()
    a, b = s.apply(AllocateProducerIds(1)), s.apply(AllocateProducerIds(2))
    assert not set(a) & set(b)


def test_state_and_commands_round_trip():
    s = ClusterState()
    s.apply(CreateTopicCmd("t", [[1]], {"retention.ms": "5"}))
    assert decode_state(encode_state(s)) == s
    cmd = CreateTopicCmd("t", [[1, 2]], internal=True)
    assert decode_command(encode_command(cmd)) == cmd


@pytest.mark.parametrize(
    "name,parts,repl,live,err",
    [
        ("", 1, 1, 3, InvalidConfigError),
        ("a/b", 1, 1, 3, InvalidConfigError),
        ("..", 1, 1, 3, InvalidConfigError),
        ("ok", 0, 1, 3, InvalidConfigError),
        ("ok", 1, 0, 3, InvalidConfigError),
        ("ok", 1, 4, 3, NotEnoughReplicasError),
    ],
)
def test_validation(name, parts, repl, live, err):
    with pytest.raises(err):
        validate_topic(name, parts, repl, live)


@settings(max_examples=500)
@given(st.lists(st.tuples(st.integers(1, 12), st.integers(1, 3)), min_size=1, max_size=8))
@example([(10, 2), (1, 1), (1, 2), (1, 1)])  # (ties among the least hosted once went to the least leading)
def test_assignment_is_even(topics):
    nodes = [1, 2, 3]
    s = ClusterState()
    for i, (parts, repl) in enumerate(topics):
        replicas = assign_replicas(s, nodes, parts, repl)
        assert all(len(set(r)) == repl for r in replicas)
        s.apply(CreateTopicCmd(f"t{i}", replicas))
    leaders = Counter(r[0] for m in s.topics.values() for r in m.replicas)
    hosted = Counter(n for m in s.topics.values() for r in m.replicas for n in r)
    assert max(hosted[n] for n in nodes) - min(hosted[n] for n in nodes) <= 1
    assert max(leaders[n] for n in nodes) - min(leaders[n] for n in nodes) <= 2


def test_the_roster_registers_drains_and_forgets_nodes_for_good():
    s = ClusterState()
    for n in (1, 2, 3, 4):
        assert s.apply(RegisterNodeCmd(n, f"p{n}", f"c{n}")) is None
    s.apply(CreateTopicCmd("t", [[1, 2, 3], [4, 1, 2]]))
    assert s.apply(DrainNodeCmd(4, throttle=1000)) is None
    assert s.members[4].draining and s.members[4].drain_throttle == 1000
    # Forgotten only once it hosts nothing (here it still leads t-1).
    assert isinstance(s.apply(ForgetNodeCmd(4)), InvalidRequestError)
    assert isinstance(s.apply(ReassignCmd([("t", 1, [4, 1, 3])])), InvalidRequestError)  # (no replicas onto it)
    assert s.apply(ReassignCmd([("t", 1, [1, 2, 3])])) == 1
    assert s.topics["t"].hosts(1) == [4, 1, 2, 3]  # old and new, while it moves
    assert isinstance(s.apply(ForgetNodeCmd(4)), InvalidRequestError)
    s.apply(ReassignDoneCmd("t", 1, s.topics["t"].group(1), [1, 2, 3]))
    assert s.topics["t"].replicas[1] == [1, 2, 3] and not s.topics["t"].moving
    assert s.apply(ForgetNodeCmd(4)) is None
    assert 4 not in s.members and s.removed == [4]
    assert isinstance(s.apply(RegisterNodeCmd(4, "p4", "c4")), InvalidRequestError)  # never again
    assert list(s.partitions_of(4)) == []


def test_a_reassignment_of_the_same_nodes_reorders_at_once_and_bad_ones_change_nothing():
    s = ClusterState()
    for n in (1, 2, 3):
        s.apply(RegisterNodeCmd(n, f"p{n}", f"c{n}"))
    s.apply(CreateTopicCmd("t", [[1, 2, 3], [2, 3, 1]]))
    assert s.apply(ReassignCmd([("t", 0, [3, 1, 2])])) == 0  # a new preferred leader, nothing to copy
    assert s.topics["t"].replicas[0] == [3, 1, 2] and not s.topics["t"].moving
    before = encode_state(s)
    for bad in (
        [("t", 0, [1, 1, 2])],  # not distinct
        [("t", 0, [1, 2, 9])],  # not a member
        [("t", 5, [1, 2, 3])],  # no such partition
        [("nope", 0, [1, 2, 3])],
        [("t", 1, [1, 2]), ("t", 0, [])],  # the second is bad: neither applies
    ):
        assert isinstance(s.apply(ReassignCmd(bad)), TideMQError)
        assert encode_state(s) == before
    assert s.apply(ReassignCmd([("t", 1, [1, 2])])) == 1
    assert isinstance(s.apply(ReassignCmd([("t", 1, [1, 3])])), InvalidRequestError)  # already moving
    wrong = ReassignDoneCmd("t", 1, s.topics["t"].group(1), [1, 3])
    assert isinstance(s.apply(wrong), InvalidRequestError)  # not where it was going
    state = decode_state(encode_state(s))  # (moves survive a snapshot)
    assert state.topics["t"].moving[1].target == [1, 2]
