"""Fetch answers from the segment files (node/sendfile.py): the partial-write loop, the
spliced frame, the writer on a socket and on a stream that is not one, and the count of
descriptors answers hold."""

import os

import pytest
import trio
import trio.testing

from client.protocol import FetchResponse, FetchResult, FrameDecoder, decode_payload, encode_frame
from node import sendfile as sf
from node.server import _Outbox, _send_spliced
from segments import Log, LogConfig, build_batch

DATA = os.urandom(3 * 1024 * 1024 + 17)


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "segment.log"
    path.write_bytes(DATA)
    fd = os.open(path, os.O_RDONLY)
    yield fd
    os.close(fd)


def socket_pair(send_buffer: int = 4096):
    a, b = trio.socket.socketpair()
    a.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_SNDBUF, send_buffer)
    b.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, send_buffer)
    return a, b


async def receive_exactly(sock, n: int, pause_every: int = 0) -> bytes:
    got = bytearray()
    reads = 0
    while len(got) < n:
        chunk = await sock.recv(min(65536, n - len(got)))
        assert chunk, "closed early"
        got += chunk
        reads += 1
        if pause_every and reads % pause_every == 0:
            await trio.sleep(0.001)  # a slow reader: the sender's buffer fills
    return bytes(got)


async def test_sendfile_all_finishes_partial_writes_in_order(data_file, monkeypatch):
    # The kernel takes a little at a time and sometimes nothing (EAGAIN): every byte
    # still arrives, once and in order, the loop waiting for the socket in between.
    calls = []
    real = os.sendfile

    def stingy(out, fd, offset, count):
        calls.append(count)
        if len(calls) % 3 == 0:
            raise BlockingIOError
        return real(out, fd, offset, min(count, 7777))

    monkeypatch.setattr(sf.os, "sendfile", stingy)
    a, b = socket_pair()
    with a, b:
        position, count = 12345, len(DATA) - 12345 - 99
        async with trio.open_nursery() as nursery:
            received = {}

            async def reader():
                received["data"] = await receive_exactly(b, count, pause_every=5)

            nursery.start_soon(reader)
            await sf.sendfile_all(a, data_file, position, count)
        assert received["data"] == DATA[position : position + count]
    assert len(calls) > count // 7777


async def test_sendfile_all_on_a_full_socket_waits_for_the_reader(data_file):
    # No mock: the real call against a socket whose buffer fills at once.
    a, b = socket_pair(send_buffer=2048)
    with a, b:
        async with trio.open_nursery() as nursery:
            received = {}

            async def reader():
                await trio.sleep(0.05)  # nothing read yet: the sender must wait, not spin or fail
                received["data"] = await receive_exactly(b, len(DATA))

            nursery.start_soon(reader)
            await sf.sendfile_all(a, data_file, 0, len(DATA))
        assert received["data"] == DATA


async def test_sendfile_all_refuses_a_file_that_ends_early(data_file):
    a, b = socket_pair(send_buffer=1 << 20)
    with a, b:
        with pytest.raises(OSError, match="file ended"):
            await sf.sendfile_all(a, data_file, len(DATA) - 10, 20)


def log_with_batches(tmp_path, n: int = 40) -> Log:
    log = Log.open(str(tmp_path / "log"), LogConfig(fsync="never", segment_ms=None, retention_ms=None))
    for i in range(n):
        log.append(build_batch([(None, bytes([i]) * 1000, (), 1_000 + i)] * 20), 1)
    return log


def fetch_answer(log: Log, read_from: list[int]) -> tuple[FetchResponse, list, bytes]:
    """A response over two partitions, records as slices or bytes, and what
    `encode_frame` gives with the bytes in place."""
    results, holes, plain = [], [], []
    for p, offset in enumerate(read_from):
        part = log.read_slice(offset, 300_000)
        assert part is not None
        want = log.read(offset, 300_000)
        r = FetchResult("t", p, high_watermark=log.next_offset, records=want)
        plain.append(FetchResult("t", p, high_watermark=log.next_offset, records=want))
        if p % 2 == 0:
            region = sf.Region(part)
            r.records = region  # type: ignore[assignment]
            holes.append((r, region))
        else:
            part.close()
        results.append(r)
    return FetchResponse(results), holes, encode_frame(7, FetchResponse(plain), 1)


def test_a_spliced_frame_is_the_frame_with_the_file_bytes_in_place(tmp_path):
    log = log_with_batches(tmp_path)
    body, holes, want = fetch_answer(log, [0, 20, 40])
    frame = sf.splice(7, body, 1, holes)
    assert isinstance(frame, sf.SplicedFrame)
    assert [type(p).__name__ for p in frame.parts] == ["bytes", "Region", "bytes", "Region", "bytes"]
    assert len(frame) == len(want)
    assert frame.read() == want
    assert sf.Region.open == 0  # read() gave the descriptors back
    decoder = FrameDecoder()
    decoder.feed(want)
    version, payload = decoder.next_frame()
    assert decode_payload(payload).body.results[2].records == log.read(40, 300_000)


async def test_the_writer_sends_spliced_frames_from_the_files_between_plain_ones(tmp_path):
    log = log_with_batches(tmp_path)
    body, holes, want = fetch_answer(log, [0, 20, 40])
    spliced = sf.splice(7, body, 1, holes)
    from_files = sum(len(r) for _, r in holes)
    first, last = encode_frame(1, FetchResponse([]), 1), encode_frame(2, FetchResponse([]), 1)
    a, b = socket_pair(send_buffer=8192)
    stream = trio.SocketStream(a)
    async with stream, trio.open_nursery() as nursery:
        received = {}

        async def reader():
            received["data"] = await receive_exactly(b, len(first) + len(want) + len(last), pause_every=3)

        nursery.start_soon(reader)
        sent = await _send_spliced(stream, stream.socket, [first, spliced, last])
    b.close()
    assert received["data"] == first + want + last
    assert sent == from_files > 0
    assert sf.Region.open == 0


async def test_a_stream_that_is_not_a_socket_gets_the_bytes_from_memory(tmp_path):
    log = log_with_batches(tmp_path)
    body, holes, want = fetch_answer(log, [0, 20])
    send, receive = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        received = {}

        async def reader():
            got = b""
            while len(got) < len(want):
                got += await receive.receive_some()
            received["data"] = got

        nursery.start_soon(reader)
        assert await _send_spliced(send, None, [sf.splice(7, body, 1, holes)]) == 0
    assert received["data"] == want
    assert sf.Region.open == 0


async def test_answers_queued_for_a_closed_connection_give_their_descriptors_back(tmp_path):
    log = log_with_batches(tmp_path)
    body, holes, _ = fetch_answer(log, [0, 20, 40])
    outbox = _Outbox(1 << 30)
    outbox.put(sf.splice(7, body, 1, holes))
    assert sf.Region.open == 2
    await outbox.send.aclose()
    outbox.discard()
    assert sf.Region.open == 0
    body, holes, _ = fetch_answer(log, [0])
    outbox.put(sf.splice(8, body, 1, holes))  # the channel is closed: dropped at once
    assert sf.Region.open == 0


def test_regions_are_counted_and_capped(tmp_path, monkeypatch):
    log = log_with_batches(tmp_path)
    monkeypatch.setattr(sf, "MAX_OPEN_REGIONS", 2)
    a = sf.Region(log.read_slice(0, 100_000))
    b = sf.Region(log.read_slice(20, 100_000))
    assert sf.Region.open == 2 and not sf.Region.available()
    a.close()
    a.close()
    assert sf.Region.open == 1 and sf.Region.available()
    del b
    assert sf.Region.open == 0
