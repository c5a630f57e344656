"""scripts/bench_compare.py: reading the peer harness's output, the ratios and verdicts,
the table and JSON lines, running (and stopping) a harness, and a small run of ours."""

import json
import subprocess
import sys
import time
from pathlib import Path

import bench_compare as bc
import pytest
from _benchlib import TABLE_WIDTH
from rich.console import Console

# What the shared harness printed on this kind of machine (N=20000, SIZE=256, SYNC_N=2000),
# apt-get's chatter and all.
HARNESS_OUTPUT = """\
Reading package lists...
### NATS nats-server: v2.9.10 R3, 20000 x 256B
cluster up (meta leader elected)
{"test": "publish_sync (1 in flight, ack after R3 commit)", "msgs": 2000, "size": 256, "secs": 1.4, "msgs_per_s": 1429, "MB_per_s": 0.37}
{"test": "publish_async (max_pending=4000, all acked)", "msgs": 20000, "size": 256, "secs": 0.754, "msgs_per_s": 26513, "MB_per_s": 6.79}
{"test": "consume_pull fetch(batch=1000) AckNone", "msgs": 20000, "size": 256, "secs": 0.746, "msgs_per_s": 26794, "MB_per_s": 6.86}
{"test": "go publish_async (max_pending=4000, all acked)", "msgs": 20000, "size": 256, "secs": 0.468, "msgs_per_s": 42744, "MB_per_s": 10.94}
{"test": "go consume_pull fetch(batch=1000) AckNone", "msgs": 20000, "size": 256, "secs": 0.122, "msgs_per_s": 163968, "MB_per_s": 41.98}
### NATS nats-server: v2.15.1 R3, 20000 x 256B
{"stream_leader": "n2", "replicas": ["n1", "n3"]}
{"test": "publish_sync (1 in flight, ack after R3 commit)", "msgs": 2000, "size": 256, "secs": 1.091, "msgs_per_s": 1834, "MB_per_s": 0.47}
{"test": "publish_async (max_pending=4000, all acked)", "msgs": 20000, "size": 256, "secs": 0.529, "msgs_per_s": 37821, "MB_per_s": 9.68}
{"test": "consume_pull fetch(batch=1000) AckNone", "msgs": 20000, "size": 256, "secs": 0.62, "msgs_per_s": 32277, "MB_per_s": 8.26}
{"test": "consume_pull fetch(batch=1000) explicit ack/msg", "msgs": 20000, "size": 256, "secs": 0.849, "msgs_per_s": 23556, "MB_per_s": 6.03}
{"test": "go publish_sync (ack after R3)", "msgs": 2000, "size": 256, "secs": 0.881, "msgs_per_s": 2271, "MB_per_s": 0.58}
{"test": "go publish_async (max_pending=4000, all acked)", "msgs": 20000, "size": 256, "secs": 0.201, "msgs_per_s": 99359, "MB_per_s": 25.44}
{"test": "go consume_pull fetch(batch=1000) AckNone", "msgs": 20000, "size": 256, "secs": 0.064, "msgs_per_s": 310275, "MB_per_s": 79.43}
### RabbitMQ 3.10.8 3 nodes, 20000 x 256B
{"test": "publish_sync (confirm per msg)", "msgs": 2000, "size": 256, "secs": 2.741, "msgs_per_s": 730, "MB_per_s": 0.19}
{"test": "publish_async (confirms, window=1000)", "msgs": 20000, "size": 256, "secs": 4.588, "msgs_per_s": 4360, "MB_per_s": 1.12}
{"test": "consume (prefetch=1000, manual ack multiple/100)", "msgs": 10000, "size": 256, "secs": 0.868, "msgs_per_s": 11516, "MB_per_s": 2.95}
{"test": "consume (prefetch=1000, auto-ack)", "msgs": 10000, "size": 256, "secs": 0.983, "msgs_per_s": 10178, "MB_per_s": 2.61}
{"test": "publish_sync (send_wait, confirm per msg)", "msgs": 2000, "size": 256, "secs": 1.744, "msgs_per_s": 1147, "MB_per_s": 0.29}
{"test": "publish_async (send_batch 100, <= 10000 unconfirmed)", "msgs": 20000, "size": 256, "secs": 0.133, "msgs_per_s": 149830, "MB_per_s": 38.36}
{"test": "consume (from first offset, raw bytes)", "msgs": 20000, "size": 256, "secs": 0.055, "msgs_per_s": 362219, "MB_per_s": 92.73}
{"test": "a truncated line
"""

OURS = {
    "publish": {"msgs_per_s": 200_000},
    "consume": {"msgs_per_s": 181_000},
    "one_in_flight": {"msgs_per_s": 1000, "p50_ms": 0.8, "p99_ms": 2.5, "p999_ms": 4.0},
    "e2e": {"msgs_per_s": 49_900, "rate": 50_000, "p50_ms": 3.0, "p99_ms": 25.0},
    "delay": {
        "messages": 10_000,
        "max_delay_s": 20,
        "p50_late_ms": 8,
        "p99_late_ms": 60,
        "max_late_ms": 90,
        "early": 0,
    },
}


def test_the_harness_output_is_read_by_system_and_kind():
    run = bc.parse_harness(HARNESS_OUTPUT.splitlines())
    assert run.sections[-1] == "RabbitMQ 3.10.8 3 nodes, 20000 x 256B"
    assert len(run.figures) == 19  # every test line, whatever its kind
    assert run.newest("rstream", "publish").msgs_per_s == 149_830
    assert run.newest("rstream", "consume").msgs_per_s == 362_219
    assert run.newest("rstream", "one_in_flight").msgs_per_s == 1147
    assert run.newest("rabbitmq-quorum", "one_in_flight").msgs_per_s == 730
    assert run.newest("rabbitmq-quorum", "publish").msgs_per_s == 4360
    assert run.newest("rabbitmq-quorum", "consume").test == "consume (prefetch=1000, auto-ack)"
    # Two NATS servers ran: the newest one's figures count, whichever came first.
    go = run.newest("nats-go", "publish")
    assert go.msgs_per_s == 99_359 and go.server.startswith("NATS nats-server: v2.15.1")
    assert run.newest("nats-py", "consume").msgs_per_s == 32_277  # AckNone, not explicit acks
    assert run.newest("nats-go", "one_in_flight").msgs_per_s == 2271
    assert bc.server_version("NATS nats-server: v2.15.1 R3") > bc.server_version("NATS nats-server: v2.9.10 R3")


def test_ratios_and_verdicts():
    rows = {r.key: r for r in bc.build_rows(OURS, bc.parse_harness(HARNESS_OUTPUT.splitlines()))}
    assert list(rows) == ["publish", "consume", "one_in_flight", "one_in_flight_latency", "e2e", "delay"]
    assert rows["publish"].ratio == pytest.approx(200_000 / 149_830) and rows["publish"].passed
    assert rows["consume"].ratio == pytest.approx(181_000 / 362_219) and rows["consume"].passed is False
    assert rows["one_in_flight"].peer.system == "rabbitmq-quorum" and rows["one_in_flight"].passed
    assert rows["one_in_flight"].info["nats_go"].msgs_per_s == 2271
    assert rows["one_in_flight_latency"].passed  # p99 2.5 < 3 ms
    assert rows["e2e"].passed is False  # p99 25 ms
    assert rows["delay"].passed


def test_without_peers_only_our_own_targets_are_judged():
    ours = {**OURS, "e2e": {**OURS["e2e"], "p99_ms": 5.0, "msgs_per_s": 30_000}}  # the pace was not kept
    rows = {r.key: r for r in bc.build_rows(ours, None)}
    assert [rows[k].passed for k in ("publish", "consume", "one_in_flight")] == [None, None, None]
    assert rows["e2e"].passed is False
    assert rows["delay"].passed
    early = {**OURS, "delay": {**OURS["delay"], "early": 1}}
    assert bc.build_rows(early, None)[-1].passed is False


def test_table_and_json_lines():
    rows = bc.build_rows(OURS, bc.parse_harness(HARNESS_OUTPUT.splitlines()))
    console = Console(record=True, width=TABLE_WIDTH)
    console.print(bc.table(rows, "peers: from a test"))
    text = console.export_text()
    assert "1.33x" in text and "0.50x" in text and "FAIL" in text and "pass" in text
    assert "RabbitMQ stream: rstream send_batch" in text and "peers: from a test" in text
    lines = [json.loads(json.dumps(r.json())) for r in rows]
    assert lines[0]["peer"]["msgs_per_s"] == 149_830 and lines[0]["ratio"] == 1.335 and lines[0]["pass"] is True
    assert lines[3]["peer"] is None and lines[3]["target"] == "p99 < 3 ms"
    summary = bc.summary_line(rows, {"messages": 20_000}, "peers: from a test", bc.machine())
    counts = summary["summary"]
    assert (counts["passed"], counts["failed"], counts["not_judged"]) == (4, 2, 0)
    assert counts["machine"]["cores"] >= 1 and counts["machine"]["python"]
    md = bc.markdown(json.loads(json.dumps(lines + [summary])))
    assert (
        "| publish, pipelined from one process | 200,000/s | RabbitMQ stream: rstream send_batch | 149,830/s | 1.33x |"
        in md
    )
    assert (
        "| end to end, paced at 50,000/s | p50 3.0 / p99 25.0 ms at 49,900/s |  |  |  | p99 < 20 ms (pace kept) | **FAIL** |"
        in md
    )
    assert "Settings: messages 20000. Machine: " in md and md.rstrip().endswith("peers: from a test.")


def test_peers_that_cannot_run_say_why(tmp_path):
    assert "no peer harness" in bc.peers_blocker(tmp_path / "nowhere", tmp_path / "w")


def test_the_harness_copy_keeps_what_a_run_installed(tmp_path):
    src, work = tmp_path / "src", tmp_path / "work"
    (src / "gobench").mkdir(parents=True)
    (src / "run_all.sh").write_text("echo one\n")
    (src / "gobench" / "jsbench.go").write_text("package main\n")
    assert bc.prepare_peers_dir(src, work, fresh=False) == f"fresh copy in {work}"
    (work / "venv").mkdir()
    (work / "gobench" / "jsbench").write_text("binary")
    assert bc.prepare_peers_dir(src, work, fresh=False) == f"reusing {work}"
    assert (work / "gobench" / "jsbench").exists()  # the source did not change
    (src / "gobench" / "jsbench.go").write_text("package main // changed\n")
    bc.prepare_peers_dir(src, work, fresh=False)
    assert not (work / "gobench" / "jsbench").exists()  # rebuilt by the next run
    assert (work / "gobench" / "jsbench.go").read_text().endswith("changed\n")
    assert bc.prepare_peers_dir(src, work, fresh=True) == f"fresh copy in {work}"
    assert not (work / "venv").exists()


def fake_harness(work: Path, body: str, rmq_stop: str = "") -> None:
    """A harness that starts no broker: its trap and stop scripts leave marks instead."""
    for d in ("nats", "rmq"):
        (work / d).mkdir(parents=True)
        (work / d / "stop_cluster.sh").write_text(
            (rmq_stop if d == "rmq" else "") + f"echo stopped >> $MQBENCH/{d}.stopped\n"
        )
    (work / "run_all.sh").write_text(
        "trap '$MQBENCH/nats/stop_cluster.sh; $MQBENCH/rmq/stop_cluster.sh' EXIT\n"
        "chmod +x $MQBENCH/*/stop_cluster.sh\n" + body
    )


async def test_a_harness_run_is_read_as_it_prints(tmp_path):
    fake_harness(
        tmp_path,
        'echo "### RabbitMQ 3.10.8 3 nodes, $1 x ${2}B"\n'
        'echo \'{"test": "publish_sync (confirm per msg)", "msgs": 10, "size": 256, "secs": 1, "msgs_per_s": 10}\'\n',
    )
    run, status = await bc.run_harness(tmp_path, ["10", "256", "5"], timeout=30)
    assert status == 0
    assert run.sections == ["RabbitMQ 3.10.8 3 nodes, 10 x 256B"]
    assert run.newest("rabbitmq-quorum", "one_in_flight").msgs_per_s == 10
    assert "### RabbitMQ" in (tmp_path / "last-run.log").read_text()
    assert (tmp_path / "nats.stopped").exists() and (tmp_path / "rmq.stopped").exists()


async def test_a_harness_that_overruns_is_stopped_with_its_brokers(tmp_path):
    fake_harness(tmp_path, "echo '### NATS nats-server: v2.9.10 R3'\nsleep 60\n")
    start = time.monotonic()
    run, status = await bc.run_harness(tmp_path, [], timeout=1.0)
    assert status is None and run.sections == ["NATS nats-server: v2.9.10 R3"]
    assert time.monotonic() - start < 20
    assert (tmp_path / "nats.stopped").read_text() == "stopped\n"  # the trap ran, once
    assert (tmp_path / "rmq.stopped").exists()


async def test_a_harness_whose_trap_hangs_is_killed_with_what_it_started(tmp_path, monkeypatch):
    # As rabbitmqctl waiting for the pid file of a node that never started.
    monkeypatch.setattr(bc, "STOP_GRACE_S", 1.0)
    fake_harness(tmp_path, "sleep 1000 &\necho $! > $MQBENCH/broker.pid\nsleep 60\n", rmq_stop="sleep 1000\n")
    start = time.monotonic()
    _, status = await bc.run_harness(tmp_path, [], timeout=1.0)
    assert status is None and time.monotonic() - start < 20
    assert (tmp_path / "nats.stopped").exists() and not (tmp_path / "rmq.stopped").exists()  # the trap was stuck
    broker = int((tmp_path / "broker.pid").read_text())
    assert gone(broker)  # the group went, the "broker" with it


def gone(pid: int) -> bool:
    """No such process, or only its zombie waiting for whoever adopted it to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.timeout(240)
def test_a_small_run_of_ours_prints_the_table_and_json(tmp_path):
    out = tmp_path / "lines.json"
    argv = ["--no-peers", "--messages", "2000", "--sync-messages", "200", "--warmup", "20"]
    argv += ["--delay-messages", "100", "--delay-max", "1.5", "--json", str(out), "--markdown", str(tmp_path / "t.md")]
    done = subprocess.run(
        [sys.executable, str(bc.ROOT / "scripts" / "bench_compare.py"), *argv],
        capture_output=True,
        text=True,
        timeout=220,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "TideMQ beside its peers" in done.stdout and "peers not run (--no-peers)" in done.stdout
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    rows = {line["row"]: line for line in lines if "row" in line}
    assert set(rows) == {"publish", "consume", "one_in_flight", "one_in_flight_latency", "e2e", "delay"}
    assert rows["publish"]["ours"]["msgs"] == 2000 and rows["publish"]["ours"]["msgs_per_s"] > 0
    assert rows["one_in_flight"]["ours"]["msgs"] == 200 and rows["publish"]["pass"] is None
    assert rows["delay"]["ours"]["messages"] == 100 and rows["delay"]["ours"]["early"] == 0
    assert lines[-1]["summary"]["peers"] == "peers not run (--no-peers)"
    assert done.stdout.strip().splitlines()[-1] == out.read_text().strip().splitlines()[-1]
    assert "| one in flight (send, await, repeat) |" in (tmp_path / "t.md").read_text()
