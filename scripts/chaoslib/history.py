"""The history of a chaos run: one JSON object per line, written as things happen.

Every event has `type` and `t` (seconds on the run clock, `time.monotonic()` minus the
moment the workloads started, so a schedule step's `at` is directly comparable; the
`run` and `schedule` header events carry 0). The types and their fields are documented in docs/chaos.md; the
checker (`scripts/chaoslib/checker.py`) reads nothing else, so a history file alone is
enough to re-check a run (`scripts/chaos --check DIR/history.jsonl`).

Keys and values are text: our workloads write ASCII; anything else (a garbled record)
is kept as "hex:" + its hex digits, so it can never be mistaken for a real message.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1


def text(b: bytes | None) -> str | None:
    """Bytes as history text: ASCII as is, anything else as "hex:..."."""
    if b is None:
        return None
    try:
        s = bytes(b).decode("ascii")
    except UnicodeDecodeError:
        return "hex:" + bytes(b).hex()
    return "hex:" + bytes(b).hex() if s.startswith("hex:") else s


def describe_error(exc: BaseException, limit: int = 300) -> str:
    """An exception for the history: the leaves of an exception group, each with where it
    was raised (file:line), so an error escaping the client library can be traced."""
    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for sub in e.exceptions:
                walk(sub)
        else:
            leaves.append(e)

    walk(exc)
    parts = []
    for e in leaves:
        tb = e.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = f" at {Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}" if tb is not None else ""
        parts.append(f"{type(e).__name__}({str(e)[:80]!r}){where}")
    grouped = f"{type(exc).__name__} of " if isinstance(exc, BaseExceptionGroup) else ""
    return (grouped + "; ".join(parts))[:limit]


class History:
    """Appends events to `path`. `now()` is the run clock; `start()` sets its zero."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._f = open(self.path, "w", buffering=1 << 16)
        self._zero = time.monotonic()
        self.count = 0

    def start(self) -> float:
        """Make now the run clock's zero (the workloads start); returns the old-clock time."""
        self._zero = time.monotonic()
        return self._zero

    def now(self) -> float:
        return time.monotonic() - self._zero

    def at(self, monotonic: float) -> float:
        """A `time.monotonic()` reading on the run clock."""
        return monotonic - self._zero

    def record(self, type: str, **fields: Any) -> None:
        event = {"type": type, "t": round(fields.pop("t", self.now()), 4)}
        for k, v in fields.items():
            event[k] = round(v, 4) if isinstance(v, float) else v
        self._f.write(json.dumps(event, separators=(",", ":")) + "\n")
        self.count += 1

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def read_history(path: Path) -> Iterator[dict]:
    """The events of a history file, in the order written. A torn last line (the runner
    was killed mid-write) is skipped; anything else malformed raises."""
    with open(path) as f:
        torn: str | None = None
        for n, line in enumerate(f, 1):
            if torn is not None:
                raise ValueError(torn)
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                torn = f"{path}:{n}: not a JSON event: {line[:80]!r}"
