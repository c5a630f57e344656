"""The checker on hand-made histories: a clean one passes, each kind of wrong is flagged,
and what is legitimately uncertain (an unknown send landing late) is not."""

from __future__ import annotations

import json

import pytest

from scripts.chaoslib.checker import CHECKS, Report, check_history
from scripts.chaoslib.history import History, read_history, text


class Hist:
    """A history builder: one topic `t`, writers w1.., a group `g`."""

    def __init__(self) -> None:
        self.events: list[dict] = [{"type": "run", "t": -1.0, "seed": 1}]
        self.logs: dict[tuple[str, int], list[list]] = {}

    def send(
        self,
        value: str,
        *,
        writer: str = "w1",
        session: int = 1,
        key: str = "k1",
        seq: int = 0,
        topic: str = "t",
        partition: int = 0,
        outcome: str = "acked",
        offset: int | None = None,
        t: float = 0.0,
        t_end: float | None = None,
        **extra,
    ) -> Hist:
        self.events.append(
            dict(
                type="send",
                t=t,
                t_end=t + 0.1 if t_end is None else t_end,
                writer=writer,
                session=session,
                topic=topic,
                partition=partition,
                key=key,
                seq=seq,
                value=value,
                outcome=outcome,
                offset=offset,
                idempotent=True,
                **extra,
            )
        )
        return self

    def logged(self, value: str, offset: int, *, topic: str = "t", partition: int = 0, key: str = "k1") -> Hist:
        self.logs.setdefault((topic, partition), []).append([offset, key, value])
        return self

    def delivery(
        self,
        value: str,
        offset: int,
        *,
        consumer: str = "c1.1",
        group: str | None = "g",
        topic: str = "t",
        partition: int = 0,
        t: float = 1.0,
        wall_ms: int = 0,
        isolation: str = "read_committed",
    ) -> Hist:
        self.events.append(
            dict(
                type="delivery",
                t=t,
                wall_ms=wall_ms,
                consumer=consumer,
                group=group,
                isolation=isolation,
                topic=topic,
                partition=partition,
                offset=offset,
                key="k1",
                value=value,
            )
        )
        return self

    def offsets(
        self, t: float, t_end: float, offsets: dict[tuple[str, int], int], final: bool = False, group: str = "g"
    ) -> Hist:
        self.events.append(
            dict(
                type="offsets",
                t=t,
                t_end=t_end,
                group=group,
                final=final,
                offsets=[[tp[0], tp[1], o] for tp, o in offsets.items()],
            )
        )
        return self

    def event(self, type: str, **fields) -> Hist:
        self.events.append(dict(type=type, **fields))
        return self

    def finish(self, *, replicas_equal: bool = True, end: bool = True) -> list[dict]:
        out = list(self.events)
        out.append({"type": "phase", "t": 20.0, "name": "writes_stopped"})
        for (topic, p), records in sorted(self.logs.items()):
            hw = max((r[0] for r in records), default=-1) + 1
            out.append(
                dict(
                    type="log",
                    t=21.0,
                    topic=topic,
                    partition=p,
                    high_watermark=hw,
                    isolation="read_committed",
                    records=sorted(records),
                    last=True,
                )
            )
            out.append(
                dict(
                    type="replicas",
                    t=22.0,
                    topic=topic,
                    partition=p,
                    high_watermark=hw,
                    compared=True,
                    equal=replicas_equal,
                    first_difference=None if replicas_equal else 0,
                    lagging=[],
                )
            )
        if end:
            out.append({"type": "end", "t": 23.0})
        return out


def counts(report: Report) -> dict[str, int]:
    return {v.name: v.count for v in report.verdicts if v.count}


def verdict(report: Report, name_start: str):
    return next(v for v in report.verdicts if v.name.startswith(name_start))


def clean() -> Hist:
    """Two writers, two keys, three sessions, a consumer group that got everything."""
    h = Hist()
    h.send("w1-k1-0", seq=0, offset=0, t=0.0).logged("w1-k1-0", 0)
    h.send("w1-k1-1", seq=1, offset=1, t=0.2).logged("w1-k1-1", 1)
    h.send("w2-k1-0", writer="w2", seq=0, offset=2, t=0.3).logged("w2-k1-0", 2)
    h.send("w1-k2-0", key="k2", seq=0, partition=1, offset=0, t=0.4).logged("w1-k2-0", 0, partition=1, key="k2")
    for v, o in [("w1-k1-0", 0), ("w1-k1-1", 1), ("w2-k1-0", 2)]:
        h.delivery(v, o)
    h.delivery("w1-k2-0", 0, partition=1)
    h.offsets(1.0, 1.1, {("t", 0): 2})
    h.offsets(2.0, 2.1, {("t", 0): 3, ("t", 1): 1}, final=True)
    return h


def test_a_clean_history_passes_every_check():
    report = check_history(clean().finish())
    assert report.ok, report.describe()
    assert report.metrics["acked"] == 4 and report.metrics["deliveries"] == 4
    assert {v.name for v in report.verdicts if not v.exercised} == {
        "delayed messages delivered early",
        "transactions seen in part by read_committed readers",
        "aborted transaction data served to read_committed readers",
        "graceful stops (SIGTERM) that failed",
        "pipeline inputs processed other than exactly once",
        "acknowledged broadcast messages an instance never got",
    }
    assert report.metrics["pipeline"] == {}


def test_a_lost_acknowledged_message_is_flagged():
    h = clean().send("w1-k1-2", seq=2, offset=3, t=0.5)  # acked, never in the log
    report = check_history(h.finish())
    assert counts(report) == {"acknowledged messages lost": 1}
    assert "w1-k1-2" in verdict(report, "acknowledged messages lost").examples[0]


def test_unknown_and_failed_sends_may_be_missing_but_failed_ones_may_not_be_there():
    h = clean().send("w1-k1-2", seq=2, outcome="unknown", t=0.5).send("w1-k1-3", seq=3, outcome="failed", t=0.6)
    assert check_history(h.finish()).ok
    h = clean().send("w1-k1-2", seq=2, outcome="failed", t=0.5).logged("w1-k1-2", 3).delivery("w1-k1-2", 3)
    assert counts(check_history(h.finish())) == {"sends reported failed that are in the log": 1}


def test_a_duplicate_in_the_log_is_flagged():
    h = clean().logged("w1-k1-1", 3).delivery("w1-k1-1", 3)  # written twice
    report = check_history(h.finish())
    assert counts(report) == {"duplicates in the log (idempotent producers)": 1}


def test_a_reordering_within_a_session_is_flagged():
    h = Hist()
    h.send("w1-k1-0", seq=0, offset=1, t=0.0).logged("w1-k1-0", 1)
    h.send("w1-k1-1", seq=1, offset=0, t=0.05, t_end=0.2).logged("w1-k1-1", 0)  # pipelined, landed first
    report = check_history(h.finish())
    assert counts(report) == {"per-key order violations": 1}
    assert "same session" in verdict(report, "per-key order").examples[0]


def test_a_reordering_across_sessions_by_real_time_is_flagged():
    h = Hist()
    h.send("w1-k1-0", seq=0, offset=5, t=0.0, t_end=1.0).logged("w1-k1-0", 5)
    h.send("w1-k1-1", session=2, seq=1, offset=3, t=2.0, t_end=2.5).logged("w1-k1-1", 3)  # after the ack, lower offset
    report = check_history(h.finish())
    assert counts(report) == {"per-key order violations": 1}
    assert "acknowledged at t=1.00" in verdict(report, "per-key order").examples[0]


def test_an_unknown_send_landing_late_in_another_session_is_not_a_reordering():
    h = Hist()
    h.send("w1-k1-0", seq=0, offset=0, t=0.0).logged("w1-k1-0", 0)
    h.send("w1-k1-1", seq=1, outcome="unknown", t=0.2, t_end=5.0).logged("w1-k1-1", 2)  # landed after the next
    h.send("w1-k1-2", session=2, seq=2, offset=1, t=6.0, t_end=6.5).logged("w1-k1-2", 1)
    report = check_history(h.finish())
    assert report.ok, report.describe()
    assert report.metrics["unknown_in_log"] == 1


def test_an_acknowledged_offset_holding_something_else_is_flagged():
    h = Hist().send("w1-k1-0", offset=7).logged("w1-k1-0", 8)
    assert counts(check_history(h.finish())) == {"acknowledged at an offset that holds something else": 1}


def test_records_nobody_sent_are_flagged():
    h = clean().logged("hex:00ff", 3)
    assert counts(check_history(h.finish())) == {"records in the log that nobody sent": 1}


def test_committed_offsets_going_backwards_are_flagged_but_overlapping_reads_are_not():
    h = clean().offsets(1.5, 1.6, {("t", 0): 1})  # after the read of 2 at 1.0..1.1
    report = check_history(h.finish())
    assert counts(report) == {"committed group offsets going backwards": 1}
    h = clean().offsets(1.05, 1.3, {("t", 0): 1})  # began before that read returned
    assert check_history(h.finish()).ok


def test_a_group_committing_past_an_undelivered_message_is_flagged():
    h = Hist()
    for o in range(3):
        h.send(f"w1-k1-{o}", seq=o, offset=o, t=o / 10).logged(f"w1-k1-{o}", o)
    h.delivery("w1-k1-0", 0).delivery("w1-k1-2", 2)
    h.offsets(2.0, 2.1, {("t", 0): 3}, final=True)
    report = check_history(h.finish())
    assert counts(report) == {"messages a group committed past without delivering": 1}
    assert "t-0@1" in verdict(report, "messages a group").examples[0]


def test_a_delivery_that_differs_from_the_committed_log_is_flagged():
    h = clean().delivery("w1-k1-9", 1, consumer="c2.1")  # a phantom at offset 1
    assert counts(check_history(h.finish())) == {"deliveries that differ from the committed log": 1}


def test_replicas_that_differ_are_flagged():
    assert counts(check_history(clean().finish(replicas_equal=False))) == {"replicas whose committed logs differ": 2}


def test_a_replica_short_of_the_high_watermark_differs_once_the_cluster_settled():
    h = clean().event(
        "replicas",
        t=22.5,
        topic="u",
        partition=0,
        high_watermark=5,
        compared=True,
        equal=True,
        lagging=["n2"],
        settled=True,
    )
    assert counts(check_history(h.finish())) == {"replicas whose committed logs differ": 1}
    h = clean().event(
        "replicas",
        t=22.5,
        topic="u",
        partition=0,
        high_watermark=5,
        compared=True,
        equal=True,
        lagging=["n2"],
        settled=False,
    )
    assert counts(check_history(h.finish())) == {"run incomplete (final read, drain, replica comparison)": 1}


def test_an_incomplete_run_is_not_a_pass():
    assert counts(check_history(clean().finish(end=False))) == {
        "run incomplete (final read, drain, replica comparison)": 1
    }
    h = clean().event("drain", t=20.5, workload="queue", ok=False, detail="t-0 committed 1 of 3")
    assert counts(check_history(h.finish())) == {"run incomplete (final read, drain, replica comparison)": 1}
    h = clean().send("x-0", topic="other", offset=0)  # acked on a topic never read back
    assert counts(check_history(h.finish())) == {"run incomplete (final read, drain, replica comparison)": 1}


def test_a_failed_graceful_stop_is_flagged():
    h = clean().event("node_stop", t=5.0, node=2, code=0, by_itself=True)
    assert check_history(h.finish()).ok
    h = clean().event("node_stop", t=5.0, node=2, code=-9, by_itself=False)
    assert counts(check_history(h.finish())) == {"graceful stops (SIGTERM) that failed": 1}


def test_an_early_delayed_delivery_is_flagged():
    h = clean().send("w1-k1-2", seq=2, offset=3, t=0.5, deliver_at=10_000).logged("w1-k1-2", 3)
    h.offsets(3.0, 3.1, {("t", 0): 4, ("t", 1): 1}, final=True)
    on_time = Hist()
    on_time.events, on_time.logs = list(h.events), {k: list(v) for k, v in h.logs.items()}
    h.delivery("w1-k1-2", 3, wall_ms=9_999)
    report = check_history(h.finish())
    assert counts(report) == {"delayed messages delivered early": 1}
    assert "0.001 s early" in verdict(report, "delayed").examples[0]
    on_time.delivery("w1-k1-2", 3, wall_ms=10_000)
    report = check_history(on_time.finish())
    assert report.ok and verdict(report, "delayed").exercised


def transactional() -> Hist:
    """Transaction a (committed) writes to topics x and y; b is aborted; c committed."""
    h = Hist()
    h.send("a-x", topic="x", txn="a", offset=0, t=0.0).logged("a-x", 0, topic="x")
    h.send("a-y", topic="y", txn="a", offset=0, t=0.1).logged("a-y", 0, topic="y")
    h.event("txn", t=0.5, t_end=0.6, txn="a", producer="tx1", outcome="committed")
    h.send("b-x", topic="x", txn="b", offset=2, t=1.0)
    h.send("b-y", topic="y", txn="b", offset=2, t=1.1)
    h.event("txn", t=1.5, t_end=1.6, txn="b", producer="tx1", outcome="aborted")
    h.send("c-x", topic="x", txn="c", offset=4, t=2.0).logged("c-x", 4, topic="x")
    h.event("txn", t=2.5, t_end=2.6, txn="c", producer="tx1", outcome="committed")
    h.delivery("a-x", 0, topic="x", t=0.7).delivery("a-y", 0, topic="y", t=0.8).delivery("c-x", 4, topic="x", t=2.7)
    h.offsets(3.0, 3.1, {("x", 0): 5, ("y", 0): 1}, final=True)
    return h


def test_transactions_seen_whole_pass():
    report = check_history(transactional().finish())
    assert report.ok, report.describe()
    assert verdict(report, "transactions seen in part").exercised


def test_a_torn_transaction_is_flagged():
    h = transactional()
    h.send("c-y", topic="y", txn="c", offset=4, t=2.1)  # c's second half never became visible
    report = check_history(h.finish())
    assert counts(report) == {"transactions seen in part by read_committed readers": 1, "acknowledged messages lost": 1}
    assert "transaction c (committed): 1 of 2" in verdict(report, "transactions seen").examples[0]


def test_a_read_committed_delivery_before_the_commit_is_flagged():
    h = transactional().delivery("c-x", 4, topic="x", t=2.2, consumer="c9.1")  # c asked to commit at 2.5
    report = check_history(h.finish())
    assert counts(report) == {"transactions seen in part by read_committed readers": 1}
    assert "before it was decided" in verdict(report, "transactions seen").examples[0]


def test_aborted_data_served_is_flagged():
    h = transactional().logged("b-x", 2, topic="x").delivery("b-x", 2, topic="x", t=1.7)
    h.offsets(3.5, 3.6, {("x", 0): 5, ("y", 0): 1}, final=True)
    report = check_history(h.finish())
    assert counts(report) == {"aborted transaction data served to read_committed readers": 2}


def test_availability_finds_the_longest_window_without_acknowledgements():
    h = Hist()
    for i, t in enumerate([1.0, 2.0, 10.0, 11.0]):
        h.send(f"w1-k1-{i}", seq=i, offset=i, t=t - 0.1, t_end=t).logged(f"w1-k1-{i}", i)
    h.event("fault", t=2.5, step=1, kind="kill", phase="start", nodes=[1])
    h.event("fault", t=8.0, step=1, kind="kill", phase="end", nodes=[1])
    h.event("fault", t=15.0, step=2, kind="pause", phase="start", nodes=[2])
    m = check_history(h.finish()).metrics
    assert m["longest_no_ack_seconds"] == 9.0 and m["longest_no_ack_window"] == [11.0, 20.0]
    assert m["faults_during_longest_window"] == ["#2 pause"]
    h.send("w1-k1-9", seq=9, offset=9, t=14.0, t_end=15.0).logged("w1-k1-9", 9)
    m = check_history(h.finish()).metrics
    assert m["longest_no_ack_window"] == [2.0, 10.0] and m["faults_during_longest_window"] == ["#1 kill"]
    assert m["acked_per_second"] == 0.25 and m["faults"] == {"kill": 1, "pause": 1}


def test_a_partition_waits_only_while_a_write_to_it_is_outstanding():
    """Nobody writing to a partition is not the partition being unavailable."""
    h = Hist()
    for i, (t, t_end) in enumerate([(1.0, 1.1), (12.0, 12.2), (13.0, 19.0), (18.5, 19.5)]):
        h.send(f"w1-k1-{i}", seq=i, offset=i, t=t, t_end=t_end).logged(f"w1-k1-{i}", i)
    m = check_history(h.finish()).metrics
    assert m["longest_no_ack_seconds"] == 11.1  # nothing written from 1.1 to 12.0
    assert m["longest_partition_wait_seconds"] == 6.0 and m["longest_partition_wait_window"] == [13.0, 19.0]


def test_every_check_has_a_distinct_name():
    names = [c.name for c in CHECKS]
    assert len(names) == len(set(names))


def test_history_round_trip_and_a_torn_last_line(tmp_path):
    h = History(tmp_path / "history.jsonl")
    h.start()
    h.record("send", value=text(b"w1-k1-0"), key=text(b"\xff\x00"), outcome="acked", offset=0, t_end=0.123456)
    h.record("end")
    h.close()
    events = list(read_history(tmp_path / "history.jsonl"))
    assert [e["type"] for e in events] == ["send", "end"]
    assert events[0]["key"] == "hex:ff00" and events[0]["t_end"] == 0.1235
    assert text(b"hex:41") == "hex:6865783a3431"  # real text never looks like an escape
    with open(tmp_path / "history.jsonl", "a") as f:
        f.write('{"type": "delivery", "t": 1')  # the runner died mid-line
    assert len(list(read_history(tmp_path / "history.jsonl"))) == 2
    with open(tmp_path / "history.jsonl", "a") as f:
        f.write("\n" + json.dumps({"type": "end", "t": 2}) + "\n")
    with pytest.raises(ValueError, match="not a JSON event"):
        list(read_history(tmp_path / "history.jsonl"))


def test_errors_logged_by_nodes_are_flagged():
    h = clean().event(
        "node_errors",
        t=22.5,
        node=1,
        errors=3,
        lines=[["node.server: connection failed", 3]],
        exceptions=[["raft.log.RaftInvariantError: commit 6 is beyond the last offset 1", 3]],
    )
    report = check_history(h.finish())
    assert counts(report) == {"errors logged by nodes": 3}
    assert "RaftInvariantError" in verdict(report, "errors logged").examples[0]


def test_errors_escaping_the_client_library_are_counted_not_judged():
    h = clean().event(
        "member", t=3.0, consumer="c1.1", event="error", error="ExceptionGroup of TimeoutError('') at _tasks.py:155"
    )
    h.event("session_error", t=4.0, writer="w1", session=2, error="ConnectionClosedError('x') at cluster.py:120")
    report = check_history(h.finish())
    assert report.ok
    assert report.metrics["client_errors"] == {"ExceptionGroup of TimeoutError": 1, "ConnectionClosedError": 1}


def test_delayed_messages_are_exempt_from_key_order_but_not_from_loss():
    h = Hist()
    h.send("d1-k1-0", seq=0, t=0.0, t_end=0.1, deliver_at=9_000).logged("d1-k1-0", 1)  # a longer delay
    h.send("d1-k1-1", seq=1, t=0.2, t_end=0.3, deliver_at=2_000).logged("d1-k1-1", 0)  # landed first
    h.delivery("d1-k1-1", 0, wall_ms=2_050).delivery("d1-k1-0", 1, wall_ms=9_010)
    h.offsets(10.0, 10.1, {("t", 0): 2}, final=True)
    report = check_history(h.finish())
    assert report.ok, report.describe()
    assert report.metrics["delayed_lateness_ms"] == {"delivered": 2, "p50": 50, "p99": 50, "max": 50}
    h.send("d1-k1-2", seq=2, t=0.4, t_end=0.5, deliver_at=3_000)  # acked, never landed
    assert counts(check_history(h.finish())) == {"acknowledged messages lost": 1}


def pipeline(committed: dict[tuple[str, int], int] | None = None) -> Hist:
    """Feeder f1 writes four inputs to `in` (two partitions, one an unknown send that
    landed); each has one result in `out`, one of them a dead letter in `dlq`; a zombie
    was staged; the group `pg` committed past every input."""
    h = Hist()
    h.event(
        "pipeline",
        t=0.0,
        workload="pipeline",
        input="in",
        outputs=["out"],
        dead_letters=["dlq"],
        prefix="out:",
        group="pg",
    )
    inputs = [
        ("f1-k1-0", 0, 0, "acked"),
        ("f1-k1-1", 0, 1, "acked"),
        ("f1-k2-0", 1, 0, "unknown"),
        ("f1-k2-1", 1, 1, "acked"),
    ]
    for i, (value, p, o, outcome) in enumerate(inputs):
        key = value.split("-")[1]
        h.send(
            value,
            writer="f1",
            key=key,
            seq=int(value[-1]),
            topic="in",
            partition=p,
            outcome=outcome,
            offset=o if outcome == "acked" else None,
            t=i / 10,
        )
        h.logged(value, o, topic="in", partition=p, key=key)
        h.delivery(value, o, consumer="pw1.1", group="pg", topic="in", partition=p, t=1.0 + i / 10)
    h.logged("out:f1-k1-0", 0, topic="out").logged("out:f1-k1-1", 2, topic="out")
    h.logged("out:f1-k2-0", 0, topic="out", partition=1, key="k2")
    h.logged("f1-k2-1", 0, topic="dlq", key="k2")  # the handler failed every retry
    h.event(
        "zombie",
        t=1.2,
        t_end=7.2,
        consumer="pw1.1",
        group="pg",
        topic="in",
        partition=0,
        offset=1,
        value="f1-k1-1",
        removed=True,
        error=None,
    )
    h.offsets(8.0, 8.1, committed or {("in", 0): 2, ("in", 1): 2}, final=True, group="pg")
    return h


def test_a_pipeline_with_one_result_per_input_passes():
    report = check_history(pipeline().finish())
    assert report.ok, report.describe()
    assert verdict(report, "pipeline").exercised
    assert report.metrics["pipeline"] == {
        "inputs": 4,
        "outputs": 3,
        "dead_letters": 1,
        "zombies": 1,
        "zombies_expired": 1,
    }


def test_a_duplicated_pipeline_output_is_flagged():
    h = pipeline().logged("out:f1-k1-1", 3, topic="out")  # the zombie's transaction committed too
    report = check_history(h.finish())
    assert counts(report) == {"pipeline inputs processed other than exactly once": 1}
    assert verdict(report, "pipeline").examples == [
        "f1-k1-1 (in-0@1; 1 below the group's committed offset) has 2 result(s): out-0@2, out-0@3"
    ]
    h = pipeline().logged("f1-k1-0", 1, topic="dlq")  # an output and a dead letter
    assert counts(check_history(h.finish())) == {"pipeline inputs processed other than exactly once": 1}


def test_a_missing_pipeline_output_is_flagged():
    h = pipeline()
    h.logs[("out", 1)] = []  # f1-k2-0 committed, never output
    report = check_history(h.finish())
    assert counts(report) == {"pipeline inputs processed other than exactly once": 1}
    assert verdict(report, "pipeline").examples == [
        "f1-k2-0 (in-1@0; 1 below the group's committed offset) has 0 result(s)"
    ]


def test_a_pipeline_output_with_no_input_is_flagged():
    h = pipeline().logged("out:f1-k9-0", 1, topic="out", partition=1)
    report = check_history(h.finish())
    assert counts(report) == {"pipeline inputs processed other than exactly once": 1}  # not "nobody sent"
    assert verdict(report, "pipeline").examples == ["out-1@1: the input 'f1-k9-0' is not in in"]
    h = pipeline().logged("garbage", 1, topic="out", partition=1)
    assert "not an output" in verdict(check_history(h.finish()), "pipeline").examples[0]


def test_a_pipeline_output_without_its_offset_commit_is_flagged():
    h = pipeline(committed={("in", 0): 2, ("in", 1): 1})  # the dead letter of in-1@1 landed, its offset not
    report = check_history(h.finish())
    assert counts(report) == {"pipeline inputs processed other than exactly once": 1}
    assert "0 below the group's committed offset" in verdict(report, "pipeline").examples[0]


def test_a_pipeline_whose_outputs_were_not_read_is_incomplete():
    h = pipeline()
    del h.logs[("dlq", 0)]
    report = check_history(h.finish())
    assert counts(report) == {"run incomplete (final read, drain, replica comparison)": 1}


def broadcast(missing_for_b: bool) -> Hist:
    """Two instances of a broadcast group on topic `t`: `g@a` got everything; `g@b`,
    restarted in between, missed `w1-k1-1` if asked to."""
    h = clean().event("broadcast", t=0.0, topic="t", group="g", instances=["g@a", "g@b"])
    for value, offset, partition in [("w1-k1-0", 0, 0), ("w1-k1-1", 1, 0), ("w2-k1-0", 2, 0), ("w1-k2-0", 0, 1)]:
        h.delivery(value, offset, partition=partition, group="g@a", consumer="bc1.1")
        if not (missing_for_b and value == "w1-k1-1"):
            h.delivery(
                value, offset, partition=partition, group="g@b", consumer="bc2.1" if value == "w1-k1-0" else "bc2.2"
            )
    for group in ("g@a", "g@b"):
        h.offsets(
            2.0, 2.1, {("t", 0): 3 if group == "g@a" or not missing_for_b else 1, ("t", 1): 1}, final=True, group=group
        )
    return h


def test_every_broadcast_instance_got_every_acknowledged_message():
    report = check_history(broadcast(missing_for_b=False).finish())
    assert report.ok, report.describe()
    assert verdict(report, "acknowledged broadcast messages").exercised


def test_a_broadcast_instance_that_missed_a_message_is_flagged():
    report = check_history(broadcast(missing_for_b=True).finish())
    assert counts(report) == {"acknowledged broadcast messages an instance never got": 1}
    assert "instance g@b never got w1-k1-1 (t-0@1" in verdict(report, "acknowledged broadcast").examples[0]
