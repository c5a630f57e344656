"""The checker: reads a history (docs/chaos.md has the format) and says what went wrong.

`check_history(events)` builds an `Index` once (what was sent, what every partition's
final committed log holds, what was delivered, the group offsets seen over time, the
replica comparison), then runs every `Check` over it. A check is a small object with a
`name` and `run(index) -> Verdict`; a verdict counts violations (every check here must
count 0) and keeps a few examples. Adding a check is adding a class to `CHECKS`; the
checks for delayed and transactional messages read fields that only those workloads
write (`deliver_at`, `txn`), and the pipeline check the `pipeline` event; each says "not
exercised" when a history has none.

Everything is judged against the final committed logs that the runner reads after the
faults are healed (the `log` events), never against what a client believed: a client's
acknowledgement is a promise, the log is what was kept.
"""

from __future__ import annotations

import bisect
import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

EXAMPLES = 5

TP = tuple[str, int]


class Send(NamedTuple):
    value: str
    writer: str
    session: int
    key: str | None
    seq: int
    topic: str
    partition: int | None
    outcome: str  # acked | failed | unknown
    offset: int | None
    t: float  # submitted
    t_end: float  # outcome known
    idempotent: bool
    deliver_at: int | None  # wall-clock ms before which no consumer may see it (delayed messages)
    txn: str | None  # transaction id (transactional messages)


class Delivery(NamedTuple):
    consumer: str
    group: str | None
    isolation: str
    topic: str
    partition: int
    offset: int
    value: str | None
    t: float
    wall_ms: int


class Observation(NamedTuple):
    t: float
    t_end: float
    offsets: dict[TP, int]
    final: bool


@dataclass
class Index:
    """Everything the checks need, built in one pass over the history."""

    run: dict = field(default_factory=dict)
    sends: dict[str, Send] = field(default_factory=dict)
    reused_values: list[str] = field(default_factory=list)  # two sends with one value: a workload bug
    logs: dict[TP, dict[int, tuple[str | None, str | None]]] = field(default_factory=dict)
    log_hw: dict[TP, int] = field(default_factory=dict)
    log_complete: set[TP] = field(default_factory=set)
    deliveries: list[Delivery] = field(default_factory=list)
    observations: dict[str, list[Observation]] = field(default_factory=lambda: defaultdict(list))
    txns: dict[str, dict] = field(default_factory=dict)
    pipelines: list[dict] = field(default_factory=list)  # consume-process-produce: its topics
    broadcasts: list[dict] = field(default_factory=list)  # a broadcast topic and its instances' groups
    zombies: list[dict] = field(default_factory=list)
    replicas: list[dict] = field(default_factory=list)
    faults: list[dict] = field(default_factory=list)
    drains: list[dict] = field(default_factory=list)
    stops: list[dict] = field(default_factory=list)
    client_errors: list[dict] = field(default_factory=list)  # what escaped a Consumer or Producer
    node_errors: list[dict] = field(default_factory=list)
    writes_stopped: float | None = None
    ended: bool = False
    _where: dict[tuple[str, str], list[TP | tuple[str, int, int]]] | None = None

    @classmethod
    def build(cls, events: Iterable[dict]) -> Index:
        ix = cls()
        for e in events:
            kind = e["type"]
            if kind == "send":
                s = Send(
                    e["value"],
                    e["writer"],
                    e.get("session", 0),
                    e.get("key"),
                    e.get("seq", -1),
                    e["topic"],
                    e.get("partition"),
                    e["outcome"],
                    e.get("offset"),
                    e["t"],
                    e.get("t_end", e["t"]),
                    e.get("idempotent", True),
                    e.get("deliver_at"),
                    e.get("txn"),
                )
                if s.value in ix.sends:
                    ix.reused_values.append(s.value)
                ix.sends[s.value] = s
            elif kind == "log":
                tp = (e["topic"], e["partition"])
                records = ix.logs.setdefault(tp, {})
                for offset, key, value in e["records"]:
                    records[offset] = (key, value)
                ix.log_hw[tp] = e["high_watermark"]
                if e.get("last"):
                    ix.log_complete.add(tp)
            elif kind == "delivery":
                ix.deliveries.append(
                    Delivery(
                        e["consumer"],
                        e.get("group"),
                        e.get("isolation", "read_committed"),
                        e["topic"],
                        e["partition"],
                        e["offset"],
                        e.get("value"),
                        e["t"],
                        e.get("wall_ms", 0),
                    )
                )
            elif kind == "offsets":
                ix.observations[e["group"]].append(
                    Observation(
                        e["t"], e.get("t_end", e["t"]), {(t, p): o for t, p, o in e["offsets"]}, bool(e.get("final"))
                    )
                )
            elif kind == "txn":
                ix.txns[e["txn"]] = e
            elif kind == "pipeline":
                ix.pipelines.append(e)
            elif kind == "broadcast":
                ix.broadcasts.append(e)
            elif kind == "zombie":
                ix.zombies.append(e)
            elif kind == "replicas":
                ix.replicas.append(e)
            elif kind == "fault":
                ix.faults.append(e)
            elif kind == "drain":
                ix.drains.append(e)
            elif kind == "node_stop":
                ix.stops.append(e)
            elif kind == "node_errors":
                ix.node_errors.append(e)
            elif kind == "session_error" or (kind == "member" and e.get("event") == "error"):
                ix.client_errors.append(e)
            elif kind == "phase" and e.get("name") == "writes_stopped":
                ix.writes_stopped = e["t"]
            elif kind == "run":
                ix.run = e
            elif kind == "end":
                ix.ended = True
        return ix

    def where(self, topic: str, value: str) -> list[tuple[int, int]]:
        """(partition, offset) of every copy of `value` in `topic`'s final log."""
        if self._where is None:
            where: dict = defaultdict(list)
            for (t, p), records in self.logs.items():
                for offset, (_, v) in records.items():
                    if v is not None:
                        where[(t, v)].append((p, offset))
            for locs in where.values():
                locs.sort()
            self._where = where
        return self._where.get((topic, value), [])

    def topic_read(self, topic: str) -> bool:
        return any(t == topic for t, _ in self.log_complete)

    def visible(self, s: Send) -> bool:
        """Must `s` be in the final read-committed log if it was acknowledged? Not a
        member of an aborted or undecided transaction."""
        return s.txn is None or self.txns.get(s.txn, {}).get("outcome") == "committed"

    def pipeline_outputs(self) -> set[str]:
        """Topics a pipeline writes: their records are its inputs' results, not sends."""
        return {t for p in self.pipelines for t in p["outputs"] + p.get("dead_letters", [])}

    def final_offsets(self, group: str) -> dict[TP, int] | None:
        finals = [o for o in self.observations.get(group, []) if o.final]
        return finals[-1].offsets if finals else None


@dataclass
class Verdict:
    name: str
    count: int = 0
    examples: list[str] = field(default_factory=list)
    exercised: bool = True
    note: str = ""

    def add(self, example: str) -> None:
        self.count += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(example)

    @property
    def ok(self) -> bool:
        return self.count == 0


class Check(Protocol):
    name: str

    def run(self, ix: Index) -> Verdict: ...


# -- the checks ------------------------------------------------------------------------------


class Complete:
    """A run that could not read its final logs, drain its consumers or compare its
    replicas proves nothing: say so instead of passing."""

    name = "run incomplete (final read, drain, replica comparison)"

    def run(self, ix: Index) -> Verdict:
        v = Verdict(self.name)
        if not ix.ended:
            v.add("the history has no end event: the runner stopped early")
        for topic in sorted({s.topic for s in ix.sends.values() if s.outcome == "acked"}):
            if not ix.topic_read(topic):
                v.add(f"the final log of {topic} was not read")
        for tp in sorted(set(ix.logs) - ix.log_complete):
            v.add(f"the final read of {tp[0]}-{tp[1]} stopped before its high watermark")
        for group in sorted({d.group for d in ix.deliveries if d.group}):
            if ix.final_offsets(group) is None:
                v.add(f"no final committed offsets of group {group}")
        for topic in sorted(ix.pipeline_outputs()):
            if not ix.topic_read(topic):
                v.add(f"the final log of {topic} (a pipeline's output) was not read")
        for d in ix.drains:
            if not d.get("ok"):
                v.add(f"{d.get('workload')}: drain incomplete: {d.get('detail', '')}")
        if ix.ended and not ix.replicas:
            v.add("replicas were not compared")
        for r in ix.replicas:
            if not r.get("compared", True):
                v.add(f"replicas of {r['topic']}-{r['partition']} not compared: {r.get('detail', '')}")
            elif r.get("lagging") and not r.get("settled", True):
                v.add(
                    f"{', '.join(r['lagging'])} of {r['topic']}-{r['partition']} end before its high watermark "
                    f"{r['high_watermark']}: the cluster never settled, so they may just be behind"
                )
        for value in ix.reused_values[:EXAMPLES]:
            v.add(f"two sends share the value {value!r}: the history cannot tell them apart")
        return v


class Lost:
    name = "acknowledged messages lost"

    def run(self, ix: Index) -> Verdict:
        v = Verdict(self.name)
        for s in ix.sends.values():
            if s.outcome == "acked" and ix.visible(s) and ix.topic_read(s.topic) and not ix.where(s.topic, s.value):
                v.add(f"{s.value} acked at {s.topic}-{s.partition}@{s.offset} (t={s.t_end:.2f}) is not in the log")
        return v


class Misplaced:
    name = "acknowledged at an offset that holds something else"

    def run(self, ix: Index) -> Verdict:
        v = Verdict(self.name)
        for s in ix.sends.values():
            if s.outcome != "acked" or s.offset is None or s.offset < 0 or not ix.visible(s):
                continue
            locs = ix.where(s.topic, s.value)
            if locs and (s.partition, s.offset) not in locs:
                v.add(
                    f"{s.value} acked at {s.topic}-{s.partition}@{s.offset}, found at "
                    + ", ".join(f"{s.topic}-{p}@{o}" for p, o in locs)
                )
        return v


class Duplicates:
    name = "duplicates in the log (idempotent producers)"

    def run(self, ix: Index) -> Verdict:
        v = Verdict(self.name)
        for s in ix.sends.values():
            locs = ix.where(s.topic, s.value) if s.idempotent else []
            if len(locs) > 1:
                v.add(
                    f"{s.value} ({s.outcome}) is in the log {len(locs)} times: "
                    + ", ".join(f"{s.topic}-{p}@{o}" for p, o in locs)
                )
        return v


class Unexplained:
    """Every record is a send's; a pipeline's outputs are its inputs' (`PipelineOnce`)."""

    name = "records in the log that nobody sent"

    def run(self, ix: Index) -> Verdict:
        v = Verdict(self.name)
        outputs = ix.pipeline_outputs()
        for (t, p), records in sorted(ix.logs.items()):
            if t in outputs:
                continue
            for offset, (key, value) in sorted(records.items()):
                s = ix.sends.get(value) if value is not None else None
                if s is None or s.topic != t:
                    v.add(f"{t}-{p}@{offset}: key={key!r} value={value!r}")
        return v


class FailedWritten:
    name = "sends reported failed that are in the log"

    def run(self, ix: Index) -> Verdict:
        v = Verdict(self.name)
        for s in ix.sends.values():
            if s.outcome == "failed" and ix.where(s.topic, s.value):
                v.add(f"{s.value} failed at t={s.t_end:.2f} but is in the log")
        return v


class KeyOrder:
    """Per writer and key, in the key's partition: within one producer session the log
    keeps the send order (idempotent pipelining promises it); across sessions, a message
    acknowledged before another was submitted comes first (real-time order). A message
    whose outcome was unknown may land late, but never before one acknowledged earlier.
    Delayed messages are exempt: different delays reorder them on purpose."""

    name = "per-key order violations"

    def run(self, ix: Index) -> Verdict:
        v = Verdict(self.name)
        lanes: dict[tuple[str, str, str | None], list[tuple[Send, int]]] = defaultdict(list)
        for s in ix.sends.values():
            locs = ix.where(s.topic, s.value) if s.deliver_at is None else []
            if locs:
                lanes[(s.topic, s.writer, s.key)].append((s, locs[0][1]))
        for (topic, writer, key), items in sorted(lanes.items(), key=lambda kv: str(kv[0])):
            bad: dict[str, str] = {}
            by_session: dict[int, list[tuple[Send, int]]] = defaultdict(list)
            for s, off in items:
                by_session[s.session].append((s, off))
            for session_items in by_session.values():
                session_items.sort(key=lambda x: x[0].seq)
                for (a, oa), (b, ob) in zip(session_items, session_items[1:]):
                    if ob <= oa:
                        bad.setdefault(
                            b.value,
                            f"{topic} {writer}/{key}: seq {b.seq} at offset {ob} is not after "
                            f"seq {a.seq} at offset {oa} (same session {a.session})",
                        )
            # Real time: sweep submissions in time order against acknowledgements before them.
            acks = sorted((s.t_end, off, s) for s, off in items if s.outcome == "acked")
            acked_before = [a[0] for a in acks]
            prefix_max: list[tuple[int, Send]] = []
            for _, off, s in acks:
                prefix_max.append(max(prefix_max[-1], (off, s), key=lambda x: x[0]) if prefix_max else (off, s))
            for s, off in items:
                i = bisect.bisect_left(acked_before, s.t) - 1
                if i >= 0 and prefix_max[i][0] > off:
                    first = prefix_max[i][1]
                    bad.setdefault(
                        s.value,
                        f"{topic} {writer}/{key}: seq {s.seq} (submitted t={s.t:.2f}) at offset "
                        f"{off}, before seq {first.seq} acknowledged at t={first.t_end:.2f} "
                        f"at offset {prefix_max[i][0]}",
                    )
            for example in bad.values():
                v.add(example)
        return v


class OffsetsBackwards:
    """A committed group offset read after another read had returned must not be lower:
    a consumer that resumed from it would re-read, or a tool would report progress lost."""

    name = "committed group offsets going backwards"

    def run(self, ix: Index) -> Verdict:
        v = Verdict(self.name)
        if not ix.observations:
            v.exercised = False
        for group, obs in sorted(ix.observations.items()):
            by_end = sorted(obs, key=lambda o: o.t_end)
            j = 0
            high: dict[TP, tuple[int, float]] = {}
            for o in sorted(obs, key=lambda o: o.t):
                while j < len(by_end) and by_end[j].t_end < o.t:
                    for tp, off in by_end[j].offsets.items():
                        if tp not in high or off > high[tp][0]:
                            high[tp] = (off, by_end[j].t_end)
                    j += 1
                for tp, off in o.offsets.items():
                    if tp in high and off < high[tp][0]:
                        v.add(
                            f"group {group} {tp[0]}-{tp[1]}: read {off} at t={o.t:.2f} after {high[tp][0]} "
                            f"was read by t={high[tp][1]:.2f}"
                        )
        return v


class GroupSkipped:
    """Every record below a group's final committed offset was handed to one of its
    members at least once: committing past a message nobody got is losing it."""

    name = "messages a group committed past without delivering"

    def run(self, ix: Index) -> Verdict:
        v = Verdict(self.name)
        groups = sorted({d.group for d in ix.deliveries if d.group})
        if not groups:
            v.exercised = False
        for group in groups:
            final = ix.final_offsets(group) or {}
            got = {(d.topic, d.partition, d.offset) for d in ix.deliveries if d.group == group}
            for tp, upto in sorted(final.items()):
                for offset, (_, value) in sorted(ix.logs.get(tp, {}).items()):
                    if offset < upto and (tp[0], tp[1], offset) not in got:
                        v.add(
                            f"group {group}: {tp[0]}-{tp[1]}@{offset} ({value}) below committed {upto}, never delivered"
                        )
        return v


class DirtyReads:
    """What a consumer was handed is what the final committed log holds at that offset:
    anything else was uncommitted data that a new leader later overwrote."""

    name = "deliveries that differ from the committed log"

    def run(self, ix: Index) -> Verdict:
        v = Verdict(self.name)
        if not ix.deliveries:
            v.exercised = False
        for d in ix.deliveries:
            tp = (d.topic, d.partition)
            if tp not in ix.log_complete:
                continue
            held = ix.logs[tp].get(d.offset)
            if held is None or held[1] != d.value:
                what = "nothing" if held is None else repr(held[1])
                v.add(
                    f"{d.consumer} got {d.value!r} at {d.topic}-{d.partition}@{d.offset} (t={d.t:.2f}); "
                    f"the log holds {what} there"
                )
        return v


class ReplicasDiffer:
    """Per partition, the committed bytes agree across replicas. A replica that ends
    before the high watermark although its leader had reported it caught up (the cluster
    settled before the comparison) is missing committed data: that counts too."""

    name = "replicas whose committed logs differ"

    def run(self, ix: Index) -> Verdict:
        v = Verdict(self.name)
        if not ix.replicas:
            v.exercised = False
        for r in ix.replicas:
            if not r["equal"]:
                v.add(
                    f"{r['topic']}-{r['partition']}: replicas differ from offset {r.get('first_difference')} "
                    f"(high watermark {r['high_watermark']})"
                )
            elif r.get("lagging") and r.get("settled", True):
                v.add(
                    f"{r['topic']}-{r['partition']}: {', '.join(r['lagging'])} end before the high watermark "
                    f"{r['high_watermark']}, though reported in sync"
                )
        return v


class GracefulStops:
    name = "graceful stops (SIGTERM) that failed"

    def run(self, ix: Index) -> Verdict:
        v = Verdict(self.name)
        if not ix.stops:
            v.exercised = False
        for s in ix.stops:
            if s.get("code") != 0 or not s.get("by_itself", True):
                v.add(
                    f"node {s['node']} at t={s['t']:.2f}: exit code {s.get('code')}"
                    + ("" if s.get("by_itself", True) else ", needed SIGKILL")
                )
        return v


class NodeErrors:
    """Faults are expected; a node failing while it handles them is not. Every ERROR a
    node logged is counted, with the exceptions under it as examples."""

    name = "errors logged by nodes"

    def run(self, ix: Index) -> Verdict:
        v = Verdict(self.name)
        for e in ix.node_errors:
            shown = e.get("exceptions") or e.get("lines") or []
            v.count += e["errors"] or sum(n for _, n in shown)
            for text_, n in shown:
                if len(v.examples) < EXAMPLES:
                    v.examples.append(f"n{e['node']}: {text_} (x{n})")
        return v


class DelayedEarly:
    name = "delayed messages delivered early"

    def run(self, ix: Index) -> Verdict:
        v = Verdict(self.name)
        delayed = {s.value: s for s in ix.sends.values() if s.deliver_at is not None}
        if not delayed:
            v.exercised = False
        for d in ix.deliveries:
            s = delayed.get(d.value) if d.value is not None else None
            if s is not None and d.wall_ms < s.deliver_at:
                v.add(
                    f"{s.value} due at {s.deliver_at} ms delivered to {d.consumer} at {d.wall_ms} ms "
                    f"({(s.deliver_at - d.wall_ms) / 1000:.3f} s early)"
                )
        return v


def _members(ix: Index) -> dict[str, list[Send]]:
    members: dict[str, list[Send]] = defaultdict(list)
    for s in ix.sends.values():
        if s.txn is not None:
            members[s.txn].append(s)
    return members


class TornTransactions:
    """A read-committed reader sees a transaction whole or not at all, and only once it
    is decided: its final log holds all of a transaction's messages or none, and no
    read-committed consumer gets one before the producer even asked to commit."""

    name = "transactions seen in part by read_committed readers"

    def run(self, ix: Index) -> Verdict:
        v = Verdict(self.name)
        members = _members(ix)
        if not members:
            v.exercised = False
        for txn, sends in sorted(members.items()):
            outcome = ix.txns.get(txn, {}).get("outcome", "unknown")
            if outcome == "aborted" or not all(ix.topic_read(s.topic) for s in sends):
                continue
            seen = [s for s in sends if ix.where(s.topic, s.value)]
            if 0 < len(seen) < len(sends):
                v.add(f"transaction {txn} ({outcome}): {len(seen)} of {len(sends)} messages in the committed logs")
        ends = {txn: e["t"] for txn, e in ix.txns.items()}
        of = {s.value: s.txn for ss in members.values() for s in ss}
        for d in ix.deliveries:
            txn = of.get(d.value) if d.value is not None else None
            if txn is not None and d.isolation == "read_committed" and (txn not in ends or d.t < ends[txn]):
                v.add(f"{d.consumer} got {d.value} of transaction {txn} at t={d.t:.2f}, before it was decided")
        return v


class AbortedServed:
    name = "aborted transaction data served to read_committed readers"

    def run(self, ix: Index) -> Verdict:
        v = Verdict(self.name)
        members = _members(ix)
        if not members:
            v.exercised = False
        aborted = {
            s.value: txn for txn, ss in members.items() if ix.txns.get(txn, {}).get("outcome") == "aborted" for s in ss
        }
        for value, txn in sorted(aborted.items()):
            s = ix.sends[value]
            for p, o in ix.where(s.topic, value):
                v.add(f"{value} of aborted transaction {txn} is in the committed log at {s.topic}-{p}@{o}")
        for d in ix.deliveries:
            if d.isolation == "read_committed" and d.value in aborted:
                v.add(f"{d.consumer} got {d.value} of aborted transaction {aborted[d.value]} at t={d.t:.2f}")
        return v


class PipelineOnce:
    """Consume-process-produce is exactly once: an input's result (its output `out:<value>`,
    or its dead letter, the input itself, after the handler failed every retry) is in the
    final read_committed logs exactly when the group committed past the input, and then
    once. Judged per copy of the input in the final input log (an acknowledged input that
    is not there is `Lost`'s); an output whose input was never written counts too."""

    name = "pipeline inputs processed other than exactly once"

    def run(self, ix: Index) -> Verdict:
        v = Verdict(self.name)
        if not ix.pipelines:
            v.exercised = False
        for pipe in ix.pipelines:
            inputs, prefix = pipe["input"], pipe["prefix"]
            outputs, dead = pipe["outputs"], pipe.get("dead_letters", [])
            if not ix.topic_read(inputs) or not all(ix.topic_read(t) for t in outputs + dead):
                continue  # `Complete` says which read is missing
            final = ix.final_offsets(pipe["group"])
            expected: Counter[str | None] = Counter()
            for (t, p), records in ix.logs.items():
                if t == inputs:
                    upto = final.get((t, p), 0) if final is not None else ix.log_hw.get((t, p), 0)
                    expected.update(value for offset, (_, value) in records.items() if offset < upto)
            results: dict[str | None, list[str]] = defaultdict(list)
            for (t, p), records in sorted(ix.logs.items()):
                for offset, (_, value) in sorted(records.items()):
                    if t in outputs and value is not None and value.startswith(prefix):
                        results[value[len(prefix) :]].append(f"{t}-{p}@{offset}")
                    elif t in outputs:
                        v.add(f"{t}-{p}@{offset} holds {value!r}, not an output ({prefix}<input>)")
                    elif t in dead:
                        results[value].append(f"{t}-{p}@{offset} (dead letter)")
            for value in sorted(set(expected) | set(results), key=str):
                want, got = expected[value], results.get(value, [])
                if len(got) == want:
                    continue
                if value is None or not ix.where(inputs, value):
                    v.add(f"{', '.join(got)}: the input {value!r} is not in {inputs}")
                else:
                    at = ", ".join(f"{inputs}-{p}@{o}" for p, o in ix.where(inputs, value))
                    v.add(
                        f"{value} ({at}; {want} below the group's committed offset) has {len(got)} result(s)"
                        + (f": {', '.join(got)}" if got else "")
                    )
        return v


class BroadcastMissed:
    """Every instance of a broadcast group is handed every acknowledged message of its
    topic (at least once: a restarted instance may see again what it had not committed,
    never miss what came while it was away)."""

    name = "acknowledged broadcast messages an instance never got"

    def run(self, ix: Index) -> Verdict:
        v = Verdict(self.name)
        if not ix.broadcasts:
            v.exercised = False
        for b in ix.broadcasts:
            topic = b["topic"]
            acked = [
                s
                for s in ix.sends.values()
                if s.topic == topic and s.outcome == "acked" and ix.visible(s) and ix.where(topic, s.value)
            ]
            for group in b["instances"]:
                got = {d.value for d in ix.deliveries if d.group == group and d.topic == topic}
                for s in sorted(acked, key=lambda s: s.t):
                    if s.value not in got:
                        p, o = ix.where(topic, s.value)[0]
                        v.add(f"instance {group} never got {s.value} ({topic}-{p}@{o}, acked at t={s.t_end:.2f})")
        return v


CHECKS: list[Check] = [
    Complete(),
    Lost(),
    Misplaced(),
    Duplicates(),
    Unexplained(),
    FailedWritten(),
    KeyOrder(),
    OffsetsBackwards(),
    GroupSkipped(),
    DirtyReads(),
    ReplicasDiffer(),
    GracefulStops(),
    NodeErrors(),
    DelayedEarly(),
    TornTransactions(),
    AbortedServed(),
    PipelineOnce(),
    BroadcastMissed(),
]


# -- availability and the report -----------------------------------------------------------


@dataclass
class Report:
    verdicts: list[Verdict]
    metrics: dict[str, object]

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)

    @property
    def violations(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.ok]

    def describe(self) -> str:
        lines = [f"{v.name}: {v.count}" + "".join(f"\n    {e}" for e in v.examples) for v in self.violations]
        return "\n".join(lines) or "no violations"


def availability(ix: Index) -> dict[str, object]:
    """The longest stretch of the write phase with no acknowledged write, the faults
    that overlapped it, and throughput."""
    sends = list(ix.sends.values())
    outcomes = Counter(s.outcome for s in sends)
    end = ix.writes_stopped if ix.writes_stopped is not None else max((s.t_end for s in sends), default=0.0)
    acks = sorted(s.t_end for s in sends if s.outcome == "acked" and 0 <= s.t_end <= end)
    edges = [0.0] + acks + [end]
    gap, a, b = max(((y - x, x, y) for x, y in zip(edges, edges[1:])), default=(0.0, 0.0, 0.0))
    healed = {f["step"]: f["t"] for f in ix.faults if f.get("phase") == "end"}
    during = [
        f"#{f['step']} {f['kind']}"
        for f in ix.faults
        if f.get("phase") == "start" and f["t"] < b and healed.get(f["step"], float("inf")) > a
    ]
    worst = longest_partition_wait(sends, end)
    landed = sum(1 for s in sends if s.outcome == "unknown" and ix.where(s.topic, s.value))
    first_seen: dict[str, int] = {}
    for d in ix.deliveries:
        if d.value is not None and (d.value not in first_seen or d.wall_ms < first_seen[d.value]):
            first_seen[d.value] = d.wall_ms
    late = sorted(
        first_seen[s.value] - s.deliver_at for s in sends if s.deliver_at is not None and s.value in first_seen
    )
    lateness = (
        {"delivered": len(late), "p50": late[len(late) // 2], "p99": late[int(len(late) * 0.99)], "max": late[-1]}
        if late
        else {}
    )
    deliveries = len(ix.deliveries)
    distinct = len({(d.group, d.topic, d.partition, d.offset) for d in ix.deliveries})
    return {
        "sends": len(sends),
        "acked": outcomes["acked"],
        "failed": outcomes["failed"],
        "unknown": outcomes["unknown"],
        "unknown_in_log": landed,
        "write_seconds": round(end, 2),
        "acked_per_second": round(len(acks) / end, 2) if end > 0 else 0.0,
        "longest_no_ack_seconds": round(gap, 3),
        "longest_no_ack_window": [round(a, 2), round(b, 2)],
        "faults_during_longest_window": during,
        "longest_partition_wait_seconds": round(worst[0], 3),
        "longest_partition_wait": worst[1],
        "longest_partition_wait_window": [round(worst[2], 2), round(worst[3], 2)],
        "deliveries": deliveries,
        "redeliveries": deliveries - distinct,
        "delayed_lateness_ms": lateness,
        "client_errors": dict(Counter(e["error"].split("(")[0] for e in ix.client_errors)),
        "client_error_example": ix.client_errors[0]["error"] if ix.client_errors else "",
        "faults": dict(Counter(f["kind"] for f in ix.faults if f.get("phase") == "start")),
        "pipeline": pipeline_counts(ix),
    }


def longest_partition_wait(sends: list[Send], end: float) -> tuple[float, str, float, float]:
    """(seconds, partition, from, to): the longest time one partition had a write
    outstanding and acknowledged none. A gap between acknowledgements alone would also
    count the time nobody wrote there (a low-rate workload's random keys can leave a
    partition alone for half a minute); this counts from the later of the previous
    acknowledgement and the oldest write still outstanding."""
    by_partition: dict[TP, list[Send]] = defaultdict(list)
    for s in sends:
        if s.partition is not None and s.t < end:
            by_partition[(s.topic, s.partition)].append(s)
    worst = (0.0, "", 0.0, 0.0)
    for (topic, p), ss in sorted(by_partition.items()):
        ss.sort(key=lambda s: s.t)
        acks = sorted(s.t_end for s in ss if s.outcome == "acked" and 0 <= s.t_end <= end)
        outstanding: list[tuple[float, float]] = []  # heap of (submitted, outcome time)
        i, previous = 0, 0.0
        for y in acks:
            while i < len(ss) and ss[i].t < y:
                heapq.heappush(outstanding, (ss[i].t, ss[i].t_end))
                i += 1
            while outstanding and outstanding[0][1] < y:
                heapq.heappop(outstanding)
            if outstanding:
                x = max(previous, outstanding[0][0])
                if y - x > worst[0]:
                    worst = (y - x, f"{topic}-{p}", x, y)
            previous = y
    return worst


def pipeline_counts(ix: Index) -> dict[str, int]:
    """How much the pipeline did: inputs in the final input log, outputs and dead letters
    in its final logs, zombies staged (and how many of them the coordinator removed)."""
    if not ix.pipelines:
        return {}
    inputs = {p["input"] for p in ix.pipelines}
    outputs = {t for p in ix.pipelines for t in p["outputs"]}
    dead = {t for p in ix.pipelines for t in p.get("dead_letters", [])}

    def records(topics: set[str]) -> int:
        return sum(len(r) for (t, _), r in ix.logs.items() if t in topics)

    return {
        "inputs": records(inputs),
        "outputs": records(outputs),
        "dead_letters": records(dead),
        "zombies": len(ix.zombies),
        "zombies_expired": sum(1 for z in ix.zombies if z.get("removed")),
    }


def check_index(ix: Index, checks: list[Check] | None = None) -> Report:
    return Report([c.run(ix) for c in (checks or CHECKS)], availability(ix))


def check_history(events: Iterable[dict], checks: list[Check] | None = None) -> Report:
    return check_index(Index.build(events), checks)
