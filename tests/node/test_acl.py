"""The authorizer's matching (Kafka's rules: deny wins, literal, `*` and prefix names,
`User:*`, implied DESCRIBE and IDEMPOTENT_WRITE, super-users), the bindings in the
controller's state, and what each request needs (node/access.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from client.acls import check_binding
from client.conventions import H_DELAY_DUE, H_DELAY_TARGET, H_RUN_GROUP, RUNS_TOPIC
from client.errors import AuthorizationFailedError, InvalidRequestError
from client.protocol import (
    AclBinding,
    AddPartitionsToTxn,
    CreateTopic,
    Fetch,
    GroupHeartbeat,
    InitProducerId,
    Metadata,
    OffsetCommit,
    Produce,
    PutUser,
    TopicPartition,
)
from node.access import Access, needs_of
from node.acl import Authorizer
from node.metadata import AddAclsCmd, ClusterState, RemoveAclsCmd, decode_state, encode_state
from segments import build_batch


@dataclass
class Who:
    principal: str
    addr: str = "127.0.0.1:5555"


def authorizer(*acls: AclBinding, **kw) -> tuple[Authorizer, ClusterState]:
    state = ClusterState()
    state.apply(AddAclsCmd(list(acls)))
    return Authorizer(lambda: state.acls, enabled=True, **kw), state


def allow(principal: str, rtype: str, name: str, op: str, pattern: str = "literal") -> AclBinding:
    return AclBinding(principal, rtype, name, op, pattern)


def deny(principal: str, rtype: str, name: str, op: str, pattern: str = "literal") -> AclBinding:
    return AclBinding(principal, rtype, name, op, pattern, "deny")


def test_nothing_is_allowed_without_an_acl_and_deny_wins():
    az, _ = authorizer(
        allow("User:bob", "topic", "orders", "write"),
        allow("User:bob", "topic", "pay", "all"),
        deny("User:bob", "topic", "pay", "write"),
    )
    assert az.allows("User:bob", "write", "topic", "orders")
    assert not az.allows("User:bob", "read", "topic", "orders")
    assert not az.allows("User:eve", "write", "topic", "orders")
    assert az.allows("User:bob", "read", "topic", "pay")  # ALL
    assert not az.allows("User:bob", "write", "topic", "pay")  # denied, although ALL allows


def test_names_literal_wildcard_and_prefix_and_everyone():
    az, _ = authorizer(
        allow("User:bob", "topic", "logs.", "read", "prefixed"),
        allow("User:*", "group", "*", "read"),
        deny("User:bob", "topic", "logs.secret", "read", "prefixed"),
    )
    assert az.allows("User:bob", "read", "topic", "logs.app")
    assert not az.allows("User:bob", "read", "topic", "logs")  # the prefix is "logs."
    assert not az.allows("User:bob", "read", "topic", "logs.secret.keys")
    assert az.allows("User:anyone", "read", "group", "g1")
    assert not az.allows("User:anyone", "delete", "group", "g1")


def test_implied_operations():
    az, _ = authorizer(allow("User:w", "topic", "t", "write"), allow("User:r", "group", "g", "read"))
    assert az.allows("User:w", "describe", "topic", "t")  # WRITE implies DESCRIBE
    assert az.allows("User:r", "describe", "group", "g")
    assert az.allows("User:w", "idempotent-write", "cluster", "kafka-cluster")  # Kafka 3.0's rule
    assert not az.allows("User:r", "idempotent-write", "cluster", "kafka-cluster")
    az, _ = authorizer(allow("User:w", "topic", "*", "write"), deny("User:w", "topic", "*", "write"))
    assert not az.allows("User:w", "idempotent-write", "cluster", "kafka-cluster")  # no write left anywhere


def test_super_users_nodes_the_token_and_a_cluster_without_users():
    az, _ = authorizer(super_users=frozenset({"User:admin"}))
    for who in ("User:admin", "Node:2", "User:token"):
        assert az.allows(who, "alter", "cluster", "kafka-cluster")
    assert not az.allows("User:bob", "describe", "topic", "t")
    assert Authorizer(lambda: [], enabled=False).allows("User:ANONYMOUS", "delete", "topic", "t")


def test_verdicts_follow_changes_and_refusals_are_audited(caplog):
    refusals = []
    az, state = authorizer(on_refusal=lambda op, rtype: refusals.append((op, rtype)))
    assert not az.allows("User:bob", "read", "topic", "t")
    state.apply(AddAclsCmd([allow("User:bob", "topic", "t", "read")]))
    assert az.allows("User:bob", "read", "topic", "t")  # the cache follows the new list
    state.apply(RemoveAclsCmd([allow("User:bob", "topic", "t", "read")]))
    with pytest.raises(AuthorizationFailedError, match="User:bob may not read topic 't'") as err:
        az.check(Who("User:bob"), "read", "topic", "t")
    assert err.value.details == {
        "principal": "User:bob",
        "operation": "read",
        "resource_type": "topic",
        "resource": "t",
    }
    assert refusals == [("read", "topic")]
    assert "refused User:bob from 127.0.0.1:5555: read on topic 't'" in caplog.text


def test_bindings_in_the_controller_state():
    s = ClusterState()
    b = allow("User:bob", "topic", "t", "read")
    assert s.apply(AddAclsCmd([b, b])) == 1
    assert s.apply(AddAclsCmd([b])) == 0  # already there
    assert decode_state(encode_state(s)).acls == [b]  # kept in snapshots
    assert s.apply(RemoveAclsCmd([b])) == 1 and s.acls == []


@pytest.mark.parametrize(
    "binding, why",
    [
        (allow("bob", "topic", "t", "read"), "User:NAME"),
        (allow("User:bob", "queue", "t", "read"), "resource type"),
        (allow("User:bob", "group", "g", "write"), "not an operation on a group"),
        (allow("User:bob", "cluster", "mine", "alter"), "kafka-cluster"),
        (allow("User:bob", "topic", "t", "read", "glob"), "pattern"),
        (allow("User:bob", "topic", "", "read"), "1..255"),
        (AclBinding("User:bob", "topic", "t", "read", permission="maybe"), "allow or deny"),
    ],
)
def test_bindings_are_checked_before_they_are_stored(binding, why):
    with pytest.raises(InvalidRequestError, match=why):
        check_binding(binding)


def test_what_requests_need():
    assert needs_of(Produce("t", 0, b""), "User:x") == [("write", "topic", "t")]
    assert needs_of(InitProducerId(), "User:x") == [("idempotent-write", "cluster", "kafka-cluster")]
    assert needs_of(InitProducerId("tx"), "User:x") == [("write", "transactional-id", "tx")]
    assert needs_of(GroupHeartbeat("g", topics=["a", "b"]), "User:x") == [
        ("read", "group", "g"),
        ("describe", "topic", "a"),
        ("describe", "topic", "b"),
    ]
    assert needs_of(OffsetCommit("g", [("a", 0, 5), ("a", 1, 5)]), "User:x") == [
        ("read", "group", "g"),
        ("read", "topic", "a"),
    ]
    assert needs_of(AddPartitionsToTxn("tx", 1, 0, [TopicPartition("a", 0)]), "User:x") == [
        ("write", "transactional-id", "tx"),
        ("write", "topic", "a"),
    ]
    own = PutUser("bob", b"s" * 16, 4096, b"k" * 32, b"k" * 32, must_exist=True)
    assert needs_of(own, "User:bob") == [] and needs_of(own, "User:eve") == [("alter", "cluster", "kafka-cluster")]
    assert needs_of(Metadata(["__delay_1s", "t"]), "User:x") == [("describe", "topic", "t")]
    assert needs_of(Fetch([]), "User:x") == []  # checked per partition


def test_a_delayed_message_needs_write_on_its_target_and_a_handler_run_read_on_its_group():
    records = build_batch([(None, b"v", [(H_DELAY_TARGET, b"orders"), (H_DELAY_DUE, b"1")], None)])
    assert needs_of(Produce("__delay_1s", 0, records), "User:x") == [("write", "topic", "orders")]
    run = build_batch([(b"orders/0/7", None, [(H_RUN_GROUP, b"billing")], None)])
    assert needs_of(Produce(RUNS_TOPIC, 0, run), "User:x") == [("read", "group", "billing")]


def test_create_topic_by_cluster_or_topic_grant():
    az, _ = authorizer(
        allow("User:a", "cluster", "kafka-cluster", "create"), allow("User:b", "topic", "b.", "create", "prefixed")
    )
    access = Access(az)
    access.check(CreateTopic("anything"), Who("User:a"))
    access.check(CreateTopic("b.one"), Who("User:b"))
    with pytest.raises(AuthorizationFailedError, match="create topic 'c'"):
        access.check(CreateTopic("c"), Who("User:b"))
