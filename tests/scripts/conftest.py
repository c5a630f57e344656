"""The bench scripts import each other as top-level modules (`from _benchlib import ...`),
as `scripts/bench` runs them: their folder goes on the path, as it does there."""

import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))
