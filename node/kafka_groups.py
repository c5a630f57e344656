"""Kafka's classic group protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) for
Kafka clients, on the node that coordinates the group (the leader of the group's
`__consumer_offsets` partition, as for native groups).

The clients choose the assignment: the coordinator gathers the members' protocols at a
rebalance, names a leader among them, hands the leader everyone's metadata, and
passes the leader's assignment on to each member (the clients' own range, roundrobin
or cooperative-sticky assignors run unchanged). Membership lives in memory here, as a
Kafka coordinator's does between its writes; a coordinator change makes the members
rejoin (NOT_COORDINATOR, then UNKNOWN_MEMBER_ID), and what they committed is in the
replicated offsets (node.coordinator), where a native consumer of the group would read
it too. A group is either a Kafka group or a native one: joining one kind while the other
has members is refused with INCONSISTENT_GROUP_PROTOCOL.
"""

from __future__ import annotations

import enum
import itertools
import uuid
from dataclasses import dataclass

import trio

from client.errors import ErrorCode, TideMQError

#: A new (empty) group waits this long for more members before its first generation,
#: so members starting together share one rebalance (Kafka's
#: group.initial.rebalance.delay.ms, shorter: our clients start on loopback).
INITIAL_DELAY_S = 0.3
MIN_SESSION_MS, MAX_SESSION_MS = 1_000, 1_800_000


class GroupError(TideMQError):
    """A classic-group answer that is an error code of Kafka's own (`kafka_code`)."""

    code = ErrorCode.INVALID_REQUEST

    def __init__(self, kafka_code: int, message: str) -> None:
        super().__init__(message)
        self.kafka_code = kafka_code


# Kafka's codes the classic protocol uses (kio.schema.errors.ErrorCode values).
ILLEGAL_GENERATION = 22
INCONSISTENT_GROUP_PROTOCOL = 23
UNKNOWN_MEMBER_ID = 25
INVALID_SESSION_TIMEOUT = 26
REBALANCE_IN_PROGRESS = 27


class State(enum.Enum):
    EMPTY = "Empty"
    PREPARING = "PreparingRebalance"
    COMPLETING = "CompletingRebalance"
    STABLE = "Stable"


@dataclass
class JoinResult:
    generation: int
    protocol: str
    leader: str
    member_id: str
    members: list[tuple[str, str | None, bytes]]  # for the leader only


@dataclass
class Member:
    member_id: str
    instance_id: str | None
    session_s: float
    rebalance_s: float
    protocols: list[tuple[str, bytes]]
    seen: float  # trio time of its last request
    client_id: str = ""
    assignment: bytes = b""
    joined: trio.Event | None = None  # set when the join it waits on completes
    join_result: JoinResult | GroupError | None = None


class ClassicGroup:
    def __init__(self, name: str, protocol_type: str, term: int) -> None:
        self.name = name
        self.term = term  # the coordinator's term when it began: a later term starts afresh
        self.protocol_type = protocol_type
        self.state = State.EMPTY
        self.generation = 0
        self.protocol = ""
        self.leader = ""
        self.members: dict[str, Member] = {}
        self.not_before = 0.0  # a rebalance's join phase ends no sooner (the initial delay)
        self.deadline = 0.0  # and no later: members not joined again by then are dropped
        self.sync_done = trio.Event()

    # -- a rebalance -------------------------------------------------------------------

    def prepare(self, now: float) -> None:
        """Start a rebalance (or go on with the one under way): every member must join again."""
        if self.state == State.PREPARING:
            return
        initial = self.state == State.EMPTY
        self.state = State.PREPARING
        for m in self.members.values():
            m.joined = None
        self.sync_done.set()  # members waiting in SyncGroup are told to rejoin
        self.not_before = now + (INITIAL_DELAY_S if initial else 0.0)
        self.deadline = now + max([INITIAL_DELAY_S, *(m.rebalance_s for m in self.members.values())])

    def maybe_complete_join(self, now: float) -> None:
        """Finish the join phase once every member joined again (not before the initial
        delay), or at the deadline, dropping the members that did not."""
        if self.state != State.PREPARING:
            return
        joined = bool(self.members) and all(m.joined is not None for m in self.members.values())
        if not ((joined and now >= self.not_before) or now >= self.deadline):
            return
        for mid in [mid for mid, m in self.members.items() if m.joined is None]:
            del self.members[mid]
        if not self.members:
            self.state, self.protocol, self.leader = State.EMPTY, "", ""
            self.generation += 1
            return
        self.generation += 1
        self.protocol = self._choose_protocol()
        if self.leader not in self.members:
            self.leader = next(iter(self.members))
        self.state = State.COMPLETING
        self.sync_done = trio.Event()
        everyone = [(m.member_id, m.instance_id, dict(m.protocols)[self.protocol]) for m in self.members.values()]
        for m in self.members.values():
            m.assignment = b""
            m.join_result = JoinResult(
                self.generation, self.protocol, self.leader, m.member_id, everyone if m.member_id == self.leader else []
            )
            assert m.joined is not None
            m.joined.set()

    def _choose_protocol(self) -> str:
        """The protocol every member supports that most rank first (Kafka's vote)."""
        common = set.intersection(*(set(name for name, _ in m.protocols) for m in self.members.values()))
        votes = {name: 0 for name in common}
        for m in self.members.values():
            votes[next(name for name, _ in m.protocols if name in common)] += 1
        first = next(iter(self.members.values()))
        return max(votes, key=lambda n: (votes[n], -[p for p, _ in first.protocols].index(n)))

    def remove(self, member_id: str, now: float) -> None:
        if self.members.pop(member_id, None) is None:
            return
        if not self.members:
            self.state, self.protocol, self.leader = State.EMPTY, "", ""
            self.sync_done.set()
            return
        self.prepare(now)
        self.maybe_complete_join(now)


class ClassicGroups:
    """Every classic group this node coordinates, in memory."""

    def __init__(self) -> None:
        self.groups: dict[str, ClassicGroup] = {}
        self._ids = itertools.count(1)

    def active(self, group: str) -> bool:
        g = self.groups.get(group)
        return g is not None and bool(g.members)

    def forget(self, group: str) -> None:
        """This node no longer coordinates `group` (or coordinates it in a new term):
        its members learn it at their next request and join again."""
        g = self.groups.pop(group, None)
        if g is None:
            return
        for m in g.members.values():
            if m.joined is not None and not m.joined.is_set():
                m.join_result = GroupError(UNKNOWN_MEMBER_ID, "the group's coordinator changed; join again")
                m.joined.set()
        g.sync_done.set()

    def _member(self, group: str, member_id: str, generation: int | None) -> tuple[ClassicGroup, Member]:
        g = self.groups.get(group)
        m = g.members.get(member_id) if g is not None else None
        if g is None or m is None:
            raise GroupError(UNKNOWN_MEMBER_ID, f"{member_id!r} is not a member of group {group!r}; join again")
        if generation is not None and generation != g.generation:
            raise GroupError(ILLEGAL_GENERATION, f"group {group!r} is at generation {g.generation}, not {generation}")
        m.seen = trio.current_time()
        return g, m

    async def join(
        self,
        group: str,
        member_id: str,
        instance_id: str | None,
        protocol_type: str,
        protocols: list[tuple[str, bytes]],
        session_ms: int,
        rebalance_ms: int,
        term: int,
        client_id: str = "",
    ) -> JoinResult:
        if not MIN_SESSION_MS <= session_ms <= MAX_SESSION_MS:
            raise GroupError(
                INVALID_SESSION_TIMEOUT, f"session timeout {session_ms} ms outside {MIN_SESSION_MS}..{MAX_SESSION_MS}"
            )
        if not protocols:
            raise GroupError(INCONSISTENT_GROUP_PROTOCOL, "a member joins with at least one protocol")
        now = trio.current_time()
        g = self.groups.get(group)
        if g is None or not g.members:
            g = self.groups[group] = g if g is not None else ClassicGroup(group, protocol_type, term)
            g.protocol_type = protocol_type
        else:
            common = set.intersection(*({n for n, _ in m.protocols} for m in g.members.values()))
            if protocol_type != g.protocol_type or not common & {n for n, _ in protocols}:
                raise GroupError(
                    INCONSISTENT_GROUP_PROTOCOL, f"group {group!r} uses protocols none of which this member has"
                )
        if member_id and member_id not in g.members:
            raise GroupError(UNKNOWN_MEMBER_ID, f"{member_id!r} is not a member of group {group!r}; join with no id")
        if instance_id is not None and not member_id:
            back = self._static_return(g, instance_id, protocols, session_ms, rebalance_ms, now, client_id)
            if back is not None:
                return back
        if instance_id is not None:
            # A static member back under a new id takes its old place.
            for old in [m for m in g.members.values() if m.instance_id == instance_id and m.member_id != member_id]:
                del g.members[old.member_id]
                if g.leader == old.member_id:
                    g.leader = ""
        if not member_id:
            member_id = f"{instance_id or 'member'}-{next(self._ids)}-{uuid.uuid4().hex[:8]}"
        m = g.members.get(member_id)
        if m is None:
            m = g.members[member_id] = Member(
                member_id, instance_id, session_ms / 1000, rebalance_ms / 1000, list(protocols), now, client_id
            )
        else:
            m.protocols, m.session_s, m.rebalance_s, m.seen = (
                list(protocols),
                session_ms / 1000,
                rebalance_ms / 1000,
                now,
            )
        g.prepare(now)
        m.joined = trio.Event()
        m.join_result = None
        g.maybe_complete_join(now)
        joined = m.joined
        while not joined.is_set() and trio.current_time() <= g.deadline:
            # Wake when the join phase may end by itself (the initial delay, the deadline).
            now = trio.current_time()
            with trio.move_on_at(g.not_before if now < g.not_before else g.deadline):
                await joined.wait()
            g.maybe_complete_join(trio.current_time())
        result = m.join_result
        if isinstance(result, GroupError):
            raise result
        if result is None:
            raise GroupError(REBALANCE_IN_PROGRESS, f"group {group!r} did not finish its rebalance in time; join again")
        return result

    def _static_return(
        self,
        g: ClassicGroup,
        instance_id: str,
        protocols: list[tuple[str, bytes]],
        session_ms: int,
        rebalance_ms: int,
        now: float,
        client_id: str,
    ) -> JoinResult | None:
        """A static member back (a restart within its session timeout) into a stable
        group, with the same subscription: it takes its old place under a new id and
        keeps its assignment, and nobody rebalances (KIP-345). None where a rebalance is
        due after all (the group is mid-rebalance, or the member's metadata changed)."""
        old = next((m for m in g.members.values() if m.instance_id == instance_id), None)
        if (
            old is None
            or g.state != State.STABLE
            or dict(protocols).get(g.protocol) != dict(old.protocols).get(g.protocol)
        ):
            return None
        member_id = f"{instance_id}-{next(self._ids)}-{uuid.uuid4().hex[:8]}"
        del g.members[old.member_id]
        g.members[member_id] = Member(
            member_id,
            instance_id,
            session_ms / 1000,
            rebalance_ms / 1000,
            list(protocols),
            now,
            client_id,
            old.assignment,
        )
        if g.leader == old.member_id:
            g.leader = member_id
        # A returning leader gets the members (its client expects them) and may assign
        # again; a stable group's SyncGroup answers the assignment it has, so that is moot.
        everyone = [(m.member_id, m.instance_id, dict(m.protocols)[g.protocol]) for m in g.members.values()]
        return JoinResult(g.generation, g.protocol, g.leader, member_id, everyone if g.leader == member_id else [])

    async def sync(self, group: str, member_id: str, generation: int, assignments: dict[str, bytes]) -> bytes:
        g, m = self._member(group, member_id, generation)
        if g.state == State.PREPARING:
            raise GroupError(REBALANCE_IN_PROGRESS, f"group {group!r} is rebalancing; join again")
        if g.state == State.COMPLETING and member_id == g.leader:
            for mid, member in g.members.items():
                member.assignment = assignments.get(mid, b"")
            g.state = State.STABLE
            g.sync_done.set()
        if g.state == State.COMPLETING:
            done = g.sync_done
            with trio.move_on_after(max(m.session_s, 1.0)):
                await done.wait()
            g, m = self._member(group, member_id, generation)
            if g.state != State.STABLE:
                raise GroupError(REBALANCE_IN_PROGRESS, f"group {group!r} is rebalancing; join again")
        return m.assignment

    def heartbeat(self, group: str, member_id: str, generation: int) -> None:
        g, _ = self._member(group, member_id, generation)
        if g.state == State.PREPARING:
            raise GroupError(REBALANCE_IN_PROGRESS, f"group {group!r} is rebalancing; join again")

    def leave(self, group: str, member_id: str, instance_id: str | None = None) -> None:
        g = self.groups.get(group)
        if g is None:
            raise GroupError(UNKNOWN_MEMBER_ID, f"group {group!r} has no member {member_id!r}")
        if not member_id and instance_id is not None:
            member_id = next((m.member_id for m in g.members.values() if m.instance_id == instance_id), "")
        if member_id not in g.members:
            raise GroupError(UNKNOWN_MEMBER_ID, f"group {group!r} has no member {member_id!r}")
        g.remove(member_id, trio.current_time())

    def check_commit(self, group: str, member_id: str, generation: int) -> None:
        """A member's OffsetCommit: its generation must be the group's (a simple commit,
        no member and generation -1, only to a group without members)."""
        if not member_id and generation < 0:
            if self.active(group):
                raise GroupError(UNKNOWN_MEMBER_ID, f"group {group!r} has members: commit as one of them")
            return
        self._member(group, member_id, generation)

    def expire(self) -> None:
        """Drop members silent past their session timeout; finish joins that are due."""
        now = trio.current_time()
        for g in list(self.groups.values()):
            for m in list(g.members.values()):
                if now - m.seen > m.session_s and not (g.state == State.PREPARING and m.joined is not None):
                    g.remove(m.member_id, now)
            g.maybe_complete_join(now)
