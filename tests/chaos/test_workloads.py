"""The workloads' message composition: what a seed draws, and what a send event records."""

import time
from collections import defaultdict
from types import SimpleNamespace

from client import Message
from client.producer import RecordMetadata
from scripts.chaoslib.history import History, read_history
from scripts.chaoslib.workloads import WORKLOADS, Context, DelayedWorkload, PipelineWorkload, QueueWorkload
from scripts.chaoslib.workloads.queue import Pending


def context(tmp_path, seed: int = 1) -> Context:
    return Context("127.0.0.1:1", History(tmp_path / "h.jsonl"), seed, print)


def compose(w, writer: str, n: int) -> list:
    rng = w.ctx.rng(f"{w.name}-{writer}")
    seqs: dict[str, int] = defaultdict(int)
    return [w._compose(writer, rng, seqs) for _ in range(n)]


def test_queue_messages_number_each_key_and_a_seed_repeats_them(tmp_path):
    w = QueueWorkload(context(tmp_path))
    msgs = compose(w, "w1", 200)
    assert len({m.value for m in msgs}) == 200, "every value is unique: the checker finds messages by value"
    per_key: dict[str, list[int]] = {}
    for m in msgs:
        assert m.value == f"w1-{m.key}-{m.seq}" and m.submit == {} and m.extra == {}
        per_key.setdefault(m.key, []).append(m.seq)
    assert all(seqs == list(range(len(seqs))) for seqs in per_key.values())
    again = compose(QueueWorkload(context(tmp_path)), "w1", 200)
    assert [m.value for m in again] == [m.value for m in msgs]
    other = compose(QueueWorkload(context(tmp_path, seed=2)), "w1", 200)
    assert [m.value for m in other] != [m.value for m in msgs]


def test_delayed_messages_carry_their_due_time_and_land_by_value(tmp_path):
    w = DelayedWorkload(context(tmp_path))
    before = time.time()
    msgs = compose(w, "d1", 50)
    for m in msgs:
        at = m.submit["deliver_at"]
        assert before + 0.1 <= at <= time.time() + 15.0
        assert m.extra == {"deliver_at": int(at * 1000)}
    assert w._last_due_ms == max(m.extra["deliver_at"] for m in msgs)
    assert w._partition_of(None) is None
    p = Pending(None, msgs[0].value, msgs[0].key, msgs[0].seq, 0.0, msgs[0].extra)
    fields = w._acked_at(p, RecordMetadata("__delay_5s", 2, 17, 0))
    assert fields == {"offset": None, "tier": "__delay_5s-2@17"} and msgs[0].value in w._acked


def test_workloads_own_distinct_topics_groups_and_names():
    classes = list(WORKLOADS.values())
    assert {c.name for c in classes} == {"queue", "delayed", "transactions", "halves", "pipeline", "broadcast", "kafka"}
    for attr in ("topic", "group", "writer_prefix", "member_prefix"):
        assert len({getattr(c, attr) for c in classes}) == len(classes), attr


class Outputs:
    """What a pipeline handler sends, in place of a transactional Producer."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []

    async def send(self, topic: str, value: bytes, *, key: bytes | None = None) -> None:
        self.sent.append((topic, value, key))


class NoMember:
    membership = None  # a consumer outside the group: nothing for the coordinator to drop


async def test_a_pipeline_handler_sends_one_output_naming_its_input_and_stages_zombies(tmp_path):
    ctx = context(tmp_path)
    w = PipelineWorkload(ctx, zombie=0.0)
    out = Outputs()
    msg = Message("chaos-pipe-in", 2, 7, b"k3", b"f1-k3-4", (), 0)
    await w._handle(NoMember(), out, "pw1.1", ctx.rng("pipeline-pw1"), msg)
    assert out.sent == [("chaos-pipe-out", b"out:f1-k3-4", b"k3")]
    w = PipelineWorkload(ctx, zombie=1.0, session_timeout=0.01)  # every call a zombie
    await w._handle(NoMember(), out, "pw1.1", ctx.rng("pipeline-pw1"), msg)
    assert len(out.sent) == 2, "a zombie still sends, late: its transaction is what must abort"
    ctx.history.close()
    events = list(read_history(tmp_path / "h.jsonl"))
    assert [e["type"] for e in events] == ["delivery", "delivery", "zombie"]
    assert events[0]["group"] == "chaos-pipe-group" and events[0]["offset"] == 7
    assert events[2]["removed"] is False and events[2]["error"] == "not a member"
    assert w.topics == ["chaos-pipe-in", "chaos-pipe-out", "chaos-pipe-group.dlq"]


def test_broadcast_instances_are_groups_of_their_own_and_only_one_restarts(tmp_path):
    import math

    from scripts.chaoslib.workloads import BroadcastWorkload

    w = BroadcastWorkload(context(tmp_path))
    assert w.groups == ["chaos-broadcast@a", "chaos-broadcast@b"]
    rng = w.ctx.rng("lifetimes")
    assert w._lifetime(1, rng) == math.inf and 8.0 <= w._lifetime(2, rng) <= 25.0
    assert 2.0 <= w._downtime(2, rng) <= 8.0
    consumer = w._consumer(2, "bc2.1")
    assert (consumer.group, consumer.broadcast, consumer.broadcast_group) == (
        "chaos-broadcast@b",
        True,
        "chaos-broadcast",
    )


class FakeError:
    """What librdkafka hands a callback: a KafkaError's code, name and text."""

    def __init__(self, code: int, name: str) -> None:
        self._code, self._name = code, name

    def code(self) -> int:
        return self._code

    def name(self) -> str:
        return self._name

    def str(self) -> str:
        return f"{self._name} happened"


def kafka_context(tmp_path) -> Context:
    return Context("127.0.0.1:1", History(tmp_path / "h.jsonl"), 1, print, kafka_bootstrap="127.0.0.1:2")


def test_kafka_workload_needs_kafka_listeners(tmp_path):
    import pytest

    from scripts.chaoslib.workloads import DEFAULT_WORKLOADS, KafkaWorkload

    with pytest.raises(ValueError, match="Kafka listeners"):
        KafkaWorkload(context(tmp_path))
    assert KafkaWorkload.needs_kafka and "kafka" not in DEFAULT_WORKLOADS, "a run without --kafka starts none"
    assert all(not WORKLOADS[name].needs_kafka for name in DEFAULT_WORKLOADS)


def test_kafka_delivery_reports_become_send_outcomes(tmp_path):
    """An acknowledgement keeps its partition and offset; any error in a report is an
    unknown outcome (librdkafka may have written an earlier attempt) and ends the session;
    a report for nothing pending is ignored."""
    from collections import deque

    from confluent_kafka import KafkaError

    from scripts.chaoslib.workloads.kafka import KafkaWorkload, Report, Sent

    ctx = kafka_context(tmp_path)
    w = KafkaWorkload(ctx)
    now = time.monotonic()
    pending = {"kw1-k1-0": Sent("k1", 0, 0.5), "kw1-k2-0": Sent("k2", 0, 0.6), "kw1-k1-1": Sent("k1", 1, 0.7)}
    reports = deque([Report("kw1-k1-0", None, 3, 41, now)])
    assert w._resolve_reports("kw1", 1, pending, reports, deque()) is False
    timed_out = FakeError(KafkaError._MSG_TIMED_OUT, "_MSG_TIMED_OUT")
    reports.extend([Report("kw1-k2-0", timed_out, -1, -1001, now), Report("kw1-k9-9", None, 0, 1, now)])
    assert w._resolve_reports("kw1", 1, pending, reports, deque()) is True
    assert list(pending) == ["kw1-k1-1"] and not reports
    w._record_send("kw1", 1, "kw1-k1-1", pending.pop("kw1-k1-1"), "unknown", error="the producer closed")
    ctx.history.close()
    sends = {e["value"]: e for e in read_history(tmp_path / "h.jsonl")}
    assert sends["kw1-k1-0"]["outcome"] == "acked" and (
        sends["kw1-k1-0"]["partition"],
        sends["kw1-k1-0"]["offset"],
    ) == (3, 41)
    assert sends["kw1-k1-0"]["t"] == 0.5 and sends["kw1-k1-0"]["idempotent"] is True
    assert sends["kw1-k2-0"]["outcome"] == "unknown" and sends["kw1-k2-0"]["partition"] is None
    assert sends["kw1-k2-0"]["error"].startswith("_MSG_TIMED_OUT")
    assert sends["kw1-k1-1"]["outcome"] == "unknown" and "kw1-k9-9" not in sends


def test_kafka_commit_results_are_recorded_and_nothing_to_commit_is_no_failure(tmp_path):
    from collections import deque

    from confluent_kafka import KafkaError, TopicPartition

    from scripts.chaoslib.workloads.kafka import KafkaWorkload

    ctx = kafka_context(tmp_path)
    w = KafkaWorkload(ctx)
    now = time.monotonic()
    refused = SimpleNamespace(
        topic="chaos-kafka", partition=1, offset=9, error=FakeError(KafkaError.ILLEGAL_GENERATION, "ILLEGAL_GENERATION")
    )  # what librdkafka hands back for a partition it could not commit (the error is read-only there)
    commits = deque(
        [
            (None, [TopicPartition("chaos-kafka", 2, 17), TopicPartition("chaos-kafka", 0, 5)], now),
            (FakeError(KafkaError._NO_OFFSET, "_NO_OFFSET"), [], now),
            (None, [refused], now),
        ]
    )
    assert w._record_commits("kc1.1", commits, asked=None) == [True, True, False]
    ctx.history.close()
    events = list(read_history(tmp_path / "h.jsonl"))
    assert [e["outcome"] for e in events] == ["ok", "failed"], "nothing to commit is not recorded"
    assert events[0]["partitions"] == [["chaos-kafka", 0, 5], ["chaos-kafka", 2, 17]]
    assert events[1]["error"].startswith("ILLEGAL_GENERATION") and events[1]["group"] == "chaos-kafka-group"


def test_sends_outstanding_across_a_librdkafka_epoch_bump_are_not_held_to_idempotence(tmp_path):
    """librdkafka re-sends what it holds under a new epoch after a bump, so a message
    outstanding across one may be in the log twice without any fault of the broker's:
    those sends say so, the bump is recorded, and a send acknowledged before the bump
    (or submitted after it) stays idempotent."""
    import logging
    from collections import deque

    from scripts.chaoslib.workloads.kafka import KafkaWorkload, RdLog, Report, Sent

    ctx = kafka_context(tmp_path)
    w = KafkaWorkload(ctx)
    bumps: deque = deque()
    rdlog = RdLog(logging.getLogger("test-rdlog"), bumps)
    rdlog.log(logging.DEBUG, "%s [%s] %s", "PRODUCE", "p", "produce messageset with 1 message(s)")
    rdlog.log(logging.DEBUG, "%s [%s] %s", "DRAIN", "p", "Beginning partition drain ... epoch bump for 1 partition(s)")
    assert not bumps and "epoch bump for" in rdlog.reason, "a drain is not a bump yet"
    before = ctx.history.now() - 1.0
    rdlog.log(logging.DEBUG, "%s [%s] %s", "DRAIN", "p", "All partitions drained, bumped epoch to PID{Id:9,Epoch:1}")
    assert len(bumps) == 1
    bump_t = ctx.history.at(bumps[0][0])
    now = time.monotonic()
    pending = {
        "kw1-k1-0": Sent("k1", 0, before),  # submitted before the bump, reported after it
        "kw1-k1-1": Sent("k1", 1, bump_t + 0.5),  # submitted after the bump
        "kw1-k2-0": Sent("k2", 0, before),  # acknowledged before the bump
    }
    reports = deque(
        [
            Report("kw1-k2-0", None, 1, 5, now - 0.5),
            Report("kw1-k1-0", None, 3, 9, now + 1.0),
            Report("kw1-k1-1", None, 3, 10, now + 1.0),
        ]
    )
    assert w._resolve_reports("kw1", 1, pending, reports, bumps) is False
    ctx.history.close()
    events = list(read_history(tmp_path / "h.jsonl"))
    assert events[0]["type"] == "epoch_bump" and "bumped epoch" in events[0]["detail"]
    assert events[0]["reason"].startswith("DRAIN [p] Beginning partition drain")
    sends = {e["value"]: e for e in events if e["type"] == "send"}
    assert sends["kw1-k1-0"]["idempotent"] is False and "bumped the producer epoch" in sends["kw1-k1-0"]["unguarded"]
    assert sends["kw1-k1-1"]["idempotent"] is True and "unguarded" not in sends["kw1-k1-1"]
    assert sends["kw1-k2-0"]["idempotent"] is True
