"""Record codec throughput: the pure-Python codec beside the compiled one, in one run.

    scripts/bench codec [--records 100] [--value-bytes 256] [--key-bytes 0]
                        [--compression none|gzip|zstd] [--seconds 0.5] [--rounds 5] [--json]

Builds (`build_batch`) and decodes (`decode_records`) batches of `--records` records of
`--value-bytes` each, once with the pure codec (`build_batch_pure`,
`decode_records_pure`) and once through the public functions with the compiled codec
loaded, plus aiokafka's Cython classes called bare (no checks, no Record objects): the
ceiling the wrapper works under. The codecs take turns within each round, so a
neighbour's load on this shared machine falls on all alike; the table shows each one's
best round, in records per second of wall time, and its ratio to the pure codec.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segments.batch import (  # noqa: E402
    PURE_CODEC_ENV,
    build_batch,
    build_batch_pure,
    codec_in_use,
    decode_records,
    decode_records_pure,
)
from segments.compression import Compression  # noqa: E402


def rate(fn: Callable[[], object], records: int, seconds: float) -> float:
    """Records per second of wall time, calling `fn` (one batch) for about `seconds`."""
    calls = 0
    start = time.perf_counter()
    deadline = start + seconds
    now = start
    while now < deadline:
        for _ in range(10):
            fn()
        calls += 10
        now = time.perf_counter()
    return calls * records / (now - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100, help="records per batch")
    ap.add_argument("--value-bytes", type=int, default=256)
    ap.add_argument("--key-bytes", type=int, default=0, help="0 for a null key")
    ap.add_argument("--compression", choices=["none", "gzip", "zstd"], default="none")
    ap.add_argument("--seconds", type=float, default=0.5, help="per measurement")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="also print one JSON line per row")
    args = ap.parse_args()

    os.environ.pop(PURE_CODEC_ENV, None)
    compiled = codec_in_use()
    if compiled == "pure":
        sys.exit("the compiled codec is not available here (is aiokafka installed?); nothing to compare")
    from aiokafka.record._crecords.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

    codec = Compression[args.compression.upper()]
    n = args.records
    value = os.urandom(args.value_bytes)
    key = os.urandom(args.key_bytes) if args.key_bytes else None
    recs = [(key, value, (), 1_733_000_000_000 + i) for i in range(n)]
    fields = dict(compression=codec, producer_id=7, producer_epoch=0, base_sequence=0)
    buf = build_batch_pure(recs, **fields)
    assert build_batch(recs, **fields) == buf and decode_records(buf) == decode_records_pure(buf)

    def aiokafka_build() -> object:
        b = DefaultRecordBatchBuilder(2, int(codec), 0, 7, 0, 0, sys.maxsize)
        for i in range(n):
            b.append(i, 1_733_000_000_000 + i, key, value, [])
        return b.build()

    def aiokafka_decode() -> object:
        return [r for r in DefaultRecordBatch(buf)]

    ops: dict[str, Callable[[], object]] = {
        "build pure": lambda: build_batch_pure(recs, **fields),
        "build compiled": lambda: build_batch(recs, **fields),
        "build aiokafka bare": aiokafka_build,
        "decode pure": lambda: decode_records_pure(buf),
        "decode compiled": lambda: decode_records(buf),
        "decode aiokafka bare": aiokafka_decode,
    }
    if codec is not Compression.NONE:
        del ops["build aiokafka bare"], ops["decode aiokafka bare"]  # its own codecs need cramjam
    best = dict.fromkeys(ops, 0.0)
    for _ in range(args.rounds):
        for name, fn in ops.items():
            best[name] = max(best[name], rate(fn, n, args.seconds))

    table = Table(
        "operation",
        "codec",
        "records/s (best round)",
        "x pure",
        title=f"record codec: {n} records x {args.value_bytes} B per batch, {args.compression}, "
        f"{args.rounds} rounds ({compiled})",
    )
    for name, r in best.items():
        op, which = name.split(" ", 1)
        ratio = r / best[f"{op} pure"]
        table.add_row(op, which, f"{r:,.0f}", f"{ratio:.2f}x")
        if args.json:
            print(json.dumps({"op": op, "codec": which, "records_per_s": round(r), "x_pure": round(ratio, 2)}))
    Console().print(table)


if __name__ == "__main__":
    main()
