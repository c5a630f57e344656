"""The README's examples, run as a reader would run them, against a live cluster.

Every fenced block with a `# readme-example` line runs, in README order, on one
three-node cluster (later blocks may rely on earlier ones, as a reader's session does):
Python blocks as `python -c` with the README's bootstrap address replaced by the
cluster's, shell blocks under `bash -e` with `$TIDEMQ_BOOTSTRAP` pointing at it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster import running_cluster

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
README_BOOTSTRAP = "127.0.0.1:9401"
MARKER = "# readme-example"
BLOCK = re.compile(r"^```(python|bash)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def examples() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    return [(lang, code) for lang, code in BLOCK.findall(text) if MARKER in code.splitlines()]


def test_readme_examples_run(tmp_path):
    blocks = examples()
    assert [lang for lang, _ in blocks] == ["bash", "python", "python", "python", "python", "python"], (
        "the README's examples moved: update this test"
    )
    tidemq = Path(sys.executable).with_name("tidemq")
    with running_cluster(tmp_path, n=3, fsync="never") as cluster:
        env = {**os.environ, "TIDEMQ_BOOTSTRAP": cluster.bootstrap}
        env.pop("TIDEMQ_TOKEN", None)
        for lang, code in blocks:
            if lang == "python":
                assert README_BOOTSTRAP in code
                cmd = [sys.executable, "-c", code.replace(README_BOOTSTRAP, cluster.bootstrap)]
            else:
                cmd = ["bash", "-e", "-o", "pipefail", "-c", code.replace(".venv/bin/tidemq", str(tidemq))]
            run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=40)
            assert run.returncode == 0, f"README example failed:\n{code}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr}"
