"""A short seeded chaos run with `--secure` (TLS-only nodes that require users; the
workload as a user whose ACLs allow only `chaos-*` names): clean, with acknowledged
sends judged, and not one request of the workload refused by the ACLs."""

import os
from pathlib import Path

import pytest
import trio

from scripts.chaoslib.history import read_history
from scripts.chaoslib.runner import CHAOS_USER, Options, run_chaos
from scripts.chaoslib.workloads import QueueWorkload


@pytest.mark.timeout(150)
async def test_the_queue_workload_over_tls_with_acls(tmp_path: Path) -> None:
    said: list[str] = []
    opts = Options(
        run_dir=tmp_path / "run",
        duration=12.0,
        seed=5,
        faults=["kill"],
        workloads=[QueueWorkload.name],
        settle_timeout=20.0,
        drain_timeout=60.0,
        setup_timeout=45.0,
        secure=True,
    )
    with trio.fail_after(140):
        report = await run_chaos(opts, say=said.append)
    story = "\n".join(said)
    assert report.ok, f"{report.describe()}\n\nthe run:\n{story}"
    acked = [
        e for e in read_history(tmp_path / "run" / "history.jsonl") if e["type"] == "send" and e["outcome"] == "acked"
    ]
    assert len(acked) > 100, f"too few acknowledged sends to mean anything: {report.metrics}\n{story}"
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "run").glob("n*/node.log"))
    assert f"refused User:{CHAOS_USER}" not in logs
    assert (tmp_path / "run" / "tls" / "ca.pem").exists() and "TIDEMQ_USER" not in os.environ  # (restored)
    assert report.metrics["faults"].get("kill", 0) >= 1, report.metrics
