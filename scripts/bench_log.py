"""Log append/read throughput beside a plain sequential file, in the same run.

    scripts/bench log [--total-mb 256] [--fsync never|interval|always] [--dir DIR]
                      [--records 100] [--record-bytes 1024] [--fetch-kb 1024] [--rounds 5]

The batches (RecordBatch v2, uncompressed, all distinct) are built before any timing.
Each round writes the same bytes twice: to a plain file with os.write (plus fdatasync
per write under --fsync always, once at the end under interval) and to a Log with
append (verify CRC + stamp + write + index update, same fsync policy). Then it reads
both back: the plain file with os.pread in fetch-sized chunks, the log with
Log.read(offset, fetch size) from offset 0 to the end, walking each response's batch
headers for the next offset as a consumer does.

The two sides take turns in slices of a few MB, swapping who goes first each slice,
so the kernel's writeback bursts and a neighbour's load on this shared machine fall
on both alike. The table shows the best round's throughput and the median over
rounds of the per-round log / plain ratio, in wall time and in this process's CPU
time (which a busy neighbour disturbs less; syscalls count, the kernel's background
writeback does not). Reads come from the page cache: this measures the engine's
overhead, not the disk.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable

from crc32c import crc32c
from rich.console import Console
from rich.table import Table

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segments import Log, LogConfig, build_batch, decode_records  # noqa: E402
from segments.batch import ATTRIBUTES_OFFSET, CRC_OFFSET  # noqa: E402

_WALK = struct.Struct(">qi")  # baseOffset, batchLength
_LAST_DELTA = struct.Struct(">i")  # lastOffsetDelta at byte 23


def build_batches(total_bytes: int, records: int, record_bytes: int) -> list[bytes]:
    """Distinct batches, so neither side reads cache-hot buffers: one built by
    build_batch, then copies whose last value carries the copy's number, CRC redone."""
    value = os.urandom(record_bytes)
    one = build_batch([(b"key-%d" % i, value, (), 1_700_000_000_000 + i) for i in range(records)])
    out = []
    for n in range(max(1, total_bytes // len(one))):
        copy = bytearray(one)
        copy[-9:-1] = n.to_bytes(8, "big")  # the last value's last 8 bytes (a 0 header count follows)
        struct.pack_into(">I", copy, CRC_OFFSET, crc32c(memoryview(copy)[ATTRIBUTES_OFFSET:]))
        out.append(bytes(copy))
    return out


BLOCK = 32  # batches (about 3 MB) per timed slice; the two sides alternate slices


class _Timer:
    """Wall-clock and CPU seconds per side, summed over the slices it ran."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def run(self, name: str, fn: Callable[..., object], *args: object) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        fn(*args)
        self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - wall
        self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu


def timed_writes(plain_path: str, log_path: str, batches: list[bytes], config: LogConfig) -> _Timer:
    """Time writing the plain file and appending to the log.

    The two sides take turns in slices of BLOCK batches, swapping who goes first each
    slice, so the kernel's writeback bursts and a neighbour's load fall on both alike.
    """
    fsync = config.fsync
    fd = os.open(plain_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    log = Log.open(log_path, config)

    def plain(block: list[bytes]) -> None:
        for batch in block:
            os.write(fd, batch)
            if fsync == "always":
                os.fdatasync(fd)

    def append(block: list[bytes]) -> None:
        for batch in block:
            log.append(batch, 1)

    timer = _Timer()
    try:
        for n, k in enumerate(range(0, len(batches), BLOCK)):
            block = batches[k : k + BLOCK]
            sides = [("plain write", plain), ("log append", append)]
            for name, write in sides if n % 2 == 0 else reversed(sides):
                timer.run(name, write, block)
        if fsync == "interval":  # both end durable
            timer.run("plain write", os.fdatasync, fd)
            timer.run("log append", log.flush)
    finally:
        os.close(fd)
        log.close()
    return timer


def timed_reads(plain_path: str, log_path: str, config: LogConfig, chunk: int) -> tuple[_Timer, int, int]:
    """Time reading the plain file and the log (and count the bytes each returned),
    taking turns in slices of BLOCK read calls like `timed_writes`."""
    fd = os.open(plain_path, os.O_RDONLY)
    log = Log.open(log_path, config)
    state = {"plain_pos": 0, "plain_done": False, "offset": 0, "log_bytes": 0}
    end = log.next_offset

    def plain() -> None:
        for _ in range(BLOCK):
            data = os.pread(fd, chunk, state["plain_pos"])
            if not data:
                state["plain_done"] = True
                return
            state["plain_pos"] += len(data)

    def fetch() -> None:
        for _ in range(BLOCK):
            if state["offset"] >= end:
                return
            data = log.read(state["offset"], chunk)
            state["log_bytes"] += len(data)
            pos, size = 0, len(data)
            while pos < size:  # the next fetch starts after the last batch, as in a consumer
                base, length = _WALK.unpack_from(data, pos)
                state["offset"] = base + _LAST_DELTA.unpack_from(data, pos + 23)[0] + 1
                pos += length + 12

    timer = _Timer()
    try:
        n = 0
        while not state["plain_done"] or state["offset"] < end:
            sides = [("plain read", plain), ("log read", fetch)]
            for name, read in sides if n % 2 == 0 else reversed(sides):
                timer.run(name, read)
            n += 1
    finally:
        os.close(fd)
        log.close()
    return timer, state["plain_pos"], state["log_bytes"]


def run_rounds(
    args: argparse.Namespace, base_dir: str, batches: list[bytes], config: LogConfig, console: Console
) -> tuple[dict[str, float], dict[str, list[float]], dict[str, list[float]]]:
    """Best wall seconds per operation, and per-round log / plain ratios (wall, CPU)."""
    total = sum(len(b) for b in batches)
    plain_path = os.path.join(base_dir, "plain.bin")
    log_path = os.path.join(base_dir, "log")
    best: dict[str, float] = {}
    wall_ratios: dict[str, list[float]] = {"log append": [], "log read": []}
    cpu_ratios: dict[str, list[float]] = {"log append": [], "log read": []}
    for round_no in range(args.rounds):
        shutil.rmtree(log_path, ignore_errors=True)
        os.sync()
        writes = timed_writes(plain_path, log_path, batches, config)
        reads, plain_bytes, log_bytes = timed_reads(plain_path, log_path, config, args.fetch_kb * 1024)
        if plain_bytes != total or log_bytes != total:
            raise SystemExit(f"read back {plain_bytes} (plain) and {log_bytes} (log) bytes, wrote {total}")
        wall = writes.wall | reads.wall
        cpu = writes.cpu | reads.cpu
        for name, seconds in wall.items():
            best[name] = min(best.get(name, float("inf")), seconds)
        for kind, plain_name in (("log append", "plain write"), ("log read", "plain read")):
            wall_ratios[kind].append(wall[plain_name] / wall[kind])
            cpu_ratios[kind].append(cpu[plain_name] / max(cpu[kind], 1e-9))
        console.print(
            f"round {round_no + 1}: " + ", ".join(f"{name} {total / s / 1e6:,.0f} MB/s" for name, s in wall.items())
        )
        os.unlink(plain_path)
    shutil.rmtree(log_path, ignore_errors=True)
    return best, wall_ratios, cpu_ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--total-mb", type=int, default=256, help="MiB written per round and side")
    parser.add_argument("--fsync", choices=("never", "interval", "always"), default="never")
    parser.add_argument("--dir", help="where to write (default: a temporary directory, removed after)")
    parser.add_argument("--records", type=int, default=100, help="records per batch")
    parser.add_argument("--record-bytes", type=int, default=1024, help="value bytes per record")
    parser.add_argument("--fetch-kb", type=int, default=1024, help="bytes per read call (KiB)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--segment-mb", type=int, default=128, help="segment size (MiB)")
    args = parser.parse_args()

    console = Console()
    base_dir = args.dir or tempfile.mkdtemp(prefix="tidemq-bench-")
    os.makedirs(base_dir, exist_ok=True)
    config = LogConfig(
        segment_bytes=args.segment_mb << 20,
        fsync=args.fsync,
        max_batch_bytes=1 << 30,
        segment_ms=None,
        retention_ms=None,
    )
    try:
        t0 = time.perf_counter()
        batches = build_batches(args.total_mb << 20, args.records, args.record_bytes)
        total = sum(len(b) for b in batches)
        if decode_records(batches[-1])[-1].value[-8:] != (len(batches) - 1).to_bytes(8, "big"):
            raise SystemExit("batch builder bug: the copies are not what they claim")
        console.print(
            f"built {len(batches)} batches of {args.records} x {args.record_bytes} B "
            f"({len(batches[0]):,} B each, {total / 1e6:,.0f} MB) in {time.perf_counter() - t0:.1f}s; "
            f"fsync={args.fsync}, fetch={args.fetch_kb} KiB, dir={base_dir}"
        )
        best, wall_ratios, cpu_ratios = run_rounds(args, base_dir, batches, config, console)
        table = Table(title=f"TideMQ log vs plain file: {total / 1e6:,.0f} MB, fsync={args.fsync}")
        for column in ("operation", "best MB/s", "batches/s", "records/s", "log / plain", "log / plain (CPU)"):
            table.add_column(column, justify="left" if column == "operation" else "right")
        for kind, plain_name in (("log append", "plain write"), ("log read", "plain read")):
            for name in (plain_name, kind):
                seconds = best[name]
                table.add_row(
                    name,
                    f"{total / seconds / 1e6:,.0f}",
                    f"{len(batches) / seconds:,.0f}",
                    f"{len(batches) * args.records / seconds:,.0f}",
                    f"{statistics.median(wall_ratios[kind]):.2f}x" if name == kind else "",
                    f"{statistics.median(cpu_ratios[kind]):.2f}x" if name == kind else "",
                )
        console.print(table)
    finally:
        if not args.dir:
            shutil.rmtree(base_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
