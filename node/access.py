"""What each native request needs of the ACLs (node/acl.py), as Kafka asks of its own:
checked before a request is served, and for requests that list things, applied to the
answer (a principal sees the topics, groups, transactional ids and producer groups it
may describe, and nothing of the rest).

Delayed and half messages enter through internal topics (`__delay_*`,
`__half_messages`) whose records name the topic they are for: writing one needs WRITE
on that target topic, so a delay tier cannot be a way around a topic's ACLs. A half
message's producer group is its transactional identity: sending, deciding and checking
back halves needs WRITE on the transactional id named like the group. A handler run
(`__handler_runs`) needs READ on the group it names.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import segments
from client.acls import (
    ALTER,
    CLUSTER,
    CLUSTER_NAME,
    CREATE,
    DELETE,
    DESCRIBE,
    GROUP,
    IDEMPOTENT_WRITE,
    READ,
    TOPIC,
    TRANSACTIONAL_ID,
    WRITE,
)
from client.conventions import (
    H_DELAY_TARGET,
    H_HALF_GROUP,
    H_HALF_TARGET,
    H_RUN_GROUP,
    HALF_TOPIC,
    RUNS_TOPIC,
    TIER_PREFIX,
)
from client.protocol import (
    AddNode,
    AddPartitions,
    AddPartitionsToTxn,
    AlterQuotas,
    AlterTopicConfigs,
    CreateAcls,
    CreateTopic,
    DeleteAcls,
    DeleteGroup,
    DeleteOffsets,
    DeleteRecords,
    DeleteTopic,
    DeleteUser,
    DescribeAcls,
    DescribeGroup,
    DescribeQuotas,
    DescribeTransaction,
    EndHalf,
    EndTxn,
    FindCoordinator,
    FindTransactionCoordinator,
    GroupHeartbeat,
    InitProducerId,
    ListGroups,
    ListHalves,
    ListOffsets,
    ListTransactions,
    ListUsers,
    Metadata,
    OffsetCommit,
    OffsetFetch,
    PollHalfChecks,
    Produce,
    PutUser,
    Reassign,
    Rebalance,
    RemoveNode,
    TxnOffsetCommit,
)
from node.acl import Authorizer, Caller

Need = tuple[str, str, str]  # (operation, resource type, name)
_CLUSTER = (CLUSTER, CLUSTER_NAME)


def entry_topic(name: str) -> bool:
    """An internal topic clients write to on their way elsewhere (delay tiers, halves):
    anyone may describe it; its records are checked against their targets."""
    return name.startswith(TIER_PREFIX) or name in (HALF_TOPIC, RUNS_TOPIC)


def _topics(op: str, names: Iterable[str]) -> list[Need]:
    return [(op, TOPIC, n) for n in dict.fromkeys(names)]


def produce_needs(req: Produce) -> list[Need]:
    needs: list[Need] = []
    if req.transactional_id is not None:
        needs.append((WRITE, TRANSACTIONAL_ID, req.transactional_id))
    if not entry_topic(req.topic):
        return [*needs, (WRITE, TOPIC, req.topic)]
    try:
        records = segments.decode_records(req.records)
    except Exception:  # noqa: BLE001 - not a batch: the partition refuses it with the reason
        return needs
    for rec in records:
        headers = dict(rec.headers)
        if req.topic == RUNS_TOPIC:
            needs.append((READ, GROUP, (headers.get(H_RUN_GROUP) or b"").decode(errors="replace")))
            continue
        target = headers.get(H_HALF_TARGET if req.topic == HALF_TOPIC else H_DELAY_TARGET)
        group = headers.get(H_HALF_GROUP) if req.topic == HALF_TOPIC else None
        if target is not None:
            needs.append((WRITE, TOPIC, target.decode(errors="replace")))
        if group is not None:
            needs.append((WRITE, TRANSACTIONAL_ID, group.decode(errors="replace")))
    return list(dict.fromkeys(needs))


def needs_of(body: object, principal: str) -> list[Need]:
    """The (operation, resource) pairs a request needs, all of them."""
    match body:
        case Produce():
            return produce_needs(body)
        case Metadata(topics=topics):
            return _topics(DESCRIBE, (t for t in topics or () if not entry_topic(t)))
        case ListOffsets(topic=t):
            return [(DESCRIBE, TOPIC, t)]
        case CreateTopic(name=name):
            return [(CREATE, TOPIC, name)]  # (or CREATE on the cluster: see Access.check)
        case DeleteTopic(name=name) | DeleteRecords(topic=name):
            return [(DELETE, TOPIC, name)]
        case AlterTopicConfigs(name=name) | AddPartitions(name=name):
            return [(ALTER, TOPIC, name)]
        case PutUser(name=name, must_exist=True) if principal == f"User:{name}":
            return []  # anyone may change their own password
        case PutUser() | DeleteUser() | CreateAcls() | DeleteAcls() | AlterQuotas() | AddNode() | RemoveNode():
            return [(ALTER, *_CLUSTER)]
        case Reassign() | Rebalance():
            return [(ALTER, *_CLUSTER)]
        case DescribeQuotas(principal=who) if who == principal:
            return []  # anyone may see their own quotas
        case ListUsers() | DescribeAcls() | DescribeQuotas():
            return [(DESCRIBE, *_CLUSTER)]
        case InitProducerId(transactional_id=None):
            return [(IDEMPOTENT_WRITE, *_CLUSTER)]
        case InitProducerId(transactional_id=str(tid)) | EndTxn(transactional_id=tid):
            return [(WRITE, TRANSACTIONAL_ID, tid)]
        case AddPartitionsToTxn(transactional_id=tid, partitions=parts):
            return [(WRITE, TRANSACTIONAL_ID, tid), *_topics(WRITE, (p.topic for p in parts))]
        case TxnOffsetCommit(transactional_id=tid, group=group, offsets=offsets):
            return [(WRITE, TRANSACTIONAL_ID, tid), (READ, GROUP, group), *_topics(READ, (t for t, _, _ in offsets))]
        case FindTransactionCoordinator(transactional_id=tid) | DescribeTransaction(transactional_id=tid):
            return [(DESCRIBE, TRANSACTIONAL_ID, tid)]
        case FindCoordinator(group=group) | DescribeGroup(group=group) | OffsetFetch(group=group):
            return [(DESCRIBE, GROUP, group)]
        case GroupHeartbeat(group=group, topics=topics):
            return [(READ, GROUP, group), *_topics(DESCRIBE, topics)]
        case OffsetCommit(group=group, offsets=offsets):
            return [(READ, GROUP, group), *_topics(READ, (t for t, _, _ in offsets))]
        case DeleteGroup(group=group):
            return [(DELETE, GROUP, group)]
        case DeleteOffsets(group=group, partitions=parts):
            return [(DELETE, GROUP, group), *_topics(READ, (p.topic for p in parts))]
        case EndHalf(producer_group=group) | PollHalfChecks(producer_group=group):
            return [(WRITE, TRANSACTIONAL_ID, group)]
        case ListHalves(producer_group=group) if group is not None:
            return [(DESCRIBE, TRANSACTIONAL_ID, group)]
    return []  # Fetch (checked per partition), the lists (filtered), and what anyone may ask


class Access:
    """Applies `needs_of` and the answer filters for one node."""

    def __init__(self, authorizer: Authorizer) -> None:
        self.authorizer = authorizer

    def check(self, body: object, caller: Caller) -> None:
        az = self.authorizer
        for op, rtype, name in needs_of(body, caller.principal):
            if op == CREATE and rtype == TOPIC and az.allows(caller.principal, CREATE, *_CLUSTER):
                continue
            az.check(caller, op, rtype, name)

    def may_read(self, caller: Caller) -> Callable[[str], None]:
        """For a fetch, per partition: raises for a topic the caller may not read."""
        return lambda topic: self.authorizer.check(caller, READ, TOPIC, topic)

    def filtered(self, body: object, caller: Caller, pending: Awaitable[Any]) -> Awaitable[Any]:
        """The answer of a listing request, cut to what the caller may describe."""
        allows, who = self.authorizer.allows, caller.principal

        def topic_ok(name: str) -> bool:
            return entry_topic(name) or allows(who, DESCRIBE, TOPIC, name)

        def tid_ok(name: str) -> bool:
            return allows(who, DESCRIBE, TRANSACTIONAL_ID, name)

        match body:
            case Metadata(topics=None):
                return _keep(pending, "topics", lambda t: topic_ok(t.name))
            case OffsetFetch():
                return _keep(pending, "offsets", lambda o: topic_ok(o[0]))
            case ListGroups():
                return _keep(pending, "groups", lambda g: allows(who, DESCRIBE, GROUP, g))
            case ListTransactions():
                return _keep(pending, "transactions", lambda t: tid_ok(t.transactional_id))
            case ListHalves(producer_group=None):
                return _keep(pending, "halves", lambda h: tid_ok(h.producer_group))
        return pending


async def _keep(pending: Awaitable[Any], field: str, keep: Callable[[Any], bool]) -> Any:
    resp = await pending
    setattr(resp, field, [x for x in getattr(resp, field) if keep(x)])
    return resp
