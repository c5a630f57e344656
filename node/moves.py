"""Replica moves: a partition's Raft group going from its replicas to a target, online.

The controller writes the target (`ReassignCmd`: from `tidemq topic reassign`, `tidemq
cluster rebalance` or a node being drained); every node of the target opens a replica;
the partition's leader then takes one membership step at a time (raft.core: single
server changes), so the group never has fewer voters than it started or ended with:

1. each new node joins as a learner and is sent the log (throttled, `--throttle`);
2. a learner that has caught up (it holds everything committed) is promoted to voter;
3. once every target node votes, the nodes not in the target are removed (the leader,
   if it is one of them, hands its leadership to a target node first);
4. the leader tells the controller (`ReassignDone`), which makes the target the
   partition's replicas; nodes no longer hosting it close and delete their copy.

Writes and reads go on throughout: only the leader's membership proposals wait, and a
commit needs a majority of the voters of the moment. Each step is taken by looking at
the group's configuration, so a new leader after a failover simply carries on.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING

import trio

from client.cluster import ClusterClient
from client.errors import InvalidRequestError, TideMQError, UnknownTopicError
from client.protocol import Ok, PlannedMove, Reassign, Rebalance, RebalanceResponse
from node.context import now_ms
from node.metadata import Move, ReassignCmd, ReassignDoneCmd, TopicMeta
from node.peerprotocol import ReassignDone
from node.placement import placeable, rebalance_moves
from raft.core import ProposalDropped, RaftNode
from raft.types import Append, ConfChange, ConfChangeOp, InstallSnapshot, Message

if TYPE_CHECKING:
    from node.context import Elastic
    from node.partition import Partition

log = logging.getLogger(__name__)

STEP_S = 0.2


class _Lane:
    """Raft messages of one moving group to one learner, sent at most `rate` bytes/s."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.queue: deque[Message] = deque()
        self.wakeup = trio.Event()
        self.next_free = 0.0  # when the bytes sent so far are paid for (trio's clock)

    def cost(self, msg: Message) -> float:
        """Seconds `msg` takes of the lane's rate."""
        if isinstance(msg, Append):
            return sum(len(e.data) for e in msg.entries) / self.rate
        if isinstance(msg, InstallSnapshot):
            return len(msg.snapshot.data) / self.rate
        return 0.0


class Mover:
    def __init__(self, broker: Elastic) -> None:
        self.b = broker
        self._wakeup = trio.Event()
        self._reporting: set[int] = set()
        #: Moving groups this node leads with a throttle: group -> bytes/s.
        self.throttled: dict[int, int] = {}
        self._lanes: dict[tuple[int, int], _Lane] = {}
        self._nursery: trio.Nursery | None = None
        self._client: ClusterClient | None = None
        self._gauged: set[tuple[str, str, str]] = set()  # move_behind label sets this node set

    def wake(self) -> None:
        self._wakeup.set()

    # -- requests (controller leader) ---------------------------------------------------------

    def _check_target(self, meta: TopicMeta, partition: int, target: list[int]) -> None:
        b = self.b
        if not b.state.members:
            raise InvalidRequestError("the controller is still writing the cluster's nodes into its roster; retry")
        if not 0 <= partition < len(meta.replicas):
            raise UnknownTopicError(f"topic {meta.name!r} has partitions 0..{len(meta.replicas) - 1}, not {partition}")
        if partition in meta.moving:
            raise InvalidRequestError(
                f"{meta.name}-{partition} is already moving to {meta.moving[partition].target}; wait for it"
            )
        if not target or len(set(target)) != len(target):
            raise InvalidRequestError(f"replicas must be distinct node ids, got {target}")
        unknown = [n for n in target if n not in b.state.members]
        if unknown:
            raise InvalidRequestError(f"nodes {unknown} are not members of the cluster")
        leaving = [n for n in target if b.state.members[n].draining]
        if leaving:
            raise InvalidRequestError(f"nodes {leaving} are leaving the cluster")

    async def reassign(self, req: Reassign) -> Ok:
        b = self.b
        b.controller_leader_check()
        meta = b.state.topics.get(req.topic)
        if meta is None:
            raise UnknownTopicError(f"topic {req.topic!r} does not exist")
        if not req.cancel:  # (a cancel of a partition not moving: the command refuses it)
            self._check_target(meta, req.partition, req.replicas)
        cmd = ReassignCmd(
            [(req.topic, req.partition, list(req.replicas))], max(req.throttle, 0), now_ms(), cancel=req.cancel
        )
        await b.run_command(cmd)
        return Ok()

    async def rebalance(self, req: Rebalance) -> RebalanceResponse:
        b = self.b
        b.controller_leader_check()
        nodes = placeable(b.state, sorted(b.state.members))
        moves = rebalance_moves(b.state, nodes)
        planned = [PlannedMove(t, p, list(b.state.topics[t].replicas[p]), target) for t, p, target in moves]
        if moves and not req.dry_run:
            await b.run_command(ReassignCmd(moves, max(req.throttle, 0), now_ms()))
        return RebalanceResponse(planned)

    async def reassign_done(self, req: ReassignDone) -> Ok:
        await self.b.run_command(ReassignDoneCmd(req.topic, req.partition, req.group, list(req.replicas)))
        return Ok()

    # -- the partition leader's steps -----------------------------------------------------

    async def run(self) -> None:
        async with self.b.internal_client("moves") as client, trio.open_nursery() as nursery:
            self._client = client
            self._nursery = nursery
            while True:
                with trio.move_on_after(STEP_S):
                    await self._wakeup.wait()
                self._wakeup = trio.Event()
                self._step_all()

    def _step_all(self) -> None:
        b = self.b
        throttled: dict[int, int] = {}
        gauged: set[tuple[str, str, str]] = set()
        for meta in list(b.state.topics.values()):
            for p, move in meta.moving.items():
                part = b.partitions.get((meta.name, p))
                if part is None or part.closed or not part.ready_for_writes():
                    continue
                if move.throttle > 0:
                    throttled[part.group] = move.throttle
                gauged |= self._report_progress(part, move)
                try:
                    self._step(part, meta, p, move)
                except ProposalDropped:
                    pass  # (a change still uncommitted, a transfer under way: next round)
                except TideMQError as exc:
                    log.info("%s: move step failed, retrying: %s", part.name, exc.message)
        self.throttled = throttled
        for labels in self._gauged - gauged:
            self.b.metrics.move_behind.remove(*labels)
        self._gauged = gauged
        for key in [k for k in self._lanes if k[0] not in throttled]:
            self._lanes[key].wakeup.set()  # (its task sends what is left and ends)

    def _report_progress(self, part: Partition, move: Move) -> set[tuple[str, str, str]]:
        core = part.core
        labels = set()
        for n, behind in behind_of(core, move.target).items():
            labels.add((part.topic, str(part.partition), str(n)))
            self.b.metrics.move_behind.labels(part.topic, str(part.partition), str(n)).set(behind)
        return labels

    def _step(self, part: Partition, meta: TopicMeta, p: int, move: Move) -> None:
        core = part.core
        if core.pending_conf_index > core.log.committed or core.lead_transferee:
            return
        conf = core.conf
        target = move.target
        members = conf.members()
        for n in target:
            if n not in members:
                log.info("%s: node %s joins as a learner", part.name, n)
                part.propose_conf(ConfChange(ConfChangeOp.ADD_LEARNER, n))
                return
        for n in conf.learners:
            if n not in target:
                part.propose_conf(ConfChange(ConfChangeOp.REMOVE, n))
                return
            pr = core.prs.get(n)
            if pr is not None and pr.match >= core.log.committed:
                log.info("%s: node %s caught up; it now votes", part.name, n)
                part.propose_conf(ConfChange(ConfChangeOp.PROMOTE, n))
                return
        if conf.learners:
            return  # still catching up
        for n in conf.voters:
            if n in target:
                continue
            if n == self.b.id:
                to = max(target, key=lambda t: (core.prs[t].match, t == target[0]))
                log.info("%s: handing leadership to node %s before leaving the group", part.name, to)
                core.transfer_leadership(to)
                part.wake()
                return
            log.info("%s: node %s leaves the group", part.name, n)
            part.propose_conf(ConfChange(ConfChangeOp.REMOVE, n))
            return
        if part.group not in self._reporting and self._nursery is not None:
            self._reporting.add(part.group)
            self._nursery.start_soon(self._report, ReassignDone(meta.name, p, part.group, list(target)))

    async def _report(self, done: ReassignDone) -> None:
        try:
            if self.b.controller.ready_for_writes():
                await self.reassign_done(done)
            elif self._client is not None:
                await self._client.controller_request(done)
            log.info("%s-%s moved to %s", done.topic, done.partition, done.replicas)
        except InvalidRequestError as exc:  # closed already (a report before this one, seen late)
            log.info("%s-%s: nothing to report: %s", done.topic, done.partition, exc)
        except TideMQError as exc:
            log.info(
                "%s-%s: telling the controller the move is done failed, retrying: %s", done.topic, done.partition, exc
            )
        finally:
            self._reporting.discard(done.group)

    # -- the throttle -----------------------------------------------------------------------

    def hold(self, group: int, to: int, msg: Message) -> bool:
        """Take a Raft message of a throttled moving group to one of its learners (sent
        at the move's rate, in order); False: send it as usual."""
        rate = self.throttled.get(group)
        replica = self.b.replicas.get(group)
        if rate is None or replica is None or to not in replica.core.conf.learners or self._nursery is None:
            return False
        lane = self._lanes.get((group, to))
        if lane is None:
            lane = self._lanes[(group, to)] = _Lane(rate)
            self._nursery.start_soon(self._drain, group, to, lane)
        lane.queue.append(msg)
        lane.wakeup.set()
        return True

    async def _drain(self, group: int, to: int, lane: _Lane) -> None:
        transport = self.b.transport
        while True:
            await lane.wakeup.wait()
            lane.wakeup = trio.Event()
            while lane.queue:
                msg = lane.queue.popleft()
                replica = self.b.replicas.get(group)
                still = group in self.throttled and replica is not None and to in replica.core.conf.learners
                if still:  # (a message leaves once the rate has paid for its bytes)
                    now = trio.current_time()
                    lane.next_free = max(now, lane.next_free) + lane.cost(msg)
                    await trio.sleep_until(lane.next_free)
                transport.send(to, (group, msg))
            if group not in self.throttled:
                self._lanes.pop((group, to), None)
                return


def behind_of(core: RaftNode, target: list[int]) -> dict[int, int]:
    """On a moving partition's leader: how many offsets each target node not voting
    yet still lacks."""
    last = core.log.last_index()
    out = {}
    for n in target:
        if n in core.conf.voters:
            continue
        pr = core.prs.get(n)
        out[n] = max(last - pr.match, 0) if pr is not None else last + 1
    return out
