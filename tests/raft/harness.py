"""A tiny synchronous network of RaftNodes for unit tests.

Unlike the simulator it has no clock or randomness of its own: tests decide
exactly which messages move, which lets each test pin down one rule.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from raft import (
    Config,
    ConfState,
    Entry,
    MemoryStorage,
    Message,
    RaftNode,
    Ready,
    Role,
    Snapshot,
)
from raft.driver import MemoryWriter, ReadyDriver, run_now, run_sync


def make_node(
    node_id: int,
    voters: Iterable[int] = (1, 2, 3),
    learners: Iterable[int] = (),
    storage: MemoryStorage | None = None,
    seed: int | None = None,
    **cfg: object,
) -> tuple[RaftNode, MemoryStorage]:
    st = storage if storage is not None else MemoryStorage(ConfState(tuple(voters), tuple(learners)))
    node = RaftNode(Config(id=node_id, rng=random.Random(node_id if seed is None else seed), **cfg), st)
    return node, st


class _Collect:
    """The harness as a driver host: messages are handed back in the Ready, applied
    entries collected."""

    def __init__(self, applied: list[Entry] | None) -> None:
        self.applied = applied

    def restored(self, snap: Snapshot) -> None:
        pass

    def persisted(self, rd: Ready) -> None:
        pass

    def send(self, msg: Message) -> None:
        pass  # the caller moves rd.messages

    def apply(self, rd: Ready) -> None:
        if self.applied is not None:
            self.applied.extend(rd.committed_entries)

    def advanced(self, rd: Ready) -> None:
        pass


def persist(node: RaftNode, st: MemoryStorage, applied: list[Entry] | None = None) -> Ready:
    """Handle one Ready through the shared driver (raft.driver) on a memory disk."""
    driver = ReadyDriver(node, MemoryWriter(st), _Collect(applied), run_now)
    rd: Ready = run_sync(driver.handle_ready())
    return rd


def drain(node: RaftNode, st: MemoryStorage) -> list[Message]:
    """Persist everything pending and return the messages it released."""
    out: list[Message] = []
    while node.has_ready():
        out.extend(persist(node, st).messages)
    return out


class Cluster:
    def __init__(self, ids: Iterable[int] = (1, 2, 3), learners: Iterable[int] = (), **cfg: object) -> None:
        ids = tuple(ids)
        learners = tuple(learners)
        self.cfg = cfg
        self.storage: dict[int, MemoryStorage] = {}
        self.nodes: dict[int, RaftNode] = {}
        self.applied: dict[int, list[Entry]] = {}
        for i in ids + learners:
            self.nodes[i], self.storage[i] = make_node(i, ids, learners, **cfg)
            self.applied[i] = []
        self.blocked: set[tuple[int, int]] = set()
        self.down: set[int] = set()
        self.sent: list[Message] = []  # every message that left a node, for assertions
        self.drop_if: Callable[[Message], bool] | None = None  # lose matching messages
        self.inflight: list[Message] = []

    def add_node(self, i: int, conf: ConfState = ConfState()) -> None:
        """A new empty replica (e.g. to be added as a learner)."""
        self.nodes[i], self.storage[i] = make_node(i, storage=MemoryStorage(conf), **self.cfg)
        self.applied[i] = []

    # -- moving things ------------------------------------------------------------

    def persist_all(self) -> bool:
        moved = False
        for i, n in self.nodes.items():
            if i in self.down:
                continue
            while n.has_ready():
                rd = persist(n, self.storage[i], self.applied[i])
                self.inflight.extend(rd.messages)
                self.sent.extend(rd.messages)
                moved = True
        return moved

    def deliver(self) -> bool:
        """Deliver every in-flight message once (dropping blocked ones)."""
        msgs, self.inflight = self.inflight, []
        for m in msgs:
            if m.to in self.down or (m.frm, m.to) in self.blocked or m.to not in self.nodes:
                continue
            if self.drop_if is not None and self.drop_if(m):
                continue
            self.nodes[m.to].step(m)
        return bool(msgs)

    def flush(self, rounds: int = 200) -> None:
        for _ in range(rounds):
            moved = self.persist_all()
            if not self.deliver() and not moved:
                return
        raise AssertionError("cluster did not quiesce")

    def tick(self, n: int = 1, only: Iterable[int] | None = None) -> None:
        ids = tuple(only) if only is not None else tuple(self.nodes)
        for _ in range(n):
            for i in ids:
                if i not in self.down:
                    self.nodes[i].tick()
            self.flush()

    def elect(self, i: int) -> RaftNode:
        self.nodes[i].campaign()
        self.flush()
        assert self.nodes[i].role == Role.LEADER, self.nodes[i].status()
        return self.nodes[i]

    def leader(self) -> int | None:
        leaders = [i for i, n in self.nodes.items() if i not in self.down and n.role == Role.LEADER]
        return max(leaders, key=lambda i: self.nodes[i].term) if leaders else None

    def propose(self, i: int, data: bytes = b"x", count: int = 1) -> Entry:
        e = self.nodes[i].propose(data, count)
        self.flush()
        return e

    # -- faults -------------------------------------------------------------------

    def isolate(self, i: int) -> None:
        for o in self.nodes:
            if o != i:
                self.blocked.add((i, o))
                self.blocked.add((o, i))

    def cut(self, a: int, b: int) -> None:
        self.blocked.add((a, b))
        self.blocked.add((b, a))

    def heal(self) -> None:
        self.blocked.clear()

    def crash(self, i: int) -> None:
        self.down.add(i)

    def restart(self, i: int) -> None:
        """Start a fresh core over the node's durable storage."""
        self.down.discard(i)
        self.nodes[i], _ = make_node(i, storage=self.storage[i], **self.cfg)
        self.applied[i] = []

    def log(self, i: int) -> list[tuple[int, int, int]]:
        return [(e.index, e.last, e.term) for e in self.storage[i].all_entries()]
