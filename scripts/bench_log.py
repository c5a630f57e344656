"""Log append/read throughput beside a plain sequential file, in the same run.

    scripts/bench log [--total-mb 256] [--fsync never|interval|always] [--dir DIR]
                      [--records 100] [--record-bytes 1024] [--fetch-kb 1024] [--rounds 5]

The batches (RecordBatch v2, uncompressed, all distinct) are built before any timing.
Then, per round: write the same bytes to a plain file with os.write (plus fdatasync
per write under --fsync always, once at the end under interval), append them to a Log
(verify CRC + stamp + write + index update, same fsync policy), read the plain file
back with os.pread in fetch-sized chunks, and read the log back with
Log.read(offset, fetch size) from offset 0 to the end, walking each response's batch
headers for the next offset as a consumer does. The two sides alternate which goes
first, and os.sync() runs before each timed write so neither inherits the other's
dirty pages (the kernel throttles writers past vm.dirty_ratio). The table shows the
best round's throughput and the median over rounds of the per-round log / plain
ratio, which a noisy neighbour on a shared machine disturbs least. Reads come from
the page cache: this measures the engine's overhead, not the disk.
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


def plain_write(path: str, batches: list[bytes], fsync: str) -> float:
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    try:
        for batch in batches:
            os.write(fd, batch)
            if fsync == "always":
                os.fdatasync(fd)
        if fsync == "interval":
            os.fdatasync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - start


def plain_read(path: str, chunk: int) -> tuple[float, int]:
    start = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    total = 0
    try:
        while True:
            data = os.pread(fd, chunk, total)
            if not data:
                break
            total += len(data)
    finally:
        os.close(fd)
    return time.perf_counter() - start, total


def log_append(path: str, batches: list[bytes], config: LogConfig) -> float:
    log = Log.open(path, config)
    start = time.perf_counter()
    for batch in batches:
        log.append(batch, 1)
    if config.fsync == "interval":
        log.flush()
    elapsed = time.perf_counter() - start
    log.close()
    return elapsed


def log_read(path: str, config: LogConfig, chunk: int) -> tuple[float, int]:
    log = Log.open(path, config)
    start = time.perf_counter()
    offset, total, end = 0, 0, log.next_offset
    while offset < end:
        data = log.read(offset, chunk)
        total += len(data)
        pos, size = 0, len(data)
        while pos < size:  # the next fetch starts after the last batch, as in a consumer
            base, length = _WALK.unpack_from(data, pos)
            offset = base + _LAST_DELTA.unpack_from(data, pos + 23)[0] + 1
            pos += length + 12
    elapsed = time.perf_counter() - start
    log.close()
    return elapsed, total


def run_rounds(args: argparse.Namespace, base_dir: str, batches: list[bytes], config: LogConfig, console: Console) -> tuple[dict[str, float], dict[str, list[float]]]:
    total = sum(len(b) for b in batches)
    chunk = args.fetch_kb * 1024
    plain_path = os.path.join(base_dir, "plain.bin")
    log_path = os.path.join(base_dir, "log")
    best: dict[str, float] = {}
    ratios: dict[str, list[float]] = {"log append": [], "log read": []}
    for round_no in range(args.rounds):
        shutil.rmtree(log_path, ignore_errors=True)
        writes: list[tuple[str, Callable[[], float]]] = [
            ("plain write", lambda: plain_write(plain_path, batches, args.fsync)),
            ("log append", lambda: log_append(log_path, batches, config)),
        ]
        reads: list[tuple[str, Callable[[], tuple[float, int]]]] = [
            ("plain read", lambda: plain_read(plain_path, chunk)),
            ("log read", lambda: log_read(log_path, config, chunk)),
        ]
        if round_no % 2:
            writes.reverse()
            reads.reverse()
        results: dict[str, float] = {}
        for name, write in writes:
            os.sync()
            results[name] = write()
        for name, read in reads:
            elapsed, got = read()
            if got != total:
                raise SystemExit(f"{name} returned {got} bytes, wrote {total}")
            results[name] = elapsed
        for name, seconds in results.items():
            best[name] = min(best.get(name, float("inf")), seconds)
        ratios["log append"].append(results["plain write"] / results["log append"])
        ratios["log read"].append(results["plain read"] / results["log read"])
        console.print(
            f"round {round_no + 1}: "
            + ", ".join(f"{name} {total / s / 1e6:,.0f} MB/s" for name, s in sorted(results.items()))
        )
        os.unlink(plain_path)
    shutil.rmtree(log_path, ignore_errors=True)
    return best, ratios


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
        best, ratios = run_rounds(args, base_dir, batches, config, console)
        table = Table(title=f"TideMQ log vs plain file: {total / 1e6:,.0f} MB, fsync={args.fsync}")
        for column in ("operation", "best MB/s", "batches/s", "records/s", "log / plain (median)"):
            table.add_column(column, justify="left" if column == "operation" else "right")
        for kind, plain_name in (("log append", "plain write"), ("log read", "plain read")):
            for name in (plain_name, kind):
                seconds = best[name]
                table.add_row(
                    name,
                    f"{total / seconds / 1e6:,.0f}",
                    f"{len(batches) / seconds:,.0f}",
                    f"{len(batches) * args.records / seconds:,.0f}",
                    f"{statistics.median(ratios[kind]):.2f}x" if name == kind else "",
                )
        console.print(table)
    finally:
        if not args.dir:
            shutil.rmtree(base_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
