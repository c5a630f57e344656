"""Kafka's admin requests that have no client-facing role: configs (DescribeConfigs,
AlterConfigs, IncrementalAlterConfigs, on the native topic configs of
`node.metadata.TOPIC_CONFIGS`), and what producers and transactions are doing
(DescribeProducers, ListTransactions, DescribeTransactions, on the partitions' producer
state and the native transaction coordinator).

What a topic shows: the configs a client may set, with the value its partitions run
with (set on the topic, or the node's default), and read-only facts of how TideMQ stores
a topic, named as Kafka names them so Kafka's tools and UIs show something true
(cleanup.policy delete, min.insync.replicas a majority of the replicas, ...). A node
shows its own settings under its broker id. Altering a config goes to the controller as
the native `AlterTopicConfigs` does and applies live on every replica.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from client.errors import InvalidConfigError, InvalidRequestError, NotLeaderError, TideMQError, UnknownTopicError
from client.protocol import (
    AlterTopicConfigs,
    DescribeTransaction,
    ListOffsets,
    ListTransactions,
    ListTransactionsResponse,
    TxnInfo,
)
from node.context import now_ms
from node.kafka_wire import KafkaError, Request, build, error_of, failed, response_class
from node.metadata import TOPIC_CONFIGS

if TYPE_CHECKING:
    from node.context import Node
    from node.metadata import TopicMeta

TOPIC, BROKER = 2, 4  # Kafka's resource types
# Kafka's config sources and types (DescribeConfigs v1 and v3).
TOPIC_CONFIG, STATIC_BROKER_CONFIG, DEFAULT_CONFIG = 1, 4, 5
STRING, INT, LONG = 2, 3, 5
SET, DELETE = 0, 1  # IncrementalAlterConfigs operations (APPEND and SUBTRACT are for lists)
#: Our transaction states (`TxnInfo.state`) as Kafka spells them.
TXN_STATES = {
    "empty": "Empty",
    "ongoing": "Ongoing",
    "prepare_commit": "PrepareCommit",
    "prepare_abort": "PrepareAbort",
    "complete_commit": "CompleteCommit",
    "complete_abort": "CompleteAbort",
}
#: TideMQ's own per-topic configs (the delay tiers'), shown read-only on internal topics.
_INTERNAL = {"delay.ms", "delay.lanes"}


class Config:
    """One config as DescribeConfigs shows it."""

    __slots__ = ("name", "value", "read_only", "source", "kind", "doc")

    def __init__(self, name: str, value: Any, read_only: bool, source: int, kind: int, doc: str) -> None:
        self.name, self.read_only, self.source, self.kind, self.doc = name, read_only, source, kind, doc
        self.value = None if value is None else str(value)

    def answer(self, include_documentation: bool) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "read_only": self.read_only,
            "config_source": self.source,
            "is_sensitive": False,
            "synonyms": [],
            "config_type": self.kind,
            "documentation": self.doc if include_documentation else None,
        }


class KafkaAdmin:
    def __init__(
        self,
        node: Node,
        controller: Callable[[Any, Any], Awaitable[Any]],
        local: Callable[[Any], Awaitable[Any]],
        gate: Callable[[Request, object], None],
    ) -> None:
        """`controller(request, timeout)`: a native request answered by the controller
        leader; `local(request)`: one answered by this node's own handlers; `gate(req,
        native)`: raises unless the sender of `req` may do what `native` does (ACLs)."""
        self.node = node
        self._controller = controller
        self._local = local
        self._gate = gate

    @property
    def handlers(self) -> dict[int, Callable[[Request], Awaitable[Any]]]:
        return {
            32: self.describe_configs,
            33: self.alter_configs,
            44: self.incremental_alter_configs,
            61: self.describe_producers,
            65: self.describe_transactions,
            66: self.list_transactions,
        }

    # -- describing -----------------------------------------------------------------------

    async def describe_configs(self, req: Request) -> Any:
        docs = bool(getattr(req.body, "include_documentation", False))
        results = []
        for r in req.body.resources:
            out: dict[str, Any] = {"resource_type": r.resource_type, "resource_name": r.resource_name, "configs": []}
            try:
                wanted = None if r.configuration_keys is None else set(r.configuration_keys)
                if int(r.resource_type) == TOPIC:
                    self._gate(req, ListOffsets(r.resource_name, 0))  # (describe on the topic)
                configs = self._resource_configs(int(r.resource_type), r.resource_name)
                out["configs"] = [c.answer(docs) for c in configs if wanted is None or c.name in wanted]
            except TideMQError as exc:
                out.update(failed(exc))
            results.append(out)
        return build(response_class(32, req.version), {"results": results})

    def _resource_configs(self, kind: int, name: str) -> list[Config]:
        if kind == TOPIC:
            meta = self.node.state.topics.get(name)
            if meta is None:
                raise UnknownTopicError(f"topic {name!r} does not exist")
            return self.topic_configs(meta)
        if kind == BROKER:
            if name not in ("", str(self.node.id)):
                raise InvalidRequestError(f"node {self.node.id} describes its own configs; ask node {name}")
            return self.broker_configs()
        raise InvalidRequestError(
            f"resource type {kind}: only topics ({TOPIC}) and brokers ({BROKER}) have configs here"
        )

    def topic_configs(self, meta: TopicMeta) -> list[Config]:
        log = self.node.log_config(meta.configs)
        runs_with = {
            "retention.ms": log.retention_ms if log.retention_ms is not None else -1,
            "retention.bytes": log.retention_bytes if log.retention_bytes is not None else -1,
            "segment.bytes": log.segment_bytes,
            "segment.ms": log.segment_ms if log.segment_ms is not None else -1,
        }
        out = []
        for key, (meaning, _, _) in sorted(TOPIC_CONFIGS.items()):
            source = TOPIC_CONFIG if key in meta.configs else DEFAULT_CONFIG
            kind = INT if key == "segment.bytes" else LONG
            out.append(Config(key, runs_with[key], meta.internal, source, kind, meaning))
        majority = len(meta.replicas[0]) // 2 + 1 if meta.replicas else 1
        facts = [
            ("cleanup.policy", "delete", STRING, "logs are trimmed by time and size, never compacted"),
            ("compression.type", "producer", STRING, "batches are stored as the producer compressed them"),
            ("message.timestamp.type", "CreateTime", STRING, "records keep the producer's timestamps"),
            ("max.message.bytes", log.max_batch_bytes, INT, "the largest batch a partition takes"),
            ("min.insync.replicas", majority, INT, "a write commits on a majority of the replicas (Raft)"),
        ]
        out += [Config(name, value, True, DEFAULT_CONFIG, kind, doc) for name, value, kind, doc in facts]
        out += [
            Config(k, v, True, TOPIC_CONFIG, STRING, "TideMQ's own")
            for k, v in sorted(meta.configs.items())
            if k in _INTERNAL
        ]
        return out

    def broker_configs(self) -> list[Config]:
        cfg, log = self.node.cfg, self.node.log_config()
        settings = [
            ("broker.id", self.node.id, INT, "this node's id"),
            ("log.segment.bytes", log.segment_bytes, INT, "segment.bytes of a topic that sets none"),
            ("log.retention.ms", log.retention_ms, LONG, "retention.ms of a topic that sets none"),
            ("message.max.bytes", log.max_batch_bytes, INT, "the largest batch a partition takes"),
            ("log.flush.policy", cfg.fsync, STRING, "TideMQ's fsync setting: always, interval or never"),
        ]
        return [Config(name, value, True, STATIC_BROKER_CONFIG, kind, doc) for name, value, kind, doc in settings]

    # -- altering -------------------------------------------------------------------------

    async def alter_configs(self, req: Request) -> Any:
        """The legacy request: the configs given replace the topic's whole set."""

        def change(r: Any, meta: TopicMeta) -> AlterTopicConfigs:
            given = {c.name: c.value for c in r.configs}
            if any(v is None for v in given.values()):
                raise InvalidConfigError("AlterConfigs sets values; a null value is not one")
            gone = [k for k in meta.configs if k not in given and k not in _INTERNAL]
            return AlterTopicConfigs(meta.name, given, gone)

        return await self._alter(req, 33, change)

    async def incremental_alter_configs(self, req: Request) -> Any:
        def change(r: Any, meta: TopicMeta) -> AlterTopicConfigs:
            sets, deletes = {}, []
            for c in r.configs:
                op = int(c.config_operation)
                if op == SET and c.value is not None:
                    sets[c.name] = c.value
                elif op == DELETE:
                    deletes.append(c.name)
                else:
                    raise InvalidConfigError(
                        f"{c.name}: operation {op} is not served (SET 0 with a value, DELETE 1; no config is a list)"
                    )
            return AlterTopicConfigs(meta.name, sets, deletes)

        return await self._alter(req, 44, change)

    async def _alter(self, req: Request, api_key: int, change: Callable[[Any, TopicMeta], AlterTopicConfigs]) -> Any:
        responses = []
        for r in req.body.resources:
            out: dict[str, Any] = {"resource_type": r.resource_type, "resource_name": r.resource_name}
            try:
                if int(r.resource_type) != TOPIC:
                    raise InvalidRequestError("only topic configs can be altered; a node's are its command line's")
                meta = self.node.state.topics.get(r.resource_name)
                if meta is None:
                    raise UnknownTopicError(f"topic {r.resource_name!r} does not exist")
                native = change(r, meta)
                native.validate_only = bool(req.body.validate_only)
                self._gate(req, native)
                await self._controller(native, None)
            except TideMQError as exc:
                out.update(failed(exc))
            responses.append(out)
        return build(response_class(api_key, req.version), {"responses": responses})

    # -- producers and transactions -------------------------------------------------------

    async def describe_producers(self, req: Request) -> Any:
        """The producers a partition's committed state holds, from its leader."""
        topics = []
        for t in req.body.topics:
            parts = []
            for p in t.partition_indexes:
                out: dict[str, Any] = {"partition_index": p, "active_producers": []}
                try:
                    self._gate(req, ListOffsets(t.name, int(p)))
                    part = self.node.local_partition(t.name, int(p))
                    if not part.is_leader:
                        raise NotLeaderError(f"node {self.node.id} does not lead {t.name}-{p}")
                    txns = part.txns
                    out["active_producers"] = [
                        {
                            "producer_id": pid,
                            "producer_epoch": epoch,
                            "last_sequence": seq,
                            "last_timestamp": ts,
                            "coordinator_epoch": txns.coordinator_epochs.get(pid, -1),
                            "current_txn_start_offset": txns.open.get(pid, -1),
                        }
                        for pid, epoch, seq, ts in part.producers.active()
                    ]
                except TideMQError as exc:
                    out.update(failed(exc))
                parts.append(out)
            topics.append({"name": t.name, "partitions": parts})
        return build(response_class(61, req.version), {"topics": topics})

    async def list_transactions(self, req: Request) -> Any:
        """The transactional ids this node coordinates (admin clients ask every node)."""
        b = req.body
        wanted_states = set(b.state_filters)
        wanted_pids = set(b.producer_id_filters)
        older_than = int(getattr(b, "duration_filter", -1))
        listed: ListTransactionsResponse = await self._local(ListTransactions())
        now = now_ms()
        states = []
        for t in listed.transactions:
            try:
                self._gate(req, DescribeTransaction(t.transactional_id))
            except TideMQError:
                continue  # not the sender's to see
            state = TXN_STATES.get(t.state, t.state)
            if wanted_states and state not in wanted_states:
                continue
            if wanted_pids and t.producer_id not in wanted_pids:
                continue
            if older_than >= 0 and not (t.started_ms and now - t.started_ms > older_than):
                continue
            states.append(
                {"transactional_id": t.transactional_id, "producer_id": t.producer_id, "transaction_state": state}
            )
        unknown = sorted(wanted_states - set(TXN_STATES.values()))
        return build(response_class(66, req.version), {"unknown_state_filters": unknown, "transaction_states": states})

    async def describe_transactions(self, req: Request) -> Any:
        """Each id as its coordinator (this node, for the ids a client sends here) knows it."""
        described = []
        for tid in req.body.transactional_ids:
            out: dict[str, Any] = {"transactional_id": tid, "transaction_start_time": -1, "producer_id": -1}
            try:
                self._gate(req, DescribeTransaction(tid))
                info: TxnInfo = await self._local(DescribeTransaction(tid))
                by_topic: dict[str, list[int]] = {}
                for tp in info.partitions:
                    by_topic.setdefault(tp.topic, []).append(tp.partition)
                out.update(
                    transaction_state=TXN_STATES.get(info.state, info.state),
                    transaction_timeout=info.timeout_ms,
                    transaction_start_time=info.started_ms or -1,
                    producer_id=info.producer_id,
                    producer_epoch=info.producer_epoch,
                    topics=[{"topic": t, "partitions": ps} for t, ps in by_topic.items()],
                )
            except InvalidRequestError:  # the coordinator's answer to an id no producer has used
                out["error_code"] = KafkaError.transactional_id_not_found
            except TideMQError as exc:
                out["error_code"] = error_of(exc)
            described.append(out)
        return build(response_class(65, req.version), {"transaction_states": described})
