"""A deterministic world for Raft cores: one seed drives everything.

The simulator owns the clock (a float, 1.0 = one node tick) and an event queue
(a heap ordered by time then sequence number). Nodes are ``RaftNode`` cores whose
Readys go through the production driver (``raft.driver.ReadyDriver``): its
coroutine suspends on each blocking storage call, the world completes the call
after a drawn disk latency, and a crash closes the coroutine wherever it waits.
The disks are a ``DiskKind``: the model (``raft.simdisk``, the default here) or,
injected by ``scripts/simulate`` since raft/ imports neither node/ nor segments/,
the node's ``LogStorage`` over a segments log on a simulated file system that
loses unsynced data and tears writes (``node.simstorage``); a restart reopens the
storage from what the crash left. The network drops, delays, duplicates and
reorders messages and can be cut symmetrically or one way; slow nodes have slow
disks and links. No trio, no wall clock, no global randomness: the
same seed replays the same run, event for event (TigerBeetle's VOPR idea).

A ``Checker`` looks at every step: at most one leader per term, log matching
(every persisted entry agrees with every other copy of it, predecessor
included), leader completeness (a leader holds every entry committed in an
earlier term), state machine safety (no two nodes apply different entries or
reach different states at an offset), no committed entry is ever truncated, and
persist before send (every message a node sends promises only what its disk already
holds, as a crash at that instant would leave it: the term it speaks in, the vote it
grants or asks for, the log it acknowledges; see `Checker`).
After the chaos the world heals, and liveness is checked: a leader emerges and
every proposal it accepts commits and reaches every member within bounds.

``python -m raft.simulator`` is not the entry point: ``scripts/simulate`` is
(the command line, progress display and process pool live there, because this
package imports no clock and no rich).
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import traceback
import zlib
from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import Any, Protocol

from raft.core import Config, NotLeader, ProposalDropped, RaftNode, Ready
from raft.driver import ReadyDriver, ReadyStorage
from raft.liveness import PeerLiveness
from raft.simdisk import SimDisk
from raft.storage import Storage
from raft.types import (
    Append,
    AppendResponse,
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    InstallSnapshot,
    Message,
    Role,
    Snapshot,
    Vote,
    VoteResponse,
)

_M64 = (1 << 64) - 1


class Prng:
    """SplitMix64: small, fast enough, and stable across Python versions (unlike
    ``random.Random.randrange``), so a seed means the same run everywhere."""

    def __init__(self, seed: int) -> None:
        self._s = seed & _M64

    def next64(self) -> int:
        self._s = (self._s + 0x9E3779B97F4A7C15) & _M64
        z = self._s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        return z ^ (z >> 31)

    def random(self) -> float:
        return (self.next64() >> 11) * (1.0 / (1 << 53))

    def randrange(self, start: int, stop: int) -> int:
        if stop <= start:
            raise ValueError("empty range")
        return start + self.next64() % (stop - start)

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.random()

    def chance(self, p: float) -> bool:
        return self.random() < p

    def choice(self, seq: Sequence[Any]) -> Any:
        return seq[self.randrange(0, len(seq))]

    def fork(self) -> Prng:
        return Prng(self.next64())


class Violation(Exception):
    """A safety or liveness property failed; the message says which and where."""


# Event kinds, in the heap as (time, seq, kind, node, payload).
_TICK, _DELIVER, _IO, _CONTROL, _RESTART, _CRASH, _BEAT, _FINISH = range(8)


class NodeStorage(Storage, ReadyStorage, Protocol):
    """What the core reads and the driver writes: one object, as `node.storage.LogStorage` is."""


class NodeDisk(Protocol):
    """One simulated node's disk and the storage open on it."""

    @property
    def storage(self) -> NodeStorage: ...

    def compact(self, index: int, data: bytes) -> None:
        """Drop the log through `index` (applied), keeping `data` as the snapshot."""
        ...

    def crash(self) -> str | None:
        """Lose what was not durable; the fault's name for the counters, or None."""
        ...

    def durable_state(self) -> HardState:
        """The hard state a crash now would leave (its term and vote are what count)."""
        ...

    def durable_through(self, index: int) -> bool:
        """Whether a crash now would keep the live log through the entry ending at
        ``index`` as it is now (or ``index`` is at or below the durable snapshot)."""
        ...

    def reopen(self) -> None:
        """Open the storage again from what the crash left (recovery)."""
        ...


class DiskKind(Protocol):
    """A kind of simulated disk: the model (`ModelDisks`) or the production storage
    (`node.simstorage.SegmentsDisks`, injected by scripts/simulate, since raft/ imports
    neither node/ nor segments/)."""

    name: str
    #: Whether the log stamps what it stores (then the checker compares `canon` data).
    stamps: bool

    def open(self, node_id: int, conf: ConfState, rng: Prng) -> NodeDisk: ...

    def payload(self, body: bytes, count: int) -> bytes:
        """What a client proposes: ``count`` records carrying ``body``."""
        ...

    def canon(self, data: bytes) -> bytes:
        """A NORMAL entry's data as the checker compares it (the log may stamp what it
        stores with the entry's offset and term, which the entry names anyway)."""
        ...


class ModelDisks:
    """The model disk (`raft.simdisk.SimDisk`): fast, any bytes as payload."""

    name = "model"
    stamps = False

    def open(self, node_id: int, conf: ConfState, rng: Prng) -> NodeDisk:
        return SimDisk(conf, rng)

    def payload(self, body: bytes, count: int) -> bytes:
        return body

    def canon(self, data: bytes) -> bytes:
        return data


class _DiskRequest:
    """A blocking storage call the driver awaits: the world completes it at the
    simulated disk's pace (or never, when the node crashes first)."""

    __slots__ = ("fn", "args")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args

    def __await__(self) -> Generator[_DiskRequest, Any, Any]:
        return (yield self)


def _sim_run(fn: Callable[..., Any], /, *args: Any) -> Awaitable[Any]:
    """The driver's runner in the simulator: suspend until the world runs the call
    (nothing starts before it is awaited, and a crash may drop it unawaited)."""
    return _DiskRequest(fn, args)


@dataclasses.dataclass
class SimOptions:
    """What one simulated run looks like. ``nodes`` None: drawn from 3..7 by the seed."""

    nodes: int | None = None
    chaos_ticks: tuple[int, int] = (150, 400)
    cycles: int = 2  #: chaos, heal, check liveness; this many times
    election_tick: int = 10
    # None: drawn per seed, so the sweep covers tiny and large messages and windows.
    heartbeat_tick: int | None = None
    max_size_per_msg: int | None = None
    max_inflight_msgs: int | None = None
    #: Idle groups go quiet (`Config.quiesce`); None: on for four seeds in five. The
    #: node-level heartbeats and failure detector run either way, as on the node.
    quiesce: bool | None = None
    #: Thrifty appends (`Config.thrifty`); None: on for half the seeds, with a trailing
    #: batch of 64 B, 1 KiB or 1 MiB (the last: trailing followers hear only at ticks).
    thrifty: bool | None = None
    max_committed_size_per_ready: int = 1024
    elect_bound: int = 300  #: ticks after healing for a settled leader
    commit_bound: int = 40  #: ticks for proposals to commit once accepted (+2 per batch queued before them)
    converge_bound: int = 120  #: ticks for every member to apply them (+2 per batch it lags)
    perfect: bool = False  #: no faults at all (the benchmark's world)
    trace_len: int = 60
    check: bool = True  #: run the safety checker (the benchmark turns it off)
    #: the nodes' disks: None is the model (`ModelDisks`); scripts/simulate passes the
    #: production storage (`node.simstorage.SegmentsDisks`) for a share of the seeds
    disks: DiskKind | None = None
    #: Share of Readys begun at once (`ReadyDriver.begin`, as a node does in the task
    #: that stepped the core) and finished a drawn moment later, with deliveries and
    #: ticks in between. Drawn apart from the world's generator.
    begin_share: float = 0.5


@dataclasses.dataclass
class SimResult:
    seed: int
    nodes: int
    steps: int
    ticks: int
    faults: dict[str, int]
    proposals: int
    committed: int
    elections: int
    snapshots: int
    violation: str | None = None
    quiesced: int = 0  #: times a leader went quiet
    peer_downs: int = 0  #: peers the nodes' failure detectors called down (or restarted)
    trace: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.violation is None


class SimNode:
    def __init__(self, world: World, node_id: int, conf: ConfState) -> None:
        self.world = world
        self.id = node_id
        self.disk = world.disks.open(node_id, conf, world.rng.fork())
        self.core: RaftNode | None = None
        self.driver: ReadyDriver | None = None
        self.pending: Any = None  # the driver coroutine waiting on the disk
        self.incarnation = 0
        self.io_busy = False
        self.slow = 1.0
        self.skew = world.rng.uniform(0.95, 1.05)
        self.sm_digest = 0
        self.applied = -1
        self.registered_commit = -1  # the checker walked this node's commits up to here
        self.seen_role = Role.FOLLOWER
        self.seen_term = 0
        self.seen_quiet = False
        self.liveness = PeerLiveness((), 1)
        self.beat_elapsed = 0
        self.start()

    @property
    def storage(self) -> NodeStorage:
        """What the running core reads (writes not yet fsynced included)."""
        return self.disk.storage

    def start(self) -> None:
        w = self.world
        snap = self.storage.snapshot()
        self.sm_digest = int(snap.data) if snap.data else 0
        self.applied = snap.index
        self.registered_commit = max(self.registered_commit, snap.index)
        self.core = RaftNode(
            Config(
                id=self.id,
                rng=w.rng.fork(),
                election_tick=w.opts.election_tick,
                heartbeat_tick=w.heartbeat_tick,
                max_size_per_msg=w.max_size_per_msg,
                max_inflight_msgs=w.max_inflight_msgs,
                max_committed_size_per_ready=w.opts.max_committed_size_per_ready,
                quiesce=w.quiesce,
                eager_commit=w.eager_commit,
                thrifty=w.thrifty,
                trailing_batch_bytes=w.trailing_batch_bytes,
            ),
            self.storage,
        )
        # The node-level failure detector starts afresh with the process, as the node's.
        self.liveness = PeerLiveness([i for i in w.ids if i != self.id], w.opts.election_tick)
        self.beat_elapsed = 0
        self.seen_quiet = False
        checked = _CheckedStorage(self, self.storage, self.storage.initial_state()[0])
        self.driver = ReadyDriver(self.core, checked, _SimHost(self), _sim_run)
        self.seen_role = Role.FOLLOWER
        self.seen_term = self.core.term
        self.io_busy = False
        self.pending = None

    def restart(self) -> None:
        """Reopen the storage from what the crash left, then start a fresh core on it."""
        self.disk.reopen()
        self.start()


class _CheckedStorage:
    """The node's storage as the driver writes it, with the checker watching what
    leaves the log (truncation, snapshot install) and how the hard state moves."""

    def __init__(self, node: SimNode, inner: NodeStorage, hs: HardState) -> None:
        self.node = node
        self.inner = inner
        self.hs = hs

    @property
    def state_dirty(self) -> bool:
        return self.inner.state_dirty

    def append(self, entries: Sequence[Entry]) -> None:
        st = self.inner
        if entries and st.last_index() >= entries[0].index:
            canon = self.node.world.canon
            gone = st.entries(entries[0].index, st.last_index() + 1, 1 << 62)
            self.node.world.check.removing(self.node, [canon(e) for e in gone], [canon(e) for e in entries])
        st.append(entries)

    def set_hard_state(self, hs: HardState) -> None:
        old = self.hs
        if hs.term < old.term or (hs.term == old.term and old.vote and hs.vote != old.vote):
            raise Violation(f"node {self.node.id} hard state went from {old} to {hs}")
        if hs.commit < old.commit:
            raise Violation(f"node {self.node.id} commit went back from {old.commit} to {hs.commit}")
        self.hs = hs
        self.inner.set_hard_state(hs)

    def sync(self, log: bool = True) -> None:
        self.inner.sync(log)

    def write_snapshot(self, snap: Snapshot) -> None:
        self.inner.write_snapshot(snap)

    def install_snapshot(self, snap: Snapshot) -> None:
        node, st, w = self.node, self.inner, self.node.world
        lo = max(snap.index + 1, st.first_index())
        if lo <= st.last_index():
            w.check.removing(node, [w.canon(e) for e in st.entries(lo, st.last_index() + 1, 1 << 62)])
        w.check.snapshot_installed(node, snap.index, snap.term, snap.data)
        st.install_snapshot(snap)
        w.trace.append((w.now, "snapshot", node.id, f"installed at {snap.index}"))
        w.snapshots += 1

    def flush_log(self) -> None:
        self.inner.flush_log()


class _SimHost:
    """A simulated node as the driver's host: sends go to the simulated network, and
    the checker sees each durable Ready and each applied entry."""

    def __init__(self, node: SimNode) -> None:
        self.node = node

    def restored(self, snap: Snapshot) -> None:
        node = self.node
        node.sm_digest = int(snap.data) if snap.data else node.sm_digest
        node.applied = snap.index
        node.registered_commit = max(node.registered_commit, snap.index)

    def persisted(self, rd: Ready) -> None:
        node, w = self.node, self.node.world
        if rd.entries:
            w.check.persisted(node, [w.canon(e) for e in rd.entries] if w.disks.stamps else rd.entries)
        if rd.hard_state is not None:
            leaders = [n for n in w.nodes.values() if n.core is not None and n.core.role == Role.LEADER]
            w.check.commit_observed(node, rd.hard_state.commit, leaders)

    def send(self, msg: Message) -> None:
        self.node.world.check.sent(self.node, msg)
        self.node.world._send(msg)

    def apply(self, rd: Ready) -> None:
        node, w = self.node, self.node.world
        canon = w.canon if w.disks.stamps else None
        for e in rd.committed_entries:
            w.check.applied(node, canon(e) if canon else e)

    def advanced(self, rd: Ready) -> None:
        pass


class Checker:
    """Raft's safety properties, checked incrementally as the world moves.

    Persist before send (`sent`): when a node sends a message, what the message
    promises must already be on its disk, as a crash at that instant would leave it
    (`NodeDisk.durable_state`, `NodeDisk.durable_through`). Checked on every message,
    it catches a driver or storage that sends before it persists without waiting for
    a crash to fall inside the window. What each message the core sends promises:

    - any message of term T: the durable term is >= T (a node never speaks in a term
      it could forget), except a pre-vote request and a granted pre-vote response,
      which carry a future term the sender does not adopt and promise nothing;
    - a Vote (real) or a granted VoteResponse (real) of term T: the durable hard state
      has a vote for the candidate in T, or a later term (in which a vote in T can no
      longer be cast);
    - a successful AppendResponse of term T acknowledging ``index``: the log through
      ``index`` is durable as the core holds it now (the entry ending there is the one
      that matched the leader of T), or the durable term is later than T. A later
      term supersedes the promise: the message was true of an earlier state, that
      state was followed by the term change in memory, and a crash now leaves the
      later state, just as it would had each step been persisted in turn;
    - rejects (an AppendResponse with ``reject``, whose hint only steers the leader's
      probe and never sets a match), heartbeats and their responses, InstallSnapshot,
      TimeoutNow and a leader's Appends promise only their term: a leader may send
      entries before its own fsync (its own copy counts towards commit only once
      durable, in `RaftNode.advance`).
    """

    def __init__(self) -> None:
        self.leaders: dict[int, int] = {}  # term -> node
        # Log matching: (last, term) names an entry; every copy must agree on its
        # start, content and predecessor, which by induction makes prefixes equal.
        self.entries: dict[tuple[int, int], tuple[int, int, bytes, int, int]] = {}
        # Committed entries by start offset, and start by last offset.
        self.committed: dict[int, Entry] = {}
        # A term at or after the one in which each was committed: the reporting node's
        # term (it learned the commit from a leader of that term or an earlier one).
        self.commit_term: dict[int, int] = {}
        self.committed_by_last: dict[int, int] = {}
        self.max_commit = -1
        self.digests: dict[int, int] = {}  # last offset -> state machine digest after it
        self.canon: Callable[[Entry], Entry] = lambda e: e  # the world's (see World.canon)

    def leader_observed(self, node: SimNode) -> None:
        core = node.core
        assert core is not None
        prev = self.leaders.setdefault(core.term, node.id)
        if prev != node.id:
            raise Violation(f"election safety: nodes {prev} and {node.id} both lead term {core.term}")
        # Leader completeness: every entry committed so far is in the new leader's log.
        for index in range(core.commit + 1, self.max_commit + 1):
            e = self.committed.get(index)
            if e is not None and self.commit_term[index] < core.term and index >= core.log.first_index():
                if core.log_term(index) != e.term:
                    raise Violation(
                        f"leader completeness: leader {node.id} of term {core.term} lacks committed "
                        f"entry {e.index}-{e.last} term {e.term}"
                    )

    def sent(self, node: SimNode, m: Message) -> None:
        """Persist before send: what ``m`` promises is durable on ``node`` (see the class
        docstring for each message's promise)."""
        if isinstance(m, (Vote, VoteResponse)) and m.pre_vote and (isinstance(m, Vote) or m.granted):
            return
        hs = node.disk.durable_state()
        if hs.term != m.term:
            if hs.term < m.term:
                raise Violation(f"persist before send: node {node.id} sent {_brief(m)} with term {hs.term} on disk")
            return  # a later durable term supersedes what the message promised in m.term
        if isinstance(m, Vote) or (isinstance(m, VoteResponse) and m.granted):
            candidate = m.frm if isinstance(m, Vote) else m.to
            if hs.vote != candidate:
                raise Violation(
                    f"persist before send: node {node.id} sent {_brief(m)} with vote {hs.vote} "
                    f"in term {hs.term} on disk"
                )
        elif isinstance(m, AppendResponse) and not m.reject and not node.disk.durable_through(m.index):
            raise Violation(
                f"persist before send: node {node.id} acknowledged {m.index} in term {m.term} "
                "before the log through it was durable"
            )

    def persisted(self, node: SimNode, entries: Sequence[Entry]) -> None:
        """Log matching for entries a node just made durable."""
        st = node.storage
        first = entries[0].index
        if first - 1 == st.snapshot().index:
            prev_last, prev_term = st.snapshot().index, st.snapshot().term
        else:
            prev = st.entries(first - 1, first, 0)[0]
            prev_last, prev_term = prev.last, prev.term
        for e in entries:
            rec = (e.index, int(e.kind), e.data, prev_last, prev_term)
            known = self.entries.setdefault((e.last, e.term), rec)
            if known != rec:
                raise Violation(
                    f"log matching: node {node.id} holds entry ending {e.last} term {e.term} "
                    f"as {rec[0]}/{rec[3]}:{rec[4]}, another node as {known[0]}/{known[3]}:{known[4]}"
                )
            prev_last, prev_term = e.last, e.term

    def removing(self, node: SimNode, entries: Sequence[Entry], written: Sequence[Entry] = ()) -> None:
        """Entries are about to leave a node's log (truncation or snapshot install);
        ``written`` is what takes their place."""
        new = {e.index: e for e in written}
        for e in entries:
            c = self.committed.get(e.index)
            if c is not None and c.term == e.term:
                w = new.get(e.index)
                if w is not None and (w.last, w.term, w.data) == (e.last, e.term, e.data):
                    how = "cut and rewritten identically"
                elif w is not None:
                    how = f"replaced by {w.index}-{w.last} term {w.term}"
                else:
                    how = "removed"
                raise Violation(f"committed entry {e.index}-{e.last} term {e.term} {how} on node {node.id}")

    def commit_observed(self, node: SimNode, commit: int, worlds_leaders: Sequence[SimNode]) -> None:
        """A node made ``commit`` durable: every entry through it is committed."""
        if commit <= node.registered_commit:
            return
        st = node.storage
        lo = max(node.registered_commit + 1, st.first_index())
        for e in map(self.canon, st.entries(lo, commit + 1, 1 << 62)):
            self.commit_entry(node, e)
            for lead in worlds_leaders:
                core = lead.core
                if core is not None and core.term > self.commit_term[e.index] and e.index >= core.log.first_index():
                    if core.log_term(e.index) != e.term:
                        raise Violation(
                            f"leader completeness: leader {lead.id} of term {core.term} lacks entry "
                            f"{e.index}-{e.last} term {e.term} committed by node {node.id}"
                        )
        node.registered_commit = commit

    def commit_entry(self, node: SimNode, e: Entry) -> None:
        known = self.committed.setdefault(e.index, e)
        if known is e:
            assert node.core is not None
            self.commit_term[e.index] = node.core.term
        if known != e:
            raise Violation(
                f"state machine safety: node {node.id} committed {e.index}-{e.last} term {e.term} "
                f"but {known.index}-{known.last} term {known.term} was committed there"
            )
        self.committed_by_last[e.last] = e.index
        self.max_commit = max(self.max_commit, e.last)

    def applied(self, node: SimNode, e: Entry) -> None:
        if e.index != node.applied + 1:
            raise Violation(f"node {node.id} applied {e.index} after {node.applied}")
        self.commit_entry(node, e)
        node.sm_digest = zlib.crc32(b"%d:%d:%d:%d:" % (e.index, e.last, e.term, e.kind) + e.data, node.sm_digest)
        node.applied = e.last
        known = self.digests.setdefault(e.last, node.sm_digest)
        if known != node.sm_digest:
            raise Violation(f"state machine safety: node {node.id} state after {e.last} differs")

    def snapshot_installed(self, node: SimNode, index: int, term: int, data: bytes) -> None:
        start = self.committed_by_last.get(index)
        if start is None or self.committed[start].term != term:
            raise Violation(f"node {node.id} installed a snapshot at {index} term {term} that is not committed")
        if data and self.digests.get(index) not in (None, int(data)):
            raise Violation(f"node {node.id} installed a snapshot at {index} whose state differs")


class StateTracker(Checker):
    """Only what the world needs to run (applied offsets and state digests), none of
    the safety checks: the benchmark uses it to time the cores alone."""

    def leader_observed(self, node: SimNode) -> None:
        pass

    def sent(self, node: SimNode, m: Message) -> None:
        pass

    def persisted(self, node: SimNode, entries: Sequence[Entry]) -> None:
        pass

    def removing(self, node: SimNode, entries: Sequence[Entry], written: Sequence[Entry] = ()) -> None:
        pass

    def commit_observed(self, node: SimNode, commit: int, worlds_leaders: Sequence[SimNode]) -> None:
        pass

    def commit_entry(self, node: SimNode, e: Entry) -> None:
        self.max_commit = max(self.max_commit, e.last)

    def snapshot_installed(self, node: SimNode, index: int, term: int, data: bytes) -> None:
        pass


class World:
    def __init__(self, seed: int, opts: SimOptions | None = None) -> None:
        self.seed = seed
        self.opts = opts or SimOptions()
        self.rng = Prng(seed)
        o = self.opts
        n = o.nodes or self.rng.randrange(3, 8)
        self.heartbeat_tick = o.heartbeat_tick or self.rng.choice([1, 2, 3])
        self.max_size_per_msg = o.max_size_per_msg or self.rng.choice([0, 64, 256, 4096])
        self.max_inflight_msgs = o.max_inflight_msgs or self.rng.choice([1, 4, 64])
        # Drawn apart from the world's generator, so the rest of the seed's draws stay put.
        self.quiesce = o.quiesce if o.quiesce is not None else Prng(seed ^ 0x51E7).random() < 0.8
        self.begin_rng = Prng(seed ^ 0xB3617)
        thrifty_rng = Prng(seed ^ 0x7F1F7)
        self.thrifty = o.thrifty if o.thrifty is not None else thrifty_rng.random() < 0.5
        self.trailing_batch_bytes = thrifty_rng.choice([64, 1024, 1 << 20])
        self.quiesced = 0
        self.peer_downs = 0
        self.eager_commit = (seed >> 1) % 2 == 0  # half the seeds each way (drawing nothing: seeds replay as before)
        self.ids = list(range(1, n + 1))
        conf = ConfState(voters=tuple(self.ids))
        self.now = 0.0
        self.ticks = 0
        self.steps = 0
        self._seq = 0
        self._events: list[tuple[float, int, int, int, Any]] = []
        self.check = Checker() if self.opts.check else StateTracker()
        self.disks: DiskKind = self.opts.disks or ModelDisks()
        self.check.canon = self.canon
        self.nodes = {i: SimNode(self, i, conf) for i in self.ids}
        self.blocked: set[tuple[int, int]] = set()
        self.net_epoch = 0
        self.fifo = True
        self.link_last: dict[tuple[int, int], float] = {}
        self.cycle = 0
        self.drop = self.dup = 0.0
        self.delay = (0.05, 0.2)
        self.disk = (0.0, 0.0)
        self.chaos_until = 0
        self.work_rate = 0.5
        self.faults: collections.Counter[str] = collections.Counter()
        self.proposals = 0
        self.elections = 0
        self.snapshots = 0
        self.trace: collections.deque[tuple[float, str, int, Any]] = collections.deque(maxlen=self.opts.trace_len)
        # Liveness bookkeeping after the heal.
        self.healed_at: int | None = None
        self.live_leader: int | None = None
        self.live_term = 0
        self.live_props: list[Entry] = []
        self.live_proposed_at = 0
        self.live_commit_by = 0
        self.live_converge_by = 0
        self._candidate_leader: tuple[int, int] | None = None
        self._candidate_since = 0
        self.done = False
        if not self.opts.perfect:
            self._new_chaos()
        for i in self.ids:
            self._push(self.rng.uniform(0.0, 1.0), _TICK, i, None)
        self._push(0.5, _CONTROL, 0, None)

    def canon(self, e: Entry) -> Entry:
        """An entry as the checker compares it (see `DiskKind.canon`)."""
        if e.kind != EntryKind.NORMAL:
            return e
        data = self.disks.canon(e.data)
        return e if data is e.data else Entry(e.index, e.last, e.term, e.kind, data)

    # -- the event loop -----------------------------------------------------------

    def _push(self, t: float, kind: int, node: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._events, (t, self._seq, kind, node, payload))

    def step(self) -> int:
        """Process the next event; returns its kind."""
        t, _, kind, node, payload = heapq.heappop(self._events)
        self.now = t
        self.steps += 1
        if kind == _TICK:
            self._on_tick(node)
        elif kind == _DELIVER:
            self._on_deliver(payload)
        elif kind == _IO:
            self._on_io(node, payload)
        elif kind == _CONTROL:
            self._on_control()
        elif kind == _RESTART:
            self._on_restart(node)
        elif kind == _BEAT:
            self._on_beat(payload)
        elif kind == _FINISH:
            self._on_finish(node, payload)
        else:
            self._crash(self.nodes[node], "crash_new_leader")
        return kind

    def run(self) -> SimResult:
        """Run to the end of the last cycle, or to the first violation."""
        violation: str | None = None
        try:
            o = self.opts
            limit = o.cycles * (o.chaos_ticks[1] + o.elect_bound + o.converge_bound + 100)
            while not self.done:
                if self.step() == _CONTROL and self.ticks >= limit:
                    raise Violation(f"run did not finish within {limit} ticks")
        except Violation as v:
            violation = str(v)
        except Exception as e:  # an exception inside a core is a finding, not a crash
            violation = f"exception: {e!r}\n" + "".join(traceback.format_exception(e)[-6:])
        return SimResult(
            seed=self.seed,
            nodes=len(self.ids),
            steps=self.steps,
            ticks=self.ticks,
            faults=dict(self.faults),
            proposals=self.proposals,
            committed=self.check.max_commit + 1,
            elections=self.elections,
            snapshots=self.snapshots,
            violation=violation,
            quiesced=self.quiesced,
            peer_downs=self.peer_downs,
            trace=self.format_trace() if violation else [],
        )

    def format_trace(self) -> list[str]:
        return [
            f"{t:9.3f} {what:<9} n{node} {_brief(detail) if what == 'recv' else detail}"
            for t, what, node, detail in self.trace
        ]

    def _on_tick(self, i: int) -> None:
        node = self.nodes[i]
        if node.core is not None:
            node.core.tick()
            # The node-level side, as node/broker.py's ticker: a heartbeat to every peer
            # each heartbeat interval, and the failure detector.
            node.beat_elapsed += 1
            if node.beat_elapsed >= self.heartbeat_tick:
                node.beat_elapsed = 0
                for o in self.ids:
                    if o != i:
                        self._transmit(i, o, _BEAT, (i, o, node.incarnation))
            for p in node.liveness.tick():
                self._peer_down(node, p, "down")
            self._after(node)
        self._push(self.now + node.skew, _TICK, i, None)

    def _peer_down(self, node: SimNode, peer: int, why: str) -> None:
        assert node.core is not None
        self.peer_downs += 1
        self.trace.append((self.now, "liveness", node.id, f"{peer} {why}"))
        node.core.peer_down(peer)

    def _peer_back(self, node: SimNode, peer: int) -> None:
        assert node.core is not None
        self.trace.append((self.now, "liveness", node.id, f"{peer} back"))
        node.core.peer_back(peer)

    def _on_deliver(self, payload: tuple[int, Message]) -> None:
        epoch, m = payload
        node = self.nodes[m.to]
        if node.core is None or (m.frm, m.to) in self.blocked or epoch != self.net_epoch:
            return
        self.trace.append((self.now, "recv", m.to, m))
        if node.liveness.heard(m.frm)[0]:
            self._peer_back(node, m.frm)
        node.core.step(m)
        self._after(node)

    def _on_beat(self, payload: tuple[int, tuple[int, int, int]]) -> None:
        epoch, (frm, to, incarnation) = payload
        node = self.nodes[to]
        if node.core is None or (frm, to) in self.blocked or epoch != self.net_epoch:
            return
        back, restarted = node.liveness.heard(frm, incarnation)
        if restarted:  # (down and back at once: its groups forgot what was not durable)
            self._peer_down(node, frm, "restarted")
        if back or restarted:
            self._peer_back(node, frm)
            self._after(node)

    def _on_io(self, i: int, payload: tuple[int, Any, _DiskRequest]) -> None:
        incarnation, coro, req = payload
        node = self.nodes[i]
        if node.core is None or node.incarnation != incarnation:
            return  # crashed meanwhile: the rest of that Ready never reached the disk
        self._drive(node, coro, req.fn(*req.args))
        self._start_ready(node)

    def _on_restart(self, i: int) -> None:
        node = self.nodes[i]
        if node.core is None:
            node.restart()
            self.trace.append((self.now, "restart", i, f"term={node.core.term if node.core else '?'}"))
            self._after(node)

    def _after(self, node: SimNode) -> None:
        core = node.core
        assert core is not None
        if core.quiescent != node.seen_quiet:
            node.seen_quiet = core.quiescent
            if core.role == Role.LEADER and core.quiescent:
                self.quiesced += 1
            self.trace.append((self.now, "quiet" if core.quiescent else "awake", node.id, f"term={core.term}"))
        if core.role == Role.LEADER and (node.seen_role != Role.LEADER or node.seen_term != core.term):
            self.elections += 1
            self.trace.append((self.now, "leader", node.id, f"term={core.term}"))
            self.check.leader_observed(node)
            if self.ticks < self.chaos_until and self.rng.chance(0.1):
                # A leader dying moments into its term, mid-way through replicating
                # older entries, is how Figure 8's histories begin.
                self._push(self.now + self.rng.uniform(0.1, 2.0), _CRASH, node.id, None)
        node.seen_role, node.seen_term = core.role, core.term
        if not node.io_busy and core.has_ready():
            self._start_ready(node)

    def _start_ready(self, node: SimNode) -> None:
        """Hand Readys to the node's driver until one waits on the (simulated) disk or
        was begun (its finish comes a drawn moment later, as the node's driver task
        runs a scheduler pass after the task that began it)."""
        core, driver = node.core, node.driver
        assert core is not None and driver is not None
        while not node.io_busy and core.has_ready():
            if self.begin_rng.random() < self.opts.begin_share and driver.begin():
                if driver.begun:
                    node.io_busy = True
                    later = self.now + self.begin_rng.uniform(0.0, self.delay[1])
                    self._push(later, _FINISH, node.id, node.incarnation)
                continue
            node.io_busy = True
            self._drive(node, driver.handle_ready(), None)

    def _on_finish(self, i: int, incarnation: int) -> None:
        node = self.nodes[i]
        if node.core is None or node.incarnation != incarnation:
            return  # crashed meanwhile: what it began never became durable
        assert node.driver is not None
        self._drive(node, node.driver.handle_ready(), None)
        self._start_ready(node)

    def _drive(self, node: SimNode, coro: Any, value: Any) -> None:
        """Run the driver's coroutine to its next disk call, and schedule that call's
        completion after a drawn latency (a crash before then drops the coroutine);
        with no latency, the call completes at once."""
        while True:
            try:
                req = coro.send(value)
            except StopIteration:
                node.io_busy = False
                node.pending = None
                return
            lo, hi = self.disk
            latency = self.rng.uniform(lo, hi) * node.slow
            if latency > 0:
                node.pending = coro
                self._push(self.now + latency, _IO, node.id, (node.incarnation, coro, req))
                return
            value = req.fn(*req.args)

    def _send(self, m: Message) -> None:
        self._transmit(m.frm, m.to, _DELIVER, m)

    def _transmit(self, frm: int, to: int, kind: int, item: Any) -> None:
        """Put a Raft message (`_DELIVER`) or a node-level heartbeat (`_BEAT`) on the
        simulated link from ``frm`` to ``to``: both share its cuts, losses and order."""
        if (frm, to) in self.blocked:
            return
        dst = self.nodes[to]
        src = self.nodes[frm]
        if self.drop and self.rng.chance(self.drop):
            return
        lo, hi = self.delay
        slow = max(dst.slow, src.slow)
        at = self.now + self.rng.uniform(lo, hi) * slow
        if self.fifo:  # a healed link behaves like a TCP connection: in order
            link = (frm, to)
            at = max(at, self.link_last.get(link, 0.0) + 1e-6)
            self.link_last[link] = at
        self._push(at, kind, to, (self.net_epoch, item))
        if self.dup and self.rng.chance(self.dup):
            self._push(self.now + self.rng.uniform(lo, hi) * slow, kind, to, (self.net_epoch, item))

    # -- the world's will: faults, workload, healing, liveness ---------------------

    def _on_control(self) -> None:
        self.ticks += 1
        self._push(self.now + 1.0, _CONTROL, 0, None)
        if self.ticks < self.chaos_until:
            self._chaos()
            if self.rng.chance(self.work_rate):
                self._workload()
        elif self.healed_at is None:
            self._heal()
        else:
            self._liveness()

    def _up(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.core is not None]

    def _leaders(self) -> list[SimNode]:
        return [n for n in self._up() if n.core is not None and n.core.role == Role.LEADER]

    def _chaos(self) -> None:
        r = self.rng
        if r.chance(0.02):
            self._fault_crash()
        if r.chance(0.03):
            self._fault_partition()
        if self.blocked and r.chance(0.05):
            self.blocked.clear()
            self.faults["heal_partition"] += 1
            self.trace.append((self.now, "heal", 0, "partitions cleared"))
        if r.chance(0.01):
            node = r.choice(list(self.nodes.values()))
            node.slow = 1.0 if node.slow > 1.0 else r.choice([5.0, 20.0])
            self.faults["slow"] += 1
        if r.chance(0.015):
            self._fault_transfer()
        if r.chance(0.02):
            self._membership()
        if r.chance(0.03):
            self._compact(r.choice(self._up() or list(self.nodes.values())))
        if r.chance(0.01):
            # A leader dying while its group is quiet: only the followers' failure
            # detectors can tell, since a quiet leader sends nothing anyway.
            quiet = [n for n in self._leaders() if n.core is not None and n.core.quiescent]
            if quiet:
                self._crash(r.choice(quiet), "crash_quiet_leader")

    def _fault_crash(self) -> None:
        up = self._up()
        if up:
            self._crash(self.rng.choice(up), "crash")

    def _crash(self, node: SimNode, kind: str) -> None:
        """Stop a node at once: the Ready it was persisting never reaches the disk."""
        if node.core is None or self.healed_at is not None:
            return
        node.core = None
        node.incarnation += 1
        node.io_busy = False
        if node.pending is not None:  # the Ready in flight stops where it is
            node.pending.close()
            node.pending = None
        lost = node.disk.crash()
        if lost is not None:
            self.faults[lost] += 1
        self.faults[kind] += 1
        self.trace.append((self.now, "crash", node.id, kind))
        self._push(self.now + self.rng.uniform(3.0, 60.0), _RESTART, node.id, None)

    def _fault_partition(self) -> None:
        r = self.rng
        kind = r.randrange(0, 3)
        ids = self.ids
        if kind == 0:  # isolate one node (often the leader)
            leaders = self._leaders()
            victim = r.choice(leaders).id if leaders and r.chance(0.6) else r.choice(ids)
            for o in ids:
                if o != victim:
                    self.blocked.add((victim, o))
                    self.blocked.add((o, victim))
            self.faults["partition_isolate"] += 1
            detail = f"isolate {victim}"
        elif kind == 1:  # random split in two
            side = {i for i in ids if r.chance(0.5)}
            for a in ids:
                for b in ids:
                    if (a in side) != (b in side):
                        self.blocked.add((a, b))
            self.faults["partition_split"] += 1
            detail = f"split {sorted(side)}"
        else:  # one-way cuts
            a = r.choice(ids)
            b = r.choice([i for i in ids if i != a])
            self.blocked.add((a, b))
            self.faults["partition_oneway"] += 1
            detail = f"cut {a}->{b}"
        self.trace.append((self.now, "partition", 0, detail))

    def _fault_transfer(self) -> None:
        leaders = self._leaders()
        if not leaders:
            return
        lead = self.rng.choice(leaders)
        assert lead.core is not None
        others = [v for v in lead.core.conf.voters if v != lead.id]
        if others:
            to = self.rng.choice(others)
            lead.core.transfer_leadership(to)
            self.faults["transfer"] += 1
            self.trace.append((self.now, "transfer", lead.id, f"to {to}"))
            self._after(lead)

    def _membership(self) -> None:
        leaders = self._leaders()
        if not leaders:
            return
        lead = self.rng.choice(leaders)
        core = lead.core
        assert core is not None
        conf = core.conf
        options: list[ConfChange] = []
        for i in self.ids:
            if i in conf.learners:
                options.append(ConfChange(ConfChangeOp.PROMOTE, i))
                options.append(ConfChange(ConfChangeOp.REMOVE, i))
            elif i not in conf.voters:
                options.append(ConfChange(ConfChangeOp.ADD_LEARNER, i))
            elif i != lead.id and len(conf.voters) > 2:
                options.append(ConfChange(ConfChangeOp.REMOVE, i))
        if not options:
            return
        promotes = [o for o in options if o.op == ConfChangeOp.PROMOTE]
        # Removals are easy to draw and promotions often refused (the learner must
        # have caught up), so lean towards growing the group back.
        change = self.rng.choice(promotes if promotes and self.rng.chance(0.7) else options)
        try:
            core.propose_conf_change(change)
        except ProposalDropped:
            return
        self.faults[f"conf_{change.op.name.lower()}"] += 1
        self.trace.append((self.now, "conf", lead.id, f"{change.op.name} {change.node}"))
        self._after(lead)

    def _compact(self, node: SimNode) -> None:
        """Retention/snapshot: drop the applied prefix, keeping a digest of the state."""
        if node.core is None or node.io_busy or node.applied <= node.storage.first_index():
            return  # (the node compacts between Readys, under its io lock)
        index = self.rng.randrange(node.storage.first_index(), node.applied + 1)
        # Snap down to an entry boundary.
        e = node.storage.entries(index, index + 1, 0)[0]
        index = e.last if e.last <= node.applied else e.index - 1
        if index < node.storage.first_index():
            return
        digest = self.check.digests.get(index)
        if digest is None:
            return
        node.disk.compact(index, str(digest).encode())
        self.faults["compact"] += 1

    def _workload(self) -> list[Entry]:
        """A client proposes a few batches to a node that believes it leads."""
        leaders = self._leaders()
        if not leaders:
            return []
        lead = self.rng.choice(leaders)
        core = lead.core
        assert core is not None
        out = []
        for _ in range(self.rng.randrange(1, 4)):
            body = b"p%d-%d\n" % (self.seed, self.proposals) + bytes(
                self.rng.randrange(0, 256) for _ in range(self.rng.randrange(0, 40))
            )
            try:
                count = self.rng.randrange(1, 6)
                out.append(core.propose(self.disks.payload(body, count), count))
            except (NotLeader, ProposalDropped):
                break
            self.proposals += 1
        self._after(lead)
        return out

    def _new_chaos(self) -> None:
        """Start a period of faults with freshly drawn network conditions."""
        r = self.rng
        self.drop = r.choice([0.0, 0.01, 0.05, 0.1, 0.2])
        self.dup = r.choice([0.0, 0.02, 0.1])
        self.delay = (0.05, r.choice([0.3, 1.0, 3.0]))
        self.disk = (0.0, r.choice([0.05, 0.3, 1.0]))
        self.fifo = False
        # How busy clients are: from a proposal every other tick to long idle stretches,
        # in which a group with quiescence goes quiet and faults find it so.
        self.work_rate = r.choice([0.5, 0.2, 0.05])
        self.chaos_until = self.ticks + r.randrange(*self.opts.chaos_ticks)
        self.healed_at = None
        self.live_leader = None
        self.live_props = []
        self._candidate_leader = None

    def _heal(self) -> None:
        self.healed_at = self.ticks
        # Healing resets the links: what was still in flight is lost (as with a TCP
        # reconnect), so a message delayed for ages cannot arrive in the healed world;
        # from now on links deliver in order and disks and nodes are back to speed.
        self.net_epoch += 1
        self.blocked.clear()
        self.drop = 0.0
        self.dup = 0.0
        self.fifo = True
        self.link_last.clear()
        if not self.opts.perfect:
            self.delay = (0.05, 0.5)
            self.disk = (0.0, 0.05)
        for node in self.nodes.values():
            node.slow = 1.0
            if node.core is None:
                node.restart()
                self._after(node)
        self.trace.append((self.now, "HEAL", 0, "network healed, all nodes up"))

    def _liveness(self) -> None:
        assert self.healed_at is not None
        since = self.ticks - self.healed_at
        if self.live_leader is None:
            lead = self._settled_leader()
            if since > self.opts.elect_bound:
                raise Violation(f"liveness: no settled leader {since} ticks after the network healed")
            # Settled means: the same leader for two check-quorum periods of healed
            # network, so a step-down decided on pre-heal silence is behind us.
            key = (lead.id, lead.core.term) if lead is not None and lead.core is not None else None
            if key != self._candidate_leader:
                self._candidate_leader, self._candidate_since = key, self.ticks
            if lead is None or self.ticks - self._candidate_since < 2 * self.opts.election_tick:
                return
            core = lead.core
            assert core is not None
            self.live_leader, self.live_term = lead.id, core.term
            self.live_proposed_at = self.ticks
            # The bounds grow with the backlog the proposals queue behind: with one
            # batch per message and a window of one, a healed link still moves at
            # least one batch per two ticks.
            behind = min(self.nodes[m].applied for m in core.conf.members())
            self.live_commit_by = self.ticks + self.opts.commit_bound + 2 * self._batches_after(core, core.commit)
            self.live_converge_by = self.ticks + self.opts.converge_bound + 2 * self._batches_after(core, behind)
            self.live_props = self._workload()
            if not self.live_props:
                raise Violation(f"liveness: settled leader {lead.id} refused proposals")
            self.trace.append((self.now, "live", lead.id, f"proposed {len(self.live_props)}"))
            return
        lead = self.nodes[self.live_leader]
        if lead.core is None or lead.core.role != Role.LEADER or lead.core.term != self.live_term:
            raise Violation(f"liveness: leader {self.live_leader} lost leadership after the network healed")
        waited = self.ticks - self.live_proposed_at
        committed = all(self.check.committed.get(e.index) == self.canon(e) for e in self.live_props)
        if not committed:
            if self.ticks > self.live_commit_by:
                raise Violation(f"liveness: proposals not committed {waited} ticks after the leader accepted them")
            return
        last = self.live_props[-1].last
        members = lead.core.conf.members()
        if all(self.nodes[m].applied >= last for m in members):
            self.cycle += 1
            if self.cycle >= self.opts.cycles or self.opts.perfect:
                self.done = True
            else:
                self._new_chaos()
        elif self.ticks > self.live_converge_by:
            lagging = [m for m in members if self.nodes[m].applied < last]
            raise Violation(f"liveness: members {lagging} did not apply through {last} in {waited} ticks")

    @staticmethod
    def _batches_after(core: RaftNode, index: int) -> int:
        """How many batches the leader's log holds after ``index``."""
        lo = max(index + 1, core.log.first_index())
        ents = core.log.entries(lo, core.log.last_index() + 1, 1 << 62)
        return len(ents) if ents else 0

    def _settled_leader(self) -> SimNode | None:
        """A leader that committed an entry of its term and that every member follows."""
        for lead in self._leaders():
            core = lead.core
            assert core is not None
            if core.log_term(core.commit) != core.term or core.lead_transferee:
                continue
            if all(
                (n := self.nodes[m].core) is not None and n.term == core.term and n.leader == lead.id
                for m in core.conf.members()
            ):
                return lead
        return None


def _brief(m: Message) -> str:
    name = type(m).__name__
    if isinstance(m, Append):
        ents = f"{m.entries[0].index}..{m.entries[-1].last}" if m.entries else "-"
        return f"{name} from {m.frm} t{m.term} prev={m.prev_index}/{m.prev_term} ents={ents} commit={m.commit}"
    if isinstance(m, InstallSnapshot):
        return f"{name} from {m.frm} t{m.term} at {m.snapshot.index}/{m.snapshot.term}"
    fields = {k: getattr(m, k) for k in m.__struct_fields__ if k not in ("to", "frm", "term")}
    return f"{name} from {m.frm} t{m.term} {fields}"


def run_load(
    seed: int, nodes: int, ticks: int, per_tick: int, size: int, count: int, check: bool = False
) -> tuple[int, int, int]:
    """Throughput world: a perfect network, a leader fed ``per_tick`` proposals of
    ``size`` bytes and ``count`` records every tick for ``ticks`` ticks, then run
    until everything is applied everywhere. Returns (proposals, committed offsets,
    steps). Used by scripts/bench_raft.py to time the cores alone."""
    opts = SimOptions(
        nodes=nodes,
        perfect=True,
        max_size_per_msg=1 << 20,
        max_inflight_msgs=256,
        max_committed_size_per_ready=64 << 20,
        check=check,
    )
    w = LoadWorld(seed, opts, ticks, per_tick, bytes(size), count)
    while not w.done:
        w.step()
    return w.proposals, w.check.max_commit + 1, w.steps


class LoadWorld(World):
    """A World whose control tick feeds the leader instead of making chaos."""

    def __init__(self, seed: int, opts: SimOptions, ticks: int, per_tick: int, body: bytes, count: int) -> None:
        super().__init__(seed, opts)
        self.load_ticks, self.per_tick, self.body, self.count = ticks, per_tick, body, count
        self.lead: SimNode | None = None
        self.load_end = 0
        self.last = -1

    def _on_control(self) -> None:
        self.ticks += 1
        self._push(self.now + 1.0, _CONTROL, 0, None)
        if self.lead is None:
            leaders = self._leaders()
            if not leaders:
                return
            self.lead = leaders[0]
            self.load_end = self.ticks + self.load_ticks
        core = self.lead.core
        assert core is not None
        if self.ticks <= self.load_end:
            for _ in range(self.per_tick):
                self.last = core.propose(self.body, self.count).last
            self.proposals += self.per_tick
            self._after(self.lead)
        elif all(n.applied >= self.last for n in self.nodes.values()):
            self.done = True


def run_seed(seed: int, opts: SimOptions | None = None) -> SimResult:
    """Run one world to completion (or to its first violation)."""
    return World(seed, opts).run()
