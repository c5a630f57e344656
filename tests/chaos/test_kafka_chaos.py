"""A short seeded chaos run of the kafka workload alone (librdkafka through the nodes'
Kafka listeners, behind the proxies): a kill, a partition and a pause in 22 s, then the
checker. The run must be clean, and it must have judged something: the writers'
acknowledged sends and the group's deliveries are in the history, and a history doctored
to lose or duplicate one of those sends fails the checks, so a clean verdict here is the
checks passing on the Kafka path, not the checks having nothing to look at."""

import json
from pathlib import Path

import pytest
import trio

from scripts.chaoslib.checker import check_history
from scripts.chaoslib.history import read_history
from scripts.chaoslib.runner import Options, run_chaos
from scripts.chaoslib.workloads import KafkaWorkload

SEED = 46  # kill n1, partition a leader from the others, pause a leader, in 22 s
DURATION = 22.0
FAULTS = ["kill", "pause", "partition"]


def doctored(events: list[dict], value: str, copies: int) -> list[dict]:
    """The history with `value` kept `copies` times in the final log (0: lost; 2: a
    duplicate at a fresh offset of the same partition)."""
    out = []
    for e in events:
        if e["type"] == "log" and any(r[2] == value for r in e["records"]):
            original = next(r for r in e["records"] if r[2] == value)
            records = [r for r in e["records"] if r[2] != value]
            if copies:
                records.append(original)
                records += [[10**9 + i, original[1], value] for i in range(1, copies)]  # past any real offset
            e = dict(e, records=records)
        out.append(e)
    return out


@pytest.mark.timeout(150)
async def test_kafka_workload_under_faults_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    said: list[str] = []
    opts = Options(
        run_dir=tmp_path / "run",
        duration=DURATION,
        seed=SEED,
        faults=FAULTS,
        workloads=[KafkaWorkload.name],
        settle_timeout=20.0,
        drain_timeout=60.0,
        setup_timeout=45.0,
    )
    with trio.fail_after(140):
        report = await run_chaos(opts, say=said.append)
    story = "\n".join(said)
    assert report.ok, f"{report.describe()}\n\nthe run:\n{story}"

    events = list(read_history(tmp_path / "run" / "history.jsonl"))
    sends = [e for e in events if e["type"] == "send"]
    assert sends and all(e["writer"].startswith(KafkaWorkload.writer_prefix) for e in sends)
    acked = [e for e in sends if e["outcome"] == "acked"]
    assert len(acked) > 200, f"too few acknowledged librdkafka sends to mean anything: {report.metrics}\n{story}"
    assert all(e["partition"] is not None and e["offset"] is not None for e in acked)
    guarded = [e for e in acked if e["idempotent"]]
    assert len(guarded) > len(acked) / 2, "the duplicates check must hold most sends (see epoch bumps, docs/chaos.md)"
    deliveries = [e for e in events if e["type"] == "delivery" and e["group"] == KafkaWorkload.group]
    assert {e["value"] for e in deliveries} >= {e["value"] for e in acked}, "the group missed acknowledged sends"
    assert any(e["type"] == "commit" and e["outcome"] == "ok" for e in events)
    assert sum(report.metrics["faults"].values()) >= 3, f"faults not carried out: {report.metrics['faults']}\n{story}"
    verdicts = {v.name: v for v in report.verdicts}
    for name in ("committed group offsets going backwards", "messages a group committed past without delivering"):
        assert verdicts[name].exercised, name

    # The same history, doctored: the checks find what the workload recorded.
    victim = guarded[len(guarded) // 2]["value"]
    lost = {v.name: v.count for v in check_history(doctored(events, victim, 0)).verdicts}
    assert lost["acknowledged messages lost"] == 1, json.dumps(lost)
    twice = {v.name: v.count for v in check_history(doctored(events, victim, 2)).verdicts}
    assert twice["duplicates in the log (idempotent producers)"] == 1, json.dumps(twice)
