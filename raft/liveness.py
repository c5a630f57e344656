"""Which peers this node hears from: a node-level failure detector, sans I/O.

Quiescent Raft groups (docs/raft.md, "Idle groups: quiescence") send nothing, so a
follower cannot tell a quiet leader from a dead one by the group's own messages. The
node can: every node sends each peer a small node-level heartbeat every heartbeat
interval (one per node pair, whatever the number of groups), and anything received from
a peer (a heartbeat or any group's message) counts as hearing from it. A peer not heard
from for `timeout` ticks is *down*; a peer whose heartbeat names a new incarnation (it
restarted) is reported down once too, since its groups forgot everything they had not
made durable, leadership included. The caller then tells every group that has the peer
as a member (`RaftNode.peer_down`): those that were quiet wake up, and followers of a
lost leader give up their lease and elect another.

Like the core, it has no clock: the caller feeds it ticks (`tick`) and what it hears
(`heard`). The node (`node/broker.py`) and the simulator (`raft/simulator.py`) both
drive this same class.
"""

from __future__ import annotations

from collections.abc import Iterable


class PeerLiveness:
    """Ticks since each peer was last heard from, and which peers are down."""

    def __init__(self, peers: Iterable[int], timeout: int) -> None:
        if timeout < 1:
            raise ValueError("timeout must be at least one tick")
        self.timeout = timeout
        self.silent: dict[int, int] = {p: 0 for p in peers}  #: ticks since last heard
        self.incarnation: dict[int, int] = {}  #: the last incarnation each peer announced
        self.down: set[int] = set()

    def tick(self) -> list[int]:
        """One tick passed; the peers that are down from now on (newly)."""
        went: list[int] = []
        for p, n in self.silent.items():
            n += 1
            self.silent[p] = n
            if n >= self.timeout and p not in self.down:
                self.down.add(p)
                went.append(p)
        return went

    def heard(self, peer: int, incarnation: int | None = None) -> tuple[bool, bool]:
        """Something arrived from `peer` (`incarnation`: what its node-level heartbeat
        says, None for anything else). Returns (back, restarted): it was down until now;
        it restarted since it was last heard (a new incarnation)."""
        if peer not in self.silent:
            return False, False
        self.silent[peer] = 0
        back = peer in self.down
        if back:
            self.down.discard(peer)
        restarted = False
        if incarnation is not None:
            known = self.incarnation.get(peer)
            restarted = known is not None and known != incarnation
            self.incarnation[peer] = incarnation
        return back, restarted

    def watch(self, peer: int) -> None:
        """A peer that joined the cluster: heard from now, as far as we know."""
        self.silent.setdefault(peer, 0)

    def forget(self, peer: int) -> None:
        """A peer that left the cluster."""
        self.silent.pop(peer, None)
        self.incarnation.pop(peer, None)
        self.down.discard(peer)

    def is_down(self, peer: int) -> bool:
        return peer in self.down
