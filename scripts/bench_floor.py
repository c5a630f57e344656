"""The floor under one message in flight: the same path with nothing but trio, TCP and
fdatasync, to tell what our code adds from what this machine and runtime cost.

    scripts/bench floor [--messages 3000] [--size 256] [--fsync thread|inline|none]

Three processes stand for the nodes: the leader writes the frame to its file, sends it
to both followers and syncs; each follower writes, syncs and acknowledges; the leader
answers once its own sync and the first acknowledgement are in, as a Raft leader of
three commits. The client (this process) sends one frame and awaits the answer, in a
loop. No Raft, no validation, no producer state, no record codec: what
`scripts/bench send` measures above this is ours. `--fsync thread` syncs in a worker
thread as the nodes do; `inline` blocks the event loop instead; `none` leaves the disk
out.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

_LEN = struct.Struct(">I")


async def _frame(stream: trio.abc.ReceiveStream, buf: bytearray) -> bytes:
    while True:
        if len(buf) >= 4:
            n = _LEN.unpack_from(buf)[0]
            if len(buf) >= 4 + n:
                frame = bytes(buf[4 : 4 + n])
                del buf[: 4 + n]
                return frame
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError
        buf += data


def _framed(payload: bytes) -> bytes:
    return _LEN.pack(len(payload)) + payload


async def _sync(fd: int, mode: str) -> None:
    if mode == "thread":
        await trio.to_thread.run_sync(os.fdatasync, fd)
    elif mode == "inline":
        os.fdatasync(fd)


async def _serve(handler, announce: str) -> None:
    """Listen on a loopback port and print it for the parent."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    print(f"{announce} {listeners[0].socket.getsockname()[1]}", flush=True)
    await trio.serve_listeners(handler, listeners)


async def follower(path: str, mode: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)

    async def handle(stream: trio.SocketStream) -> None:
        buf = bytearray()
        while True:
            frame = await _frame(stream, buf)
            os.write(fd, frame)
            await _sync(fd, mode)
            await stream.send_all(_framed(b"ack"))

    await _serve(handle, "port")


async def leader(path: str, mode: str, ports: list[int]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    links = [await trio.open_tcp_stream("127.0.0.1", p) for p in ports]
    bufs = [bytearray() for _ in links]

    async def replicate(i: int, frame: bytes, acked: trio.Event) -> None:
        await links[i].send_all(_framed(frame))
        await _frame(links[i], bufs[i])
        acked.set()

    async def handle(stream: trio.SocketStream) -> None:
        buf = bytearray()
        while True:
            frame = await _frame(stream, buf)
            acked = trio.Event()
            os.write(fd, frame)
            async with trio.open_nursery() as nursery:
                for i in range(len(links)):
                    nursery.start_soon(replicate, i, frame, acked)
                await _sync(fd, mode)
                await acked.wait()
                await stream.send_all(_framed(b"ok"))

    await _serve(handle, "port")


def _spawn(args: list[str]) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("port "):
        proc.kill()
        raise RuntimeError(f"{args[0]} did not start: {line!r}")
    return proc, int(line.split()[1])


async def client(port: int, messages: int, size: int, warmup: int) -> tuple[float, list[float]]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    buf, payload, latencies = bytearray(), b"x" * size, []
    for i in range(warmup + messages):
        if i == warmup:
            start = time.perf_counter()
        t0 = time.perf_counter()
        await stream.send_all(_framed(payload))
        await _frame(stream, buf)
        if i >= warmup:
            latencies.append(time.perf_counter() - t0)
    return time.perf_counter() - start, latencies


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--fsync", choices=["thread", "inline", "none"], default="thread")
    args = ap.parse_args(argv)
    from _benchlib import report  # (the children do not need rich)

    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="tidemq-floor-") as tmp:
        try:
            ports = []
            for name in ("a", "b"):
                proc, port = _spawn(["follower", str(Path(tmp) / name), args.fsync])
                procs.append(proc)
                ports.append(port)
            proc, port = _spawn(["leader", str(Path(tmp) / "leader"), args.fsync, *map(str, ports)])
            procs.append(proc)
            elapsed, latencies = trio.run(client, port, args.messages, args.size, args.warmup)
        finally:
            for proc in procs:
                proc.kill()
                proc.wait(timeout=10)
    report(
        f"floor: 1 in flight, trio + TCP + fdatasync ({args.fsync}), leader and 2 followers",
        len(latencies),
        args.size,
        elapsed,
        latencies,
    )
    latencies.sort()
    n = len(latencies)
    line = {
        "bench": "floor",
        "fsync": args.fsync,
        "messages": n,
        "size": args.size,
        "msgs_per_s": round(n / elapsed, 1),
        "p50_ms": round(latencies[n // 2] * 1000, 3),
        "p99_ms": round(latencies[int(n * 0.99)] * 1000, 3),
    }
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    try:
        if role == "follower":
            trio.run(follower, sys.argv[2], sys.argv[3])
        elif role == "leader":
            trio.run(leader, sys.argv[2], sys.argv[3], [int(p) for p in sys.argv[4:]])
        else:
            sys.exit(main())
    except* EOFError:  # a stand-in's peer went away: the run is over
        pass
