"""Fetch answers sent from the segment files: committed bytes go from the file to the
socket with `os.sendfile`, never through a Python object, as Kafka serves fetches.

`segments` says where the bytes are (`Log.read_slice`: a `LogSlice`, a range of a
segment file on a descriptor of its own, so a roll, retention or close meanwhile
cannot pull the file away); this module owns what the node does with that:

- `Region`: a slice the node holds for an answer. Open regions are counted and capped
  (`MAX_OPEN_REGIONS`): a region holds a file descriptor until its answer is written,
  and answers wait on clients that may read slowly or never, so past the cap a fetch
  reads its bytes into memory as before (and so does a read too small to be worth a
  `sendfile` call, `SENDFILE_MIN_BYTES`).
- `splice(request_id, body, version, regions)`: the answer's frame with a hole per
  region. The body is encoded as usual with each region's `records` replaced by a
  msgpack bin32 header of the region's length plus a marker; the frame is cut at the
  markers and its length set to what it will be with the regions in place, so the
  receiver reads an ordinary frame.
- `SplicedFrame`: those pieces and regions in order. The connection's writer sends the
  pieces with `send_all` and each region with `sendfile_all` where the stream is a
  plain TCP socket; on any other stream (TLS) it reads the regions and sends bytes.
- `sendfile_all(sock, fd, position, count)`: the partial-write loop on trio, waiting
  for the socket to be writable whenever the kernel takes less than all.
"""

from __future__ import annotations

import os
import resource
import struct

import msgspec
import trio

from client.protocol import encode_frame
from segments import LogSlice

#: A read shorter than this is read into memory (a `sendfile` call and a descriptor
#: cost more than copying a few KiB).
SENDFILE_MIN_BYTES = 64 * 1024


def _max_open_regions() -> int:
    """At most a quarter of the process's descriptors (and 1,024) held by answers."""
    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (OSError, ValueError):  # pragma: no cover - no limit to read
        soft = 1024
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(0, min(1024, soft // 4))


MAX_OPEN_REGIONS = _max_open_regions()
_BIN32 = struct.Struct(">BI")  # msgpack bin 32: 0xc6, then the length
_LENGTH = struct.Struct(">I")  # a frame's length field
# Where a region goes in the encoded frame: random per process, so no client can put it in
# a record value served in the same answer (and a frame where it shows up more often
# than there are regions is sent from memory instead).
_MARK = os.urandom(16)


class Region:
    """A `LogSlice` held for an answer, counted against `MAX_OPEN_REGIONS`. `close()`
    (or dropping it) gives its descriptor back."""

    __slots__ = ("slice",)
    open = 0  #: regions not yet closed, in this process

    def __init__(self, part: LogSlice) -> None:
        self.slice: LogSlice | None = part
        Region.open += 1

    @staticmethod
    def available() -> bool:
        return Region.open < MAX_OPEN_REGIONS

    def __len__(self) -> int:
        return self.slice.length if self.slice is not None else 0

    @property
    def next_offset(self) -> int:
        assert self.slice is not None
        return self.slice.next_offset

    def read(self) -> bytes:
        """The bytes, for a link that cannot take them from the file."""
        assert self.slice is not None
        return self.slice.read()

    def close(self) -> None:
        part, self.slice = self.slice, None
        if part is not None:
            Region.open -= 1
            part.close()

    def __del__(self) -> None:
        self.close()


class SplicedFrame:
    """A frame as pieces of bytes with a region between each two: `parts` alternates
    bytes and `Region`, starting and ending with bytes. `size` is the frame's length."""

    __slots__ = ("parts", "size")

    def __init__(self, parts: list[bytes | Region]) -> None:
        self.parts = parts
        self.size = sum(len(p) for p in parts)

    def __len__(self) -> int:
        return self.size

    def close(self) -> None:
        for part in self.parts:
            if isinstance(part, Region):
                part.close()

    def read(self) -> bytes:
        """The whole frame in memory (closing the regions)."""
        try:
            return b"".join(p if isinstance(p, bytes) else p.read() for p in self.parts)
        finally:
            self.close()


class Spliced:
    """A response body (`body`) some of whose messages' `records` are regions of
    segment files: a handler's answer for the server to frame with `frame()`."""

    __slots__ = ("body", "holes")

    def __init__(self, body: object, holes: list[tuple[object, Region]]) -> None:
        self.body = body
        self.holes = holes

    def frame(self, request_id: int, version: int) -> SplicedFrame | bytes:
        return splice(request_id, self.body, version, self.holes)

    def close(self) -> None:
        for _, region in self.holes:
            region.close()


def splice(request_id: int, body: object, version: int, holes: list[tuple[object, Region]]) -> SplicedFrame | bytes:
    """`body`'s frame with each `(message, region)` of `holes` (a message whose `records`
    field the region fills) sent from the file. The messages get their `records` back
    as a placeholder; the frame's bytes are otherwise exactly `encode_frame`'s."""
    for message, region in holes:
        message.records = msgspec.Raw(_BIN32.pack(0xC6, len(region)) + _MARK)  # type: ignore[attr-defined]
    frame = encode_frame(request_id, body, version)
    pieces = frame.split(_MARK)
    if len(pieces) != len(holes) + 1:  # the marker elsewhere too: one chance in 2**128
        for message, region in holes:
            message.records = region.read()  # type: ignore[attr-defined]
            region.close()
        return encode_frame(request_id, body, version)
    length = len(frame) - _LENGTH.size - len(_MARK) * len(holes) + sum(len(r) for _, r in holes)
    pieces[0] = _LENGTH.pack(length) + pieces[0][_LENGTH.size :]
    parts: list[bytes | Region] = [pieces[0]]
    for (_, region), piece in zip(holes, pieces[1:]):
        parts += (region, piece)
    return SplicedFrame(parts)


async def sendfile_all(sock: trio.socket.SocketType, fd: int, position: int, count: int) -> None:
    """Send `count` bytes of file `fd` from `position` to the (non-blocking) socket, in
    as many `os.sendfile` calls as the socket's buffer takes, waiting until it is
    writable in between. The file must hold them all: a file that ends early raises
    (the frame is broken and the connection must go)."""
    await trio.lowlevel.checkpoint_if_cancelled()
    out = sock.fileno()
    while count > 0:
        try:
            sent = os.sendfile(out, fd, position, count)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            continue
        if sent == 0:
            raise OSError(f"file ended at byte {position} with {count} bytes of the answer still to send")
        position += sent
        count -= sent
    await trio.lowlevel.cancel_shielded_checkpoint()
