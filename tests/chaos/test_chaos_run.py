"""A seeded chaos run of about a minute and a half: the faults the seed draws, every
workload but those with a known open bug (queue, delayed, transactions, halves), then the checker. CI runs it on every
`scripts/test`; a failure prints the checker's findings and the schedule as it happened,
and leaves the run directory (history, node logs, data) under pytest's tmp_path."""

import pytest
import trio

from scripts.chaoslib.checker import NodeErrors
from scripts.chaoslib.history import read_history
from scripts.chaoslib.nemesis import FAULTS
from scripts.chaoslib.runner import Options, run_chaos
from scripts.chaoslib.workloads import WORKLOADS

SEED = 184         # pause, kill, torn, restart, one-way, drop, latency, bridge partition, isolate in 90 s
DURATION = 90.0
# Node errors already reported, that a run may or may not hit (a race): tolerated here,
# still counted by `scripts/chaos`. Remove an entry once its bug is fixed.
KNOWN_NODE_ERRORS = {
    # node/server.py Server._writer: its batching loop catches trio.WouldBlock but not
    # trio.EndOfChannel, so a client connection that closes while answers are being
    # written ends in an unhandled exception (logged as ERROR, the collected frames lost).
    "trio.EndOfChannel",
}


# Workloads with a known open bug, left out here (so CI stays a regression check) and
# still run by `scripts/chaos` by default. Add each back once its bug is fixed.
KNOWN_FAILING_WORKLOADS = {
    # Issue 7, open: a 15-minute run (seed 2026, commit 06659fe) found 44 pipeline inputs
    # whose offsets the group committed while their outputs were aborted: from some
    # point every transaction of one worker aborted (epoch bumped each time), yet the
    # group's committed offset passed those inputs.
    "pipeline",
}


def unknown_node_errors(history_path) -> list[str]:
    return [f"n{e['node']}: {line}" for e in read_history(history_path) if e["type"] == "node_errors"
            for line, _ in (e["exceptions"] or e["lines"]) if not any(k in line for k in KNOWN_NODE_ERRORS)]


@pytest.mark.timeout(420)
async def test_seeded_chaos_run_loses_nothing(tmp_path):
    said: list[str] = []
    opts = Options(run_dir=tmp_path / "run", duration=DURATION, seed=SEED, faults=list(FAULTS),
                   workloads=[w for w in WORKLOADS if w not in KNOWN_FAILING_WORKLOADS],
                   settle_timeout=20.0, drain_timeout=150.0, setup_timeout=60.0)  # a busy CI machine drains slowly
    with trio.fail_after(400):
        report = await run_chaos(opts, say=said.append)
    story = "\n".join(said)
    violations = [v for v in report.violations if v.name != NodeErrors.name]
    assert not violations, f"{report.describe()}\n\nthe run:\n{story}"
    assert not unknown_node_errors(opts.run_dir / "history.jsonl"), f"{report.describe()}\n\nthe run:\n{story}"
    m = report.metrics
    assert m["acked"] > 2000, f"too little traffic to mean anything: {m}\n{story}"
    assert sum(m["faults"].values()) >= 5, f"too few faults carried out: {m['faults']}\n{story}"
