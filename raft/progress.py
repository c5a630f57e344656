"""What a leader knows about each follower's log, and how fast it may send to it.

Three states, as in etcd's tracker:

* PROBE: the leader does not know where the follower's log matches; it sends
  one append at a time (paused until a reply or the next heartbeat reply) and
  walks ``next`` back with the follower's conflict hints.
* REPLICATE: the logs match up to ``match``; appends are pipelined, ``next``
  advances optimistically, bounded by an inflight window in messages and
  bytes. That window is the flow control for a slow follower.
* SNAPSHOT: the follower needs entries the leader compacted; a snapshot is in
  flight and appends pause until it is acknowledged or times out.
"""

from __future__ import annotations

import collections
import enum


class ProgressState(enum.IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Inflights:
    """The appends sent in REPLICATE state and not yet acknowledged."""

    def __init__(self, max_count: int, max_bytes: int) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._q: collections.deque[tuple[int, int]] = collections.deque()
        self.bytes = 0

    def add(self, last: int, size: int) -> None:
        self._q.append((last, size))
        self.bytes += size

    def free_le(self, index: int) -> None:
        """Forget every append whose last offset is <= index (it was acknowledged)."""
        q = self._q
        while q and q[0][0] <= index:
            self.bytes -= q.popleft()[1]

    def free_first(self) -> None:
        """Forget the oldest append: a heartbeat reply shows the follower alive, so a
        lost append must not keep the window shut forever."""
        if self._q:
            self.bytes -= self._q.popleft()[1]

    def full(self) -> bool:
        return len(self._q) >= self.max_count or self.bytes >= self.max_bytes

    def reset(self) -> None:
        self._q.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._q)


class Progress:
    def __init__(self, next_index: int, max_inflight: int, max_inflight_bytes: int, learner: bool) -> None:
        self.match = -1
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = -1
        self.snapshot_ticks = 0
        self.recent_active = False
        self.learner = learner
        #: The leader's proposed-bytes count when an append last took this follower to the
        #: end of its log (how big a trailing follower's backlog is: `Config.thrifty`).
        self.sent_bytes = 0
        self.inflights = Inflights(max_inflight, max_inflight_bytes)

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = -1
        self.snapshot_ticks = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = index

    def maybe_update(self, index: int) -> bool:
        """The follower acknowledged a log matching through ``index``."""
        updated = False
        if index > self.match:
            self.match = index
            updated = True
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        return updated

    def maybe_decrease_to(self, rejected: int, next_probe: int) -> bool:
        """The follower rejected an append with prev_index ``rejected``; ``next_probe``
        is where the leader's conflict search says to retry (a boundary + 1).
        Returns False for a stale rejection that says nothing new."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, next_probe), self.match + 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def __repr__(self) -> str:
        return (
            f"Progress(match={self.match}, next={self.next}, state={self.state.name}, "
            f"inflight={len(self.inflights)}, active={self.recent_active})"
        )
