"""The cluster's nodes: who they are, where they listen, and how one joins or leaves.

The roster lives in the controller's replicated state (`ClusterState.members`, written by
`RegisterNodeCmd`, `DrainNodeCmd`, `ForgetNodeCmd`), so a node restarted with its old
`--peers` flags still knows a node that joined later and never again talks to one that
left. The founding nodes are the `--peers` of the first start; the controller's first
leader writes them in.

Joining: a node started with `--join HOST:PORT` (any member's peer listener) announces
itself until an operator admits it (`tidemq cluster add-node ID HOST:PORT`, naming the
peer listener it announced). The controller leader then registers it, adds it to the
controller group as a learner and promotes it to voter once it has caught up; from then
on new topics and `tidemq cluster rebalance` place replicas on it.

Leaving (`tidemq cluster remove-node ID`): the node is marked draining (no new
replicas), every replica it hosts moves to the other nodes (node/moves.py), then it is
forgotten (the removed node sees that and stops) and removed from the controller group.
The controller leader hands its leadership on first if it is the one leaving.

Each step is the controller leader's reconciler looking at the replicated state and
taking the next one, so a new controller leader simply carries on.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from client.cluster import ClusterClient
from client.errors import InvalidRequestError, TideMQError
from client.protocol import AddNode, MetadataResponse, NodeInfo, Ok, RemoveNode
from node.context import now_ms
from node.metadata import DrainNodeCmd, ForgetNodeCmd, ReassignCmd, RegisterNodeCmd
from node.peerprotocol import JoinCluster
from node.placement import drain_moves, placeable
from raft.core import ProposalDropped
from raft.types import ConfChange, ConfChangeOp

if TYPE_CHECKING:
    from node.context import Elastic, Node

log = logging.getLogger(__name__)

RECONCILE_S = 0.5
JOIN_RETRY_S = 1.0
CONF_CHANGE_TIMEOUT_S = 10.0
MAX_WAITING = 100  # nodes announced and not admitted, on the controller leader


def node_infos(node: Node, live: set[int], *, with_peer: bool = False) -> list[NodeInfo]:
    """The cluster's nodes as metadata names them, each with its place in the controller
    group (the address books follow the roster: `Roster.sync`)."""
    conf = node.controller.core.conf
    members, removed = node.state.members, node.state.removed
    infos = []
    for n, peer in sorted(node.cfg.peers.items()):
        if n in removed or (n in members and members[n].draining):
            state = "draining"
        else:
            state = "voter" if n in conf.voters else "learner" if n in conf.learners else ""
        infos.append(NodeInfo(n, node.cfg.advertise.get(n, ""), n in live, state, peer if with_peer else ""))
    return infos


class Roster:
    def __init__(self, broker: Elastic) -> None:
        self.b = broker
        cfg = broker.cfg
        # The addresses this node's flags give (its own view of the network: they win over
        # the roster's); without --join they are the founding nodes too.
        self.book = {n: (addr, cfg.advertise.get(n, "")) for n, addr in cfg.peers.items()}
        self.founders = {} if cfg.join else dict(self.book)
        self._announced: dict[int, tuple[str, str]] = {}  # controller leader: joiners not admitted yet
        self._client: ClusterClient | None = None
        self._wakeup = trio.Event()
        self.left = trio.Event()  # this node was removed from the cluster
        self._stuck: set[int] = set()  # draining nodes already said to wait for room

    # -- what every node knows ------------------------------------------------------------

    def table(self) -> dict[int, tuple[str, str]]:
        """Every node of the cluster: (peer listener, client address)."""
        state = self.b.state
        table = {n: (e.peer, e.client) for n, e in state.members.items()}
        table.update({n: e for n, e in self.founders.items() if n not in state.removed})
        table.update({n: e for n, e in self.book.items() if n in table})
        return table

    def admits(self, node_id: int) -> bool:
        """Whether a node proving the peer secret may open a peer link: any but a
        removed one (a joiner is not in the roster yet when it announces itself)."""
        return node_id > 0 and node_id not in self.b.state.removed

    def sync(self) -> None:
        """Make the links, the failure detector and the address books match the roster
        (after each roster command applies, and now and then: a removed node is dropped
        once it is out of the controller group too)."""
        b = self.b
        table = self.table()
        for n, (peer, client) in table.items():
            b.cfg.peers[n] = peer
            b.cfg.advertise[n] = client
            if n != b.id:
                b.transport.add(n, peer)
                b.liveness.watch(n)
        # Only a removed node is dropped (one merely missing may not be replayed yet),
        # once it is out of the controller group too (it hears of its removal first).
        in_group = b.controller.core.conf.members() if hasattr(b, "controller") else ()  # (none while it opens)
        for n in [n for n in b.cfg.peers if n in b.state.removed and n not in in_group and n != b.id]:
            log.info("node %s left the cluster: no longer linked", n)
            b.cfg.peers.pop(n, None)
            b.cfg.advertise.pop(n, None)
            b.transport.drop(n)
            b.liveness.forget(n)
            b.kafka_addrs.pop(n, None)  # (Kafka clients are no longer told of it)
            for group in [g for g, (leader, _) in b.leaders.items() if leader == n]:
                del b.leaders[group]
        if b.id in b.state.removed and not self.left.is_set():
            log.warning("node %s was removed from the cluster; it stops", b.id)
            self.left.set()

    def wake(self) -> None:
        self._wakeup.set()

    # -- joining --------------------------------------------------------------------------

    async def join(self) -> tuple[int, ...]:
        """Announce this node through `--join` until it is admitted; then learn the
        roster. Returns the controller group's voters (this node starts as a learner)."""
        b = self.b
        cfg = b.cfg
        assert cfg.join is not None
        req = JoinCluster(b.id, cfg.peer_listen, cfg.advertise[b.id])
        told = False
        async with ClusterClient(
            [cfg.join], client_id=f"node-{b.id}-join", peer=b.credential, ssl_context=b.tls.peer_links
        ) as client:
            while True:
                try:
                    md: MetadataResponse = await client.request(cfg.join, req)
                except (TideMQError, OSError) as exc:
                    log.warning("node %s: joining through %s failed, retrying: %s", b.id, cfg.join, exc)
                else:
                    if any(n.node_id == b.id for n in md.nodes):
                        for n in md.nodes:
                            if n.node_id != b.id and n.peer and n.node_id not in self.book:
                                cfg.peers[n.node_id] = n.peer
                                cfg.advertise[n.node_id] = n.addr
                                b.transport.add(n.node_id, n.peer)
                                b.liveness.watch(n.node_id)
                        log.info("node %s was admitted to the cluster", b.id)
                        return tuple(n.node_id for n in md.nodes if n.state == "voter")
                    if not told:
                        log.info(
                            "node %s asked to join; admit it with: tidemq cluster add-node %s %s",
                            b.id,
                            b.id,
                            cfg.peer_listen,
                        )
                        told = True
                await trio.sleep(JOIN_RETRY_S)

    # -- requests -------------------------------------------------------------------------

    def _internal(self) -> ClusterClient:
        if self._client is None:
            raise InvalidRequestError(f"node {self.b.id} is still starting; retry")
        return self._client

    async def join_cluster(self, req: JoinCluster) -> MetadataResponse:
        b = self.b
        if not b.controller.ready_for_writes():
            return await self._internal().controller_request(req)
        if req.node_id in b.state.removed or req.node_id < 1:
            raise InvalidRequestError(f"node id {req.node_id} was removed from this cluster; start it with a new id")
        if req.node_id not in b.state.members:
            if req.node_id not in self._announced and len(self._announced) >= MAX_WAITING:
                raise InvalidRequestError(f"{MAX_WAITING} nodes are waiting to be admitted already; admit or stop some")
            self._announced[req.node_id] = (req.peer, req.client)
        return MetadataResponse(node_infos(b, set(b.live_nodes()), with_peer=True), [], b.controller.core.leader)

    async def add_node(self, req: AddNode) -> Ok:
        b = self.b
        b.controller_leader_check()
        member = b.state.members.get(req.node_id)
        if member is not None:
            if member.peer != req.peer:
                raise InvalidRequestError(f"node {req.node_id} is already a member, at {member.peer}")
            return Ok()
        if req.node_id in b.state.removed:
            raise InvalidRequestError(f"node {req.node_id} was removed from this cluster; a new node needs a new id")
        announced = self._announced.get(req.node_id)
        if announced is None:
            raise InvalidRequestError(
                f"node {req.node_id} has not asked to join: start it with --join HOST:PORT (a member's peer "
                f"listener) and the cluster's peer secret, then run this again"
            )
        if announced[0] != req.peer:  # (the operator's word: the nodes may reach it through a proxy or NAT)
            log.info("node %s listens on %s; the cluster reaches it at %s", req.node_id, announced[0], req.peer)
        await b.run_command(RegisterNodeCmd(req.node_id, req.peer, announced[1]))
        self._announced.pop(req.node_id, None)
        self.wake()
        return Ok()

    async def remove_node(self, req: RemoveNode) -> Ok:
        b = self.b
        b.controller_leader_check()
        state = b.state
        if req.node_id in state.removed:
            raise InvalidRequestError(f"node {req.node_id} was removed already")
        if req.node_id not in self.table():
            raise InvalidRequestError(f"node {req.node_id} is not a member of the cluster")
        if req.node_id not in state.members:
            raise InvalidRequestError("the controller is still writing the founding nodes into the roster; retry")
        if state.members[req.node_id].draining:
            return Ok()
        onto = [
            f"{m.name}-{p}" for m in state.topics.values() for p, mv in m.moving.items() if req.node_id in mv.target
        ]
        if onto:
            raise InvalidRequestError(
                f"replicas are moving onto node {req.node_id} ({', '.join(onto[:3])}); remove it once they arrive"
            )
        others = placeable(state, [n for n in state.members if n != req.node_id])
        if not others:
            raise InvalidRequestError(f"node {req.node_id} is the last node of the cluster")
        try:
            drain_moves(state, req.node_id, others)
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from None
        await b.run_command(DrainNodeCmd(req.node_id, req.throttle))
        self.wake()
        return Ok()

    # -- the controller leader's reconciler --------------------------------------------------

    async def run(self) -> None:
        async with self.b.internal_client("roster") as client:
            self._client = client
            while True:
                with trio.move_on_after(RECONCILE_S):
                    await self._wakeup.wait()
                self._wakeup = trio.Event()
                self.sync()
                c = self.b.controller
                if not c.ready_for_writes() or not self.b.metadata_loaded() or self.b.shutting_down:
                    self._announced.clear()
                    continue
                try:
                    await self._reconcile()
                except (TideMQError, ProposalDropped) as exc:  # lost the leadership, a timeout: next round
                    log.info("roster: %s; retrying", getattr(exc, "message", exc))

    async def _reconcile(self) -> None:
        """Take the next step the roster needs, at most one membership change a round."""
        b = self.b
        state = b.state
        for n, (peer, client) in self.founders.items():
            if n not in state.members and n not in state.removed:
                await b.run_command(RegisterNodeCmd(n, peer, client))
        core = b.controller.core
        conf = core.conf
        for n, entry in sorted(state.members.items()):
            if entry.draining:
                continue
            if n not in conf.voters and n not in conf.learners:
                log.info("roster: node %s joins the controller group as a learner", n)
                await self._change(ConfChangeOp.ADD_LEARNER, n)
                return
            pr = core.prs.get(n)
            if n in conf.learners and pr is not None and pr.match >= core.commit:
                log.info("roster: node %s caught up; it now votes", n)
                await self._change(ConfChangeOp.PROMOTE, n)
                return
        for n, entry in sorted(state.members.items()):
            if not entry.draining:
                continue
            if any(n in meta.hosts(p) for meta in state.topics.values() for p in range(len(meta.replicas))):
                others = placeable(state, list(state.members))
                try:
                    moves = drain_moves(state, n, [m for m in others if m != n])
                except ValueError as exc:  # (nodes left since it was accepted: it waits for one to join)
                    if n not in self._stuck:
                        log.warning("roster: node %s cannot be drained now: %s", n, exc)
                        self._stuck.add(n)
                    continue
                if moves:
                    log.info("roster: moving %d replicas off node %s", len(moves), n)
                    await b.run_command(ReassignCmd(moves, entry.drain_throttle, now_ms()))
                continue
            if n == b.id:  # the leaving node leads the controller: hand it on first
                to = b.transfer_target(b.controller)
                if to is not None and not core.lead_transferee:
                    core.transfer_leadership(to)
                    b.controller.wake()
                return
            await b.run_command(ForgetNodeCmd(n))
            log.info("roster: node %s hosts nothing now and was removed", n)
            return
        for n in state.removed:
            if n in conf.members():
                await self._change(ConfChangeOp.REMOVE, n)
                return

    async def _change(self, op: ConfChangeOp, node: int) -> None:
        c = self.b.controller
        await c.wait(c.propose_conf(ConfChange(op, node)), CONF_CHANGE_TIMEOUT_S)
