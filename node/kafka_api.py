"""What each Kafka request does: the same partitions and handlers as the native
protocol (`node.api.Api`), one cluster with two front doors (docs/kafka.md).

A handler is called in arrival order and returns an awaitable of the response body
(None where Kafka sends no response: a produce with acks=0). Like `Api.produce`, a produce
proposes every partition's batch before it returns, so an idempotent Kafka producer's
pipelined requests reach each log in the order it sent them.
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from client.acls import DESCRIBE, GROUP, TOPIC
from client.conventions import OFFSETS_TOPIC, TXN_TOPIC
from client.errors import (
    CoordinatorNotAvailableError,
    GroupSubscribedError,
    InvalidRequestError,
    RequestTimeoutError,
    TideMQError,
    UnknownTopicError,
)
from client.protocol import (
    READ_COMMITTED,
    READ_UNCOMMITTED,
    AddPartitions,
    AddPartitionsToTxn,
    CreateTopic,
    DeleteGroup,
    DeleteOffsets,
    DeleteRecords,
    DeleteTopic,
    DescribeGroup,
    EndTxn,
    Fetch,
    FetchPartition,
    FindCoordinator,
    FindTransactionCoordinator,
    GroupHeartbeat,
    InitProducerId,
    ListGroups,
    ListOffsets,
    OffsetCommit,
    OffsetFetch,
    Produce,
    TopicPartition,
    TxnOffsetCommit,
)
from client.quotas import FETCH_RATE, PRODUCE_RATE
from node.access import entry_topic
from node.kafka_admin import KafkaAdmin
from node.kafka_consumer_groups import ConsumerGroups
from node.kafka_fetch_sessions import FetchSessionError, FetchSessions
from node.kafka_groups import INCONSISTENT_GROUP_PROTOCOL, ClassicGroups, GroupError
from node.kafka_wire import (
    API_VERSIONS,
    KafkaError,
    Request,
    api_versions_response,
    build,
    error_of,
    failed,
    kafka_error,
    response_class,
    topic_id,
)
from node.metadata import validate_topic

if TYPE_CHECKING:
    from client.cluster import ClusterClient
    from node.api import Api
    from node.context import Node
    from node.coordinator import GroupCoordinator

#: A Kafka client with no leader epoch to send says -1; we give none either (the Raft
#: term would do, but a client that has it fences its fetches by it: not yet served).
NO_EPOCH = -1
NATIVE_PROTOCOL_TYPE = "tidemq"  # how a native group shows to Kafka's admin tools
MAX_PARTITIONS = 1000  # per produce or fetch, as the native fetch
CLUSTER_ID = "tidemq"
DEFAULT_PARTITIONS = 1  # a CreateTopics that leaves them to the broker (Kafka's num.partitions)
DEFAULT_REPLICATION = 3  # (at most the live nodes)

Handler = Callable[[Request], Awaitable[Any]]


async def _value(value: Any) -> Any:
    return value


class KafkaApi:
    def __init__(
        self, node: Node, api: Api, coordinator: GroupCoordinator, kafka_addrs: Callable[[], dict[int, str]]
    ) -> None:
        """`kafka_addrs`: every node's Kafka address that this node knows (its own and
        what its peers gossiped)."""
        self.node = node
        self.api = api
        self.coordinator = coordinator
        self.groups = ClassicGroups()
        self.consumer_groups = ConsumerGroups(node, coordinator)
        self.fetch_sessions = FetchSessions()
        coordinator.kafka_members = lambda g, m: self.groups.active(g) or self.consumer_groups.refuses(g, m)
        self._kafka_addrs = kafka_addrs
        #: This node's client of the cluster (`KafkaServer.serve` opens it): a producer
        #: id comes from the controller, which need not be this node.
        self.cluster: ClusterClient | None = None
        self.handlers: dict[int, Handler] = {
            0: self.produce,
            1: self.fetch,
            2: self.list_offsets,
            3: self.metadata,
            API_VERSIONS: self.api_versions,
            8: self.offset_commit,
            9: self.offset_fetch,
            10: self.find_coordinator,
            11: self.join_group,
            12: self.heartbeat,
            13: self.leave_group,
            14: self.sync_group,
            15: self.describe_groups,
            16: self.list_groups,
            19: self.create_topics,
            20: self.delete_topics,
            37: self.create_partitions,
            21: self.delete_records,
            22: self.init_producer_id,
            42: self.delete_groups,
            47: self.offset_delete,
            24: self.add_partitions_to_txn,
            25: self.add_offsets_to_txn,
            26: self.end_txn,
            28: self.txn_offset_commit,
            60: self.describe_cluster,
            68: self.consumer_group_heartbeat,
            69: self.consumer_group_describe,
        }
        self.admin = KafkaAdmin(node, self._controller, lambda body: api.dispatch(body, None), self._gate)
        self.handlers.update(self.admin.handlers)

    def dispatch(self, req: Request) -> Awaitable[Any]:
        return self.handlers[req.api_key](req)

    # -- the ACLs: what a native request of the same effect would need (node/access.py) ----

    def _bound(self, req: Request) -> bool:
        """Whether the ACLs bind this request's sender."""
        return req.caller is not None and not self.node.authorizer.is_super(req.caller.principal)

    def _gate(self, req: Request, native: object) -> None:
        """Raise AuthorizationFailedError (each handler answers it in Kafka's place for
        it) unless the sender may do what `native` does."""
        if self._bound(req):
            self.api.access.check(native, req.caller)

    def _charge(self, req: Request, key: str, amount: int) -> None:
        if req.caller is not None and self.node.state.quotas:
            self.node.quotas.charge(req.caller.principal, key, amount)

    def _throttle(self, req: Request) -> datetime.timedelta:
        """The throttle time a produce or fetch answer carries (its quotas' debt)."""
        if req.caller is None or not self.node.state.quotas:
            return datetime.timedelta(0)
        return datetime.timedelta(seconds=self.node.quotas.throttle_s(req.caller.principal))

    def _sees(self, req: Request, rtype: str, name: str) -> bool:
        return not self._bound(req) or self.node.authorizer.allows(req.caller.principal, DESCRIBE, rtype, name)

    # -- discovery --------------------------------------------------------------------------

    def api_versions(self, req: Request) -> Awaitable[Any]:
        return _value(api_versions_response(req.version))

    def _brokers(self, id_field: str) -> list[dict[str, Any]]:
        brokers = []
        for nid, addr in sorted(self._kafka_addrs().items()):
            host, _, port = addr.rpartition(":")
            brokers.append({id_field: nid, "host": host, "port": int(port)})
        return brokers

    def describe_cluster(self, req: Request) -> Awaitable[Any]:
        body = {
            "cluster_id": CLUSTER_ID,
            "controller_id": self.node.controller.core.leader or -1,
            "brokers": self._brokers("broker_id"),
            "endpoint_type": 1,  # brokers
        }
        return _value(build(response_class(60, req.version), body))

    def metadata(self, req: Request) -> Awaitable[Any]:
        b = self.node
        addrs = self._kafka_addrs()
        brokers = self._brokers("node_id")
        asked = req.body.topics
        if asked is None or (req.version == 0 and not asked):
            names: list[Any] = sorted(b.state.topics)
        else:
            by_id = {topic_id(m.name, m.first_group): m.name for m in b.state.topics.values()}
            names = [t.name if t.name is not None else by_id.get(t.topic_id, t.topic_id) for t in asked]
        if asked is None or (req.version == 0 and not asked):
            names = [n for n in names if entry_topic(n) or self._sees(req, TOPIC, n)]
        topics = []
        for name in names:
            meta = b.state.topics.get(name) if isinstance(name, str) else None
            if isinstance(name, str) and not entry_topic(name) and not self._sees(req, TOPIC, name):
                topics.append({"name": name, "error_code": KafkaError.topic_authorization_failed})
                continue
            if meta is None:
                topics.append(
                    {"name": name, "error_code": KafkaError.unknown_topic_or_partition}
                    if isinstance(name, str)
                    else {"name": None, "topic_id": name, "error_code": KafkaError.unknown_topic_id}
                )
                continue
            parts = []
            for p, replicas in enumerate(meta.replicas):
                leader = b.leader_of(meta.group(p))
                local = b.partitions.get((name, p))
                isr = local.in_sync() if local is not None and local.is_leader else list(replicas)
                parts.append(
                    {
                        "error_code": KafkaError.none if leader in addrs else KafkaError.leader_not_available,
                        "partition_index": p,
                        "leader_id": leader if leader in addrs else -1,
                        "leader_epoch": NO_EPOCH,
                        "replica_nodes": list(replicas),
                        "isr_nodes": isr,
                    }
                )
            topics.append(
                {
                    "name": name,
                    "topic_id": topic_id(name, meta.first_group),
                    "is_internal": meta.internal,
                    "partitions": parts,
                }
            )
        controller = b.controller.core.leader or -1
        body = {"brokers": brokers, "controller_id": controller, "cluster_id": CLUSTER_ID, "topics": topics}
        return _value(build(response_class(3, req.version), body))

    # -- topics ----------------------------------------------------------------------------
    # Through this node's cluster client to the controller leader, wherever it is: Kafka's
    # clients send these to the controller Metadata names, and would retry otherwise.

    def create_topics(self, req: Request) -> Awaitable[Any]:
        return self._create_topics(req)

    async def _create_topics(self, req: Request) -> Any:
        body, live = req.body, len(self.node.live_nodes())
        results = []
        for t in body.topics:
            out: dict[str, Any] = {"name": t.name, "num_partitions": -1, "replication_factor": -1}
            try:
                if t.assignments:
                    raise InvalidRequestError(
                        "replica assignments are chosen by the cluster; give partitions and replication"
                    )
                partitions = DEFAULT_PARTITIONS if t.num_partitions == -1 else int(t.num_partitions)
                replication = (
                    min(DEFAULT_REPLICATION, live) if t.replication_factor == -1 else int(t.replication_factor)
                )
                configs = {c.name: c.value for c in t.configs if c.value is not None}
                self._gate(req, CreateTopic(t.name))
                if body.validate_only:
                    validate_topic(t.name, partitions, replication, live, configs, self.node.cfg.config_minimums)
                else:
                    await self._controller(CreateTopic(t.name, partitions, replication, configs), body.timeout)
                out.update(num_partitions=partitions, replication_factor=replication)
            except TideMQError as exc:
                out.update(failed(exc))
            results.append(out)
        return build(response_class(19, req.version), {"topics": results})

    def delete_topics(self, req: Request) -> Awaitable[Any]:
        return self._delete_topics(req)

    async def _delete_topics(self, req: Request) -> Any:
        body = req.body
        names = list(body.topic_names) if hasattr(body, "topic_names") else [t.name for t in body.topics]
        results = []
        for name in names:
            out: dict[str, Any] = {"name": name}
            try:
                if name is None:
                    raise InvalidRequestError("topics are deleted by name here, not by topic id")
                self._gate(req, DeleteTopic(name))
                await self._controller(DeleteTopic(name), body.timeout)
            except TideMQError as exc:
                out.update(failed(exc))
            results.append(out)
        return build(response_class(20, req.version), {"responses": results})

    def create_partitions(self, req: Request) -> Awaitable[Any]:
        return self._create_partitions(req)

    async def _create_partitions(self, req: Request) -> Any:
        """Each topic grown to its count (placed by the cluster, as a new topic's are)."""
        results = []
        for t in req.body.topics:
            out: dict[str, Any] = {"name": t.name}
            try:
                if t.assignments:
                    raise InvalidRequestError("replica assignments are chosen by the cluster; give the count")
                native = AddPartitions(t.name, int(t.count), bool(req.body.validate_only))
                self._gate(req, native)
                await self._controller(native, req.body.timeout)
            except TideMQError as exc:
                out.update(failed(exc))
            results.append(out)
        return build(response_class(37, req.version), {"results": results})

    def delete_records(self, req: Request) -> Awaitable[Any]:
        return self._delete_records(req)

    async def _delete_records(self, req: Request) -> Any:
        """At each partition's leader (here, for the partitions a client sends here);
        the partitions are trimmed one after another, each within the request's timeout."""
        timeout_ms = int(req.body.timeout.total_seconds() * 1000) or 30_000
        topics = []
        for t in req.body.topics:
            parts = []
            for p in t.partitions:
                out: dict[str, Any] = {"partition_index": p.partition_index, "low_watermark": -1}
                try:
                    if t.name not in self.node.state.topics:
                        raise UnknownTopicError(f"topic {t.name!r} does not exist")
                    native = DeleteRecords(t.name, int(p.partition_index), int(p.offset), timeout_ms)
                    self._gate(req, native)
                    out["low_watermark"] = (await self.api.delete_records(native)).offset
                except TideMQError as exc:
                    out["error_code"] = error_of(exc)
                parts.append(out)
            topics.append({"name": t.name, "partitions": parts})
        return build(response_class(21, req.version), {"topics": topics})

    async def _controller(self, request: Any, timeout: Any) -> Any:
        """`request` answered by the controller leader within `timeout` (a timedelta; None,
        zero or less: none given, 30 s)."""
        assert self.cluster is not None, "the Kafka listener serves once its cluster client is open"
        given = timeout.total_seconds() if timeout is not None else 0.0
        seconds = given if given > 0 else 30.0
        with trio.move_on_after(seconds) as scope:
            return await self.cluster.controller_request(request)
        assert scope.cancelled_caught
        raise RequestTimeoutError(f"the controller did not answer within {seconds:.1f}s")

    # -- groups (Kafka's classic protocol: node.kafka_groups) --------------------------------

    def _coordinate(self, group: str, req: Request | None = None, native: object | None = None) -> None:
        """This node coordinates `group`, as for a native group (NOT_COORDINATOR sends
        the client to FindCoordinator again); a group it no longer coordinates, or one of
        an earlier term here, is forgotten: its members rejoin. With `req`, its sender
        must be allowed what `native` does (by default a member's heartbeat: read)."""
        if req is not None:
            self._gate(req, native if native is not None else GroupHeartbeat(group))
        try:
            part = self.node.coordinating_partition(OFFSETS_TOPIC, group, f"group {group!r}")
        except TideMQError:
            self.groups.forget(group)
            raise
        g = self.groups.groups.get(group)
        if g is not None and g.term != part.core.term:
            self.groups.forget(group)

    def consumer_group_heartbeat(self, req: Request) -> Awaitable[Any]:
        """KIP-848's protocol, on the native coordinator (node/kafka_consumer_groups.py)."""
        group = req.body.group_id
        try:
            self._coordinate(group, req, GroupHeartbeat(group, topics=list(req.body.subscribed_topic_names or ())))
        except TideMQError as exc:
            body = {"error_code": error_of(exc), "error_message": exc.message, "member_epoch": -1}
            return _value(build(response_class(68, req.version), body))
        return self.consumer_groups.heartbeat(req, self.groups.active(group))

    def consumer_group_describe(self, req: Request) -> Awaitable[Any]:
        return self.consumer_groups.describe(req)

    def find_coordinator(self, req: Request) -> Awaitable[Any]:
        body = req.body
        keys = list(body.coordinator_keys) if hasattr(body, "coordinator_keys") else [body.key]
        key_type = int(getattr(body, "key_type", 0))
        found = []
        for key in keys:
            out: dict[str, Any] = {"key": key, "node_id": -1, "host": "", "port": -1}
            try:
                if key_type not in (0, 1):
                    raise InvalidRequestError(f"coordinator key type {key_type}: only groups (0) and transactions (1)")
                self._gate(req, FindCoordinator(key) if key_type == 0 else FindTransactionCoordinator(key))
                topic, what = (
                    (OFFSETS_TOPIC, f"group {key!r}") if key_type == 0 else (TXN_TOPIC, f"transactional id {key!r}")
                )
                node = self.node.find_coordinator(topic, key, what).node_id
                addr = self._kafka_addrs().get(node)
                if addr is None:
                    raise CoordinatorNotAvailableError(
                        f"node {node} coordinates {what}; its Kafka address is not known yet"
                    )
                host, _, port = addr.rpartition(":")
                out.update(node_id=node, host=host, port=int(port))
            except TideMQError as exc:
                out.update(failed(exc))
            found.append(out)
        body_out = {"coordinators": found} if req.version >= 4 else found[0]
        return _value(build(response_class(10, req.version), body_out))

    def join_group(self, req: Request) -> Awaitable[Any]:
        return self._join_group(req)

    async def _join_group(self, req: Request) -> Any:
        b = req.body
        out: dict[str, Any] = {"member_id": b.member_id, "generation_id": -1, "leader": "", "protocol_name": ""}
        try:
            self._coordinate(b.group_id, req)
            if self.coordinator.has_members(b.group_id):
                raise GroupError(
                    INCONSISTENT_GROUP_PROTOCOL,
                    f"group {b.group_id!r} has native members; a group is one kind or the other",
                )
            term = self.node.coordinating_partition(OFFSETS_TOPIC, b.group_id, "").core.term
            result = await self.groups.join(
                b.group_id,
                b.member_id,
                getattr(b, "group_instance_id", None),
                b.protocol_type,
                [(p.name, p.metadata) for p in b.protocols],
                int(b.session_timeout.total_seconds() * 1000),
                int(getattr(b, "rebalance_timeout", b.session_timeout).total_seconds() * 1000),
                term,
                req.client_id or "",
            )
            out.update(
                generation_id=result.generation,
                protocol_type=b.protocol_type,
                protocol_name=result.protocol,
                leader=result.leader,
                member_id=result.member_id,
                members=[{"member_id": m, "group_instance_id": i, "metadata": md} for m, i, md in result.members],
            )
        except TideMQError as exc:
            out["error_code"] = error_of(exc)
        return build(response_class(11, req.version), out)

    def sync_group(self, req: Request) -> Awaitable[Any]:
        return self._sync_group(req)

    async def _sync_group(self, req: Request) -> Any:
        b = req.body
        out: dict[str, Any] = {"assignment": b""}
        try:
            self._coordinate(b.group_id, req)
            assignments = {a.member_id: a.assignment for a in b.assignments}
            out["assignment"] = await self.groups.sync(b.group_id, b.member_id, int(b.generation_id), assignments)
            g = self.groups.groups[b.group_id]
            out.update(protocol_type=g.protocol_type, protocol_name=g.protocol)
        except TideMQError as exc:
            out["error_code"] = error_of(exc)
        return build(response_class(14, req.version), out)

    def heartbeat(self, req: Request) -> Awaitable[Any]:
        b = req.body
        out: dict[str, Any] = {}
        try:
            self._coordinate(b.group_id, req)
            self.groups.heartbeat(b.group_id, b.member_id, int(b.generation_id))
        except TideMQError as exc:
            out["error_code"] = error_of(exc)
        return _value(build(response_class(12, req.version), out))

    def leave_group(self, req: Request) -> Awaitable[Any]:
        b = req.body
        leaving = (
            [(m.member_id, m.group_instance_id) for m in b.members] if hasattr(b, "members") else [(b.member_id, None)]
        )
        out: dict[str, Any] = {"members": []}
        try:
            self._coordinate(b.group_id, req)
            for member_id, instance_id in leaving:
                result: dict[str, Any] = {"member_id": member_id, "group_instance_id": instance_id}
                try:
                    self.groups.leave(b.group_id, member_id, instance_id)
                except TideMQError as exc:
                    result["error_code"] = error_of(exc)
                    if len(leaving) == 1:
                        out["error_code"] = error_of(exc)
                out["members"].append(result)
        except TideMQError as exc:
            out["error_code"] = error_of(exc)
        return _value(build(response_class(13, req.version), out))

    def list_groups(self, req: Request) -> Awaitable[Any]:
        return self._list_groups(req)

    async def _list_groups(self, req: Request) -> Any:
        """The groups this node coordinates, both kinds (a Kafka admin client asks every
        node and merges): a native group shows protocol type "tidemq"."""
        wanted = {s.lower() for s in getattr(req.body, "states_filter", ())}
        listed = []
        native = await self.coordinator.list_groups(ListGroups())
        for name in sorted(set(native.groups) | set(self.groups.groups)):
            if not self._sees(req, GROUP, name):
                continue
            kind, state = self._kind(name)
            if not wanted or state.lower() in wanted:
                listed.append({"group_id": name, "protocol_type": kind, "group_state": state})
        return build(response_class(16, req.version), {"groups": listed})

    def _kind(self, group: str) -> tuple[str, str]:
        g = self.groups.groups.get(group)
        if g is not None and g.members:
            return g.protocol_type, g.state.value
        kind = "consumer" if self.consumer_groups.kafka_members(group) else NATIVE_PROTOCOL_TYPE  # (KIP-848's)
        return kind, "Stable" if self.coordinator.has_members(group) else "Empty"

    def describe_groups(self, req: Request) -> Awaitable[Any]:
        described = []
        for name in req.body.groups:
            out: dict[str, Any] = {"group_id": name, "group_state": "Dead", "protocol_type": "", "protocol_data": ""}
            try:
                self._coordinate(name, req, DescribeGroup(name))
                g = self.groups.groups.get(name)
                if g is not None and g.members:
                    out.update(
                        group_state=g.state.value,
                        protocol_type=g.protocol_type,
                        protocol_data=g.protocol,
                        members=[
                            {
                                "member_id": m.member_id,
                                "group_instance_id": m.instance_id,
                                "client_id": m.client_id,
                                "client_host": "",
                                "member_metadata": dict(m.protocols).get(g.protocol, b""),
                                "member_assignment": m.assignment,
                            }
                            for m in g.members.values()
                        ],
                    )
                else:
                    kind, state = self._kind(name)
                    out.update(group_state=state, protocol_type=kind)
            except TideMQError as exc:
                out["error_code"] = error_of(exc)
            described.append(out)
        return _value(build(response_class(15, req.version), {"groups": described}))

    def delete_groups(self, req: Request) -> Awaitable[Any]:
        return self._delete_groups(req)

    async def _delete_groups(self, req: Request) -> Any:
        """Groups of any kind with no members, at their coordinator (here, for the
        groups a client sends here)."""
        results = []
        for group in req.body.groups_names:
            out: dict[str, Any] = {"group_id": group}
            try:
                self._coordinate(group, req, DeleteGroup(group))
                await self.coordinator.delete_group(DeleteGroup(group))
                self.groups.forget(group)
            except TideMQError as exc:
                out["error_code"] = error_of(exc)
            results.append(out)
        return build(response_class(42, req.version), {"results": results})

    def offset_delete(self, req: Request) -> Awaitable[Any]:
        return self._offset_delete(req)

    async def _offset_delete(self, req: Request) -> Any:
        """Topic by topic: one its members read keeps its offsets (GROUP_SUBSCRIBED_TO_TOPIC
        on its partitions), the others go."""
        b = req.body
        out: dict[str, Any] = {"topics": []}
        try:
            asked = [TopicPartition(t.name, int(p.partition_index)) for t in b.topics for p in t.partitions]
            self._coordinate(b.group_id, req, DeleteOffsets(b.group_id, asked))
            for t in b.topics:
                error = KafkaError.none
                try:
                    wanted = [TopicPartition(t.name, int(p.partition_index)) for p in t.partitions]
                    await self.coordinator.delete_offsets(DeleteOffsets(b.group_id, wanted))
                except GroupSubscribedError as exc:
                    error = error_of(exc)
                parts = [{"partition_index": p.partition_index, "error_code": error} for p in t.partitions]
                out["topics"].append({"name": t.name, "partitions": parts})
        except TideMQError as exc:
            out = {"error_code": error_of(exc), "topics": []}
        return build(response_class(47, req.version), out)

    def offset_commit(self, req: Request) -> Awaitable[Any]:
        return self._offset_commit(req)

    async def _offset_commit(self, req: Request) -> Any:
        b = req.body
        offsets = [(t.name, int(p.partition_index), int(p.committed_offset)) for t in b.topics for p in t.partitions]
        error: KafkaError | None = None
        try:
            self._coordinate(b.group_id, req, OffsetCommit(b.group_id, offsets))
            epoch = int(b.generation_id_or_member_epoch)
            if b.member_id and b.member_id in self.coordinator.member_ids(b.group_id):
                # A member of Kafka's consumer protocol (KIP-848): the native group checks it.
                await self.coordinator.offset_commit(OffsetCommit(b.group_id, offsets, b.member_id, epoch))
            else:
                self.groups.check_commit(b.group_id, b.member_id, epoch)
                await self.coordinator.offset_commit(OffsetCommit(b.group_id, offsets))
        except TideMQError as exc:
            error = error_of(exc)
        topics = [
            {
                "name": t.name,
                "partitions": [
                    {"partition_index": p.partition_index, "error_code": error or KafkaError.none} for p in t.partitions
                ],
            }
            for t in b.topics
        ]
        return build(response_class(8, req.version), {"topics": topics})

    def offset_fetch(self, req: Request) -> Awaitable[Any]:
        return self._offset_fetch(req)

    async def _offset_fetch(self, req: Request) -> Any:
        b = req.body
        stable = bool(getattr(b, "require_stable", False))
        if req.version >= 8:
            groups = [await self._group_offsets(req, g.group_id, g.topics, stable) for g in b.groups]
            return build(response_class(9, req.version), {"groups": groups})
        one = await self._group_offsets(req, b.group_id, b.topics, stable)
        return build(response_class(9, req.version), {"topics": one["topics"], "error_code": one["error_code"]})

    async def _group_offsets(self, req: Request, group: str, topics: Any, stable: bool) -> dict[str, Any]:
        wanted = (
            None if topics is None else [TopicPartition(t.name, int(p)) for t in topics for p in t.partition_indexes]
        )
        try:
            self._coordinate(group, req, OffsetFetch(group))
            resp = await self.coordinator.offset_fetch(OffsetFetch(group, wanted, require_stable=stable))
        except TideMQError as exc:
            return {"group_id": group, "topics": [], "error_code": error_of(exc)}
        have = {(t, p): o for t, p, o in resp.offsets if self._sees(req, TOPIC, t)}
        keys = [(tp.topic, tp.partition) for tp in wanted] if wanted is not None else sorted(have)
        by_topic: dict[str, list[dict[str, Any]]] = {}
        for t, p in keys:
            by_topic.setdefault(t, []).append(
                {
                    "partition_index": p,
                    "committed_offset": have.get((t, p), -1),
                    "committed_leader_epoch": NO_EPOCH,
                    "metadata": "",
                }
            )
        return {
            "group_id": group,
            "topics": [{"name": t, "partitions": ps} for t, ps in by_topic.items()],
            "error_code": KafkaError.none,
        }

    # -- producing --------------------------------------------------------------------------

    def produce(self, req: Request) -> Awaitable[Any]:
        body = req.body
        acks = int(body.acks)
        timeout_ms = int(body.timeout.total_seconds() * 1000)
        txn = getattr(body, "transactional_id", None)
        count = sum(len(t.partition_data) for t in body.topic_data)
        if count > MAX_PARTITIONS:
            raise InvalidRequestError(f"a produce names at most {MAX_PARTITIONS} partitions, not {count}")
        pending: list[tuple[str, int, Awaitable[Any] | dict[str, Any]]] = []
        for t in body.topic_data:
            for pd in t.partition_data:
                try:
                    if pd.records is None:
                        raise InvalidRequestError("a produce without records")
                    native = Produce(t.name, int(pd.index), pd.records, acks, timeout_ms, transactional_id=txn)
                    self._gate(req, native)
                    self._charge(req, PRODUCE_RATE, len(pd.records))
                    waiter = self.api.produce(native, delay_headers=True)  # (node/delay_intake.py)
                    pending.append((t.name, int(pd.index), waiter))
                except TideMQError as exc:
                    pending.append((t.name, int(pd.index), failed(exc)))
        if acks == 0:
            return self._unanswered(pending)
        return self._produced(req, pending)

    @staticmethod
    async def _unanswered(pending: list[tuple[str, int, Any]]) -> None:
        """acks=0: Kafka sends nothing back, whatever happened."""
        for _, _, waiter in pending:
            if not isinstance(waiter, dict):
                try:
                    await waiter
                except TideMQError:
                    pass

    async def _produced(self, req: Request, pending: list[tuple[str, int, Any]]) -> Any:
        by_topic: dict[str, list[dict[str, Any]]] = {}
        for topic, p, waiter in pending:
            out: dict[str, Any] = {"index": p, "base_offset": -1, "log_append_time": -1, "log_start_offset": -1}
            if isinstance(waiter, dict):
                out.update(waiter)
            else:
                try:
                    resp = await waiter
                    out.update(base_offset=resp.base_offset, log_start_offset=resp.log_start_offset)
                except TideMQError as exc:
                    out.update(failed(exc))
            by_topic.setdefault(topic, []).append(out)
        responses = [{"name": t, "partition_responses": ps} for t, ps in by_topic.items()]
        return build(response_class(0, req.version), {"responses": responses, "throttle_time": self._throttle(req)})

    def init_producer_id(self, req: Request) -> Awaitable[Any]:
        return self._init_producer_id(req)

    async def _init_producer_id(self, req: Request) -> Any:
        tid = req.body.transactional_id
        try:
            self._gate(req, InitProducerId(tid))
            if tid is not None:
                timeout_ms = int(req.body.transaction_timeout.total_seconds() * 1000)
                resp = await self.api.init_producer_id(InitProducerId(tid, timeout_ms))
            else:
                assert self.cluster is not None, "the Kafka listener serves once its cluster client is open"
                resp = await self.cluster.controller_request(InitProducerId())
            body: dict[str, Any] = {"producer_id": resp.producer_id, "producer_epoch": resp.producer_epoch}
        except TideMQError as exc:
            body = {"error_code": error_of(exc), "producer_id": -1, "producer_epoch": -1}
        return build(response_class(22, req.version), body)

    # -- transactions (on the native transaction coordinator: node/transactions.py) ------------

    def add_partitions_to_txn(self, req: Request) -> Awaitable[Any]:
        return self._add_partitions_to_txn(req)

    async def _add_partitions_to_txn(self, req: Request) -> Any:
        """All or nothing, as in Kafka: a partition that does not exist gets
        UNKNOWN_TOPIC_OR_PARTITION and the others OPERATION_NOT_ATTEMPTED."""
        b = req.body
        tid = b.v3_and_below_transactional_id
        wanted = [(t.name, int(p)) for t in b.v3_and_below_topics for p in t.partitions]
        errors = {tp: KafkaError.none for tp in wanted}
        missing = [(t, p) for t, p in wanted if not self._exists(t, p)]
        try:
            if missing:
                for tp in wanted:
                    errors[tp] = KafkaError.operation_not_attempted
                for tp in missing:
                    errors[tp] = KafkaError.unknown_topic_or_partition
            else:
                native = AddPartitionsToTxn(
                    tid,
                    int(b.v3_and_below_producer_id),
                    int(b.v3_and_below_producer_epoch),
                    [TopicPartition(t, p) for t, p in wanted],
                )
                await self.api.dispatch(native, req.caller)
        except TideMQError as exc:
            errors = dict.fromkeys(wanted, error_of(exc))
        by_topic: dict[str, list[dict[str, Any]]] = {}
        for (t, p), code in errors.items():
            by_topic.setdefault(t, []).append({"partition_index": p, "partition_error_code": code})
        results = [{"name": t, "results_by_partition": ps} for t, ps in by_topic.items()]
        return build(response_class(24, req.version), {"results_by_topic_v3_and_below": results})

    def _exists(self, topic: str, partition: int) -> bool:
        meta = self.node.state.topics.get(topic)
        return meta is not None and 0 <= partition < len(meta.replicas)

    def add_offsets_to_txn(self, req: Request) -> Awaitable[Any]:
        """The group's offsets join the transaction: an empty TxnOffsetCommit does that
        natively (the offsets themselves come next, through the group's coordinator)."""
        b = req.body
        native = TxnOffsetCommit(b.transactional_id, int(b.producer_id), int(b.producer_epoch), b.group_id)
        return self._txn_answer(25, req.version, self._dispatch_as(req, native))

    def end_txn(self, req: Request) -> Awaitable[Any]:
        b = req.body
        native = EndTxn(b.transactional_id, int(b.producer_id), int(b.producer_epoch), bool(b.committed))
        return self._txn_answer(26, req.version, self._dispatch_as(req, native))

    async def _dispatch_as(self, req: Request, native: object) -> Any:
        """`native` served for the sender of `req` (a refusal raised when awaited)."""
        return await self.api.dispatch(native, req.caller)

    async def _txn_answer(self, api_key: int, version: int, waiter: Awaitable[Any]) -> Any:
        out: dict[str, Any] = {}
        try:
            await waiter
        except TideMQError as exc:
            out["error_code"] = error_of(exc)
        return build(response_class(api_key, version), out)

    def txn_offset_commit(self, req: Request) -> Awaitable[Any]:
        return self._txn_offset_commit(req)

    async def _txn_offset_commit(self, req: Request) -> Any:
        """Sent to the group's coordinator (here), which checks the member's generation
        (v3 and up, KIP-447) and hands the offsets to the transaction's coordinator, which
        holds them with the transaction and commits them when it commits."""
        b = req.body
        offsets = [(t.name, int(p.partition_index), int(p.committed_offset)) for t in b.topics for p in t.partitions]
        error = KafkaError.none
        try:
            native = TxnOffsetCommit(b.transactional_id, int(b.producer_id), int(b.producer_epoch), b.group_id, offsets)
            self._coordinate(b.group_id, req, native)
            if getattr(b, "member_id", ""):
                self.groups.check_commit(b.group_id, b.member_id, int(b.generation_id))
            assert self.cluster is not None, "the Kafka listener serves once its cluster client is open"
            await self.cluster.transaction_coordinator_request(b.transactional_id, native)
        except TideMQError as exc:
            error = error_of(exc)
        topics = [
            {
                "name": t.name,
                "partitions": [{"partition_index": p.partition_index, "error_code": error} for p in t.partitions],
            }
            for t in b.topics
        ]
        return build(response_class(28, req.version), {"topics": topics})

    # -- consuming --------------------------------------------------------------------------

    def fetch(self, req: Request) -> Awaitable[Any]:
        return self._fetch(req)

    async def _fetch(self, req: Request) -> Any:
        """A full fetch, or one of an incremental fetch session (node/kafka_fetch_sessions.py)."""
        body = req.body
        asked = [
            (t.topic, int(p.partition), int(p.fetch_offset), int(p.partition_max_bytes))
            for t in body.topics
            for p in t.partitions
        ]
        forgotten = [(t.topic, int(p)) for t in getattr(body, "forgotten_topics_data", ()) for p in t.partitions]
        try:
            session, wanted, named = self.fetch_sessions.resolve(
                int(getattr(body, "session_id", 0)), int(getattr(body, "session_epoch", -1)), asked, forgotten
            )
        except FetchSessionError as exc:
            return build(response_class(1, req.version), {"error_code": error_of(exc), "responses": []})
        isolation = READ_COMMITTED if int(body.isolation_level) == 1 else READ_UNCOMMITTED
        by_topic: dict[str, list[dict[str, Any]]] = {}
        session_id = session.id if session is not None else 0
        if not wanted:
            return build(response_class(1, req.version), {"session_id": session_id, "responses": []})
        if len(wanted) > MAX_PARTITIONS:
            raise InvalidRequestError(f"a fetch names at most {MAX_PARTITIONS} partitions, not {len(wanted)}")
        native = Fetch(
            [FetchPartition(t, p, off, max(1, mb)) for t, p, off, mb in wanted],
            max_wait_ms=int(body.max_wait.total_seconds() * 1000),
            min_bytes=int(body.min_bytes),
            max_bytes=int(getattr(body, "max_bytes", 0x7FFFFFFF)),
            isolation=isolation,
        )
        try:
            may_read = self.api.access.may_read(req.caller) if self._bound(req) else None
            results = (await self.api.fetch(native, may_read=may_read)).results  # type: ignore[union-attr]
        except TideMQError as exc:
            for t, p, _, _ in wanted:
                by_topic.setdefault(t, []).append({"partition_index": p, "error_code": kafka_error(exc.code)})
            results = []
        for r in results:
            hw, lso, start = (-1, -1, -1) if r.error else (r.high_watermark, r.last_stable_offset, r.log_start_offset)
            records = bytes(r.records)
            if not self.fetch_sessions.changed(
                session, (r.topic, r.partition), named, bool(records), bool(r.error), hw, lso, start
            ):
                continue
            by_topic.setdefault(r.topic, []).append(
                {
                    "partition_index": r.partition,
                    "error_code": kafka_error(r.error),
                    "high_watermark": hw,
                    "last_stable_offset": lso,
                    "log_start_offset": start,
                    "aborted_transactions": (
                        [{"producer_id": a.producer_id, "first_offset": a.first_offset} for a in r.aborted]
                        if isolation == READ_COMMITTED
                        else None
                    ),
                    "preferred_read_replica": -1,
                    "records": records,
                }
            )
        self._charge(req, FETCH_RATE, sum(len(r.records) for r in results))
        responses = [{"topic": t, "partitions": ps} for t, ps in by_topic.items()]
        out = {"session_id": session_id, "responses": responses, "throttle_time": self._throttle(req)}
        return build(response_class(1, req.version), out)

    def list_offsets(self, req: Request) -> Awaitable[Any]:
        return self._list_offsets(req)

    async def _list_offsets(self, req: Request) -> Any:
        isolation = READ_COMMITTED if int(getattr(req.body, "isolation_level", 0)) == 1 else READ_UNCOMMITTED
        topics = []
        for t in req.body.topics:
            parts = []
            for p in t.partitions:
                out: dict[str, Any] = {"partition_index": p.partition_index, "leader_epoch": NO_EPOCH}
                try:
                    if t.name not in self.node.state.topics:
                        raise UnknownTopicError(f"topic {t.name!r} does not exist")
                    native = ListOffsets(t.name, int(p.partition_index), int(p.timestamp), isolation)
                    self._gate(req, native)
                    resp = await self.api.list_offsets(native)
                    out.update(offset=resp.offset, timestamp=resp.timestamp)
                except TideMQError as exc:
                    out.update(error_code=error_of(exc), offset=-1, timestamp=-1)
                parts.append(out)
            topics.append({"name": t.name, "partitions": parts})
        return build(response_class(2, req.version), {"topics": topics})
