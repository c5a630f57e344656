"""The words of access control, Kafka's model: who (a principal), what (an operation),
on which resource (a topic, group, transactional id or the cluster, named literally or
by prefix), allowed or denied.

Both sides use them: the CLI and `Admin` build bindings, the nodes check and apply them
(node/acl.py). A binding a client sends is checked here before it reaches the
controller's log, so every node can match every stored binding without a doubt.
"""

from __future__ import annotations

from client.errors import InvalidRequestError
from client.protocol import AclBinding, AclFilter

TOPIC, GROUP, TRANSACTIONAL_ID, CLUSTER = "topic", "group", "transactional-id", "cluster"
RESOURCE_TYPES = (TOPIC, GROUP, TRANSACTIONAL_ID, CLUSTER)
CLUSTER_NAME = "kafka-cluster"  # the cluster resource's one name (Kafka's)

READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE = "read", "write", "create", "delete", "alter", "describe"
IDEMPOTENT_WRITE, CLUSTER_ACTION, ALL = "idempotent-write", "cluster-action", "all"
OPERATIONS = (READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, IDEMPOTENT_WRITE, CLUSTER_ACTION, ALL)

#: The operations that mean something on each resource type (as in Kafka).
VALID_OPERATIONS: dict[str, frozenset[str]] = {
    TOPIC: frozenset({READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, ALL}),
    GROUP: frozenset({READ, DELETE, DESCRIBE, ALL}),
    TRANSACTIONAL_ID: frozenset({WRITE, DESCRIBE, ALL}),
    CLUSTER: frozenset({CREATE, ALTER, DESCRIBE, IDEMPOTENT_WRITE, CLUSTER_ACTION, ALL}),
}

LITERAL, PREFIXED = "literal", "prefixed"
PATTERNS = (LITERAL, PREFIXED)
ALLOW, DENY = "allow", "deny"
WILDCARD = "*"  # a literal name matching every resource of its type; `User:*` every user
MAX_NAME = 255


def check_binding(b: AclBinding) -> None:
    """Refuse a binding no node should store (InvalidRequestError saying why)."""
    kind, _, who = b.principal.partition(":")
    if kind != "User" or not who or len(who) > MAX_NAME:
        raise InvalidRequestError(f"principal {b.principal!r} is not User:NAME (or User:* for everyone)")
    if b.resource_type not in RESOURCE_TYPES:
        raise InvalidRequestError(f"resource type {b.resource_type!r} is not one of {', '.join(RESOURCE_TYPES)}")
    if b.operation not in VALID_OPERATIONS[b.resource_type]:
        known = ", ".join(sorted(VALID_OPERATIONS[b.resource_type]))
        raise InvalidRequestError(f"{b.operation!r} is not an operation on a {b.resource_type} (one of: {known})")
    if b.pattern not in PATTERNS:
        raise InvalidRequestError(f"pattern {b.pattern!r} is not literal or prefixed")
    if b.permission not in (ALLOW, DENY):
        raise InvalidRequestError(f"permission {b.permission!r} is not allow or deny")
    if not 0 < len(b.name) <= MAX_NAME:
        raise InvalidRequestError(f"a resource name has 1..{MAX_NAME} characters, not {len(b.name)}")
    if b.resource_type == CLUSTER and (b.name != CLUSTER_NAME or b.pattern != LITERAL):
        raise InvalidRequestError(f"the cluster resource is named {CLUSTER_NAME!r}, literally")
    if b.pattern == PREFIXED and b.name == WILDCARD:
        raise InvalidRequestError("a prefixed pattern of '*' means nothing; use a literal '*' for every name")


def selects(f: AclFilter, b: AclBinding) -> bool:
    """Whether a filter picks a binding: each field it sets must be equal."""
    return all(
        want is None or want == have
        for want, have in (
            (f.principal, b.principal),
            (f.resource_type, b.resource_type),
            (f.name, b.name),
            (f.pattern, b.pattern),
            (f.operation, b.operation),
            (f.permission, b.permission),
        )
    )


def describe(b: AclBinding) -> str:
    """One line for people: `User:bob may write topic orders* (prefixed)`."""
    verb = "may" if b.permission == ALLOW else "may not"
    what = "the cluster" if b.resource_type == CLUSTER else f"{b.resource_type} {b.name}"
    return f"{b.principal} {verb} {b.operation} {what}{' (prefix)' if b.pattern == PREFIXED else ''}"
