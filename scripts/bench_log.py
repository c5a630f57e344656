"""Log append/read throughput beside a plain sequential file, in the same run.

    scripts/bench log [--total-mb 256] [--fsync never|interval|always] [--dir DIR]
                      [--records 100] [--record-bytes 1024] [--fetch-kb 1024] [--rounds 5]

The batches (RecordBatch v2, uncompressed) are built before any timing. Then, per
round: write the same bytes to a plain file with os.write (plus fsync per write when
--fsync always), append them to a Log (verify CRC + stamp + write + index), read the
plain file back with os.pread in fetch-sized chunks, and read the log back with
Log.read(offset, fetch size) from offset 0 to the end, walking each response's batch
headers for the next offset as a consumer does. The order of the two sides alternates
by round. The table shows the best round's throughput and the median over rounds of
the per-round log / plain ratio (robust to a noisy neighbour on a shared machine).
Both reads come from the page cache: this measures the engine's overhead, not the
disk.
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

from crc32c import crc32c
from rich.console import Console
from rich.table import Table

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segments import Log, LogConfig, build_batch, decode_records  # noqa: E402
from segments.batch import ATTRIBUTES_OFFSET, CRC_OFFSET  # noqa: E402


def build_batches(total_bytes: int, records: int, record_bytes: int) -> list[bytes]:
    """Distinct batches (so neither side reads hot caches): one built by build_batch,
    then copies whose last record value carries the copy's number, CRC recomputed."""
    value = os.urandom(record_bytes)
    items = [(b"key-%d" % i, value, (), 1_700_000_000_000 + i) for i in range(records)]
    one = build_batch(items)
    count = max(1, total_bytes // len(one))
    out = []
    for n in range(count):
        copy = bytearray(one)
        copy[-9:-1] = n.to_bytes(8, "big")  # inside the last value (no headers follow but a count)
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
    last_delta = _LAST_DELTA
    while offset < end:
        data = log.read(offset, chunk)
        total += len(data)
        # The next offset follows the last batch: walk the headers as a consumer would.
        pos, nxt = 0, offset
        while pos < len(data):
            base = int.from_bytes(data[pos : pos + 8], "big")
            length = int.from_bytes(data[pos + 8 : pos + 12], "big")
            nxt = base + int.from_bytes(data[pos + last_delta : pos + last_delta + 4], "big") + 1
            pos += length + 12
        offset = nxt
    elapsed = time.perf_counter() - start
    log.close()
    return elapsed, total


_LAST_DELTA = 23


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--total-mb", type=int, default=256, help="bytes written per round (MB)")
    parser.add_argument("--fsync", choices=("never", "interval", "always"), default="never")
    parser.add_argument("--dir", help="where to write (default: a temporary directory, removed after)")
    parser.add_argument("--records", type=int, default=100, help="records per batch")
    parser.add_argument("--record-bytes", type=int, default=1024, help="value bytes per record")
    parser.add_argument("--fetch-kb", type=int, default=1024, help="read size per call (KiB)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--segment-mb", type=int, default=128)
    args = parser.parse_args()

    console = Console()
    base_dir = args.dir or tempfile.mkdtemp(prefix="tidemq-bench-")
    os.makedirs(base_dir, exist_ok=True)
    config = LogConfig(
        segment_bytes=args.segment_mb * 1024 * 1024,
        fsync=args.fsync,
        max_batch_bytes=1 << 30,
        segment_ms=None,
        retention_ms=None,
    )
    chunk = args.fetch_kb * 1024
    try:
        t0 = time.perf_counter()
        batches = build_batches(args.total_mb * 1024 * 1024, args.records, args.record_bytes)
        total = sum(len(b) for b in batches)
        assert decode_records(batches[-1])[-1].value[-8:] == (len(batches) - 1).to_bytes(8, "big")
        console.print(
            f"built {len(batches)} batches of {args.records} x {args.record_bytes} B "
            f"({len(batches[0])} B each, {total / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f}s; "
            f"fsync={args.fsync}, fetch={args.fetch_kb} KiB, dir={base_dir}"
        )
        best: dict[str, float] = {}
        ratios: dict[str, list[float]] = {"log append": [], "log read": []}
        plain_path = os.path.join(base_dir, "plain.bin")
        log_path = os.path.join(base_dir, "log")
        for round_no in range(args.rounds):
            shutil.rmtree(log_path, ignore_errors=True)
            # Alternate which side goes first, and os.sync() before each timed write:
            # neither inherits the other's dirty pages (the kernel throttles writers
            # past vm.dirty_ratio) or a warmer page cache.
            writes = [("plain write", lambda: plain_write(plain_path, batches, args.fsync)),
                      ("log append", lambda: log_append(log_path, batches, config))]
            reads = [("plain read", lambda: plain_read(plain_path, chunk)),
                     ("log read", lambda: log_read(log_path, config, chunk))]
            if round_no % 2:
                writes.reverse()
                reads.reverse()
            results: dict[str, float] = {}
            for name, run in writes:
                os.sync()
                results[name] = run()
            for name, run in reads:
                elapsed, got = run()
                assert got == total, (name, got, total)
                results[name] = elapsed
            for name, seconds in results.items():
                best[name] = min(best.get(name, float("inf")), seconds)
            ratios["log append"].append(results["plain write"] / results["log append"])
            ratios["log read"].append(results["plain read"] / results["log read"])
            console.print(
                f"round {round_no + 1}: " + ", ".join(f"{n} {total / s / 1e6:,.0f} MB/s" for n, s in results.items())
            )
            os.unlink(plain_path)
        shutil.rmtree(log_path, ignore_errors=True)

        table = Table(title=f"TideMQ log vs plain file ({total / 1e6:.0f} MB, fsync={args.fsync}, best of {args.rounds} rounds)")
        for column in ("operation", "MB/s", "batches/s", "records/s", "vs plain (median of rounds)"):
            table.add_column(column, justify="right" if column != "operation" else "left")
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
    last_delta = _LAST_DELTA
    while offset < end:
        data = log.read(offset, chunk)
        total += len(data)
        # The next offset follows the last batch: walk the headers as a consumer would.
        pos, nxt = 0, offset
        while pos < len(data):
            base = int.from_bytes(data[pos : pos + 8], "big")
            length = int.from_bytes(data[pos + 8 : pos + 12], "big")
            nxt = base + int.from_bytes(data[pos + last_delta : pos + last_delta + 4], "big") + 1
            pos += length + 12
        offset = nxt
    elapsed = time.perf_counter() - start
    log.close()
    return elapsed, total


_LAST_DELTA = 23


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--total-mb", type=int, default=256, help="bytes written per round (MB)")
    parser.add_argument("--fsync", choices=("never", "interval", "always"), default="never")
    parser.add_argument("--dir", help="where to write (default: a temporary directory, removed after)")
    parser.add_argument("--records", type=int, default=100, help="records per batch")
    parser.add_argument("--record-bytes", type=int, default=1024, help="value bytes per record")
    parser.add_argument("--fetch-kb", type=int, default=1024, help="read size per call (KiB)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--segment-mb", type=int, default=128)
    args = parser.parse_args()

    console = Console()
    base_dir = args.dir or tempfile.mkdtemp(prefix="tidemq-bench-")
    os.makedirs(base_dir, exist_ok=True)
    config = LogConfig(
        segment_bytes=args.segment_mb * 1024 * 1024,
        fsync=args.fsync,
        max_batch_bytes=1 << 30,
        segment_ms=None,
        retention_ms=None,
    )
    chunk = args.fetch_kb * 1024
    try:
        t0 = time.perf_counter()
        batches = build_batches(args.total_mb * 1024 * 1024, args.records, args.record_bytes)
        total = sum(len(b) for b in batches)
        assert decode_records(batches[-1])[-1].value[-8:] == (len(batches) - 1).to_bytes(8, "big")
        console.print(
            f"built {len(batches)} batches of {args.records} x {args.record_bytes} B "
            f"({len(batches[0])} B each, {total / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f}s; "
            f"fsync={args.fsync}, fetch={args.fetch_kb} KiB, dir={base_dir}"
        )
        best: dict[str, float] = {}
        for round_no in range(args.rounds):
            plain_path = os.path.join(base_dir, "plain.bin")
            log_path = os.path.join(base_dir, "log")
            shutil.rmtree(log_path, ignore_errors=True)
            # os.sync() before each timed phase: neither side inherits the other's dirty
            # pages (the kernel throttles writers past vm.dirty_ratio).
            os.sync()
            results = {"plain write": plain_write(plain_path, batches, args.fsync)}
            os.sync()
            results["log append"] = log_append(log_path, batches, config)
            os.sync()
            elapsed, got = plain_read(plain_path, chunk)
            assert got == total, (got, total)
            results["plain read"] = elapsed
            elapsed, got = log_read(log_path, config, chunk)
            assert got == total, (got, total)
            results["log read"] = elapsed
            for name, seconds in results.items():
                best[name] = min(best.get(name, float("inf")), seconds)
            console.print(
                f"round {round_no + 1}: " + ", ".join(f"{n} {total / s / 1e6:.0f} MB/s" for n, s in results.items())
            )
            os.unlink(plain_path)
            shutil.rmtree(log_path, ignore_errors=True)

        table = Table(title=f"TideMQ log vs plain file (best of {args.rounds}, {total / 1e6:.0f} MB)")
        for column in ("operation", "MB/s", "batches/s", "records/s", "vs plain file"):
            table.add_column(column, justify="right" if column != "operation" else "left")
        for kind, plain_name in (("log append", "plain write"), ("log read", "plain read")):
            for name in (plain_name, kind):
                seconds = best[name]
                ratio = best[plain_name] / seconds
                table.add_row(
                    name,
                    f"{total / seconds / 1e6:,.0f}",
                    f"{len(batches) / seconds:,.0f}",
                    f"{len(batches) * args.records / seconds:,.0f}",
                    f"{ratio:.2f}x" if name == kind else "",
                )
        console.print(table)
    finally:
        if not args.dir:
            shutil.rmtree(base_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
