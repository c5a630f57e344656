"""tests/conftest.py: the files whose runs load the whole machine go to one worker, one
after another; every other file is a unit of its own."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import MACHINE_WIDE_FILES, _MachineWideTogether

ROOT = Path(__file__).resolve().parents[1]


def test_machine_wide_files_share_one_scope_and_others_keep_their_own():
    scheduler = object.__new__(_MachineWideTogether)  # (scoping needs none of a live session's state)
    scopes = {scheduler._split_scope(f"{path}::test_x") for path in MACHINE_WIDE_FILES}
    assert scopes == {"machine-wide"}
    assert scheduler._split_scope("tests/raft/test_log.py::test_x") == "tests/raft/test_log.py"
    assert all((ROOT / path).is_file() for path in MACHINE_WIDE_FILES), "a renamed file would run beside the others"
