"""The node's entry point (`python -m node`): what it sets up before serving."""

import subprocess
import sys

PROBE = """
import node.__main__
import node.kafka_wire  # the Kafka schemas (kio), which import hypothesis where they can
import trio._core._run as run
print(run._ALLOW_DETERMINISTIC_SCHEDULING, "hypothesis" in sys.modules and sys.modules["hypothesis"] is not None)
"""


def test_a_node_runs_trios_scheduler_in_its_production_mode():
    """hypothesis is installed here (the tests use it); imported, it would switch
    trio's scheduler to its deterministic test mode."""
    out = subprocess.run(
        [sys.executable, "-c", "import sys\n" + PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["False", "False"]
    unguarded = subprocess.run(
        [sys.executable, "-c", "import sys\nimport node.kafka_wire\n" + PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert unguarded.stdout.split() == ["True", "True"], "the probe no longer sees what it guards against"
