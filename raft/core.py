"""RaftNode: one member of one Raft group, as a pure state machine.

Shaped like etcd-io/raft's RawNode. The caller feeds it time (``tick``),
network input (``step``) and client input (``propose``,
``propose_conf_change``, ``transfer_leadership``), then collects a ``Ready``
holding everything to do, does it, and calls ``advance``:

1. install ``ready.snapshot`` if any, append ``ready.entries`` (truncating the
   log after ``entries[0].index - 1`` first if it extends past that), persist
   ``ready.hard_state`` if any, and make all of it durable;
2. only then send ``ready.messages`` (a vote or an acknowledgement must never
   leave before the state it promises is on disk);
3. apply ``ready.committed_entries``;
4. call ``advance(ready)``: it tells the core those entries are durable, which
   is also when the leader counts its own copy towards commit.

The core has no clock, no sockets, no threads and no global randomness: the
election timeout is drawn from ``Config.rng``.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from raft.log import RaftInvariantError, RaftLog
from raft.progress import Progress, ProgressState
from raft.storage import Storage, StorageError
from raft.types import (
    NONE,
    Append,
    AppendResponse,
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    Role,
    Snapshot,
    SoftState,
    TimeoutNow,
    Vote,
    VoteResponse,
)


class RaftError(Exception):
    """Base of the errors the core raises at its caller."""


class NotLeader(RaftError):
    """Only the leader takes proposals; ``leader`` is who this node thinks leads (or NONE)."""

    def __init__(self, leader: int) -> None:
        super().__init__(f"not the leader (leader hint: {leader or 'unknown'})")
        self.leader = leader


class ProposalDropped(RaftError):
    """The leader refused a proposal: a leadership transfer is in progress, or a
    membership change is not allowed now (``reason`` says which)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RandomSource(Protocol):
    """Where election timeouts come from; ``random.Random(seed)`` fits."""

    def randrange(self, start: int, stop: int) -> int: ...


@dataclasses.dataclass
class Config:
    """How one node of one group behaves. Membership is not here: it is replicated
    state, read from storage (``Storage.initial_state`` and CONFIG entries)."""

    id: int
    rng: RandomSource
    election_tick: int = 10
    heartbeat_tick: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 256
    max_inflight_bytes: int = 32 << 20
    max_committed_size_per_ready: int = 64 << 20
    #: Let the group go quiet when idle (docs/raft.md, "Idle groups: quiescence"): the
    #: leader stops heartbeating and the followers stop their election timers once every
    #: follower it hears from holds the whole log, committed. The caller must then run a
    #: node-level failure detector (`raft.liveness.PeerLiveness`) and call `peer_down`.
    quiesce: bool = False
    #: When the commit index moves, send every follower an append, empty if it has
    #: nothing new (etcd's way: followers learn the commit at once). False: only
    #: followers with entries still to receive get one; the others learn the commit from
    #: the next append or heartbeat, which saves each follower a Ready and an
    #: acknowledgement per commit (a data partition's followers; the node's controller
    #: group keeps True, as every node answers metadata from its own copy).
    eager_commit: bool = True
    #: Thrifty appends (docs/raft.md, "Thrifty appends"): a new entry goes at once only to
    #: as many voters as its commit needs, preferring the follower whose acknowledgement
    #: last completed a commit; the other voters are sent what they lack at each tick,
    #: or as soon as it reaches ``trailing_batch_bytes``. With three replicas a write then
    #: wakes one follower instead of two, and the other writes and syncs a tick's entries
    #: at once. Learners, and every member during a leadership transfer, get them at once.
    thrifty: bool = False
    trailing_batch_bytes: int = 256 << 10
    #: The last offset the caller's state machine already holds after a restart
    #: (None: the snapshot index, i.e. redeliver every committed entry in the log).
    applied: int | None = None

    def validate(self) -> None:
        if self.id == NONE:
            raise ValueError("node id 0 is reserved (NONE)")
        if self.heartbeat_tick <= 0 or self.election_tick <= self.heartbeat_tick:
            raise ValueError("need 0 < heartbeat_tick < election_tick")
        if self.max_inflight_msgs <= 0 or self.max_size_per_msg < 0:
            raise ValueError("max_inflight_msgs must be > 0 and max_size_per_msg >= 0")


@dataclasses.dataclass
class Ready:
    """Everything the caller must do, in the order documented on the module."""

    hard_state: HardState | None
    soft_state: SoftState | None
    snapshot: Snapshot | None
    entries: list[Entry]
    committed_entries: list[Entry]
    messages: list[Message]


@dataclasses.dataclass(frozen=True)
class PeerStatus:
    match: int
    next: int
    state: ProgressState
    recent_active: bool
    learner: bool
    inflight: int
    lag: int  #: leader's last offset - match
    #: Holds every entry the leader had one tick ago: a follower sent entries in batches
    #: (`Config.thrifty`), or one whose acknowledgement is on its way, is not behind.
    caught_up: bool


@dataclasses.dataclass(frozen=True)
class Status:
    id: int
    role: Role
    term: int
    vote: int
    leader: int
    commit: int
    applied: int
    first_index: int
    last_index: int
    conf: ConfState
    transferee: int
    #: Leader only: per member (voters and learners, self included).
    progress: dict[int, PeerStatus]
    quiescent: bool = False

    def under_replicated(self) -> list[int]:
        """Members (leader view) that lack entries the leader had a tick ago."""
        return [p for p, s in self.progress.items() if not s.caught_up]


class RaftNode:
    """One replica of one group. See the module docstring for the driving loop."""

    def __init__(self, config: Config, storage: Storage) -> None:
        config.validate()
        self.id = config.id
        self.cfg = config
        hs, base_conf = storage.initial_state()
        snap_index = storage.first_index() - 1
        applied = snap_index if config.applied is None else max(config.applied, snap_index)
        if hs.commit > storage.last_index():
            raise RaftInvariantError(
                f"hard state commit {hs.commit} is beyond the durable log end {storage.last_index()}"
            )
        commit = max(hs.commit, snap_index)
        self.log = RaftLog(storage, committed=commit, applied=min(applied, commit))
        self.term = hs.term
        self.vote = hs.vote
        self.leader = NONE
        self.role = Role.FOLLOWER
        # Membership: the base is the configuration as of _conf_base_index, the list
        # holds the (uncommitted or not yet folded) CONFIG entries after it.
        self._conf_base = base_conf
        self._conf_base_index = snap_index
        self._conf_log: list[tuple[int, int, ConfState]] = [
            (e.index, e.term, ConfState.decode(e.data)) for e in storage.config_entries() if e.index > snap_index
        ]
        self.conf = self._conf_log[-1][2] if self._conf_log else base_conf
        self._fold_committed_conf()

        self.prs: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}
        self.msgs: list[Message] = []
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = config.election_tick
        self.lead_transferee = NONE
        self.pending_conf_index = -1
        self._pending_bcast = False
        self._ready_out = False
        # Leader: the follower whose acknowledgement last completed a commit, the bytes
        # proposed so far (against `Progress.sent_bytes`), and the log's last offset at
        # the two latest ticks (the older one is what "caught up" means).
        self._fast = NONE
        self._proposed_bytes = 0
        self._tick_lasts = (-1, -1)
        #: Quiet: ticks do nothing and no heartbeats leave (see `Config.quiesce`).
        self.quiescent = False
        self._quiet_acks: dict[int, int] = {}  # leader: follower -> the commit it went quiet at
        #: Peers the caller's failure detector holds down (`peer_down`, until `peer_back`):
        #: the only members that do not hold a leader awake.
        self.peers_down: set[int] = set()
        self._prev_hard = hs
        self._prev_soft = SoftState(NONE, Role.FOLLOWER)
        self._reset_timeout()

    # ------------------------------------------------------------------ public

    @property
    def commit(self) -> int:
        return self.log.committed

    def is_voter(self) -> bool:
        return self.id in self.conf.voters

    def log_term(self, index: int) -> int | None:
        """Term of the entry covering ``index`` in this node's log (unstable part
        included); None if compacted or beyond the end."""
        return self.log.term(index)

    def tick(self) -> None:
        """Advance logical time by one tick (the node calls it every N ms). A quiescent
        node's time stands still: a node may skip ticking it altogether."""
        if self.quiescent:
            return
        if self.role == Role.LEADER:
            self._tick_leader()
        else:
            self._tick_election()

    def campaign(self) -> None:
        """Start an election now (pre-vote first if enabled), as if the timeout fired."""
        if self.role != Role.LEADER:
            self._unquiesce()
            self._hup(transfer=False)

    def wake(self) -> None:
        """Leave quiescence now (a leader heartbeats at its next tick, a follower's
        election timer runs again). Proposals, transfers and messages wake a node
        themselves; this is for the caller's own reasons."""
        self._unquiesce()

    def peer_down(self, node: int) -> None:
        """The caller's node-level failure detector says ``node`` is down, or restarted
        (`raft.liveness.PeerLiveness`). A leader with ``node`` among its members wakes
        up, so check-quorum runs again; a follower whose leader it is wakes up and gives
        up its lease, so it campaigns within a randomized part of an election timeout
        unless the leader speaks first. Timers only: nothing here touches safety."""
        self.peers_down.add(node)
        if self.role == Role.LEADER:
            if node in self.prs:
                self._unquiesce()
        elif node != NONE and node == self.leader:
            self.leader_gone()

    def leader_gone(self) -> None:
        """A follower's leader no longer leads (the caller knows it some other way: its
        node is down, or says it leads something else): wake, give up the lease, and
        campaign within a randomized part of an election timeout unless it speaks first."""
        if self.role == Role.LEADER:
            return
        self._unquiesce()
        self.election_elapsed = max(self.election_elapsed, self.cfg.election_tick)

    def peer_back(self, node: int) -> None:
        """The caller's failure detector hears from ``node`` again after calling it down
        (or after reporting its restart). A quiet leader with ``node`` among its members
        wakes and heartbeats it: the group went quiet without it, and a quiet member
        learns nothing until spoken to, not even a newer term."""
        self.peers_down.discard(node)
        if self.role == Role.LEADER and node in self.prs:
            self._unquiesce()

    def propose(self, data: bytes, count: int) -> Entry:
        """Append a record batch of ``count`` records; returns its entry (offsets and
        term). Committed once it appears in ``Ready.committed_entries``."""
        if count < 1:
            raise ValueError("a batch holds at least one record")
        self._check_proposable()
        return self._append_local(EntryKind.NORMAL, data, count)

    def propose_conf_change(self, change: ConfChange) -> Entry:
        """Propose one membership step. Single-server changes only, one at a time:

        * ADD_LEARNER: the node starts receiving the log, without a vote.
        * PROMOTE: a learner becomes a voter, only once it has caught up (its
          match reached the commit index), so adding it never stalls commits.
        * REMOVE: a voter or learner leaves. The leader cannot remove itself:
          transfer leadership first.

        The change takes effect on every node as soon as the entry is in its log
        (the thesis rule), so the leader refuses a new one until the previous one
        committed and until it committed an entry of its own term (the fix for
        the single-server-change bug in a new term).
        """
        self._check_proposable()
        if self.pending_conf_index > self.log.committed:
            raise ProposalDropped("a membership change is still uncommitted")
        if self.log.term(self.log.committed) != self.term:
            raise ProposalDropped("the leader has not committed an entry of its term yet")
        voters, learners = list(self.conf.voters), list(self.conf.learners)
        node = change.node
        if node == NONE:
            raise ValueError("node id 0 is reserved")
        if change.op == ConfChangeOp.ADD_LEARNER:
            if node in voters or node in learners:
                raise ProposalDropped(f"node {node} is already a member")
            learners.append(node)
        elif change.op == ConfChangeOp.PROMOTE:
            if node not in learners:
                raise ProposalDropped(f"node {node} is not a learner")
            pr = self.prs[node]
            if pr.match < self.log.committed:
                raise ProposalDropped(f"learner {node} has not caught up ({pr.match} < {self.log.committed})")
            learners.remove(node)
            voters.append(node)
        elif change.op == ConfChangeOp.REMOVE:
            if node == self.id:
                raise ProposalDropped("the leader cannot remove itself; transfer leadership first")
            if node in voters:
                voters.remove(node)
            elif node in learners:
                learners.remove(node)
            else:
                raise ProposalDropped(f"node {node} is not a member")
        else:
            raise ValueError(f"unknown op {change.op!r}")
        conf = ConfState(tuple(sorted(voters)), tuple(sorted(learners)))
        return self._append_local(EntryKind.CONFIG, conf.encode(), 1)

    def transfer_leadership(self, to: int) -> None:
        """Hand leadership to voter ``to``: bring its log up to date, then tell it to
        campaign at once (TimeoutNow). Proposals are refused meanwhile; the transfer
        is abandoned after an election timeout."""
        if self.role != Role.LEADER:
            raise NotLeader(self.leader)
        if to == self.id:
            self.lead_transferee = NONE
            return
        if to not in self.conf.voters:
            raise ValueError(f"node {to} is not a voter")
        self._unquiesce()
        if self.lead_transferee == to:
            return
        self.lead_transferee = to
        self.election_elapsed = 0
        if self.prs[to].match == self.log.last_index():
            self._send(TimeoutNow(to=to, frm=self.id, term=self.term))
        else:
            self._send_append(to)

    def step(self, m: Message) -> None:
        """Handle one message from a peer."""
        if m.to != self.id:
            return
        if self.quiescent and not self._keeps_quiet(m):
            self._unquiesce()
            if self.role == Role.FOLLOWER and self.leader not in (NONE, m.frm):
                # Our election timer runs again, and the leader, still quiet, would not
                # reset it: wake the leader too (its heartbeat quiets us again). A
                # campaign we refuse may not reach it (a removed node's, or one cut
                # off from it), and two of us woken so could elect without it.
                self._send(HeartbeatResponse(to=self.leader, frm=self.id, term=self.term))
        if m.term > self.term:
            if isinstance(m, Vote) and not m.transfer and self._in_lease():
                # A leader is alive as far as we know: ignore the campaign instead
                # of raising our term (the check-quorum lease). This is what keeps a
                # rejoining partitioned node from disrupting a healthy group.
                return
            if isinstance(m, Vote) and m.pre_vote:
                pass  # never change term on a pre-vote request
            elif isinstance(m, VoteResponse) and m.pre_vote and m.granted:
                pass  # granted pre-votes are at our future term
            elif isinstance(m, (Append, Heartbeat, InstallSnapshot)):
                self._become_follower(m.term, m.frm)
            else:
                self._become_follower(m.term, NONE)
        elif m.term < self.term:
            if isinstance(m, (Append, Heartbeat)) and (self.cfg.check_quorum or self.cfg.pre_vote):
                # A stale leader (e.g. partitioned while we moved on) learns our term
                # and steps down; without this it would keep its followers quiet.
                self._send(AppendResponse(to=m.frm, frm=self.id, term=self.term, index=-1, reject=True))
            elif isinstance(m, Vote) and m.pre_vote:
                self._send(VoteResponse(to=m.frm, frm=self.id, term=self.term, granted=False, pre_vote=True))
            return

        if isinstance(m, Vote):
            self._handle_vote(m)
        elif self.role == Role.LEADER:
            self._step_leader(m)
        elif self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

    def has_ready(self) -> bool:
        if self._ready_out:
            return False
        return bool(
            self._pending_bcast
            or self.msgs
            or self.log.unstable
            or self.log.unstable_snapshot is not None
            or self.log.has_next_committed_entries()
            or self._state_changed()
        )

    def _state_changed(self) -> bool:
        """Whether the hard or soft state differs from the last Ready's (without building
        either: `has_ready` runs after every tick and step)."""
        hs, ss = self._prev_hard, self._prev_soft
        return (
            self.term != hs.term
            or self.vote != hs.vote
            or self.log.committed != hs.commit
            or self.leader != ss.leader
            or self.role != ss.role
        )

    def ready(self) -> Ready:
        """Collect the work to do. Call ``advance`` with it before the next ``ready``."""
        if self._ready_out:
            raise RaftError("ready() called again before advance()")
        if self._pending_bcast:
            self._pending_bcast = False
            if self.role == Role.LEADER:
                self._bcast_append()
        hs = self._hard_state()
        ss = self._soft_state()
        entries = list(self.log.unstable)
        if entries and entries[0].index <= self.log.committed and self._storage_holds(entries[0]):
            # Storage would cut committed entries it already holds and write them again.
            raise RaftInvariantError(
                f"Ready would rewrite committed entry {entries[0].index}-{entries[0].last} "
                f"term {entries[0].term}, which storage already holds (commit {self.log.committed})"
            )
        rd = Ready(
            hard_state=hs if hs != self._prev_hard else None,
            soft_state=ss if ss != self._prev_soft else None,
            snapshot=self.log.unstable_snapshot,
            entries=entries,
            committed_entries=self.log.next_committed_entries(self.cfg.max_committed_size_per_ready),
            messages=self.msgs,
        )
        self.msgs = []
        self._ready_out = True
        return rd

    def advance(self, rd: Ready) -> None:
        """The caller has done everything ``rd`` asked: entries and hard state are
        durable, messages were sent, committed entries applied."""
        if not self._ready_out:
            raise RaftError("advance() without a ready()")
        self._ready_out = False
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        if rd.soft_state is not None:
            self._prev_soft = rd.soft_state
        if rd.snapshot is not None:
            self.log.stable_snap_to(rd.snapshot.index)
            self.log.applied_to(rd.snapshot.index)
        self.log.stable_to(rd.entries)
        if rd.committed_entries:
            self.log.applied_to(rd.committed_entries[-1].last)
        if self.role == Role.LEADER:
            # Our own copy counts towards commit only once it is durable.
            if self.prs[self.id].maybe_update(self.log.last_stable_index()) and self._maybe_commit():
                self._bcast_append(send_if_empty=self.cfg.eager_commit)

    def _storage_holds(self, e: Entry) -> bool:
        st = self.log.storage
        if not st.first_index() <= e.index <= st.last_index():
            return False
        try:
            return st.term(e.index) == e.term and st.entries(e.index, e.index + 1, 0)[0].last == e.last
        except StorageError:
            return False

    def status(self) -> Status:
        progress: dict[int, PeerStatus] = {}
        if self.role == Role.LEADER:
            last = self.log.last_index()
            bound = self._tick_lasts[0]  # (a leader's log only grows: never past its end)
            for p, pr in self.prs.items():
                progress[p] = PeerStatus(
                    match=pr.match,
                    next=pr.next,
                    state=pr.state,
                    recent_active=pr.recent_active or p == self.id,
                    learner=pr.learner,
                    inflight=len(pr.inflights),
                    lag=max(0, last - pr.match),
                    caught_up=pr.match >= bound,
                )
        return Status(
            id=self.id,
            role=self.role,
            term=self.term,
            vote=self.vote,
            leader=self.leader,
            commit=self.log.committed,
            applied=self.log.applied,
            first_index=self.log.first_index(),
            last_index=self.log.last_index(),
            conf=self.conf,
            transferee=self.lead_transferee,
            progress=progress,
            quiescent=self.quiescent,
        )

    def lagging(self) -> bool:
        """Leader: whether some member lacks entries we had a tick ago
        (`Status.under_replicated` without building a status)."""
        if self.role != Role.LEADER:
            return False
        bound = self._tick_lasts[0]
        return any(pr.match < bound for pr in self.prs.values())

    # ------------------------------------------------------------ state changes

    def _hard_state(self) -> HardState:
        return HardState(term=self.term, vote=self.vote, commit=self.log.committed)

    def _soft_state(self) -> SoftState:
        return SoftState(leader=self.leader, role=self.role)

    def _reset_timeout(self) -> None:
        et = self.cfg.election_tick
        self.randomized_election_timeout = et + self.cfg.rng.randrange(0, et)

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = NONE
        self.quiescent = False
        self._quiet_acks = {}
        self.leader = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_timeout()
        self.lead_transferee = NONE
        self.votes = {}
        self.prs = {}
        self._pending_bcast = False

    def _become_follower(self, term: int, leader: int) -> None:
        self._reset(term)
        self.leader = leader
        self.role = Role.FOLLOWER

    def _become_pre_candidate(self) -> None:
        # Term and vote stay as they are: that is the point of pre-vote.
        self.quiescent = False
        self.votes = {}
        self.leader = NONE
        self.role = Role.PRE_CANDIDATE

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.leader = self.id
        self.role = Role.LEADER
        last = self.log.last_index()
        for p in self.conf.members():
            self.prs[p] = self._new_progress(p, last + 1)
        me = self.prs[self.id]
        me.maybe_update(self.log.last_stable_index())
        me.become_replicate()
        me.recent_active = True
        self._fast = NONE
        self._tick_lasts = (last, last)
        # No membership change before the new term's no-op commits.
        self.pending_conf_index = last + 1
        self._append_local(EntryKind.NOOP, b"", 1)

    def _new_progress(self, peer: int, next_index: int) -> Progress:
        return Progress(
            next_index,
            self.cfg.max_inflight_msgs,
            self.cfg.max_inflight_bytes,
            learner=peer in self.conf.learners,
        )

    # ---------------------------------------------------------------- elections

    def _in_lease(self) -> bool:
        return self.cfg.check_quorum and self.leader != NONE and self.election_elapsed < self.cfg.election_tick

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.is_voter() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self._hup(transfer=False)

    def _hup(self, transfer: bool) -> None:
        if not self.is_voter():
            return
        if self.cfg.pre_vote and not transfer:
            self._campaign(pre_vote=True, transfer=False)
        else:
            self._campaign(pre_vote=False, transfer=transfer)

    def _campaign(self, pre_vote: bool, transfer: bool) -> None:
        if pre_vote:
            self._become_pre_candidate()
            term = self.term + 1
        else:
            self._become_candidate()
            term = self.term
        self.election_elapsed = 0
        self._poll(self.id, True, pre_vote)
        if self.role != (Role.PRE_CANDIDATE if pre_vote else Role.CANDIDATE):
            return  # decided by our own vote alone (a single voter)
        last_index, last_term = self.log.last_index(), self.log.last_term()
        for p in self.conf.voters:
            if p != self.id:
                self._send(
                    Vote(
                        to=p,
                        frm=self.id,
                        term=term,
                        last_index=last_index,
                        last_term=last_term,
                        pre_vote=pre_vote,
                        transfer=transfer,
                    )
                )

    def _poll(self, frm: int, granted: bool, pre_vote: bool) -> None:
        """Record a vote (the first answer per voter counts); win or lose when decided."""
        self.votes.setdefault(frm, granted)
        voters = self.conf.voters
        yes = sum(1 for v in voters if self.votes.get(v) is True)
        no = sum(1 for v in voters if self.votes.get(v) is False)
        quorum = len(voters) // 2 + 1
        if yes >= quorum:
            if pre_vote:
                self._campaign(pre_vote=False, transfer=False)
            else:
                self._become_leader()
        elif len(voters) - no < quorum:
            self._become_follower(self.term, NONE)

    def _handle_vote(self, m: Vote) -> None:
        can_vote = (
            self.vote == m.frm or (self.vote == NONE and self.leader == NONE) or (m.pre_vote and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.last_index, m.last_term):
            # A granted response carries the requested term, so a pre-candidate
            # counts it at its future term.
            self._send(VoteResponse(to=m.frm, frm=self.id, term=m.term, granted=True, pre_vote=m.pre_vote))
            if not m.pre_vote:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self._send(VoteResponse(to=m.frm, frm=self.id, term=self.term, granted=False, pre_vote=m.pre_vote))

    def _step_candidate(self, m: Message) -> None:
        if isinstance(m, (Append, Heartbeat, InstallSnapshot)):
            # Someone won this term: follow it, then handle the message as a follower.
            self._become_follower(m.term, m.frm)
            self._step_follower(m)
        elif isinstance(m, VoteResponse):
            if m.pre_vote == (self.role == Role.PRE_CANDIDATE):
                self._poll(m.frm, m.granted, m.pre_vote)

    # ---------------------------------------------------------------- follower

    def _step_follower(self, m: Message) -> None:
        if isinstance(m, Append):
            self.election_elapsed = 0
            self.leader = m.frm
            self._handle_append(m)
        elif isinstance(m, Heartbeat):
            self.election_elapsed = 0
            self.leader = m.frm
            # The leader sends min(our match, its commit). Our log can be shorter than the
            # match it remembers only if we lost an acknowledged tail (a torn or damaged
            # disk); commit what we hold, and the next Append's prev check brings the
            # leader back to where our log really ends.
            last = self.log.last_index()
            if self.log.commit_to(min(m.commit, last)):
                self._fold_committed_conf()
            # A quiescing heartbeat: go quiet if our log ends at its commit, all committed.
            quiet = m.quiesce and self.cfg.quiesce and last == m.commit and self.log.committed == m.commit
            self.quiescent = quiet
            # A healthy follower always holds the commit it is sent (it is <= its match);
            # one that does not lost a tail, and says so, so an idle leader repairs it too.
            self._send(
                HeartbeatResponse(
                    to=m.frm,
                    frm=self.id,
                    term=self.term,
                    lost_tail=last if last < m.commit else None,
                    quiesced=m.commit if quiet else None,
                )
            )
        elif isinstance(m, InstallSnapshot):
            self.election_elapsed = 0
            self.leader = m.frm
            self._handle_snapshot(m)
        elif isinstance(m, TimeoutNow):
            if self.is_voter():
                self._hup(transfer=True)

    def _handle_append(self, m: Append) -> None:
        if m.prev_index < self.log.committed:
            self._send(AppendResponse(to=m.frm, frm=self.id, term=self.term, index=self.log.committed))
            return
        last_new = self.log.maybe_append(m.prev_index, m.prev_term, m.commit, m.entries)
        if last_new is not None:
            if m.entries and (self._conf_log or any(e.kind == EntryKind.CONFIG for e in m.entries)):
                self._conf_changed_by_log(m.entries)
            self._fold_committed_conf()
            self._send(AppendResponse(to=m.frm, frm=self.id, term=self.term, index=last_new))
            return
        hint = self.log.find_conflict_by_term(min(m.prev_index, self.log.last_index()), m.prev_term)
        hint_term = self.log.term(hint)
        self._send(
            AppendResponse(
                to=m.frm,
                frm=self.id,
                term=self.term,
                index=m.prev_index,
                reject=True,
                hint_index=hint,
                hint_term=hint_term if hint_term is not None else 0,
            )
        )

    def _handle_snapshot(self, m: InstallSnapshot) -> None:
        s = m.snapshot
        if s.index <= self.log.committed:
            pass
        elif self.log.match_term(s.index, s.term):
            # We already hold the snapshot's last entry: just learn it is committed.
            self.log.commit_to(s.index)
            self._fold_committed_conf()
        else:
            self.log.restore(s)
            self._conf_base = s.conf
            self._conf_base_index = s.index
            self._conf_log = []
            self.conf = s.conf
        # Acknowledge only what is known to match the leader: the committed prefix
        # (after a restore that is the snapshot index). An uncommitted suffix past
        # it may be another leader's and must not count as replicated.
        self._send(AppendResponse(to=m.frm, frm=self.id, term=self.term, index=self.log.committed))

    # ---------------------------------------------------------------- membership

    def _conf_changed_by_log(self, appended: tuple[Entry, ...]) -> None:
        """Recompute membership after a follower's log changed: the latest CONFIG entry
        in the log wins, committed or not, so a truncated one is forgotten."""
        # (offset, term) names one entry: if the term there changed, it was truncated.
        self._conf_log = [(i, t, c) for i, t, c in self._conf_log if self.log.term(i) == t]
        known = self._conf_log[-1][0] if self._conf_log else self._conf_base_index
        for e in appended:
            if e.kind == EntryKind.CONFIG and e.index > known:
                self._conf_log.append((e.index, e.term, ConfState.decode(e.data)))
        self._set_conf(self._conf_log[-1][2] if self._conf_log else self._conf_base)

    def _fold_committed_conf(self) -> None:
        """Committed CONFIG entries can never be truncated: fold them into the base."""
        while self._conf_log and self._conf_log[0][0] <= self.log.committed:
            self._conf_base_index, _, self._conf_base = self._conf_log.pop(0)

    def _set_conf(self, conf: ConfState) -> None:
        if conf == self.conf:
            return
        self.conf = conf
        if self.role != Role.LEADER:
            return
        for p in list(self.prs):
            if p not in conf.voters and p not in conf.learners:
                del self.prs[p]
        last = self.log.last_index()
        for p in conf.members():
            pr = self.prs.get(p)
            if pr is None:
                self.prs[p] = self._new_progress(p, last + 1)
            else:
                pr.learner = p in conf.learners
        if self.lead_transferee != NONE and self.lead_transferee not in conf.voters:
            self.lead_transferee = NONE
        self._maybe_commit()

    # ---------------------------------------------------------------- leader

    def _check_proposable(self) -> None:
        if self.role != Role.LEADER:
            raise NotLeader(self.leader)
        if self.lead_transferee != NONE:
            raise ProposalDropped(f"leadership is being transferred to {self.lead_transferee}")

    def _append_local(self, kind: EntryKind, data: bytes, count: int) -> Entry:
        self._unquiesce()
        index = self.log.last_index() + 1
        e = Entry(index=index, last=index + count - 1, term=self.term, kind=kind, data=data)
        self.log.append((e,))
        self._proposed_bytes += e.size
        if kind == EntryKind.CONFIG:
            self.pending_conf_index = index
            self._conf_log.append((index, self.term, ConfState.decode(data)))
            self._set_conf(self._conf_log[-1][2])
        self._pending_bcast = True
        return e

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        last = self.log.last_index()
        self._tick_lasts = (self._tick_lasts[1], last)
        if self.cfg.thrifty:
            # The trailing followers' batch (a no-op for those that have everything).
            for p, pr in self.prs.items():
                if p != self.id and pr.next <= last:
                    self._send_append(p, send_if_empty=False)
        if self.election_elapsed >= self.cfg.election_tick:
            self.election_elapsed = 0
            if self.cfg.check_quorum:
                if not self._quorum_active():
                    self._become_follower(self.term, NONE)
                    return
                for p, pr in self.prs.items():
                    pr.recent_active = p == self.id
            if self.lead_transferee != NONE:
                self.lead_transferee = NONE
        for pr in self.prs.values():
            if pr.state == ProgressState.SNAPSHOT:
                pr.snapshot_ticks += 1
                if pr.snapshot_ticks >= self.cfg.election_tick:
                    # No acknowledgement: assume the snapshot was lost and probe again.
                    pr.become_probe()
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick:
            self.heartbeat_elapsed = 0
            quiesce = self.cfg.quiesce and self._can_quiesce()
            self._bcast_heartbeat(quiesce)
            if quiesce and self._quiet_enough():
                self.quiescent = True  # (a group of one: nobody to wait for)

    def _quorum_active(self) -> bool:
        voters = self.conf.voters
        active = sum(1 for v in voters if v == self.id or (v in self.prs and self.prs[v].recent_active))
        return active >= len(voters) // 2 + 1

    def _bcast_heartbeat(self, quiesce: bool = False) -> None:
        for p, pr in self.prs.items():
            if p != self.id:
                self._send(
                    Heartbeat(
                        to=p, frm=self.id, term=self.term, commit=min(pr.match, self.log.committed), quiesce=quiesce
                    )
                )

    # ---------------------------------------------------------------- quiescence

    def _can_quiesce(self) -> bool:
        """Leader: the group is idle. Everything is committed and on our own disk, no
        transfer or broadcast is pending, and every member holds the whole log but those
        the failure detector holds down (they do not hold the group awake: `peer_back`
        wakes us when one returns). A member merely silent in the group holds it awake:
        it may be up and unable to hear us, and nobody would speak to it once we are quiet."""
        if self.lead_transferee != NONE or self._pending_bcast:
            return False
        last = self.log.last_index()
        if self.log.committed != last or self.prs[self.id].match != last:
            return False
        for p, pr in self.prs.items():
            if p != self.id and p not in self.peers_down and (pr.match != last or len(pr.inflights) > 0):
                return False
        return True

    def _quiet_enough(self) -> bool:
        """Leader: a quorum of voters (ourselves included) went quiet at our commit, and
        so did every member the failure detector does not hold down."""
        commit = self.log.committed
        acks = self._quiet_acks
        voters = self.conf.voters
        if sum(1 for v in voters if v == self.id or acks.get(v) == commit) < len(voters) // 2 + 1:
            return False
        return all(p == self.id or p in self.peers_down or acks.get(p) == commit for p in self.prs)

    def _keeps_quiet(self, m: Message) -> bool:
        """Whether a quiescent node may take ``m`` and stay quiet: a follower its leader's
        quiescing heartbeat (it answers it again), a leader a follower's answer to one at
        its commit (late or duplicated). Anything else wakes it."""
        if self.role == Role.LEADER:
            return isinstance(m, HeartbeatResponse) and m.term == self.term and m.quiesced == self.log.committed
        return isinstance(m, Heartbeat) and m.quiesce and m.term == self.term and m.frm == self.leader

    def _unquiesce(self) -> None:
        if not self.quiescent:
            return
        self.quiescent = False
        self._quiet_acks = {}
        if self.role == Role.LEADER:
            # A fresh check-quorum period (who is there is heard anew), and a heartbeat at
            # the next tick: quiescing again if nothing changed, so a follower whose
            # campaign woke us falls back in line and goes quiet with the rest.
            self.election_elapsed = 0
            for p, pr in self.prs.items():
                pr.recent_active = p == self.id
            self.heartbeat_elapsed = self.cfg.heartbeat_tick

    def _bcast_append(self, send_if_empty: bool = True) -> None:
        trailing = self._trailing()
        for p, pr in self.prs.items():
            if p != self.id and (p not in trailing or self._batch_due(pr)):
                self._send_append(p, send_if_empty)

    def _trailing(self) -> list[int]:
        """Leader: the voters a new entry need not go to at once (`Config.thrifty`): all
        but the quorum's worth we expect to acknowledge first. Those are, in order, the
        members the failure detector does not hold down, the one that last completed a
        commit, and the furthest along; so if that one stops answering, the next tick's
        batch lets another complete a commit, and it takes its place."""
        if not self.cfg.thrifty or self.lead_transferee != NONE:
            return []
        voters = self.conf.voters
        others = [v for v in voters if v != self.id and v in self.prs]
        need = len(voters) // 2 + 1 - (self.id in voters)
        if len(others) <= need:
            return []
        down, fast, prs = self.peers_down, self._fast, self.prs
        others.sort(key=lambda v: (v not in down, v == fast, prs[v].match), reverse=True)
        return others[need:]

    def _batch_due(self, pr: Progress) -> bool:
        """A trailing follower's backlog is a batch's worth: send it now, not at the tick."""
        return self._proposed_bytes - pr.sent_bytes >= self.cfg.trailing_batch_bytes

    def _send_append(self, to: int, send_if_empty: bool = True) -> bool:
        """Send the next append to ``to`` if its progress allows; returns whether one was sent."""
        pr = self.prs[to]
        if pr.is_paused():
            return False
        prev_index = pr.next - 1
        prev_term = self.log.term(prev_index)
        last = self.log.last_index()
        ents = self.log.entries(pr.next, last + 1, self.cfg.max_size_per_msg) if pr.next <= last else []
        if prev_term is None or ents is None:
            return self._send_snapshot(to, pr)
        if not ents and not send_if_empty:
            return False
        self._send(
            Append(
                to=to,
                frm=self.id,
                term=self.term,
                prev_index=prev_index,
                prev_term=prev_term,
                entries=tuple(ents),
                commit=self.log.committed,
            )
        )
        if ents:
            if ents[-1].last == last:
                pr.sent_bytes = self._proposed_bytes
            if pr.state == ProgressState.REPLICATE:
                pr.next = ents[-1].last + 1
                pr.inflights.add(ents[-1].last, sum(e.size for e in ents))
            elif pr.state == ProgressState.PROBE:
                pr.probe_sent = True
        elif pr.state == ProgressState.PROBE:
            pr.probe_sent = True
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            # Do not ship a (possibly large) snapshot to a peer we have not heard from.
            return False
        snap = self.log.snapshot()
        pr.become_snapshot(snap.index)
        self._send(InstallSnapshot(to=to, frm=self.id, term=self.term, snapshot=snap))
        return True

    def _maybe_commit(self) -> bool:
        """Advance commit to the highest offset a majority of voters hold durably,
        but only through an entry of the current term (Figure 8: counting replicas
        of an older term's entry proves nothing)."""
        matches = sorted((self.prs[v].match for v in self.conf.voters if v in self.prs), reverse=True)
        quorum = len(self.conf.voters) // 2 + 1
        if len(matches) < quorum:
            return False
        index = matches[quorum - 1]
        if index <= self.log.committed or self.log.term(index) != self.term:
            return False
        self.log.commit_to(index)
        self._fold_committed_conf()
        return True

    def _step_leader(self, m: Message) -> None:
        pr = self.prs.get(m.frm)
        if pr is None:
            return
        pr.recent_active = True
        if isinstance(m, AppendResponse):
            self._handle_append_response(m, pr)
        elif isinstance(m, HeartbeatResponse):
            if m.quiesced is not None:
                self._quiet_acks[m.frm] = m.quiesced
            else:
                self._quiet_acks.pop(m.frm, None)
            if m.lost_tail is not None and m.lost_tail < pr.match:
                # Lost a tail (see above): forget the match, probe from where its log ends.
                pr.match = -1
                pr.become_probe()
                pr.next = max(m.lost_tail + 1, self.log.first_index())
            if pr.state == ProgressState.PROBE:
                pr.probe_sent = False
            elif pr.state == ProgressState.REPLICATE and pr.inflights.full():
                pr.inflights.free_first()
            if pr.match < self.log.last_index():
                self._send_append(m.frm)
            if (
                m.quiesced is not None
                and not self.quiescent
                and self.cfg.quiesce
                and self._can_quiesce()
                and self._quiet_enough()
            ):
                self.quiescent = True

    def _handle_append_response(self, m: AppendResponse, pr: Progress) -> None:
        if m.reject and m.index >= pr.match > m.hint_index:
            # The follower's log now ends before what it acknowledged: it lost a tail (a
            # damaged disk, cut on recovery). Its hint is not known to match, so forget
            # the match altogether (always safe: a lower match can only delay a commit)
            # and probe from the hint; the next acknowledgement says what matches.
            pr.match = -1
            pr.become_probe()
            pr.next = max(m.hint_index + 1, self.log.first_index())
            self._send_append(m.frm)
            return
        if m.reject:
            probe_from = self.log.find_conflict_by_term(min(m.hint_index, m.index - 1), m.hint_term)
            if pr.maybe_decrease_to(m.index, probe_from + 1):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.frm)
            return
        old_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT:
            if pr.match >= pr.pending_snapshot:
                pr.become_probe()
                pr.become_replicate()
        else:
            pr.inflights.free_le(m.index)
        if self._maybe_commit():
            self._fast = m.frm
            self._bcast_append(send_if_empty=self.cfg.eager_commit)  # (see Config.eager_commit)
        elif old_paused:
            self._send_append(m.frm)
        # Keep the pipe full: send while the window allows and entries remain (to a
        # trailing follower only a batch's worth; the rest goes at the next tick).
        if pr.next <= self.log.last_index() and (
            not self.cfg.thrifty or self._batch_due(pr) or m.frm not in self._trailing()
        ):
            while pr.next <= self.log.last_index() and self._send_append(m.frm, send_if_empty=False):
                if pr.state != ProgressState.REPLICATE:
                    break
        if m.frm == self.lead_transferee and pr.match == self.log.last_index():
            self._send(TimeoutNow(to=m.frm, frm=self.id, term=self.term))

    def _send(self, m: Message) -> None:
        self.msgs.append(m)
