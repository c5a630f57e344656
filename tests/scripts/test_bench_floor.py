"""scripts/bench_floor.py: a small run answers every message and leaves no process
behind."""

import json
import subprocess
import sys
from pathlib import Path

import bench_floor

SCRIPT = Path(bench_floor.__file__)


def _stand_ins() -> list[str]:
    """Running leader and follower stand-ins (their files are in a tidemq-floor- folder)."""
    out = subprocess.run(["ps", "-eo", "args="], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if "tidemq-floor-" in line]


def test_a_small_run_reports_every_message_and_stops_its_processes():
    assert _stand_ins() == []
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--messages", "50", "--warmup", "5", "--fsync", "thread"],
        stdout=subprocess.PIPE,
        text=True,
    )
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    line = json.loads(out.strip().splitlines()[-1])
    assert line["bench"] == "floor" and line["messages"] == 50 and line["msgs_per_s"] > 0
    assert 0 < line["p50_ms"] <= line["p99_ms"]
    assert _stand_ins() == []
