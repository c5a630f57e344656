"""A seeded chaos run of 40 s: the faults the seed draws (the cluster growing and
shrinking and replicas moving among them), every
native workload (queue, delayed, transactions, halves, pipeline, broadcast; the kafka one
has its own run, test_kafka_chaos.py), then the checker (every check,
node errors included). CI runs it on every `scripts/test`; a failure prints the
checker's findings and the schedule as it happened, and leaves the run directory
(history, node logs, data) under pytest's tmp_path."""

import pytest
import trio

from scripts.chaoslib.nemesis import FAULTS
from scripts.chaoslib.runner import Options, run_chaos
from scripts.chaoslib.workloads import DEFAULT_WORKLOADS

SEED = 8173  # torn, membership (node 5 joins, the controller's node leaves), kill, restart (of the joined node), move in 40 s
DURATION = 40.0


@pytest.mark.timeout(420)
async def test_seeded_chaos_run_loses_nothing(tmp_path):
    said: list[str] = []
    opts = Options(
        run_dir=tmp_path / "run",
        duration=DURATION,
        seed=SEED,
        faults=list(FAULTS),
        workloads=list(DEFAULT_WORKLOADS),
        settle_timeout=20.0,
        drain_timeout=150.0,
        setup_timeout=60.0,
    )  # a busy CI machine drains slowly
    with trio.fail_after(400):
        report = await run_chaos(opts, say=said.append)
    story = "\n".join(said)
    assert report.ok, f"{report.describe()}\n\nthe run:\n{story}"
    m = report.metrics
    assert m["acked"] > 2000, f"too little traffic to mean anything: {m}\n{story}"
    assert sum(m["faults"].values()) >= 5, f"too few faults carried out: {m['faults']}\n{story}"
