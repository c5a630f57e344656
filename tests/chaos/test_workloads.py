"""The workloads' message composition: what a seed draws, and what a send event records."""

import time
from collections import defaultdict

from client.producer import RecordMetadata
from scripts.chaoslib.history import History
from scripts.chaoslib.workloads import WORKLOADS, Context, DelayedWorkload, QueueWorkload
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
    assert {c.name for c in classes} == {"queue", "delayed", "transactions", "halves"}
    for attr in ("topic", "group", "writer_prefix", "member_prefix"):
        assert len({getattr(c, attr) for c in classes}) == len(classes), attr
