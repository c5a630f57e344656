"""The runner's own pieces that need no cluster: node log scanning, replica comparison."""

from pathlib import Path

from scripts.chaoslib.checker import Index
from scripts.chaoslib.history import History, describe_error, read_history
from scripts.chaoslib.runner import _compare, record_node_errors
from segments import Log, LogConfig, build_batch


class FakeCluster:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.nodes = [1, 2]
        self.left: set[int] = set()


def test_node_errors_are_found_in_the_logs(tmp_path):
    (tmp_path / "n1").mkdir()
    (tmp_path / "n2").mkdir()
    (tmp_path / "n1" / "node.log").write_text(
        "2026-01-01 00:00:00,000 n1 INFO node.broker: node 1 serving\n"
        "2026-01-01 00:00:01,000 n1 ERROR node.server: connection from 127.0.0.1:1 failed\n"
        "  | ExceptionGroup:  (1 sub-exception)\n"
        "  +-+---------------- 1 ----------------\n"
        "    | Traceback (most recent call last):\n"
        '    |     raise RaftInvariantError(f"commit {index} is beyond")\n'
        "    | raft.log.RaftInvariantError: commit 6 is beyond the last offset 1\n"
    )
    (tmp_path / "n2" / "node.log").write_text(
        "2026-01-01 00:00:00,000 n2 INFO node.broker: node 2 serving\n"
        "2026-01-01 00:00:02,000 n2 ERROR node.server: connection from 127.0.0.1:2 failed\n"
        "  + Exception Group Traceback (most recent call last):\n"
        '  |   File "/work/main/node/server.py", line 101, in _serve_connection\n'
        "  | ExceptionGroup: Exceptions from Trio nursery (1 sub-exception)\n"
        "  +-+---------------- 1 ----------------\n"
        "    | Traceback (most recent call last):\n"
        '    |   File "/work/main/node/server.py", line 203, in _writer\n'
        "    |     frames.append(receive.receive_nowait())\n"
        "    |                   ^^^^^^^^^^^^^^^^^^^^^^^^\n"
        "    | trio.EndOfChannel\n"
        "    +------------------------------------\n"
        "2026-01-01 00:00:03,000 n2 ERROR node.api: request Fetch failed\n"
        "Traceback (most recent call last):\n"
        '  File "/work/main/node/api.py", line 1, in fetch\n'
        "    raise KeyError(3)\n"
        "KeyError: 3\n"
    )
    history = History(tmp_path / "h.jsonl")
    said: list[str] = []
    record_node_errors(FakeCluster(tmp_path), history, said.append)
    history.close()
    events = list(read_history(tmp_path / "h.jsonl"))
    assert [e["node"] for e in events] == [1, 2] and [e["errors"] for e in events] == [1, 2]
    assert events[0]["exceptions"] == [["raft.log.RaftInvariantError: commit 6 is beyond the last offset 1", 1]]
    assert events[1]["exceptions"] == [["trio.EndOfChannel", 1], ["KeyError: 3", 1]]
    assert len(Index.build(events).node_errors) == 2 and "RaftInvariantError" in said[0]


def make_replica(path: Path, values: list[bytes], epoch: int = 1) -> None:
    log = Log.open(str(path), LogConfig(fsync="never"))
    for v in values:
        log.append(build_batch([(None, v, (), 0)]), leader_epoch=epoch)
    log.close()


def test_replicas_are_compared_up_to_the_high_watermark(tmp_path):
    paths = [tmp_path / f"n{i}" / "data" / "t-0" for i in (1, 2, 3)]
    make_replica(paths[0], [b"a", b"b", b"c", b"x"])
    make_replica(paths[1], [b"a", b"b", b"c", b"y"])  # differs only above the high watermark
    make_replica(paths[2], [b"a", b"b", b"c"])
    same = _compare(paths, hw=3)
    assert same["equal"] and same["lagging"] == [] and same["first_difference"] is None
    assert _compare(paths, hw=4)["lagging"] == ["n3"]
    assert not _compare(paths[:2], hw=4)["equal"] and _compare(paths[:2], hw=4)["first_difference"] == 3


def test_replicas_differing_in_the_middle_are_found(tmp_path):
    paths = [tmp_path / f"n{i}" / "data" / "t-0" for i in (1, 2)]
    make_replica(paths[0], [b"a", b"b", b"c"])
    make_replica(paths[1], [b"a", b"B", b"c"])
    result = _compare(paths, hw=3)
    assert not result["equal"] and result["first_difference"] == 1


def test_describe_error_names_the_leaves_of_a_group_and_where_they_came_from():
    def boom():
        raise TimeoutError("slow")

    try:
        try:
            boom()
        except TimeoutError as exc:
            raise ExceptionGroup("wrapped", [exc, ValueError("bad")]) from None
    except ExceptionGroup as group:
        text = describe_error(group)
    assert text.startswith("ExceptionGroup of TimeoutError('slow') at test_runner.py:")
    assert "ValueError('bad')" in text
