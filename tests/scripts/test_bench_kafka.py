"""scripts/bench_kafka.py: a worker thread is stopped when the run gives up on it, and a
small run reads back every message each producer acknowledged, with both clients."""

import json
import subprocess
import sys
import threading
import time

import bench_kafka as bk
import pytest
import trio


async def test_a_cancelled_worker_is_told_to_stop_and_waited_for():
    left = threading.Event()

    def worker(stop: threading.Event) -> None:
        try:
            while True:  # as a librdkafka loop: short blocking calls, the flag between them
                time.sleep(0.01)
                bk.check(stop)
        finally:
            left.set()

    start = time.monotonic()
    with trio.move_on_after(0.2):
        await bk.in_thread(worker)
    assert left.is_set()  # in_thread returned only once the worker had stopped
    assert time.monotonic() - start < bk.THREAD_STOP_S


def test_ratios_and_markdown():
    figures = [
        bk.Figure("publish", "librdkafka", 1000, 256, 0.5),
        bk.Figure("publish", "native", 1000, 256, 0.25),
        bk.Figure("one_in_flight", "librdkafka", 4, 256, 0.01, [0.001, 0.002, 0.003, 0.004]),
    ]
    assert bk.ratios(figures) == {"publish": 0.5}  # one_in_flight has no native figure
    settings = {
        "messages": 1000,
        "size": 256,
        "sync_messages": 4,
        "partitions": 1,
        "fsync": "always",
        "librdkafka": "2.16.0",
        "librdkafka_publish": bk.RD_PUBLISH,
        "native_publish": bk.NATIVE_PUBLISH,
    }
    started = {"cores": 2, "cpu": "x", "python": "3", "date": "d", "loadavg": [0.5], "loadavg_end": [1.0]}
    md = bk.markdown(json.loads(json.dumps(bk.json_line(bk.Run(figures, settings, started)))))
    assert "| publish, pipelined from one client | 2,000/s, 0.5 MB/s | 4,000/s, 1.0 MB/s | 0.50x |" in md
    assert "p50 3.00 / p99 4.00 / p99.9 4.00 ms | - | - |" in md
    assert "linger.ms=5" in md and "load average 0.5 at the start" in md


@pytest.mark.timeout(90)
def test_a_small_run_reads_back_what_each_client_wrote(tmp_path):
    out = tmp_path / "line.json"
    argv = ["--messages", "2000", "--sync-messages", "50", "--warmup", "5", "--json", str(out)]
    done = subprocess.run(
        [sys.executable, str(bk.Path(bk.__file__)), *argv], capture_output=True, text=True, timeout=80
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = json.loads(out.read_text())
    got = {(r["measure"], r["client"]): r["msgs"] for r in line["results"]}
    # Each consumer read exactly what librdkafka acknowledged (the run also checks the bytes).
    assert got == {
        ("publish", "librdkafka"): 2000,
        ("publish", "native"): 2000,
        ("consume", "librdkafka"): 2000,
        ("consume", "native"): 2000,
        ("one_in_flight", "librdkafka"): 50,
        ("one_in_flight", "native"): 50,
    }
    assert set(line["ratios"]) == {"publish", "consume", "one_in_flight"}
    assert all(r["p99_ms"] is not None for r in line["results"] if r["measure"] == "one_in_flight")
    assert all(r["first_message_ms"] > 0 for r in line["results"] if r["measure"] == "consume")
    assert done.stdout.strip().splitlines()[-1] == out.read_text().strip()
    assert "beside the native client" in done.stdout
