"""Request handlers: what each client request does on this node.

`dispatch` runs synchronously in the order requests arrived on a connection (see
`node.server`): produce proposes before returning its awaitable, so an idempotent
producer's pipelined batches reach the log in the order it sent them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from client.acls import check_binding, selects
from client.conventions import HALF_TOPIC, RUNS_TOPIC, TIER_PREFIX
from client.errors import (
    InvalidConfigError,
    InvalidRequestError,
    NotEnoughReplicasError,
    OffsetOutOfRangeError,
    ShuttingDownError,
    TideMQError,
    UnknownTopicError,
)
from client.protocol import (
    EARLIEST,
    LATEST,
    READ_COMMITTED,
    AclsResponse,
    AddPartitions,
    AlterQuotas,
    AlterTopicConfigs,
    CreateAcls,
    CreateTopic,
    DeleteAcls,
    DeleteRecords,
    DeleteTopic,
    DeleteUser,
    DescribeAcls,
    DescribeQuotas,
    Fetch,
    FetchResponse,
    FetchResult,
    InitProducerId,
    ListOffsets,
    ListOffsetsResponse,
    ListUsers,
    ListUsersResponse,
    Metadata,
    MetadataResponse,
    Ok,
    PartitionInfo,
    Produce,
    ProduceResponse,
    ProducerIdResponse,
    PutUser,
    QuotasResponse,
    TopicInfo,
)
from client.quotas import FETCH_RATE, PRODUCE_RATE, REQUEST_RATE, check_quotas
from client.scram import MAX_ITERATIONS, MIN_ITERATIONS, UserCredential
from node.access import Access
from node.acl import Caller
from node.context import check_name
from node.metadata import (
    MAX_PARTITIONS,
    TOPIC_CONFIGS,
    AddAclsCmd,
    AddPartitionsCmd,
    AlterTopicConfigsCmd,
    CreateTopicCmd,
    DeleteTopicCmd,
    DeleteUserCmd,
    PutUserCmd,
    RemoveAclsCmd,
    SetQuotasCmd,
    TopicMeta,
    validate_configs,
    validate_topic,
)
from node.moves import behind_of
from node.peerprotocol import WriteTxnMarker
from node.placement import assign_replicas, placeable
from node.roster import node_infos
from node.sendfile import SENDFILE_MIN_BYTES, Region, Spliced

if TYPE_CHECKING:
    from node.context import Node
    from node.runtime import Handlers

MAX_WAIT_MS = 30_000
MAX_FETCH_BYTES = 16 * 1024 * 1024  # one fetch answer at most (a single larger batch still goes whole)
MAX_FETCH_PARTITIONS = 1000
WRITABLE = (HALF_TOPIC, RUNS_TOPIC)  # internal topics clients write to (and the delay tiers)
MAX_ACLS = 100_000  # in the cluster (each one is in every node's memory and snapshot)
MAX_ACLS_PER_REQUEST = 1000


class Api:
    def __init__(
        self,
        node: Node,
        services: Handlers,
        init_transactional_producer: Callable[[InitProducerId], Awaitable[ProducerIdResponse]],
    ) -> None:
        """`services`: the coordinators' handlers; `init_transactional_producer`: the
        transaction coordinator's answer to an InitProducerId with a transactional id."""
        self.node = node
        self.access = Access(node.authorizer)
        self._init_transactional = init_transactional_producer
        self._handlers: Handlers = {
            Metadata: self.metadata,
            CreateTopic: self.create_topic,
            DeleteTopic: self.delete_topic,
            AlterTopicConfigs: self.alter_topic_configs,
            AddPartitions: self.add_partitions,
            PutUser: self.put_user,
            DeleteUser: self.delete_user,
            ListUsers: self.list_users,
            AlterQuotas: self.alter_quotas,
            DescribeQuotas: self.describe_quotas,
            CreateAcls: self.create_acls,
            DescribeAcls: self.describe_acls,
            DeleteAcls: self.delete_acls,
            InitProducerId: self.init_producer_id,
            Fetch: self.fetch,
            ListOffsets: self.list_offsets,
            DeleteRecords: self.delete_records,
        }
        self._handlers.update(services)

    def dispatch(self, body: object, client: Caller | None) -> Awaitable[object | None]:
        """Serve a request of `client` (None: this node's own, on behalf of a caller
        already checked), within what the ACLs let it do (node/access.py)."""
        if self.node.shutting_down:
            raise ShuttingDownError(f"node {self.node.id} is shutting down; use another node")
        if client is None:
            return self._serve(body, client, None)
        if self.node.authorizer.is_super(client.principal):
            pending = self._serve(body, client, None)
        else:
            self.access.check(body, client)
            pending = self.access.filtered(body, client, self._serve(body, client, self.access.may_read(client)))
        return self._metered(body, client.principal, pending) if self.node.state.quotas else pending

    def _metered(self, body: object, principal: str, pending: Awaitable[object | None]) -> Awaitable[object | None]:
        """Charge the request to the principal's quotas (node/quotas.py); produce and
        fetch answers say how long the node will now wait before reading more."""
        quotas = self.node.quotas
        quotas.charge(principal, REQUEST_RATE, 1)
        if isinstance(body, Produce):
            quotas.charge(principal, PRODUCE_RATE, len(body.records))
        elif not isinstance(body, Fetch):
            return pending

        async def answer() -> object | None:
            resp = await pending
            fetched = resp.body if isinstance(resp, Spliced) else resp
            if isinstance(fetched, FetchResponse):
                quotas.charge(principal, FETCH_RATE, sum(len(r.records) for r in fetched.results))
            if isinstance(fetched, FetchResponse | ProduceResponse):
                fetched.throttle_ms = int(quotas.throttle_s(principal) * 1000)
            return resp

        return answer()

    def _serve(
        self, body: object, client: Caller | None, may_read: Callable[[str], None] | None
    ) -> Awaitable[object | None]:
        if isinstance(body, Produce):
            return self.produce(body)
        if isinstance(body, Fetch):
            return self.fetch(body, zero_copy=getattr(client, "zero_copy", False), may_read=may_read)
        if isinstance(body, WriteTxnMarker):
            return self.write_txn_marker(body)
        handler = self._handlers.get(type(body))
        if handler is None:
            raise InvalidRequestError(f"{type(body).__name__} is not a request this node serves")
        return handler(body)

    # -- metadata and admin -------------------------------------------------------------------

    async def metadata(self, req: Metadata) -> MetadataResponse:
        self.node.check_loaded()
        b = self.node
        if req.authoritative:
            b.controller_leader_check()  # it has applied every committed topic change
        nodes = node_infos(b, set(b.live_nodes()))
        names = list(b.state.topics) if req.topics is None else req.topics
        topics, missing = [], []
        for name in names:
            meta = b.state.topics.get(name)
            if meta is None:
                missing.append(name)
                continue
            parts = []
            for p, replicas in enumerate(meta.replicas):
                local = b.partitions.get((name, p))
                info = PartitionInfo(p, b.leader_of(meta.group(p)), list(replicas))
                move = meta.moving.get(p)
                if move is not None:
                    info.target = list(move.target)
                if local is not None and local.is_leader:
                    if move is not None:
                        info.behind = behind_of(local.core, move.target)
                    info.in_sync = local.in_sync()
                    info.high_watermark = local.high_watermark
                    info.log_start_offset = local.storage.log.log_start_offset
                    info.size_bytes = local.storage.log.size_bytes
                parts.append(info)
            topics.append(TopicInfo(name, parts, dict(meta.configs), meta.internal))
        controller = b.controller.core.leader or None
        return MetadataResponse(nodes, topics, controller, missing)

    async def create_topic(self, req: CreateTopic) -> Ok:
        b = self.node
        b.controller_leader_check()
        live = placeable(b.state, b.live_nodes())
        validate_topic(req.name, req.partitions, req.replication, len(live), req.configs, b.cfg.config_minimums)
        if req.name.startswith("__"):
            raise InvalidRequestError("topic names starting with '__' are reserved for TideMQ's internal topics")
        replicas = assign_replicas(b.state, live, req.partitions, req.replication)
        await b.run_command(CreateTopicCmd(req.name, replicas, dict(req.configs)))
        return Ok()

    async def delete_topic(self, req: DeleteTopic) -> Ok:
        meta = self.node.state.topics.get(req.name)
        if meta is not None and meta.internal:
            raise InvalidRequestError(f"{req.name} is an internal topic; it cannot be deleted")
        await self.node.run_command(DeleteTopicCmd(req.name))
        return Ok()

    def _user_topic(self, name: str, what: str) -> TopicMeta:
        """A topic clients may change, as the controller leader knows it."""
        self.node.controller_leader_check()
        meta = self.node.state.topics.get(name)
        if meta is None:
            raise UnknownTopicError(f"topic {name!r} does not exist")
        if meta.internal:
            raise InvalidRequestError(f"{name} is an internal topic; its {what} are the cluster's")
        return meta

    async def alter_topic_configs(self, req: AlterTopicConfigs) -> Ok:
        """On the controller leader: the topic's partitions take the new configs as the
        command applies on each node (node/broker.py, `_open_topic`)."""
        b = self.node
        self._user_topic(req.name, "configs")
        validate_configs(req.set, b.cfg.config_minimums)
        unknown = [k for k in req.delete if k not in TOPIC_CONFIGS]
        if unknown:
            raise InvalidConfigError(f"unknown topic config {unknown[0]!r}; known: {', '.join(sorted(TOPIC_CONFIGS))}")
        if set(req.set) & set(req.delete):
            raise InvalidConfigError(f"{sorted(set(req.set) & set(req.delete))[0]!r} is both set and deleted")
        if not req.validate_only:
            await b.run_command(AlterTopicConfigsCmd(req.name, dict(req.set), list(req.delete)))
        return Ok()

    async def add_partitions(self, req: AddPartitions) -> Ok:
        """On the controller leader: the new partitions are placed like a new topic's
        (each on the nodes hosting fewest), with the topic's replication."""
        b = self.node
        meta = self._user_topic(req.name, "partitions")
        have = len(meta.replicas)
        if not have < req.count <= MAX_PARTITIONS:
            raise InvalidRequestError(
                f"{req.name} has {have} partition(s): it can grow to {have + 1}..{MAX_PARTITIONS}, never shrink"
            )
        live = placeable(b.state, b.live_nodes())
        replication = len(meta.replicas[0])
        if replication > len(live):
            raise NotEnoughReplicasError(f"{req.name} needs {replication} live nodes for its replicas, {len(live)} are")
        if not req.validate_only:
            replicas = assign_replicas(b.state, live, req.count - have, replication)
            await b.run_command(AddPartitionsCmd(req.name, replicas))
        return Ok()

    # -- users ----------------------------------------------------------------------------

    async def put_user(self, req: PutUser) -> Ok:
        """On the controller leader: the credential goes into the replicated state,
        checked for shape (it is what every node will verify proofs against)."""
        self.node.controller_leader_check()
        check_name("user", req.name)
        if not MIN_ITERATIONS <= req.iterations <= MAX_ITERATIONS:
            raise InvalidRequestError(f"SCRAM iterations must be {MIN_ITERATIONS}..{MAX_ITERATIONS}")
        if not 8 <= len(req.salt) <= 64 or len(req.stored_key) != 32 or len(req.server_key) != 32:
            raise InvalidRequestError("a SCRAM-SHA-256 credential has an 8-64 byte salt and 32-byte keys")
        cred = UserCredential(req.salt, req.iterations, req.stored_key, req.server_key)
        await self.node.run_command(PutUserCmd(req.name, cred, req.create_only, req.must_exist))
        return Ok()

    async def delete_user(self, req: DeleteUser) -> Ok:
        self.node.controller_leader_check()
        await self.node.run_command(DeleteUserCmd(req.name))
        return Ok()

    async def list_users(self, req: ListUsers) -> ListUsersResponse:
        self.node.controller_leader_check()
        return ListUsersResponse([(name, c.iterations) for name, c in sorted(self.node.state.users.items())])

    # -- ACLs -----------------------------------------------------------------------------

    async def create_acls(self, req: CreateAcls) -> Ok:
        self.node.controller_leader_check()
        if not 0 < len(req.acls) <= MAX_ACLS_PER_REQUEST:
            raise InvalidRequestError(f"a request adds 1..{MAX_ACLS_PER_REQUEST} bindings, not {len(req.acls)}")
        for b in req.acls:
            check_binding(b)
        if len(self.node.state.acls) + len(req.acls) > MAX_ACLS:
            raise InvalidRequestError(f"the cluster holds at most {MAX_ACLS} bindings; remove some first")
        await self.node.run_command(AddAclsCmd(list(req.acls)))
        return Ok()

    async def describe_acls(self, req: DescribeAcls) -> AclsResponse:
        self.node.controller_leader_check()
        return AclsResponse([b for b in self.node.state.acls if selects(req.filter, b)])

    async def delete_acls(self, req: DeleteAcls) -> AclsResponse:
        """The filters are resolved here, into the exact bindings the command removes."""
        self.node.controller_leader_check()
        if not 0 < len(req.filters) <= MAX_ACLS_PER_REQUEST:
            raise InvalidRequestError(f"a request has 1..{MAX_ACLS_PER_REQUEST} filters, not {len(req.filters)}")
        gone = [b for b in self.node.state.acls if any(selects(f, b) for f in req.filters)]
        if gone:
            await self.node.run_command(RemoveAclsCmd(gone))
        return AclsResponse(gone)

    # -- quotas ---------------------------------------------------------------------------

    async def alter_quotas(self, req: AlterQuotas) -> Ok:
        self.node.controller_leader_check()
        check_quotas(req.principal, req.set, req.delete)
        await self.node.run_command(SetQuotasCmd(req.principal, dict(req.set), list(req.delete)))
        return Ok()

    async def describe_quotas(self, req: DescribeQuotas) -> QuotasResponse:
        self.node.controller_leader_check()
        quotas = self.node.state.quotas
        return QuotasResponse(dict(quotas) if req.principal is None else {req.principal: quotas.get(req.principal, {})})

    def init_producer_id(self, req: InitProducerId) -> Awaitable[ProducerIdResponse]:
        """A transactional id goes to its transaction coordinator (which keeps its
        producer id and bumps the epoch); a plain idempotent producer gets a fresh id
        from the controller."""
        if req.transactional_id is not None:
            return self._init_transactional(req)
        return self._new_producer_id()

    async def _new_producer_id(self) -> ProducerIdResponse:
        return ProducerIdResponse(await self.node.next_producer_id(), 0)

    # -- producing ------------------------------------------------------------------------------

    def produce(self, req: Produce, *, delay_headers: bool = False) -> Awaitable[object | None]:
        """`delay_headers`: records with a delay header go through the delay tier
        (node/delay_intake.py; the Kafka listener's produce)."""
        meta = self.node.state.topics.get(req.topic)
        if meta is not None and meta.internal and not (meta.name.startswith(TIER_PREFIX) or meta.name in WRITABLE):
            raise InvalidRequestError(f"{req.topic} is an internal topic; clients may read it but not produce to it")
        part = self.node.local_partition(req.topic, req.partition)
        timeout_s = max(0.001, min(req.timeout_ms, 300_000) / 1000)
        pending = part.produce(req.records, req.acks, timeout_s, req.transactional_id, delay_headers=delay_headers)
        self.node.metrics.bytes_in.labels(req.topic).inc(len(req.records))
        return pending

    def write_txn_marker(self, req: WriteTxnMarker) -> Awaitable[Ok]:
        """Append a transaction marker as the partition leader (from a transaction
        coordinator); proposes synchronously, like produce, so it keeps arrival order."""
        part = self.node.local_partition(req.topic, req.partition)
        return part.write_marker(req.producer_id, req.producer_epoch, req.commit, req.coordinator_epoch, timeout_s=10.0)

    # -- consuming ------------------------------------------------------------------------------

    def _read(
        self, req: Fetch, slice_from: int | None, may_read: Callable[[str], None] | None
    ) -> tuple[list[FetchResult], int]:
        results, total = [], 0
        budget = min(req.max_bytes, MAX_FETCH_BYTES)
        for fp in req.partitions:
            res = FetchResult(fp.topic, fp.partition)
            try:
                if may_read is not None:
                    may_read(fp.topic)
                part = self.node.local_partition(fp.topic, fp.partition)
                if not part.is_leader:
                    raise part.not_leader()
                records: bytes | Region
                if budget > 0:
                    records, lso, aborted = part.read_isolated(
                        fp.offset, max(1, min(fp.max_bytes, budget)), req.isolation, slice_from=slice_from
                    )
                else:
                    records, lso, aborted = b"", part.last_stable_offset, []
                res.records, res.aborted = records, aborted  # type: ignore[assignment]   # a Region: see fetch
                res.high_watermark, res.last_stable_offset = part.high_watermark, lso
                res.log_start_offset = part.storage.log.log_start_offset
                budget -= len(records)
                total += len(records)
            except TideMQError as exc:
                res.error, res.error_message = int(exc.code), exc.message
                res.leader_id = exc.details.get("leader_id")  # type: ignore[assignment]
                if isinstance(exc, OffsetOutOfRangeError):
                    res.log_start_offset = exc.details.get("log_start_offset", 0)  # type: ignore[assignment]
                    res.high_watermark = exc.details.get("high_watermark", 0)  # type: ignore[assignment]
            results.append(res)
        return results, total

    async def fetch(
        self, req: Fetch, *, zero_copy: bool = False, may_read: Callable[[str], None] | None = None
    ) -> FetchResponse | Spliced:
        """Long poll: answer as soon as min_bytes are there, an error occurs, or
        max_wait_ms passes. With `zero_copy` (the connection is a plain TCP socket),
        large reads stay in their segment files and the answer is a `Spliced` body whose
        writer sends them with `os.sendfile` (`node.sendfile`)."""
        if not 0 < len(req.partitions) <= MAX_FETCH_PARTITIONS:
            raise InvalidRequestError(f"a fetch names 1..{MAX_FETCH_PARTITIONS} partitions, not {len(req.partitions)}")
        slice_from = SENDFILE_MIN_BYTES if zero_copy else None
        deadline = trio.current_time() + min(max(req.max_wait_ms, 0), MAX_WAIT_MS) / 1000
        while True:
            results, total = self._read(req, slice_from, may_read)
            if total >= req.min_bytes or any(r.error for r in results) or trio.current_time() >= deadline:
                break
            _close_regions(results)  # read again once more is there
            event = trio.Event()
            parts = [self.node.partitions[(r.topic, r.partition)] for r in results]
            for part in parts:
                part.add_hw_waiter(event)
            try:
                with trio.move_on_at(deadline):
                    await event.wait()
            finally:
                for part in parts:
                    part.remove_hw_waiter(event)
        holes: list[tuple[object, Region]] = []
        for r in results:
            if r.records:
                self.node.metrics.bytes_out.labels(r.topic).inc(len(r.records))
            if isinstance(r.records, Region):
                holes.append((r, r.records))
        response = FetchResponse(results)
        return Spliced(response, holes) if holes else response

    async def list_offsets(self, req: ListOffsets) -> ListOffsetsResponse:
        part = self.node.local_partition(req.topic, req.partition)
        if not part.is_leader:
            raise part.not_leader()
        log = part.storage.log
        end = part.last_stable_offset if req.isolation == READ_COMMITTED else part.high_watermark
        if req.timestamp == LATEST:
            return ListOffsetsResponse(end)
        if req.timestamp == EARLIEST:
            return ListOffsetsResponse(log.log_start_offset)
        if req.timestamp < 0:
            raise InvalidRequestError(
                f"timestamp {req.timestamp} is neither LATEST (-1), EARLIEST (-2) nor a time in ms"
            )
        found = log.offset_for_timestamp(req.timestamp)
        return ListOffsetsResponse(end if found is None or found >= end else found, req.timestamp)

    async def delete_records(self, req: DeleteRecords) -> ListOffsetsResponse:
        part = self.node.local_partition(req.topic, req.partition)
        if not part.is_leader:
            raise part.not_leader()
        timeout_s = min(max(req.timeout_ms, 1), 300_000) / 1000
        return ListOffsetsResponse(await part.delete_records(req.offset, timeout_s))


def _close_regions(results: list[FetchResult]) -> None:
    for r in results:
        if isinstance(r.records, Region):
            r.records.close()
            r.records = b""
