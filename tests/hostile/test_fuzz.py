"""The hostile-input fuzzer (scripts/fuzz), seeded, for 40 seconds: four clients
send every request shape beside a canary; no node may exit, answer UNKNOWN or leave a
request unanswered, the canary loses and duplicates nothing, replicas stay identical
and memory bounded. A failure prints the violations with the requests that caused
them and the replay command; node logs stay under pytest's tmp_path."""

from __future__ import annotations

import pytest
import trio

from scripts.fuzzlib.runner import Options, run_fuzz
from scripts.fuzzlib.shapes import RAW, SHAPES

SEED = 13
DURATION = 40.0
CLIENTS = 4


@pytest.mark.timeout(300)
async def test_seeded_fuzz_run_finds_nothing(tmp_path):
    said: list[str] = []
    opts = Options(
        run_dir=tmp_path / "run", seed=SEED, duration=DURATION, clients=CLIENTS, setup_timeout=120.0
    )  # a busy CI machine starts nodes slowly
    with trio.fail_after(290):
        report = await run_fuzz(opts, say=said.append)
    story = "\n".join(said)
    found = "\n".join(
        f"{kind} ({n}):\n    " + "\n    ".join(report.examples.get(kind, []))
        for kind, n in report.violations.most_common()
    )
    assert report.ok, (
        f"{found}\n\nreplay: scripts/fuzz --seed {SEED} --duration {DURATION:g} --clients {CLIENTS}"
        f"\nnode logs: {opts.run_dir}\n{story}"
    )
    # Enough happened to mean something.
    assert sum(report.outcomes.values()) > 300, f"too little traffic: {report.outcomes}\n{story}"
    assert len(report.shapes) >= 0.8 * (len(SHAPES) + len(RAW)), f"few shapes drawn: {sorted(report.shapes)}"
    assert report.canary["acked"] > 200 and report.canary["read"] >= report.canary["acked"], report.canary
    assert report.replicas["compared"] >= 7, report.replicas
