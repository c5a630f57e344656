"""Admin: create, delete, list and describe topics; look at the cluster and its transactions.

Admin requests go to the controller leader (followed invisibly). `create_topic` returns
once every partition has an elected leader, so a producer can use the topic at once.
`describe_transaction` asks the id's transaction coordinator; `list_transactions` asks
every live node at once, since each knows only the ids whose `__transaction_state`
partition it leads. `list_halves` does the same for the half messages of
`__half_messages` partitions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import anyio

from client.acls import check_binding
from client.cluster import ClusterClient
from client.conventions import HALF_TOPIC, TXN_TOPIC
from client.errors import (
    AuthorizationFailedError,
    CoordinatorNotAvailableError,
    GroupNotEmptyError,
    InvalidRequestError,
    TideMQError,
)
from client.group import commit_offsets, fetch_offsets
from client.protocol import (
    EARLIEST,
    LATEST,
    AclBinding,
    AclFilter,
    AddNode,
    AddPartitions,
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
    HalfInfo,
    ListHalves,
    ListOffsets,
    ListTransactions,
    ListUsers,
    Metadata,
    MetadataResponse,
    NodeInfo,
    PartitionInfo,
    PlannedMove,
    PutUser,
    R,
    Reassign,
    Rebalance,
    RemoveNode,
    Request,
    TopicInfo,
    TopicPartition,
    TxnInfo,
)
from client.quotas import check_quotas
from client.scram import DEFAULT_ITERATIONS, credential

ANNOUNCE_GRACE_S = 15.0  # how long add-node waits for a node that has not asked to join yet
NODE_ANSWER_S = 3.0  # how long one node may take to answer a survey (describe, status, group list)


def leader_view(topic: TopicInfo, answers: dict[int, MetadataResponse]) -> list[tuple[PartitionInfo, bool]]:
    """Each partition of `topic` as its leader describes it in `Admin.survey`'s
    answers, with whether that view is the leader's (else: what any node knows)."""
    rows = []
    for p in topic.partitions:
        view = answers.get(p.leader) if p.leader is not None else None
        theirs = next((t for t in view.topics if t.name == topic.name), None) if view else None
        if (
            theirs is not None
            and p.partition < len(theirs.partitions)
            and theirs.partitions[p.partition].leader == p.leader
        ):
            rows.append((theirs.partitions[p.partition], True))
        else:
            rows.append((p, False))
    return rows


class Moving(NamedTuple):
    """A partition whose replicas are moving: from `replicas` to `target`; `behind`:
    offsets each new replica still lacks (empty when its leader did not answer)."""

    topic: str
    partition: int
    replicas: list[int]
    target: list[int]
    behind: dict[int, int]


def moving(md: MetadataResponse, answers: dict[int, MetadataResponse]) -> list[Moving]:
    """The moves under way in a survey (`Admin.survey`)."""
    out = []
    for t in md.topics:
        for p, _ in leader_view(t, answers):
            if p.target:
                out.append(Moving(t.name, p.partition, list(p.replicas), list(p.target), dict(p.behind)))
    return out


class TransactionSurvey(NamedTuple):
    """Every node's answer to ListTransactions, and what is missing from it."""

    transactions: list[TxnInfo]  # one per transactional id, sorted by id
    answered: list[int]  # nodes that answered
    unanswered: dict[int, str]  # node id -> why it gave no answer
    uncovered: list[int]  # state partitions whose leader gave no answer (or none is elected):
    #                                      their ids are missing from `transactions`


class HalfSurvey(NamedTuple):
    """Every node's answer to ListHalves, and what is missing from it."""

    halves: list[HalfInfo]  # sorted by group, partition, offset
    answered: list[int]
    unanswered: dict[int, str]
    uncovered: list[int]  # __half_messages partitions whose leader gave no answer


class Admin:
    def __init__(
        self,
        bootstrap: str | list[str] | None = None,
        *,
        token: str | None = None,
        request_timeout: float = 30.0,
        client_id: str = "tidemq-admin",
        tls: bool | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        """Security, as every client class takes it (each from its TIDEMQ_* variable by
        default): TLS with `tls`, `tls_ca`, `tls_cert`, `tls_key` (client/tls.py), a
        user with `username` and `password` (SCRAM-SHA-256)."""
        self.cluster = ClusterClient(
            bootstrap,
            token=token,
            client_id=client_id,
            request_timeout=request_timeout,
            tls=tls,
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
            username=username,
            password=password,
        )
        self.request_timeout = request_timeout

    async def __aenter__(self) -> Admin:
        await self.cluster.__aenter__()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.cluster.__aexit__(*exc)

    async def create_topic(
        self,
        name: str,
        partitions: int = 1,
        replication: int = 1,
        configs: dict[str, str | int] | None = None,
        *,
        wait: bool = True,
    ) -> TopicInfo | None:
        """Create a topic; with `wait`, return its description once every partition has a
        leader (None at once if the ACLs let us create it but not describe it)."""
        body = CreateTopic(name, partitions, replication, {k: str(v) for k, v in (configs or {}).items()})
        with anyio.fail_after(self.request_timeout):
            await self.cluster.controller_request(body)
            if not wait:
                return None
            try:
                return await self.wait_for_leaders(name)
            except AuthorizationFailedError:
                return None

    async def wait_for_leaders(self, name: str) -> TopicInfo:
        while True:
            info = await self.cluster.topic(name, refresh=True)
            if all(p.leader is not None for p in info.partitions):
                return info
            await anyio.sleep(0.05)

    async def add_partitions(self, name: str, count: int, *, wait: bool = True) -> TopicInfo | None:
        """Grow a topic to `count` partitions (never fewer); with `wait`, return once
        every partition has a leader. Keys map to partitions anew from then on, as in
        Kafka: a key's messages before and after may be in different partitions."""
        with anyio.fail_after(self.request_timeout):
            await self.cluster.controller_request(AddPartitions(name, count))
            if not wait:
                return None
            while True:
                info = await self.wait_for_leaders(name)
                if len(info.partitions) >= count:
                    return info
                await anyio.sleep(0.05)

    async def delete_topic(self, name: str) -> None:
        with anyio.fail_after(self.request_timeout):
            await self.cluster.controller_request(DeleteTopic(name))

    async def alter_topic_configs(
        self, name: str, configs: dict[str, str | int] | None = None, delete: list[str] | None = None
    ) -> None:
        """Set configs of a topic and return those in `delete` to their defaults; its
        partitions apply them as the change commits."""
        body = AlterTopicConfigs(name, {k: str(v) for k, v in (configs or {}).items()}, list(delete or []))
        with anyio.fail_after(self.request_timeout):
            await self.cluster.controller_request(body)

    async def list_topics(self, internal: bool = False) -> list[str]:
        md = await self.cluster.refresh_metadata()
        return sorted(t.name for t in md.topics if internal or not t.internal)

    async def describe_topic(self, name: str) -> TopicInfo:
        return await self.cluster.topic(name, refresh=True)

    async def survey(
        self, topics: list[str] | None, *, node_timeout: float = NODE_ANSWER_S
    ) -> tuple[MetadataResponse, dict[int, MetadataResponse]]:
        """Metadata from one node, then from every live node at once (each bounded by
        `node_timeout`; one that does not answer is left out). Only a partition's leader
        knows its in-sync replicas, high watermark and size: `leader_view` takes each
        partition from its leader's answer."""
        md = await self.cluster.refresh_metadata(topics)
        answers: dict[int, MetadataResponse] = {}

        async def ask(node_id: int, addr: str) -> None:
            with anyio.move_on_after(node_timeout):
                try:
                    answers[node_id] = await self.cluster.request(addr, Metadata(topics))
                except TideMQError:
                    pass  # (not answering)

        async with anyio.create_task_group() as tg:
            for node in md.nodes:  # (all: a node another calls down may answer)
                tg.start_soon(ask, node.node_id, node.addr)
        return md, answers

    async def describe_cluster(self) -> MetadataResponse:
        return await self.cluster.refresh_metadata()

    async def delete_records(self, topic: str, partition: int, before: int = -1) -> int:
        """Delete a partition's records below offset `before` (-1: everything committed)
        on every replica; returns the new log start. Consumers behind it reset by their
        `offset_reset`."""
        body = DeleteRecords(topic, partition, before, int(self.request_timeout * 1000))
        with anyio.fail_after(self.request_timeout):
            return (await self.cluster.leader_request(topic, partition, body)).offset

    # -- nodes and replica moves ------------------------------------------------------------------

    async def add_node(self, node_id: int, peer: str, *, wait: float | None = 120.0) -> NodeInfo | None:
        """Admit a node started with `--join` (`peer`: where the other nodes reach its
        peer listener). With `wait` (seconds), a node that has not asked to join yet is
        given `ANNOUNCE_GRACE_S` to (it may still be starting), and the call returns once
        it votes in the controller group, that is, once it has caught up on the metadata."""
        grace = anyio.current_time() + (ANNOUNCE_GRACE_S if wait is not None else 0)
        with anyio.fail_after(self.request_timeout + ANNOUNCE_GRACE_S):
            while True:
                try:
                    await self.cluster.controller_request(AddNode(node_id, peer))
                    break
                except InvalidRequestError as exc:
                    if "has not asked to join" not in exc.message or anyio.current_time() > grace:
                        raise
                    await anyio.sleep(0.2)
        if wait is None:
            return None
        with anyio.fail_after(wait):
            while True:
                md = await self.cluster.refresh_metadata([])
                node = next((n for n in md.nodes if n.node_id == node_id), None)
                if node is not None and node.state == "voter":
                    return node
                await anyio.sleep(0.1)

    async def remove_node(
        self,
        node_id: int,
        *,
        throttle: int = 0,
        wait: float | None = 600.0,
        progress: Callable[[list[Moving]], None] | None = None,
    ) -> None:
        """Move every replica off a node, then remove it from the cluster (it stops).
        `throttle`: bytes/s to each replica taking one of its places (0: no limit).
        With `wait` (seconds), return once it is gone, calling `progress` with the moves
        under way each time it looks."""
        with anyio.fail_after(self.request_timeout):
            await self.cluster.controller_request(RemoveNode(node_id, throttle))
        if wait is None:
            return
        with anyio.fail_after(wait):
            while True:
                md, answers = await self.survey(None)
                if progress is not None:
                    progress(moving(md, answers))
                if all(n.node_id != node_id for n in md.nodes):
                    return
                await anyio.sleep(0.25)

    async def reassign(
        self,
        topic: str,
        partition: int,
        replicas: list[int],
        *,
        throttle: int = 0,
        wait: float | None = 600.0,
        progress: Callable[[list[Moving]], None] | None = None,
    ) -> None:
        """Move a partition's replicas to `replicas` (the preferred leader first), online:
        the new ones catch up as learners (at most `throttle` bytes/s each, 0: no limit),
        then the old ones leave. With `wait` (seconds), return once it has moved."""
        with anyio.fail_after(self.request_timeout):
            await self.cluster.controller_request(Reassign(topic, partition, list(replicas), throttle))
        if wait is not None:
            await self.wait_for_moves({(topic, partition): list(replicas)}, wait, progress)

    async def cancel_reassignment(
        self,
        topic: str,
        partition: int,
        *,
        wait: float | None = 600.0,
        progress: Callable[[list[Moving]], None] | None = None,
    ) -> list[int]:
        """Send a partition that is moving back to the replicas it had (a new replica
        is dropped; one already removed comes back as a learner and catches up).
        Returns those replicas; with `wait` (seconds), once it is back."""
        with anyio.fail_after(self.request_timeout):
            before = (await self.cluster.topic(topic, refresh=True)).partitions[partition].replicas
            await self.cluster.controller_request(Reassign(topic, partition, [], cancel=True))
        if wait is not None:
            await self.wait_for_moves({(topic, partition): list(before)}, wait, progress)
        return list(before)

    async def rebalance(
        self,
        *,
        throttle: int = 0,
        dry_run: bool = False,
        wait: float | None = 600.0,
        progress: Callable[[list[Moving]], None] | None = None,
    ) -> list[PlannedMove]:
        """Even out replicas and preferred leaders across the nodes (after one joined);
        returns the moves planned. With `wait` (seconds), return once they are done."""
        with anyio.fail_after(self.request_timeout):
            plan = await self.cluster.controller_request(Rebalance(throttle, dry_run))
        if wait is not None and not dry_run:
            await self.wait_for_moves({(m.topic, m.partition): m.target for m in plan.moves}, wait, progress)
        return plan.moves

    async def moves(self) -> list[Moving]:
        """The replica moves under way, with how far each new replica is behind."""
        return moving(*await self.survey(None))

    async def wait_for_moves(
        self,
        targets: dict[tuple[str, int], list[int]],
        timeout: float,
        progress: Callable[[list[Moving]], None] | None = None,
    ) -> None:
        """Until each partition's replicas are its target (`progress`: the moves under
        way, each time it looks)."""
        with anyio.fail_after(timeout):
            while True:
                md, answers = await self.survey(None)
                if progress is not None:
                    progress([m for m in moving(md, answers) if (m.topic, m.partition) in targets])
                now = {(t.name, p.partition): p for t in md.topics for p in t.partitions}
                if all(
                    key not in now or (now[key].replicas == target and not now[key].target)
                    for key, target in targets.items()
                ):
                    return
                await anyio.sleep(0.25)

    # -- users -------------------------------------------------------------------------------

    async def add_user(self, name: str, password: str, *, iterations: int = DEFAULT_ITERATIONS) -> None:
        """Create a user (InvalidRequestError if it exists). Only its SCRAM-SHA-256
        credential, derived here, goes to the cluster; the password stays with you."""
        await self._put_user(name, password, iterations, create_only=True)

    async def change_password(self, name: str, password: str, *, iterations: int = DEFAULT_ITERATIONS) -> None:
        """Any user may change their own; others' need ALTER on the cluster."""
        await self._put_user(name, password, iterations, create_only=False, must_exist=True)

    async def _put_user(
        self, name: str, password: str, iterations: int, *, create_only: bool, must_exist: bool = False
    ) -> None:
        if not password:
            raise ValueError("a user needs a password")
        c = credential(password, iterations)
        body = PutUser(name, c.salt, c.iterations, c.stored_key, c.server_key, create_only, must_exist)
        with anyio.fail_after(self.request_timeout):
            await self.cluster.controller_request(body)

    async def delete_user(self, name: str) -> None:
        with anyio.fail_after(self.request_timeout):
            await self.cluster.controller_request(DeleteUser(name))

    async def list_users(self) -> list[str]:
        with anyio.fail_after(self.request_timeout):
            return [name for name, _ in (await self.cluster.controller_request(ListUsers())).users]

    # -- ACLs --------------------------------------------------------------------------------

    async def create_acls(self, acls: list[AclBinding]) -> None:
        """Add bindings (client/acls.py has the words; those already there stay once)."""
        for b in acls:
            check_binding(b)
        with anyio.fail_after(self.request_timeout):
            await self.cluster.controller_request(CreateAcls(list(acls)))

    async def describe_acls(self, filter: AclFilter | None = None) -> list[AclBinding]:
        """The bindings a filter picks (all of them without one)."""
        with anyio.fail_after(self.request_timeout):
            return (await self.cluster.controller_request(DescribeAcls(filter or AclFilter()))).acls

    async def delete_acls(self, filters: list[AclFilter]) -> list[AclBinding]:
        """Remove every binding any filter picks; returns those removed."""
        with anyio.fail_after(self.request_timeout):
            return (await self.cluster.controller_request(DeleteAcls(list(filters)))).acls

    # -- quotas ------------------------------------------------------------------------------

    async def alter_quotas(
        self, principal: str, rates: dict[str, float] | None = None, delete: list[str] | None = None
    ) -> None:
        """Set (and remove) quotas of `User:NAME`, or of `User:*` for every user without
        their own: keys in client/quotas.py, rates per second. Over its quota a client
        is slowed on each node, never failed."""
        rates, delete = dict(rates or {}), list(delete or [])
        check_quotas(principal, rates, delete)
        with anyio.fail_after(self.request_timeout):
            await self.cluster.controller_request(AlterQuotas(principal, rates, delete))

    async def describe_quotas(self, principal: str | None = None) -> dict[str, dict[str, float]]:
        with anyio.fail_after(self.request_timeout):
            return (await self.cluster.controller_request(DescribeQuotas(principal))).quotas

    # -- groups ------------------------------------------------------------------------------

    async def delete_group(self, group: str) -> None:
        """Remove a group with no members, and its committed offsets
        (GroupNotEmptyError while it has members, GroupNotFoundError if there is none)."""
        with anyio.fail_after(self.request_timeout):
            await self.cluster.coordinator_request(group, DeleteGroup(group))

    async def reset_offsets(
        self,
        group: str,
        topic: str,
        *,
        to: str | None = None,
        at_ms: int | None = None,
        offset: int | None = None,
        shift_by: int | None = None,
        dry_run: bool = False,
    ) -> dict[tuple[str, int], tuple[int | None, int]]:
        """Move a group's committed offsets of `topic`, every partition: `to` "earliest" or
        "latest", `at_ms` (the first offset at or after that time), `offset`, or
        `shift_by` from where it is (each kept within the log). Refused
        (GroupNotEmptyError) while the group has members, who would commit over it.
        Returns (old, new) per partition; `dry_run` only says what it would do."""
        if sum(x is not None for x in (to, at_ms, offset, shift_by)) != 1 or to not in (None, "earliest", "latest"):
            raise ValueError("give exactly one of to='earliest'|'latest', at_ms, offset, shift_by")
        with anyio.fail_after(self.request_timeout):
            desc = await self.cluster.coordinator_request(group, DescribeGroup(group))
            if desc.members:
                raise GroupNotEmptyError(
                    f"group {group!r} has {len(desc.members)} member(s): stop them first (they would commit over it)"
                )
            n = await self.cluster.partition_count(topic)
            parts = [(topic, p) for p in range(n)]
            old = await fetch_offsets(self.cluster, group, parts)
            moves: dict[tuple[str, int], tuple[int | None, int]] = {}
            for t, p in parts:
                first, end = await self._offset(t, p, EARLIEST), await self._offset(t, p, LATEST)
                was = old.get((t, p))
                if to is not None:
                    new = first if to == "earliest" else end
                elif at_ms is not None:
                    new = await self._offset(t, p, at_ms)
                elif offset is not None:
                    new = offset
                else:
                    new = (first if was is None else was) + (shift_by or 0)
                moves[(t, p)] = (was, min(max(new, first), end))
            if not dry_run:
                await commit_offsets(self.cluster, group, {tp: new for tp, (_, new) in moves.items()})
        return moves

    async def _offset(self, topic: str, partition: int, when: int) -> int:
        return (await self.cluster.leader_request(topic, partition, ListOffsets(topic, partition, when))).offset

    async def delete_group_offsets(self, group: str, partitions: list[tuple[str, int]]) -> None:
        """Remove a group's committed offsets of these partitions; refused
        (GroupSubscribedError) for a topic its members read."""
        body = DeleteOffsets(group, [TopicPartition(t, p) for t, p in partitions])
        with anyio.fail_after(self.request_timeout):
            await self.cluster.coordinator_request(group, body)

    # -- transactions ----------------------------------------------------------------------

    async def describe_transaction(self, transactional_id: str) -> TxnInfo:
        """The id's state, partitions, groups and times, from its coordinator. An id no
        producer has used raises `InvalidRequestError` saying so."""
        with anyio.fail_after(self.request_timeout):
            return await self.cluster.transaction_coordinator_request(
                transactional_id, DescribeTransaction(transactional_id)
            )

    async def list_transactions(self, *, node_timeout: float = NODE_ANSWER_S) -> list[TxnInfo]:
        """Every transactional id the cluster knows, sorted by id. Raises
        `CoordinatorNotAvailableError` (retry shortly) when some state partition's leader
        did not answer, rather than return a list that silently lacks its ids;
        `survey_transactions` gives what did answer."""
        survey = await self.survey_transactions(node_timeout=node_timeout)
        if survey.uncovered:
            why = "; ".join(f"node {n}: {e}" for n, e in sorted(survey.unanswered.items())) or "no leader elected"
            raise CoordinatorNotAvailableError(
                f"{TXN_TOPIC} partition(s) {','.join(map(str, survey.uncovered))} did not answer ({why}); "
                "their transactions are unknown, retry shortly"
            )
        return survey.transactions

    async def survey_transactions(self, *, node_timeout: float = NODE_ANSWER_S) -> TransactionSurvey:
        """Ask every live node at once (each bounded by `node_timeout`, so one stuck node
        costs that, not a request timeout) for the ids it coordinates, and say which
        state partitions are not covered by an answer.

        A partition is covered when the node the metadata names as its leader answered;
        that node lists its ids. An id seen twice (its leadership moved during the
        survey) is kept in its most recently updated form."""
        answers, unanswered, uncovered = await self._ask_every_node(ListTransactions(), TXN_TOPIC, node_timeout)
        found: dict[str, TxnInfo] = {}
        for resp in answers.values():
            for info in resp.transactions:
                seen = found.get(info.transactional_id)
                if seen is None or info.updated_ms > seen.updated_ms:
                    found[info.transactional_id] = info
        return TransactionSurvey([found[t] for t in sorted(found)], sorted(answers), unanswered, uncovered)

    # -- half messages ---------------------------------------------------------------------

    async def list_halves(
        self, producer_group: str | None = None, *, resolved: bool = False, node_timeout: float = NODE_ANSWER_S
    ) -> HalfSurvey:
        """Pending half messages (with the check-backs made so far) of one producer group
        or all, from every node at once; with `resolved`, also the recently decided ones
        and why. Partitions whose leader did not answer are named in `uncovered`."""
        answers, unanswered, uncovered = await self._ask_every_node(
            ListHalves(producer_group, resolved), HALF_TOPIC, node_timeout
        )
        found: dict[tuple[int, int], HalfInfo] = {}
        for resp in answers.values():
            for h in resp.halves:
                found[(h.partition, h.offset)] = h
        halves = sorted(found.values(), key=lambda h: (h.producer_group, h.partition, h.offset))
        return HalfSurvey(halves, sorted(answers), unanswered, uncovered)

    async def _ask_every_node(
        self, body: Request[R], topic: str, node_timeout: float
    ) -> tuple[dict[int, R], dict[int, str], list[int]]:
        """Ask every live node at once (each bounded by `node_timeout`, so one stuck node
        costs that, not a request timeout). (answers by node, why the others gave none,
        partitions of `topic` whose leader did not answer.)"""
        md = await self.cluster.refresh_metadata(None)
        state = next((t for t in md.topics if t.name == topic), None)
        answers: dict[int, R] = {}
        unanswered: dict[int, str] = {}

        async def ask(node_id: int, addr: str) -> None:
            try:
                with anyio.fail_after(node_timeout):
                    answers[node_id] = await self.cluster.request(addr, body)
            except TimeoutError:
                unanswered[node_id] = f"no answer within {node_timeout:g}s"
            except TideMQError as exc:
                unanswered[node_id] = exc.message

        async with anyio.create_task_group() as tg:
            for node in md.nodes:
                if node.alive:
                    tg.start_soon(ask, node.node_id, node.addr)
        uncovered = [p.partition for p in state.partitions if p.leader not in answers] if state else []
        return answers, unanswered, uncovered
