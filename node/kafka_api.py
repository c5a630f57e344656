"""What each Kafka request does: the same partitions and handlers as the native
protocol (`node.api.Api`), one cluster with two front doors (docs/kafka.md).

A handler is called in arrival order and returns an awaitable of the response body, or
None where Kafka sends no response (a produce with acks=0). Like `Api.produce`, a produce
proposes every partition's batch before it returns, so an idempotent Kafka producer's
pipelined requests reach each log in the order it sent them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from client.errors import InvalidRequestError, RequestTimeoutError, TideMQError, UnknownTopicError
from client.protocol import (
    READ_COMMITTED,
    READ_UNCOMMITTED,
    CreateTopic,
    DeleteTopic,
    Fetch,
    FetchPartition,
    InitProducerId,
    ListOffsets,
    Produce,
)
from node.kafka_wire import (
    API_VERSIONS,
    KafkaError,
    Request,
    api_versions_response,
    build,
    kafka_error,
    response_class,
)
from node.metadata import validate_topic

if TYPE_CHECKING:
    from client.cluster import ClusterClient
    from node.api import Api
    from node.context import Node

#: A Kafka client with no leader epoch to send says -1; we give none either (the Raft
#: term would do, but a client that has it fences its fetches by it: not yet served).
NO_EPOCH = -1
MAX_PARTITIONS = 1000  # per produce or fetch, as the native fetch
DEFAULT_PARTITIONS = 1  # a CreateTopics that leaves them to the broker (Kafka's num.partitions)
DEFAULT_REPLICATION = 3  # (at most the live nodes)

Handler = Callable[[Request], Awaitable[Any] | None]


def _failed(exc: TideMQError) -> dict[str, Any]:
    return {"error_code": kafka_error(exc.code), "error_message": exc.message}


async def _value(value: Any) -> Any:
    return value


class KafkaApi:
    def __init__(self, node: Node, api: Api, kafka_addrs: Callable[[], dict[int, str]]) -> None:
        """`kafka_addrs`: every node's Kafka address that this node knows (its own and
        what its peers gossiped)."""
        self.node = node
        self.api = api
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
            19: self.create_topics,
            20: self.delete_topics,
            22: self.init_producer_id,
        }

    def dispatch(self, req: Request) -> Awaitable[Any] | None:
        return self.handlers[req.api_key](req)

    # -- discovery --------------------------------------------------------------------------

    def api_versions(self, req: Request) -> Awaitable[Any]:
        return _value(api_versions_response(req.version))

    def metadata(self, req: Request) -> Awaitable[Any]:
        b = self.node
        addrs = self._kafka_addrs()
        brokers = []
        for nid, addr in sorted(addrs.items()):
            host, _, port = addr.rpartition(":")
            brokers.append({"node_id": nid, "host": host, "port": int(port)})
        asked = req.body.topics
        if asked is None or (req.version == 0 and not asked):
            names = sorted(b.state.topics)
        else:
            names = [t.name for t in asked]
        topics = []
        for name in names:
            meta = b.state.topics.get(name)
            if meta is None:
                topics.append({"name": name, "error_code": KafkaError.unknown_topic_or_partition})
                continue
            parts = []
            for p, replicas in enumerate(meta.replicas):
                leader = b.leader_of(meta.group(p))
                local = b.partitions.get((name, p))
                isr = list(replicas)
                if local is not None and local.is_leader:
                    st = local.core.status()
                    isr = sorted(pid for pid, pr in st.progress.items() if pr.recent_active and pr.lag == 0)
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
            topics.append({"name": name, "is_internal": meta.internal, "partitions": parts})
        controller = b.controller.core.leader or -1
        body = {"brokers": brokers, "controller_id": controller, "cluster_id": "tidemq", "topics": topics}
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
                if body.validate_only:
                    validate_topic(t.name, partitions, replication, live, configs, self.node.cfg.config_minimums)
                else:
                    await self._controller(CreateTopic(t.name, partitions, replication, configs), body.timeout)
                out.update(num_partitions=partitions, replication_factor=replication)
            except TideMQError as exc:
                out.update(_failed(exc))
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
                await self._controller(DeleteTopic(name), body.timeout)
            except TideMQError as exc:
                out.update(_failed(exc))
            results.append(out)
        return build(response_class(20, req.version), {"responses": results})

    async def _controller(self, request: Any, timeout: Any) -> Any:
        assert self.cluster is not None, "the Kafka listener serves once its cluster client is open"
        seconds = max(0.001, timeout.total_seconds()) if timeout.total_seconds() > 0 else 30.0
        with trio.move_on_after(seconds) as scope:
            return await self.cluster.controller_request(request)
        assert scope.cancelled_caught
        raise RequestTimeoutError(f"the controller did not answer within {seconds:.1f}s")

    # -- producing --------------------------------------------------------------------------

    def produce(self, req: Request) -> Awaitable[Any] | None:
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
                    waiter = self.api.produce(
                        Produce(t.name, int(pd.index), pd.records, acks, timeout_ms, transactional_id=txn)
                    )
                    pending.append((t.name, int(pd.index), waiter))
                except TideMQError as exc:
                    pending.append((t.name, int(pd.index), _failed(exc)))
        if acks == 0:
            return None
        return self._produced(req.version, pending)

    async def _produced(self, version: int, pending: list[tuple[str, int, Any]]) -> Any:
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
                    out.update(_failed(exc))
            by_topic.setdefault(topic, []).append(out)
        responses = [{"name": t, "partition_responses": ps} for t, ps in by_topic.items()]
        return build(response_class(0, version), {"responses": responses})

    def init_producer_id(self, req: Request) -> Awaitable[Any]:
        return self._init_producer_id(req)

    async def _init_producer_id(self, req: Request) -> Any:
        tid = req.body.transactional_id
        try:
            if tid is not None:
                timeout_ms = int(req.body.transaction_timeout.total_seconds() * 1000)
                resp = await self.api.init_producer_id(InitProducerId(tid, timeout_ms))
            else:
                assert self.cluster is not None, "the Kafka listener serves once its cluster client is open"
                resp = await self.cluster.controller_request(InitProducerId())
            body: dict[str, Any] = {"producer_id": resp.producer_id, "producer_epoch": resp.producer_epoch}
        except TideMQError as exc:
            body = {"error_code": kafka_error(exc.code), "producer_id": -1, "producer_epoch": -1}
        return build(response_class(22, req.version), body)

    # -- consuming --------------------------------------------------------------------------

    def fetch(self, req: Request) -> Awaitable[Any]:
        return self._fetch(req)

    async def _fetch(self, req: Request) -> Any:
        body = req.body
        wanted = [
            (t.topic, int(p.partition), int(p.fetch_offset), int(p.partition_max_bytes))
            for t in body.topics
            for p in t.partitions
        ]
        isolation = READ_COMMITTED if int(body.isolation_level) == 1 else READ_UNCOMMITTED
        by_topic: dict[str, list[dict[str, Any]]] = {}
        if not wanted:
            return build(response_class(1, req.version), {"responses": []})
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
            results = (await self.api.fetch(native)).results  # type: ignore[union-attr]  # (no zero copy asked)
        except TideMQError as exc:
            for t, p, _, _ in wanted:
                by_topic.setdefault(t, []).append({"partition_index": p, "error_code": kafka_error(exc.code)})
            results = []
        for r in results:
            by_topic.setdefault(r.topic, []).append(
                {
                    "partition_index": r.partition,
                    "error_code": kafka_error(r.error),
                    "high_watermark": r.high_watermark if not r.error else -1,
                    "last_stable_offset": r.last_stable_offset if not r.error else -1,
                    "log_start_offset": r.log_start_offset if not r.error else -1,
                    "aborted_transactions": (
                        [{"producer_id": a.producer_id, "first_offset": a.first_offset} for a in r.aborted]
                        if isolation == READ_COMMITTED
                        else None
                    ),
                    "preferred_read_replica": -1,
                    "records": bytes(r.records),
                }
            )
        responses = [{"topic": t, "partitions": ps} for t, ps in by_topic.items()]
        return build(response_class(1, req.version), {"session_id": 0, "responses": responses})

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
                    resp = await self.api.list_offsets(
                        ListOffsets(t.name, int(p.partition_index), int(p.timestamp), isolation)
                    )
                    out.update(offset=resp.offset, timestamp=resp.timestamp)
                except TideMQError as exc:
                    out.update(error_code=kafka_error(exc.code), offset=-1, timestamp=-1)
                parts.append(out)
            topics.append({"name": t.name, "partitions": parts})
        return build(response_class(2, req.version), {"topics": topics})
