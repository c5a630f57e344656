"""Alerts: rules over what the overview shows, each event POSTed as JSON to a webhook
and listed on the overview while it holds.

The rules: a node down, a partition without a leader, dead letters arriving in a
group's dead-letter topic, and a group's lag above `lag` for `lag_for` seconds. An
alert fires once when its condition starts and once more ("resolved") when it ends.
`Rules.evaluate` is pure (tests feed it snapshots); `watch` takes a snapshot every
`every` seconds as the alert user (`tidemq console --alert-user ...`; the console's
pages never use it) and sends what changed.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from client.admin import Admin
from client.console import data
from client.protocol import TxnInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """What the rules look at, taken at `time_s`."""

    time_s: float
    nodes_down: frozenset[int] = frozenset()
    leaderless: frozenset[str] = frozenset()  # "topic-partition"
    dead_letters: dict[str, int] = field(default_factory=dict)  # group -> dead letters held
    lag: dict[str, int] = field(default_factory=dict)  # group -> total lag
    # what the metrics show besides (client/console/metrics.py)
    partition_lag: dict[tuple[str, str, int], int] = field(default_factory=dict)  # (group, topic, p) -> lag
    under_replicated: int = 0
    delay_pending: dict[str, int] = field(default_factory=dict)  # tier -> pending
    open_transactions: int = 0
    pending_halves: int = 0


@dataclass
class Alert:
    key: str  # rule and subject: "node-down:2"
    rule: str
    subject: str
    message: str
    since_s: float

    def event(self, state: str, now_s: float) -> dict[str, Any]:
        return {
            "state": state,  # firing | resolved
            "rule": self.rule,
            "subject": self.subject,
            "message": self.message,
            "since": self.since_s,
            "time": now_s,
        }


@dataclass
class Rules:
    lag: int = 1000
    lag_for: float = 60.0
    active: dict[str, Alert] = field(default_factory=dict)
    latest: Snapshot | None = None  # what the metrics show
    _lag_since: dict[str, float] = field(default_factory=dict)
    _dead_seen: dict[str, int] | None = None

    def unreachable(self, now: float, why: str) -> list[dict[str, Any]]:
        """No snapshot could be taken: the whole cluster is out of reach (resolved by the
        next snapshot that succeeds)."""
        if "unreachable" in self.active:
            return []
        self.active["unreachable"] = Alert("unreachable", "cluster unreachable", "cluster", why, now)
        return [self.active["unreachable"].event("firing", now)]

    def evaluate(self, snap: Snapshot) -> list[dict[str, Any]]:
        """The events this snapshot makes (firing and resolved), in a stable order."""
        now = snap.time_s
        self.latest = snap
        holding: dict[str, tuple[str, str, str]] = {}
        for n in sorted(snap.nodes_down):
            holding[f"node-down:{n}"] = ("node down", f"node {n}", f"node {n} does not answer")
        for p in sorted(snap.leaderless):
            holding[f"leaderless:{p}"] = ("partition without a leader", p, f"{p} has no leader: it takes no writes")
        for group, lag in sorted(snap.lag.items()):
            if lag > self.lag:
                since = self._lag_since.setdefault(group, now)
                if now - since >= self.lag_for:
                    message = f"group {group} is {lag} behind (over {self.lag} for {now - since:.0f}s)"
                    holding[f"lag:{group}"] = ("lag", group, message)
            else:
                self._lag_since.pop(group, None)
        events = []
        seen = self._dead_seen
        self._dead_seen = dict(snap.dead_letters)
        for group, count in sorted(snap.dead_letters.items()):
            before = None if seen is None else seen.get(group, 0)
            if before is not None and count > before:  # (a new event every time more arrive)
                message = f"{count - before} new dead letter(s) in {group}.dlq ({count} waiting)"
                events.append(Alert(f"dead-letters:{group}", "dead letters", group, message, now).event("firing", now))
        for key, (rule, subject, message) in holding.items():
            if key not in self.active:
                self.active[key] = Alert(key, rule, subject, message, now)
                events.append(self.active[key].event("firing", now))
            else:
                self.active[key].message = message
        for key in [k for k in self.active if k not in holding]:
            events.append(self.active.pop(key).event("resolved", now))
        return events


async def snapshot(admin: Admin) -> Snapshot:
    view = await data.cluster_view(admin)
    groups = await data.groups(admin, view)
    txns = await data.bounded(admin.list_transactions, list[TxnInfo]())
    halves = await data.bounded(lambda: admin.list_halves(), None)
    return Snapshot(
        time.time(),
        frozenset(n.node_id for n in view.md.nodes if not n.alive),
        frozenset(f"{p.topic}-{p.partition}" for p in view.leaderless),
        await data.dead_letter_counts(admin, view, [g.name for g in groups]),
        {g.name: g.total_lag for g in groups if g.desc is not None},
        {(g.name, t, p): lag for g in groups for (t, p), lag in g.lag.items()},
        len(view.under_replicated),
        {t.name: len(t.pending) for t in await data.tiers(admin, view)},
        sum(t.state in ("ongoing", "prepare_commit", "prepare_abort") for t in txns),
        sum(h.state == "pending" for h in (halves.halves if halves else [])),
    )


def post(url: str, event: dict[str, Any], timeout: float = 5.0) -> None:
    """POST one event as JSON (blocking: run it in a thread)."""
    body = json.dumps(event).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        resp.read()


async def watch(
    rules: Rules,
    open_admin: Callable[[], Any],
    webhook: str | None,
    every: float = 10.0,
    sent: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Forever: a snapshot every `every` seconds, its events to the webhook (a failed
    POST is logged and not retried: the next change sends again)."""
    while True:
        try:
            async with open_admin() as admin:
                events = rules.evaluate(await snapshot(admin))
        except Exception as exc:  # noqa: BLE001 - the cluster may be down: that is what alerts are for
            log.warning("alerts: no snapshot this round: %s", exc)
            events = rules.unreachable(time.time(), f"{type(exc).__name__}: {exc}")
        for event in events:
            if sent is not None:
                sent(event)
            if webhook:
                try:
                    await anyio.to_thread.run_sync(post, webhook, event)
                except OSError as exc:
                    log.warning("alerts: the webhook %s refused %s: %s", webhook, event["rule"], exc)
        await anyio.sleep(every)
