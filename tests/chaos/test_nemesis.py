"""The nemesis's schedule (a seed decides it all) and the torn-tail fault (recovery must
cut exactly the damage)."""

from __future__ import annotations

import os

import pytest

from scripts.chaoslib.nemesis import FAULTS, WARMUP_S, make_schedule, tear_tails
from segments import Log, LogConfig, build_batch


def test_a_seed_gives_the_same_schedule_every_time():
    a = make_schedule(42, 600, list(FAULTS))
    b = make_schedule(42, 600, list(FAULTS))
    assert [s.to_json() for s in a] == [s.to_json() for s in b]
    assert [s.to_json() for s in make_schedule(43, 600, list(FAULTS))] != [s.to_json() for s in a]


def test_a_longer_run_of_the_same_seed_starts_with_the_same_steps():
    short = make_schedule(5, 120, list(FAULTS))
    long = make_schedule(5, 900, list(FAULTS))
    assert [s.to_json() for s in long[: len(short) - 1]] == [s.to_json() for s in short[:-1]]


def test_steps_run_one_at_a_time_within_the_run_and_use_only_chosen_faults():
    for seed in range(20):
        steps = make_schedule(seed, 300, ["kill", "partition", "latency"])
        assert steps and steps[0].at == WARMUP_S
        assert {s.kind for s in steps} <= {"kill", "partition", "latency"}
        for a, b in zip(steps, steps[1:]):
            assert b.at >= a.at + a.duration + 2.0, "a fault ends and the cluster gets a quiet gap before the next"
        assert all(s.at + s.duration <= 300 and s.duration > 0 for s in steps)
        assert all(s.target in ("leader", "controller", "n1", "n2", "n3") for s in steps)


def test_every_fault_kind_is_drawn_and_described():
    steps = make_schedule(1, 3600, list(FAULTS))
    assert {s.kind for s in steps} == set(FAULTS)
    modes = {(s.kind, s.params.get("mode") or s.params.get("scope")) for s in steps}
    assert {
        ("partition", "minority"),
        ("partition", "bridge"),
        ("oneway", "peer-out"),
        ("oneway", "peer-in"),
        ("oneway", "client-responses"),
        ("latency", "all"),
        ("latency", "node"),
        ("drop", "all"),
    } <= modes
    assert sum(s.target == "leader" for s in steps) > len(steps) / 3, "leaders are preferred"
    for s in steps:
        assert s.describe().endswith(f"for {s.duration:.1f}s")
        assert s.describe(2, 3)


def test_no_faults_no_schedule_and_unknown_faults_refused():
    assert make_schedule(1, 300, []) == []
    with pytest.raises(ValueError, match="unknown faults"):
        make_schedule(1, 300, ["kill", "meteor"])


def write_log(path, n: int) -> list[bytes]:
    log = Log.open(str(path), LogConfig(fsync="never"))
    values = [b"value-%03d" % i for i in range(n)]
    for v in values:
        log.append(build_batch([(b"k", v, (), None)]), leader_epoch=1)
    log.close()
    return values


def read_values(path) -> list[bytes]:
    from segments import decode_records

    log = Log.open(str(path), LogConfig(fsync="never"))
    try:
        return [r.value for _, data in log.batches(log.log_start_offset) for r in decode_records(data)]
    finally:
        log.close()


@pytest.mark.parametrize("mode", ["cut", "garble"])
def test_a_torn_tail_is_cut_by_recovery_and_nothing_before_it(tmp_path, mode):
    data = tmp_path / "data"
    values = write_log(data / "t-0", 50)
    write_log(data / "t-1", 50)
    (data / "__controller").mkdir()
    size = os.path.getsize(data / "t-0" / "00000000000000000000.log")
    done = tear_tails(data, [{"pick": 0.0, "mode": mode, "bytes": 150, "salt": 7}])
    assert done == [{"dir": "t-0", "segment": "00000000000000000000.log", "mode": mode, "bytes": 150, "size": size}]
    if mode == "cut":
        assert os.path.getsize(data / "t-0" / "00000000000000000000.log") == size - 150
    survived = read_values(data / "t-0")
    assert 0 < len(survived) < len(values)
    assert survived == values[: len(survived)], "recovery keeps a prefix, never a garbled record"
    assert read_values(data / "t-1") == values, "other partitions are untouched"


def test_a_tear_lands_in_the_data_not_in_the_space_allocated_after_it(tmp_path):
    """A killed node's active segment runs on in allocated zeros: the tear must still
    take the last batches."""
    data = tmp_path / "data"
    values = write_log(data / "t-0", 50)
    path = data / "t-0" / "00000000000000000000.log"
    size = os.path.getsize(path)
    with open(path, "ab") as f:
        f.write(bytes(65536))
    done = tear_tails(data, [{"pick": 0.0, "mode": "cut", "bytes": 150, "salt": 7}])
    assert done[0]["size"] == size and os.path.getsize(path) == size - 150
    survived = read_values(data / "t-0")
    assert 0 < len(survived) < len(values) and survived == values[: len(survived)]


def test_tear_picks_topic_partitions_only_and_skips_empty_segments(tmp_path):
    data = tmp_path / "data"
    (data / "__controller").mkdir(parents=True)
    Log.open(str(data / "empty-0"), LogConfig(fsync="never")).close()
    assert tear_tails(data, [{"pick": 0.99, "mode": "cut", "bytes": 10, "salt": 1}]) == [
        {"dir": "empty-0", "skipped": "empty active segment"}
    ]
