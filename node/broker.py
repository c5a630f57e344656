"""The broker process: every Raft group this node hosts, and the tasks that serve them.

Group 0 is the controller: every node is a voter, and its committed commands
(`node.metadata`) say which topics exist and where their replicas live. Applying a
CreateTopic on a node that hosts a replica opens that partition's log and Raft group;
the preferred leader (first replica) campaigns at once so leaders spread evenly, and a
balancer hands leadership back to it after a failover once it has caught up.

Raft messages for all groups travel between two nodes over one link per direction
(`node.peers`), batched per write. Idle groups go quiet (`raft.core.Config.quiesce`):
no heartbeats, no ticks. What stands for all of them is one node-level heartbeat per
peer per heartbeat interval (every frame carries this node's incarnation), read by a
failure detector (`raft.liveness.PeerLiveness`): a peer silent for an election timeout,
or back with a new incarnation, is reported to every group it is a member of
(`RaftNode.peer_down`), which wakes them. Leaders also gossip which groups they lead,
so any node can answer Metadata for partitions it does not host, and a quiet follower
learns from it when its leader's node stopped leading its group (a replica taken
offline by a storage error).
"""

from __future__ import annotations

import itertools
import logging
import random
import re
import shutil
import signal
import time

import msgspec
import trio

import segments
from client.cluster import ClusterClient
from client.errors import (
    CoordinatorNotAvailableError,
    NotControllerError,
    NotCoordinatorError,
    NotLeaderError,
    TideMQError,
    TopicExistsError,
    UnknownTopicError,
)
from client.partitioner import partition_for_key
from client.protocol import AddNode, CoordinatorResponse, Reassign, Rebalance, RemoveNode
from node.acl import Authorizer
from node.aio import DiskSync
from node.api import Api
from node.config import NodeConfig, parse_addr
from node.coordinator import GroupCoordinator
from node.delay import DelayService
from node.diskspace import DiskSpace
from node.half import HalfCoordinator
from node.kafka_api import KafkaApi
from node.kafka_server import KafkaServer
from node.metadata import (
    DAY_MS,
    AllocateProducerIds,
    ClusterState,
    CreateTopicCmd,
    DeleteTopicCmd,
    DrainNodeCmd,
    ForgetNodeCmd,
    ReassignCmd,
    ReassignDoneCmd,
    RegisterNodeCmd,
    TopicMeta,
    decode_command,
    decode_state,
    encode_command,
    encode_state,
    topic_config,
)
from node.metrics import NodeMetrics
from node.moves import Mover
from node.partition import BatchLimits, Partition, StateCheckpoint
from node.peerauth import PeerCredential, new_secret
from node.peerguard import MAX_TERM
from node.peerguard import refusal as peer_refusal
from node.peerprotocol import JoinCluster, ReassignDone
from node.peers import PeerTransport, Reassembler
from node.placement import assign_replicas, placeable
from node.quotas import Quotas
from node.replica import Replica, Ticker
from node.roster import Roster
from node.runtime import CoordinatorRuntime, Handlers
from node.server import ConnectionLimits, Server
from node.storage import LogStorage
from node.tls import NodeTLS
from node.transactions import TransactionCoordinator
from raft.core import Config as RaftConfig
from raft.core import RaftNode
from raft.liveness import PeerLiveness
from raft.types import ConfState, Entry, EntryKind, Message, Role

log = logging.getLogger(__name__)

CONTROLLER_GROUP = 0
#: A partition's directory names its topic incarnation: `<topic>-<p>.g<raft group>`.
PARTITION_DIR = re.compile(r"^(?P<topic>.+)-(?P<partition>\d+)\.g(?P<group>\d+)$")


def partition_dir(meta: TopicMeta, p: int) -> str:
    return f"{meta.name}-{p}.g{meta.group(p)}"


GOSSIP_INTERVAL_S = 0.5
#: Every this many gossip rounds a leader names every group it leads; in between only
#: the changes (a new leader also says so at once).
GOSSIP_FULL_EVERY = 10
BALANCE_INTERVAL_S = 2.0


class PeerBatch(msgspec.Struct, array_like=True):
    messages: list[tuple[int, Message]]
    leaders: dict[int, tuple[int, int]] = {}  # group -> (leader, term), from its leader
    #: The sender's incarnation (drawn at its start; 0: a node from before it was sent):
    #: a new one tells the receiver's failure detector that the sender restarted.
    incarnation: int = 0
    #: `leaders` names every group the sender leads (its periodic gossip).
    all_leaders: bool = False
    #: The sender's Kafka address (with its periodic gossip; "": it serves none).
    kafka: str = ""


class AllLeaders(dict):
    """An outbox item: every group this node leads, (leader, term) each."""


#: An outbox item that is only there to make a frame: the node-level heartbeat.
BEAT = "beat"

_peer_encoder = msgspec.msgpack.Encoder()
_peer_decoder = msgspec.msgpack.Decoder(PeerBatch)


def encode_peer_items(items: list, incarnation: int = 0, kafka: str = "") -> bytes:
    messages = [i for i in items if isinstance(i, tuple)]
    leaders: dict[int, tuple[int, int]] = {}
    full = False
    for i in items:
        if isinstance(i, dict):
            leaders.update(i)
            full = full or isinstance(i, AllLeaders)
    return _peer_encoder.encode(PeerBatch(messages, leaders, incarnation, full, kafka if full else ""))


class Broker:
    def __init__(self, config: NodeConfig) -> None:
        self.cfg = config
        self.id = config.node_id
        self.metrics = NodeMetrics(self.id)
        self.state = ClusterState()
        self.roster = Roster(self)
        self.mover = Mover(self)
        self.replicas: dict[int, Replica] = {}
        self.partitions: dict[tuple[str, int], Partition] = {}
        self.leaders: dict[int, tuple[int, int]] = {}
        self.batch_limits = BatchLimits(
            config.max_batch_bytes,
            config.max_records_bytes,
            config.message_timestamp_before_max_ms,
            config.message_timestamp_after_max_ms,
        )
        self.disk = DiskSpace(str(config.data_dir), config.min_free_bytes)
        self.credential = PeerCredential(self.id, config.peer_secret or new_secret())
        self._reassembler = Reassembler()
        self.incarnation = random.getrandbits(62) | 1  # never 0 (a sender that sends none)
        inc, kafka = self.incarnation, config.kafka_advertise
        self.tls = NodeTLS.of(config.tls_cert, config.tls_key, config.tls_ca)
        self.transport = PeerTransport(
            self.id,
            config.peers,
            self.credential,
            lambda items: encode_peer_items(items, inc, kafka),
            max_payload=config.max_frame_bytes // 2,
            ssl_context=self.tls.peer_links,
        )
        #: The groups that are not quiescent: the only ones the ticker visits.
        self.ticker = Ticker()
        #: The replicas' log fsyncs, in the kernel where it offers them (opened by `run`).
        self.syncer = DiskSync()
        self.liveness = PeerLiveness([p for p in config.peers if p != self.id], config.election_ticks)
        self._hw_reported: dict[int, int] = {}  # group -> high watermark last set in the gauge
        self._gossiped: dict[int, tuple[int, int]] = {}  # what the last gossip round said we lead
        self._beat_frames: dict[int, int] = {}  # peer -> its link's frames_sent at the last heartbeat
        self.coordinator = GroupCoordinator(self)
        self.delay = DelayService(self)
        self.transactions = TransactionCoordinator(self)
        self.halves = HalfCoordinator(self)
        self.runtime = CoordinatorRuntime(self, [self.coordinator, self.transactions, self.halves, self.delay])
        self.authorizer = Authorizer(
            lambda: self.state.acls,
            enabled=config.require_users,
            super_users=frozenset(config.super_users),
            on_refusal=lambda op, rtype: self.metrics.authorization_failures.labels(op, rtype).inc(),
        )
        self.quotas = Quotas(lambda: self.state.quotas)
        services: Handlers = {
            **self.runtime.handlers(),
            AddNode: self.roster.add_node,
            RemoveNode: self.roster.remove_node,
            JoinCluster: self.roster.join_cluster,
            Reassign: self.mover.reassign,
            Rebalance: self.mover.rebalance,
            ReassignDone: self.mover.reassign_done,
        }
        self.api = Api(self, services, self.transactions.init_producer_id)
        limits = ConnectionLimits(config.max_connections, config.max_queued_bytes_per_connection, config.idle_timeout_s)
        self.server = Server(
            self.id,
            self.api,
            self._on_peer_payload,
            token=config.token,
            max_frame_bytes=config.max_frame_bytes,
            max_inflight=config.max_inflight_per_connection,
            metrics=self.metrics,
            limits=limits,
            ssl_context=self.tls.clients,
            users=lambda name: self.state.users.get(name),
            require_users=config.require_users,
            throttle=self.quotas.throttle_s,
            loaded=self.metadata_loaded,
        )
        self.peer_server = Server(
            self.id,
            self.api,
            self._on_peer_payload,
            max_frame_bytes=config.max_frame_bytes,
            max_inflight=config.max_inflight_per_connection,
            metrics=self.metrics,
            peer_auth=self.credential,
            peer_ids=_Admitted(self.roster),
            limits=limits,
            ssl_context=self.tls.peer_listener,
        )
        #: Every node's Kafka address this node knows: its own, and its peers' gossip.
        self.kafka_addrs: dict[int, str] = {self.id: config.kafka_advertise} if config.kafka_advertise else {}
        self.kafka_server = (
            KafkaServer(
                KafkaApi(self, self.api, self.coordinator, lambda: self.kafka_addrs),
                max_frame_bytes=config.max_frame_bytes,
                max_connections=config.max_connections,
                metrics=self.metrics,
                ssl_context=self.tls.clients,
            )
            if config.kafka_listen
            else None
        )
        self._cmd_results: dict[int, object] = {}
        self._replayed_until = -1
        self._replaying = True
        self._loaded = False
        self._creating: set[str] = set()
        self._create_lock = trio.Lock()
        self._producer_ids: list[int] = []
        self._nursery: trio.Nursery | None = None
        self.shutting_down = False
        self.ready = trio.Event()
        self._controller_snapshot_due = trio.Event()

    # -- lifecycle ------------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        self.cfg.data_dir.mkdir(parents=True, exist_ok=True)
        # (Its Raft state is saved once it was admitted and opened the controller's log.)
        joining = self.cfg.join is not None and not (self.cfg.data_dir / "__controller" / "raft-state").exists()
        voters = await self.roster.join() if joining else None
        self.syncer.open()
        try:
            await self._serve(voters, task_status)
        finally:
            self.syncer.close()

    async def _serve(self, voters: tuple[int, ...] | None, task_status: trio.TaskStatus) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.controller = self._open_controller(voters)
            nursery.start_soon(self.controller.run)
            host, port = parse_addr(self.cfg.peer_listen)
            peer_listeners = await nursery.start(self.peer_server.serve, host, port)
            if port == 0:  # a one-node cluster on any free port: dial ourselves there
                bound = peer_listeners[0].socket.getsockname()
                self.cfg.peer_listen = self.cfg.peers[self.id] = f"{host}:{bound[1]}"
            host, port = parse_addr(self.cfg.listen)
            listeners = await nursery.start(self.server.serve, host, port)
            if self.kafka_server is not None:
                await nursery.start(self.kafka_server.serve, *parse_addr(self.cfg.kafka_listen))
                log.info("node %s serving Kafka clients on %s", self.id, self.cfg.kafka_listen)
            nursery.start_soon(self.transport.run)
            nursery.start_soon(self._ticker)
            nursery.start_soon(self._gossip)
            nursery.start_soon(self._balancer)
            nursery.start_soon(self._retention)
            nursery.start_soon(self._controller_snapshots)
            nursery.start_soon(self.runtime.run)
            nursery.start_soon(self.roster.run)
            nursery.start_soon(self.mover.run)
            nursery.start_soon(self._leave_when_removed)
            if self.cfg.fsync == "interval":
                nursery.start_soon(self._interval_flusher)
            if self.cfg.metrics:
                self.metrics.serve(self.cfg.metrics, self.cfg.metrics_token)
            self.ready.set()
            log.info("node %s serving clients on %s, peers on %s", self.id, self.cfg.listen, self.cfg.peer_listen)
            task_status.started(listeners)

    async def _leave_when_removed(self) -> None:
        await self.roster.left.wait()
        await trio.sleep(1.0)  # (the controller leader hears that this node applied its removal)
        await self.shutdown()

    async def shutdown(self, transfer_timeout_s: float = 5.0) -> None:
        """Graceful stop: hand every led group to a caught-up follower, flush, close."""
        self.shutting_down = True
        with trio.move_on_after(transfer_timeout_s):
            while True:
                moving = False
                for r in self.replicas.values():
                    if not r.is_leader:
                        continue
                    target = self.transfer_target(r)
                    if target is None:
                        continue  # nobody to hand it to: the group goes down with us
                    moving = True
                    if r.core.lead_transferee == 0:
                        r.core.transfer_leadership(target)
                        r.wake()
                if not moving:
                    break
                await trio.sleep(0.02)
        for r in list(self.replicas.values()):
            await r.close()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def transfer_target(self, r: Replica) -> int | None:
        st = r.core.status()
        # Live: heard from in this check-quorum period, or (a leader that just woke from
        # quiescence has heard nobody yet) not called down by the failure detector.
        followers = [
            (p.match, pid)
            for pid, p in st.progress.items()
            if pid != r.core.id and pid in r.core.conf.voters and (p.recent_active or not self.liveness.is_down(pid))
        ]
        return max(followers)[1] if followers else None

    # -- groups ---------------------------------------------------------------------------

    def _raft_config(self, applied: int | None = None, *, partition: bool = False) -> RaftConfig:
        """A partition's followers learn a commit from what goes next, and only a quorum
        gets its entries at once (docs/raft.md, "Commit propagation" and "Thrifty
        appends"); the controller's tell every node at once."""
        return RaftConfig(
            id=self.id,
            rng=random.Random(),
            election_tick=self.cfg.election_ticks,
            heartbeat_tick=self.cfg.heartbeat_ticks,
            max_size_per_msg=1 << 20,
            applied=applied,
            quiesce=self.cfg.quiesce,
            eager_commit=not partition,
            thrifty=partition and self.cfg.thrifty_appends,
        )

    def log_config(self, configs: dict[str, str] | None = None) -> segments.LogConfig:
        configs = configs or {}
        return segments.LogConfig(
            segment_bytes=topic_config(configs, "segment.bytes", self.cfg.segment_bytes, self.cfg.config_minimums),
            segment_ms=topic_config(configs, "segment.ms", 7 * DAY_MS, self.cfg.config_minimums),
            retention_ms=topic_config(configs, "retention.ms", 7 * DAY_MS),
            retention_bytes=topic_config(configs, "retention.bytes", None),
            fsync="never",  # the node syncs once per Ready itself (group commit)
            max_batch_bytes=self.cfg.max_batch_bytes,
        )

    def _open_controller(self, joining_voters: tuple[int, ...] | None = None) -> Replica:
        """Group 0: founded by `--peers` (every node a voter), or, for a node admitted
        through `--join`, a learner of the voters it was told of until the log says more."""
        if joining_voters is None:
            voters = tuple(sorted(self.cfg.peers))
            initial = ConfState(voters=voters)
        else:
            voters = tuple(sorted(joining_voters))
            initial = ConfState(voters=voters, learners=(self.id,))
        storage = LogStorage(self.cfg.data_dir / "__controller", self.log_config(), initial)
        snap = storage.snapshot()
        if snap.data:
            self.state = decode_state(snap.data)
        core = RaftNode(self._raft_config(applied=snap.index), storage)
        self._replayed_until = core.commit  # entries up to here were applied before a restart
        if self._replayed_until <= self.state.applied:
            self._finish_replay()
        replica = Replica(
            CONTROLLER_GROUP,
            "__controller",
            storage,
            core,
            self._send_raft,
            apply=self._apply_controller,
            fsync=self.cfg.fsync == "always",
            leader_addr=self.addr_of,
            on_restore=self._restore_controller,
            ticker=self.ticker,
            syncer=self.syncer,
        )
        self.replicas[CONTROLLER_GROUP] = replica
        if voters == (self.id,) and self.cfg.join is None:  # (a joining node founds nothing)
            core.campaign()
            replica.wake()
        return replica

    def _apply_controller(self, replica: Replica, entries: list[Entry]) -> None:
        for e in entries:
            if e.kind != EntryKind.NORMAL:
                continue
            for rec in segments.decode_records(e.data):
                try:
                    cmd = decode_command(rec.value or b"")
                except msgspec.ValidationError as exc:  # a newer build's command
                    log.error("controller entry %d holds a command this build does not know; skipped: %s", e.last, exc)
                    continue
                result = self.state.apply(cmd)
                # While replaying, replicas wait: they open at the end, for the topics that are left.
                # (A topic whose configs or replicas changed opens again: its open partitions take
                # the configs, partitions it no longer hosts close.)
                if isinstance(result, TopicMeta) and not self._replaying:
                    self._open_topic(result)
                elif isinstance(cmd, DeleteTopicCmd) and result is None and not self._replaying:
                    self._close_topic(cmd.name)
                elif isinstance(cmd, ReassignCmd) and not self._replaying:
                    for name in {t for t, _, _ in cmd.moves} & set(self.state.topics):
                        self._open_topic(self.state.topics[name])
                if isinstance(cmd, (ReassignCmd, ReassignDoneCmd, DrainNodeCmd)):
                    self.mover.wake()
                if isinstance(cmd, (RegisterNodeCmd, DrainNodeCmd, ForgetNodeCmd)):
                    self.roster.sync()
                    self.roster.wake()
                self._cmd_results[e.last] = result
            self.state.applied = e.last
        if self._replaying and entries and entries[-1].last >= self._replayed_until:
            self._finish_replay()  # (checked for every kind of entry: the log may end on a no-op)
        if not self._loaded and entries:
            # Checked as each batch applies, when applied meets the commit index; asked
            # only by requests, a follower under a stream of commits could stay "loading".
            self._loaded = self._caught_up(entries[-1].last)
        if self.state.applied - replica.storage.first_index() >= self.cfg.controller_snapshot_every:
            self._controller_snapshot_due.set()

    def _restore_controller(self, snap) -> None:
        """A controller snapshot from the leader replaced our metadata log: adopt its
        state, opening and closing this node's replicas to match."""
        new = decode_state(snap.data)
        for name, meta in self.state.topics.items():
            if name not in new.topics or new.topics[name].first_group != meta.first_group:
                self._close_topic(name)  # deleted, or deleted and created again
        self.state = new
        self.roster.sync()
        if self._replaying:
            self._finish_replay()
            return
        for meta in list(new.topics.values()):
            self._open_topic(meta)

    def _finish_replay(self) -> None:
        """The controller log is re-applied up to what this node knew committed: open the
        replicas of the topics that are left, and remove the directories of deleted
        incarnations (a deletion a crash interrupted). Opening them only now means a
        topic deleted and created again under its name never has its old incarnation's
        cleanup run over the new one's data, on replay or ever."""
        self._replaying = False
        self.roster.sync()
        keep = {partition_dir(meta, p) for meta, p in self.state.partitions_of(self.id)}
        for child in sorted(self.cfg.data_dir.iterdir()) if self.cfg.data_dir.exists() else []:
            m = PARTITION_DIR.match(child.name)
            # A group at or past next_group is of a topic created after what we replayed:
            # the log will open it again.
            if m and child.name not in keep and int(m["group"]) < self.state.next_group:
                log.info("removing %s: its topic was deleted", child)
                shutil.rmtree(child, ignore_errors=True)
        for meta in list(self.state.topics.values()):
            self._open_topic(meta)

    def _open_topic(self, meta: TopicMeta) -> None:
        """Open this node's replicas of `meta` that are not open yet; those that are take
        its configs (they may have changed); those it no longer hosts (moved) close."""
        for p, replicas in enumerate(meta.replicas):
            if self.id not in meta.hosts(p):
                if (meta.name, p) in self.partitions and self.partitions[(meta.name, p)].group == meta.group(p):
                    log.info("%s-%s moved off node %s: removing its replica", meta.name, p, self.id)
                    self._close_partition(meta.name, p, moved=True)
                continue
            if (open_ := self.replicas.get(meta.group(p))) is not None:
                open_.storage.log.config = self.log_config(meta.configs)
                continue
            name = f"{meta.name}-{p}"
            path = self.cfg.data_dir / partition_dir(meta, p)
            legacy = self.cfg.data_dir / name
            if not path.exists() and legacy.is_dir():  # written before directories named their incarnation
                legacy.rename(path)
            # A replica a move adds starts as a learner of the replicas it joins (the
            # leader's configuration entries say the rest).
            learners = () if self.id in replicas else (self.id,)
            initial = ConfState(voters=tuple(sorted(replicas)), learners=learners)
            storage = LogStorage(path, self.log_config(meta.configs), initial)
            shard = self.runtime.shard_for(meta)
            saved = StateCheckpoint.read(storage)
            # A data partition's whole state is in the checkpoint: the log before it is not
            # applied again. A shard's state comes from its own snapshot and the log after.
            core = RaftNode(
                self._raft_config(saved.offset if saved and shard is None else None, partition=True), storage
            )
            for peer in self.liveness.down:  # (a member down now does not hold the new group awake)
                core.peer_down(peer)
            part = Partition(
                meta.group(p),
                name,
                storage,
                core,
                self._send_raft,
                fsync=self.cfg.fsync == "always",
                leader_addr=self.addr_of,
                on_role_change=self._role_changed,
                txn_verifier=self.transactions.verify_partition,
                intake_relayer=self.delay.relay_intake,
                topic=meta.name,
                partition=p,
                limits=self.batch_limits,
                disk=self.disk,
                producer_expiration_ms=self.cfg.producer_id_expiration_ms,
                shard=shard,
                saved=saved,
                ticker=self.ticker,
                syncer=self.syncer,
            )
            self.replicas[part.group] = part
            self.partitions[(meta.name, p)] = part
            if self._nursery is not None:
                self._nursery.start_soon(part.run)
            if replicas[0] == self.id:
                # The preferred replica campaigns at once, a new topic's or after a
                # restart: with pre-vote it cannot unseat a live leader (whose followers
                # are in its lease), and when the whole cluster restarts each group elects
                # once, where a campaign by timeout would elect whoever comes first and
                # the balancer elect again to hand it back (twice the term and vote writes).
                core.campaign()
            part.wake()

    def _close_topic(self, name: str) -> None:
        closed = [p for topic, p in list(self.partitions) if topic == name]
        for p in closed:
            self._close_partition(name, p)
        self.metrics.forget_topic(name, closed)

    def _close_partition(self, topic: str, p: int, *, moved: bool = False) -> None:
        """Close this node's replica of a partition and delete its data (`moved`: the
        partition lives on elsewhere, and its leader there is still known)."""
        part = self.partitions.pop((topic, p))
        self.replicas.pop(part.group, None)
        if not moved or self.leaders.get(part.group, (self.id,))[0] == self.id:
            self.leaders.pop(part.group, None)
        self._hw_reported.pop(part.group, None)
        self.metrics.leaders.labels(topic, str(p)).set(0)

        async def remove() -> None:
            await part.close()
            await trio.to_thread.run_sync(shutil.rmtree, part.storage.path, True)

        if self._nursery is not None:
            self._nursery.start_soon(remove)

    def _role_changed(self, replica: Replica) -> None:
        if isinstance(replica, Partition):
            self.metrics.leaders.labels(replica.topic, str(replica.partition)).set(1 if replica.is_leader else 0)
        if replica.is_leader:
            self.leaders[replica.group] = (self.id, replica.core.term)
            self._broadcast_leaders({replica.group: (self.id, replica.core.term)})

    # -- controller commands --------------------------------------------------------------

    def metadata_loaded(self) -> bool:
        """Whether this node has caught up on the controller log since it started: it
        re-applied what it had before a restart and, once, everything up to the commit
        index a live controller leader told it (or, as the leader, everything before its
        own term). The commit index on disk is saved only with a term or a vote, so it
        can lag far behind what the node once applied: trusting it alone let a restarted
        node call existing topics missing (a chaos run: a delay scheduler dropped a
        message, a transaction coordinator skipped a marker). Until then a missing topic
        may merely not be replayed yet."""
        if not self._loaded:
            self._loaded = self._caught_up(self.controller.applied)
        return self._loaded

    def _caught_up(self, applied: int) -> bool:
        c = self.controller
        leader = c.core.leader
        caught_up = c.ready_for_writes() if leader == self.id else bool(leader) and applied >= c.core.commit
        return caught_up and applied >= self._replayed_until

    def check_loaded(self) -> None:
        """A restarted node replays its controller log before it may say a topic does
        not exist (it would be believed: a delay scheduler or a transaction coordinator
        would treat the topic as deleted)."""
        if not self.metadata_loaded():
            raise CoordinatorNotAvailableError(
                f"node {self.id} is still loading the cluster metadata; retry or ask another node"
            )

    def controller_leader_check(self) -> None:
        c = self.controller
        if not c.ready_for_writes():
            leader = c.core.leader if c.core.leader != self.id else None
            raise NotControllerError(
                f"node {self.id} is not the controller"
                + (f"; node {leader} is" if leader else "; no controller elected yet"),
                leader_id=leader,
                leader_addr=self.addr_of(leader) if leader else None,
            )

    async def run_command(self, cmd, timeout_s: float = 10.0) -> object:
        """Propose a controller command and return its result once applied here."""
        self.controller_leader_check()
        data = segments.build_batch([(None, encode_command(cmd), (), None)])
        waiter = self.controller.propose(data, 1)
        entry = await self.controller.wait(waiter, timeout_s)
        result = self._cmd_results.pop(entry.last, None)
        if isinstance(result, TideMQError):
            raise result
        return result

    def ensure_internal_topic(self, name: str, partitions: int, configs: dict[str, str]) -> None:
        """Create an internal topic if it is missing (on the controller leader; a no-op
        elsewhere). Services call this from their janitors until it exists. Creations
        run one at a time, so each placement counts the topics created before it and
        the internal topics' leaders spread like any others'."""
        if (
            name in self.state.topics
            or name in self._creating
            or self._nursery is None
            or not self.controller.ready_for_writes()
        ):
            return
        self._creating.add(name)
        self._nursery.start_soon(self._create_internal_topic, name, partitions, configs)

    async def _create_internal_topic(self, name: str, partitions: int, configs: dict[str, str]) -> None:
        try:
            async with self._create_lock:
                if name in self.state.topics:
                    return
                nodes = placeable(self.state, sorted(self.cfg.peers))  # every node: created once, for good
                replicas = assign_replicas(self.state, nodes, partitions, min(3, len(nodes)))
                await self.run_command(CreateTopicCmd(name, replicas, configs, internal=True))
                log.info("created %s with %d partitions", name, partitions)
        except TopicExistsError:
            pass
        except TideMQError as exc:  # lost the controller, or a timeout: the next sweep retries
            log.info("creating %s failed, will retry: %s", name, exc.message)
        finally:
            self._creating.discard(name)

    # -- coordinators: the leader of partition hash(key) of an internal topic --------------

    def _coordinating(self, topic: str, key: str) -> tuple[int, int]:
        """(partition, Raft group) of internal `topic` that coordinates `key` (a consumer
        group in __consumer_offsets, a transactional id in __transaction_state)."""
        meta = self.state.topics.get(topic)
        if meta is None:
            raise CoordinatorNotAvailableError(f"{topic} is not created yet; retry shortly")
        p = partition_for_key(key.encode(), len(meta.replicas))
        return p, meta.group(p)

    def find_coordinator(self, topic: str, key: str, what: str) -> CoordinatorResponse:
        """Where the coordinator of `key` is, as this node knows it."""
        leader = self.leader_of(self._coordinating(topic, key)[1])
        addr = self.addr_of(leader)
        if leader is None or addr is None:
            raise CoordinatorNotAvailableError(f"the coordinator of {what} is being elected; retry shortly")
        return CoordinatorResponse(leader, addr)

    def coordinating_partition(self, topic: str, key: str, what: str) -> Partition:
        """The partition coordinating `key`, if this node leads it and has caught up;
        NOT_COORDINATOR with the leader's address otherwise (clients follow it), or
        COORDINATOR_NOT_AVAILABLE while a new leader is still applying its log."""
        p, raft_group = self._coordinating(topic, key)
        part = self.partitions.get((topic, p))
        if part is None or not part.is_leader:
            leader = self.leader_of(raft_group)
            raise NotCoordinatorError(
                f"node {self.id} does not coordinate {what}" + (f"; node {leader} does" if leader else ""),
                leader_id=leader,
                leader_addr=self.addr_of(leader),
            )
        if part.closed or not part.ready_for_writes():
            raise CoordinatorNotAvailableError(f"node {self.id} was just elected coordinator of {what} and is loading")
        return part

    def local_partition(self, topic: str, partition: int) -> Partition:
        """This node's replica of a partition (led or not), or the error that sends the
        client to the node that has one."""
        part = self.partitions.get((topic, partition))
        if part is not None:
            return part
        meta = self.state.topics.get(topic)
        if meta is None:
            self.check_loaded()
            raise UnknownTopicError(f"topic {topic!r} does not exist; create it first (Admin.create_topic)")
        if not 0 <= partition < len(meta.replicas):
            raise UnknownTopicError(f"topic {topic!r} has partitions 0..{len(meta.replicas) - 1}, not {partition}")
        leader = self.leader_of(meta.group(partition))
        raise NotLeaderError(
            f"node {self.id} holds no replica of {topic}-{partition}",
            leader_id=leader,
            leader_addr=self.addr_of(leader),
        )

    def led_partitions(self, topic: str) -> list[Partition]:
        """The partitions of `topic` this node leads and has caught up on."""
        meta = self.state.topics.get(topic)
        parts = (self.partitions.get((topic, p)) for p in range(len(meta.replicas) if meta is not None else 0))
        return [part for part in parts if part is not None and part.ready_for_writes() and not part.closed]

    def internal_client(self, purpose: str) -> ClusterClient:
        """A client for one of this node's services (delay tier, transactions, half
        messages): it reaches every node, this one first, on its peer listener, as a peer."""
        peers = [self.cfg.peers[self.id]] + [a for n, a in sorted(self.cfg.peers.items()) if n != self.id]
        return ClusterClient(
            peers,
            client_id=f"node-{self.id}-{purpose}",
            request_timeout=10.0,
            peer=self.credential,
            node_addrs=self.cfg.peers,
            ssl_context=self.tls.peer_links,
        )

    async def next_producer_id(self) -> int:
        if not self._producer_ids:
            block = await self.run_command(AllocateProducerIds(self.id))
            assert isinstance(block, range)  # the command's result: a block of ids
            self._producer_ids = list(reversed(block))
        return self._producer_ids.pop()

    # -- network --------------------------------------------------------------------------

    def addr_of(self, node: int | None) -> str | None:
        """The address clients are told for `node` (leader and coordinator hints)."""
        return self.cfg.client_addr(node) if node else None

    def _send_raft(self, group: int, to: int, msg: Message) -> None:
        if self.mover.throttled and self.mover.hold(group, to, msg):
            return
        self.transport.send(to, (group, msg))

    def _broadcast_leaders(self, leaders: dict[int, tuple[int, int]]) -> None:
        for pid in self.transport.links:
            self.transport.send(pid, leaders)

    def _on_peer_payload(self, frm: int, payload: bytes) -> None:
        whole = self._reassembler.feed(frm, payload)
        if whole is None:
            return
        try:
            batch = _peer_decoder.decode(whole)
        except msgspec.DecodeError as exc:
            log.warning("dropping a malformed peer batch from node %s: %s", frm, exc)
            return
        back, restarted = self.liveness.heard(frm, batch.incarnation or None)
        if restarted:  # (down and back at once: its groups forgot what was not durable)
            log.info("node %s restarted (a new incarnation)", frm)
            self._peer_down(frm)
        if back or restarted:
            self._peer_back(frm)
        for group, (leader, term) in batch.leaders.items():
            if leader not in self.cfg.peers or not 0 <= term <= MAX_TERM:
                continue
            known = self.leaders.get(group)
            if known is None or term >= known[1]:
                self.leaders[group] = (leader, term)
        if batch.all_leaders and frm in self.cfg.peers:
            self._check_quiet_followers(frm, batch.leaders)
            if batch.kafka and batch.kafka != self.kafka_addrs.get(frm):
                try:
                    parse_addr(batch.kafka)
                    self.kafka_addrs[frm] = batch.kafka
                except ValueError:
                    log.warning("node %s gossiped a Kafka address that is not HOST:PORT: %r", frm, batch.kafka)
        for group, msg in batch.messages:
            replica = self.replicas.get(group)
            if replica is not None and not replica.closed:
                conf = replica.core.conf
                why = peer_refusal(frm, self.id, conf.members(), msg, learning=self.id not in conf.voters)
                if why is not None:
                    log.warning("%s: dropping %s from node %s: it %s", replica.name, type(msg).__name__, frm, why)
                    self.metrics.peer_messages_refused.inc()
                    continue
                try:
                    replica.step(msg)
                except Exception:  # one group's failure must not cut the link every group shares
                    log.exception("%s: message from node %s failed: %r", replica.name, frm, msg)

    def leader_of(self, group: int) -> int | None:
        replica = self.replicas.get(group)
        known = self.leaders.get(group)
        if replica is not None and not replica.closed:
            if replica.core.leader:
                return replica.core.leader
            # A replica that knows of no leader (an election; or it led, and stepped down
            # when cut off from its peers) must not name the one it last heard of, least
            # of all itself: clients would come back here. Only one of a later term.
            return known[0] if known and known[1] > replica.core.term else None
        if replica is not None and known and known[0] == self.id:
            return None  # ours went offline (a storage error): the peers elect another
        return known[0] if known else None

    def live_nodes(self) -> list[int]:
        return sorted([self.id] + [pid for pid, link in self.transport.links.items() if link.connected])

    # -- periodic work ----------------------------------------------------------------------

    def _peer_down(self, peer: int) -> None:
        """The failure detector lost `peer`, or saw it restart: every group it is a member
        of hears of it (a quiet one wakes; followers of a leader there stop waiting for it)."""
        for replica in list(self.replicas.values()):
            if not replica.closed and peer in replica.core.conf.members():
                replica.core.peer_down(peer)
                replica.wake()

    def _peer_back(self, peer: int) -> None:
        """`peer` is heard from again after the failure detector lost it (or restarted):
        it holds its groups awake again, and those this node leads quietly wake and speak
        to it (they went quiet without it, and it learns nothing until spoken to)."""
        for replica in list(self.replicas.values()):
            core = replica.core
            if not replica.closed and peer in core.peers_down:
                core.peer_back(peer)
                if not core.quiescent:
                    replica.wake()

    def _check_quiet_followers(self, frm: int, led: dict[int, tuple[int, int]]) -> None:
        """`frm`'s gossip names every group it leads. A quiet follower of `frm` whose
        group is not among them (at our term) would wait for a leader that no longer
        leads (its replica there went offline): it is told its leader is gone. The link
        delivers in order, so a group `frm` began to lead after this gossip was made
        cannot have gone quiet before it arrived."""
        for group, replica in self.replicas.items():
            core = replica.core
            if core.quiescent and core.role == Role.FOLLOWER and core.leader == frm and not replica.closed:
                if led.get(group) != (frm, core.term):
                    core.leader_gone()
                    replica.wake()

    async def _ticker(self) -> None:
        """One task for every group's time: ticks the groups that are not quiet (a quiet
        one needs none), sends the node-level heartbeat, runs the failure detector."""
        interval = self.cfg.tick_ms / 1000
        for n in itertools.count(1):
            await trio.sleep(interval)
            self.ticker.tick()
            if n % self.cfg.heartbeat_ticks == 0:
                for pid, link in self.transport.links.items():
                    # Any frame is a heartbeat: send one only if none left since the last.
                    sent = link.frames_sent
                    if not link.outbox and sent == self._beat_frames.get(pid):
                        link.send(BEAT)
                        sent += 1  # (the frame carrying it)
                    self._beat_frames[pid] = sent
            for peer in self.liveness.tick():
                log.info("node %s: no word from node %s for %d ticks", self.id, peer, self.liveness.timeout)
                self._peer_down(peer)

    async def _gossip(self) -> None:
        for n in itertools.count():
            await trio.sleep(GOSSIP_INTERVAL_S)
            led = AllLeaders(
                (g, (self.id, r.core.term)) for g, r in self.replicas.items() if r.is_leader and not r.closed
            )
            self.leaders.update(led)
            if n % GOSSIP_FULL_EVERY == 0:
                self._broadcast_leaders(led)
            else:
                gossiped = self._gossiped
                changed = {g: v for g, v in led.items() if gossiped.get(g) != v}
                if changed:
                    self._broadcast_leaders(changed)
            self._gossiped = led
            under = 0
            reported = self._hw_reported
            for (topic, p), part in self.partitions.items():
                if part.is_leader:
                    hw = part.high_watermark
                    if reported.get(part.group) != hw:
                        reported[part.group] = hw
                        self.metrics.high_watermark.labels(topic, str(p)).set(hw)
                    under += part.core.lagging()
            self.metrics.under_replicated.set(under)
            self.metrics.awake_groups.set(len(self.ticker))
            self.metrics.peers_down.set(len(self.liveness.down))
            self.metrics.fsyncs.set(sum(r.fsyncs for r in self.replicas.values()))
            self.metrics.fsyncs_in_kernel.set(self.syncer.syncs)
            self.metrics.apply_errors.set(sum(r.apply_errors for r in self.replicas.values()))

    async def _balancer(self) -> None:
        """Give leadership back to each partition's preferred replica once it has caught up."""
        while True:
            await trio.sleep(BALANCE_INTERVAL_S)
            if self.shutting_down:
                continue
            for part in list(self.partitions.values()):
                meta = self.state.topics.get(part.topic)
                if meta is None or not part.is_leader or part.core.lead_transferee or part.partition in meta.moving:
                    continue  # (a moving partition's leadership is the move's: node/moves.py)
                preferred = meta.replicas[part.partition][0]
                if preferred == self.id:
                    continue
                st = part.core.status()
                pr = st.progress.get(preferred)
                if pr is not None and pr.recent_active and pr.match == st.last_index:
                    part.core.transfer_leadership(preferred)
                    part.wake()

    async def _interval_flusher(self) -> None:
        while True:
            await trio.sleep(self.cfg.fsync_interval_ms / 1000)
            for r in list(self.replicas.values()):
                await r.sync()

    async def _controller_snapshots(self) -> None:
        """Snapshot the controller state once enough entries piled up (off the apply
        path, so its fsyncs run in a worker thread)."""
        while True:
            await self._controller_snapshot_due.wait()
            self._controller_snapshot_due = trio.Event()
            await self.controller.snapshot_state(self.cfg.controller_snapshot_every, lambda: encode_state(self.state))

    async def _retention(self) -> None:
        """Delete old segments by each topic's retention.ms / retention.bytes; a follower
        that falls behind the new log start is sent a snapshot and restarts from it."""
        while True:
            await trio.sleep(self.cfg.retention_check_ms / 1000)
            for part in list(self.partitions.values()):
                await part.apply_retention(int(time.time() * 1000))


class _Admitted:
    """The peer listener's test of a node id (`Server.peer_ids`): the roster's."""

    def __init__(self, roster: Roster) -> None:
        self.roster = roster

    def __contains__(self, node_id: object) -> bool:
        return isinstance(node_id, int) and self.roster.admits(node_id)


async def serve(config: NodeConfig) -> None:
    """Run a node until SIGTERM/SIGINT (or until it is removed from the cluster), then
    shut down gracefully."""
    broker = Broker(config)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:

        async def on_signal() -> None:
            async for sig in signals:
                log.info("node %s: signal %s, shutting down", config.node_id, signal.Signals(sig).name)
                await broker.shutdown()
                return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(on_signal)
            await broker.run()
            nursery.cancel_scope.cancel()
