"""One consumer group's membership on its coordinator, KIP-848 style: who is in, what
each member should own (the target), and what it may be handed right now.

Pure: the caller passes the time and a function giving a topic's partition count, so it
is tested without trio and every rule is visible in one place.

The safety rule: a partition is handed to a member only once no other member may still
hold it. "May hold" is what a member last reported owning plus what it was last told to
own (it may be taking those on right now, before its next heartbeat says so). A member
whose ownership is unknown (loaded from the log after a coordinator failover, not heard
from yet) may hold anything, so until every such member has reported or expired nothing
new is handed out and nothing is taken away: members keep what they report.

The target comes from `node.assignor` over the members whose join is durable in
`__consumer_offsets` (`persisted`): a member gets partitions only once a new coordinator
would know it exists, so a failover can never forget someone who holds partitions.

The group epoch counts changes of the target's inputs (a member joined or went, a
subscription or a partition count changed). A member's epoch is the group epoch it is
reconciled to: it catches up as soon as it has nothing left to give back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from client.errors import LimitExceededError, UnknownMemberError
from node.assignor import TopicPartition, assign

PartitionCount = Callable[[str], int]  # topic -> partitions (0: no such topic)

MAX_MEMBERS = 1000  # members of one group (Kafka's group.consumer.max.size is 200)
STEADY_HEARTBEATS_PER_SESSION = 4  # a steady member heartbeats 4 times per session timeout...
MAX_STEADY_HEARTBEAT_MS = 3000  # ...but at least every 3 s, so rebalances start fast
PENDING_HEARTBEAT_MS = 250  # while it has something to give back or to receive

EMPTY: frozenset[TopicPartition] = frozenset()


@dataclass(eq=False)
class Member:
    member_id: str
    client_id: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    last_heard: float
    topics: frozenset[str] | None = None  # None: not heard since this coordinator took over
    owned: frozenset[TopicPartition] | None = None  # what it last reported holding; None: unknown
    sent: frozenset[TopicPartition] = EMPTY  # what it was last told to hold
    epoch: int = 0
    revoking_since: float | None = None  # since when it holds something it must give back
    persisted: bool = False  # its join is committed in the log
    # The epoch each partition it may hold was first sent to it at (0: it said it owned it
    # before this coordinator could tell): a commit naming an earlier epoch for one comes
    # from a handler of a holding it gave up since, and is refused (KIP-447).
    since: dict[TopicPartition, int] = field(default_factory=dict)
    # The highest offset it committed for each partition it holds (in this term): a
    # lower one from it is a late copy of an earlier request.
    committed: dict[TopicPartition, int] = field(default_factory=dict)

    @property
    def meta(self) -> tuple[str, int, int]:
        """What the log keeps about a member (enough to wait for it after a failover)."""
        return (self.client_id, self.session_timeout_ms, self.rebalance_timeout_ms)

    def may_hold(self) -> frozenset[TopicPartition]:
        return (self.owned or EMPTY) | self.sent

    def steady_interval_ms(self) -> int:
        return max(50, min(self.session_timeout_ms // STEADY_HEARTBEATS_PER_SESSION, MAX_STEADY_HEARTBEAT_MS))


class Group:
    def __init__(self, name: str, epoch: int = 0) -> None:
        self.name = name
        self.epoch = epoch
        self.members: dict[str, Member] = {}
        self.counts: dict[str, int] = {}  # partition counts the targets were built on
        # member id -> target; None while some member's ownership is unknown.
        self.targets: dict[str, frozenset[TopicPartition]] | None = {}

    # -- membership --------------------------------------------------------------------

    def load(self, member_id: str, meta: tuple[str, int, int], now: float) -> None:
        """A member the log says exists (after a failover): ownership unknown until it
        reports; it gets a full session timeout from now to do so."""
        client_id, session_ms, rebalance_ms = meta
        self.members[member_id] = Member(member_id, client_id, session_ms, rebalance_ms, now, persisted=True)
        self.targets = None

    def join(
        self,
        member_id: str,
        client_id: str,
        topics: Iterable[str],
        owned: Iterable[TopicPartition],
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        now: float,
        count: PartitionCount,
    ) -> Member:
        """Member epoch 0: a new member, or a known one rejoining (after it lost its
        partitions). A new member gets nothing until `mark_persisted`."""
        m = self.members.get(member_id)
        if m is None and len(self.members) >= MAX_MEMBERS:
            raise LimitExceededError(
                f"group has {len(self.members)} members, the most it takes; a new member "
                "joins once one leaves or expires"
            )
        if m is None:
            # A removed member's removal moved the group epoch on: this incarnation's
            # epochs are above any its previous one was given.
            m = self.members[member_id] = Member(
                member_id, client_id, session_timeout_ms, rebalance_timeout_ms, now, epoch=self.epoch
            )
        else:
            m.client_id, m.session_timeout_ms, m.rebalance_timeout_ms = (
                client_id,
                session_timeout_ms,
                rebalance_timeout_ms,
            )
            m.sent = EMPTY  # a rejoining member dropped whatever it was told before
            m.since.clear()
            self.epoch += 1  # ...and what it gets again is sent at a later epoch
        self._report(m, topics, owned, now, count)
        return m

    def heartbeat(
        self, member_id: str, topics: Iterable[str], owned: Iterable[TopicPartition], now: float, count: PartitionCount
    ) -> Member:
        m = self.members.get(member_id)
        if m is None:
            raise UnknownMemberError(
                f"group {self.name!r} has no member {member_id!r} (it left or was expired); rejoin with epoch 0"
            )
        self._report(m, topics, owned, now, count)
        return m

    def _report(
        self, m: Member, topics: Iterable[str], owned: Iterable[TopicPartition], now: float, count: PartitionCount
    ) -> None:
        m.last_heard = now
        m.owned = frozenset(owned)
        new_topics = frozenset(topics)
        changed = False
        if new_topics and new_topics != m.topics:  # an empty list keeps the subscription
            m.topics = new_topics
            changed = m.persisted
        if self.targets is None and all(o.owned is not None for o in self.members.values()):
            changed = True  # the last unknown owner reported
        if changed:
            self._changed(now, count)
        else:
            self._update_clock(m, now)

    def leave(self, member_id: str, now: float, count: PartitionCount) -> bool:
        m = self.members.pop(member_id, None)
        if m is None:
            return False
        self._removed([m], now, count)
        return True

    def mark_persisted(self, member_id: str, now: float, count: PartitionCount) -> None:
        m = self.members.get(member_id)
        if m is not None and not m.persisted:
            m.persisted = True
            self._changed(now, count)

    def expire(self, now: float, count: PartitionCount) -> list[tuple[str, str]]:
        """Remove members silent past their session timeout, or still holding something
        they must give back past their rebalance timeout. Returns (member id, why)."""
        gone: list[Member] = []
        why: list[tuple[str, str]] = []
        for m in list(self.members.values()):
            if now - m.last_heard > m.session_timeout_ms / 1000:
                reason = f"no heartbeat within its session timeout ({m.session_timeout_ms} ms)"
            elif m.revoking_since is not None and now - m.revoking_since > m.rebalance_timeout_ms / 1000:
                reason = f"did not release partitions within its rebalance timeout ({m.rebalance_timeout_ms} ms)"
            else:
                continue
            del self.members[m.member_id]
            gone.append(m)
            why.append((m.member_id, reason))
        if gone:
            self._removed(gone, now, count)
        return why

    def _removed(self, gone: list[Member], now: float, count: PartitionCount) -> None:
        if any(m.persisted for m in gone) or self.targets is None:
            self._changed(now, count)
        # A removed member that had no target only frees what it held: nothing to recompute.

    def refresh(self, now: float, count: PartitionCount) -> bool:
        """Recompute if a subscribed topic's partition count changed (created, deleted)."""
        if self._counts(count) != self.counts:
            self._changed(now, count)
            return True
        return False

    # -- targets -----------------------------------------------------------------------

    def _counts(self, count: PartitionCount) -> dict[str, int]:
        topics: set[str] = set()
        for m in self.members.values():
            if m.persisted and m.topics:
                topics |= m.topics
        return {t: count(t) for t in sorted(topics)}

    def _changed(self, now: float, count: PartitionCount) -> None:
        self.counts = self._counts(count)
        if any(m.owned is None for m in self.members.values()):
            self.targets = None  # nothing visible changes until the unknown owners report
        else:
            self.epoch += 1
            active = {mid: m for mid, m in self.members.items() if m.persisted}
            if self.targets is None:  # rebuilt after a failover: stick to what members hold
                previous = {mid: m.owned or EMPTY for mid, m in active.items()}
            else:
                previous = {mid: self.targets.get(mid, EMPTY) for mid in active}
            result = assign({mid: m.topics or frozenset() for mid, m in active.items()}, self.counts, previous)
            self.targets = {mid: frozenset(tps) for mid, tps in result.items()}
        for m in self.members.values():
            self._update_clock(m, now)

    def target_of(self, m: Member) -> frozenset[TopicPartition] | None:
        return None if self.targets is None else self.targets.get(m.member_id, EMPTY)

    def _update_clock(self, m: Member, now: float) -> None:
        target = self.target_of(m)
        if target is not None and m.may_hold() - target:
            if m.revoking_since is None:
                m.revoking_since = now
        else:
            m.revoking_since = None

    # -- answers -----------------------------------------------------------------------

    def answer(self, m: Member, now: float) -> tuple[frozenset[TopicPartition], int, int]:
        """(assignment, member epoch, heartbeat interval ms) for a member that just
        reported; remembers the assignment as sent."""
        target = self.target_of(m)
        if target is None:
            assignment = m.owned or EMPTY  # ownership elsewhere unknown: keep, take nothing
        elif not m.persisted:
            assignment = EMPTY
        else:
            taken: set[TopicPartition] = set()
            for other in self.members.values():
                if other is not m:
                    taken |= other.may_hold()
            assignment = target - taken
        m.sent = assignment
        if target is None or (m.owned or EMPTY) <= target:
            m.epoch = self.epoch
        owned = m.owned or EMPTY
        for tp in set(m.since) - assignment - owned:
            del m.since[tp]
            m.committed.pop(tp, None)  # a later holding starts from the group's offset then
        for tp in owned - m.since.keys():
            m.since[tp] = 0
        for tp in assignment - m.since.keys():
            m.since[tp] = m.epoch
        self._update_clock(m, now)
        pending = target is None or not m.persisted or m.owned != target
        interval = min(PENDING_HEARTBEAT_MS, m.steady_interval_ms()) if pending else m.steady_interval_ms()
        return assignment, m.epoch, interval

    @property
    def state(self) -> str:
        """empty | stable (everyone owns exactly its target) | reconciling."""
        if not self.members:
            return "empty"
        if self.targets is None:
            return "reconciling"
        stable = all(m.persisted and m.owned == self.targets.get(mid, EMPTY) for mid, m in self.members.items())
        return "stable" if stable else "reconciling"
