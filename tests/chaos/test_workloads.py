"""The workloads' message composition: what a seed draws, and what a send event records."""

import time
from collections import defaultdict

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
    assert {c.name for c in classes} == {"queue", "delayed", "transactions", "halves", "pipeline", "broadcast"}
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
