"""How scripts/test spreads the suite over its pytest-xdist workers (`--dist loadfile`):
a file's tests stay together on one worker, and the files whose runs load the whole
machine (seeded chaos and fuzz runs, a rolling restart under load) count as one file,
so one worker runs them one after another. Beside other work a 40 s chaos schedule
carried out three of its five faults; two such runs at once would starve each other."""

from __future__ import annotations

import pytest
from xdist.scheduler import LoadFileScheduling

MACHINE_WIDE_FILES = frozenset(
    {
        "tests/chaos/test_chaos_run.py",
        "tests/chaos/test_kafka_chaos.py",
        "tests/chaos/test_secure_chaos.py",
        "tests/hostile/test_fuzz.py",
        "tests/scripts/test_cluster.py",
    }
)


class _MachineWideTogether(LoadFileScheduling):
    def _split_scope(self, nodeid: str) -> str:
        path = super()._split_scope(nodeid)
        return "machine-wide" if path in MACHINE_WIDE_FILES else path


def pytest_xdist_make_scheduler(config: pytest.Config, log) -> LoadFileScheduling | None:
    return _MachineWideTogether(config, log) if config.getvalue("dist") == "loadfile" else None
