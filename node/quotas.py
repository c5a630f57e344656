"""Quotas per principal, applied on each node as Kafka's brokers apply theirs: an
over-quota client is slowed, never refused. Its answers carry the throttle time
(`throttle_ms` natively, `throttle_time_ms` on the Kafka listener) and the node reads
nothing more from its connections until that time has passed.

Each (principal, quota) is a token bucket holding at most BURST_S of its rate: a
request takes what it costs (bytes, or 1 for the request rate) even into debt, and the
debt over the rate is the throttle time. So a client held to its quota averages it to
within BURST_S over any run, whatever its batch sizes. The cluster's own nodes are
never throttled.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from client.quotas import EVERY_USER, QUOTA_KEYS

BURST_S = 0.2  # the most a bucket holds, in seconds of its rate
MAX_THROTTLE_S = 10.0  # a single wait at most (the client's requests time out after 30 s)


class _Bucket:
    __slots__ = ("rate", "level", "stamp")

    def __init__(self, rate: float, now: float) -> None:
        self.rate, self.level, self.stamp = rate, rate * BURST_S, now

    def _refill(self, now: float) -> None:
        self.level = min(self.rate * BURST_S, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, amount: float, now: float) -> None:
        self._refill(now)
        self.level -= amount

    def debt_s(self, now: float) -> float:
        self._refill(now)
        return -self.level / self.rate if self.level < 0 else 0.0


class Quotas:
    def __init__(
        self,
        limits: Callable[[], dict[str, dict[str, float]]],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`limits`: the quotas in the controller's state (principal -> key -> rate)."""
        self._limits = limits
        self._clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def _rate(self, principal: str, key: str) -> float | None:
        limits = self._limits()
        if not limits or principal.startswith("Node:"):
            return None
        own = limits.get(principal)
        if own is not None and key in own:
            return own[key]
        return limits.get(EVERY_USER, {}).get(key)

    def charge(self, principal: str, key: str, amount: float) -> None:
        """`principal` used `amount` of quota `key` (nothing happens without a quota)."""
        rate = self._rate(principal, key)
        if rate is None:
            self._buckets.pop((principal, key), None)
            return
        now = self._clock()
        bucket = self._buckets.get((principal, key))
        if bucket is None or bucket.rate != rate:
            bucket = self._buckets[(principal, key)] = _Bucket(rate, now)
        bucket.take(amount, now)

    def throttle_s(self, principal: str) -> float:
        """How long this principal's connections should wait before their next request."""
        if not self._buckets:
            return 0.0
        now = self._clock()
        debts = [b.debt_s(now) for k in QUOTA_KEYS if (b := self._buckets.get((principal, k))) is not None]
        return min(max(debts, default=0.0), MAX_THROTTLE_S)
