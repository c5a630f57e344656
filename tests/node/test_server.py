"""The front door: framing, Hello, token, hostile input closes only that connection."""

import struct

import pytest
import trio

from client.connection import open_connection
from client.errors import AuthFailedError, ConnectionClosedError, UnknownTopicError, UnknownError
from client.protocol import (
    ListOffsets, ListOffsetsResponse, Metadata, PROTOCOL_VERSION, Produce, encode_frame, Hello,
)
from node.server import Server


class EchoHandler:
    """Answers ListOffsets with its timestamp, fails UnknownTopic for topic 'missing'."""

    def dispatch(self, body, client):
        return self.handle(body)

    async def handle(self, body):
        if isinstance(body, ListOffsets):
            if body.topic == "missing":
                raise UnknownTopicError("topic 'missing' does not exist")
            if body.topic == "boom":
                raise RuntimeError("handler bug")
            if body.topic == "fanout":
                async with trio.open_nursery() as nursery:   # typed errors from child tasks
                    async def fail():
                        raise UnknownTopicError("fanned out")
                    nursery.start_soon(fail)
            if body.topic == "slow":
                await trio.sleep(0.3)
            return ListOffsetsResponse(body.timestamp)
        if isinstance(body, Produce) and body.acks == 0:
            return None
        return ListOffsetsResponse(-99)


async def start(nursery, token=None, max_frame=1 << 20):
    peer_payloads = []
    server = Server(1, EchoHandler(), lambda frm, payload: peer_payloads.append((frm, payload)),
                    token=token, max_frame_bytes=max_frame)
    listeners = await nursery.start(server.serve, "127.0.0.1", 0)
    port = listeners[0].socket.getsockname()[1]
    return f"127.0.0.1:{port}", peer_payloads


async def test_many_requests_in_flight_answer_out_of_order(nursery):
    addr, _ = await start(nursery)
    async with open_connection(addr) as conn:
        results = {}

        async def one(i, topic):
            results[i] = (await conn.request(ListOffsets(topic, 0, i))).offset

        async with trio.open_nursery() as n:
            n.start_soon(one, 0, "slow")
            for i in range(1, 50):
                n.start_soon(one, i, "fast")
        assert results == {i: i for i in range(50)}


async def test_typed_errors_and_handler_bugs_keep_connection(nursery):
    addr, _ = await start(nursery)
    async with open_connection(addr) as conn:
        with pytest.raises(UnknownTopicError, match="missing"):
            await conn.request(ListOffsets("missing", 0))
        with pytest.raises(UnknownError, match="handler bug"):
            await conn.request(ListOffsets("boom", 0))
        with pytest.raises(UnknownTopicError, match="fanned out"):
            await conn.request(ListOffsets("fanout", 0))
        assert (await conn.request(ListOffsets("ok", 0, 5))).offset == 5


@pytest.mark.parametrize("garbage", [
    b"\x00\x00\x00\x00\x01",                                  # zero length
    struct.pack(">IB", 2**31, PROTOCOL_VERSION),               # 2 GB length
    struct.pack(">IB", 5, 7) + b"abcd",                        # unknown version
    struct.pack(">IB", 5, PROTOCOL_VERSION) + b"\xc1\xc1\xc1\xc1",  # not msgpack
    encode_frame(3, Metadata()),                                # no Hello first
])
async def test_hostile_frames_close_only_that_connection(nursery, garbage):
    addr, _ = await start(nursery)
    async with open_connection(addr) as good:
        bad = await trio.open_tcp_stream("127.0.0.1", int(addr.split(":")[1]))
        await bad.send_all(garbage)
        with trio.fail_after(5):
            assert await bad.receive_some(100) == b""  # closed by the node
        await bad.aclose()
        assert (await good.request(ListOffsets("ok", 0, 7))).offset == 7


async def test_garbage_after_hello_closes_connection(nursery):
    addr, _ = await start(nursery)
    bad = await trio.open_tcp_stream("127.0.0.1", int(addr.split(":")[1]))
    await bad.send_all(encode_frame(0, Hello(PROTOCOL_VERSION)))
    await bad.send_all(struct.pack(">IB", 9, PROTOCOL_VERSION) + b"\x92\x01\x92\xa3Bad\x01")
    with trio.fail_after(5):
        data = b""
        while chunk := await bad.receive_some(100):
            data += chunk
    assert data  # HelloOk arrived, then the close
    async with open_connection(addr) as conn:  # and the node still serves
        assert (await conn.request(ListOffsets("ok", 0, 3))).offset == 3


async def test_token_required(nursery):
    addr, _ = await start(nursery, token="s3cret")
    with pytest.raises(AuthFailedError, match="token"):
        async with open_connection(addr):
            pass
    with pytest.raises(AuthFailedError):
        async with open_connection(addr, token="wrong"):
            pass
    async with open_connection(addr, token="s3cret") as conn:
        assert (await conn.request(ListOffsets("ok", 0, 1))).offset == 1


async def test_acks0_gets_no_answer_but_order_kept(nursery):
    addr, _ = await start(nursery)
    async with open_connection(addr) as conn:
        await conn.send_only(Produce("t", 0, b"x", acks=0))
        assert (await conn.request(ListOffsets("ok", 0, 2))).offset == 2


async def test_connection_refused_is_clear():
    with pytest.raises(ConnectionClosedError, match="is the node running"):
        async with open_connection("127.0.0.1:1"):
            pass


async def test_peer_connection_delivers_payloads(nursery):
    from client.protocol import PeerMessages
    addr, payloads = await start(nursery)
    s = await trio.open_tcp_stream("127.0.0.1", int(addr.split(":")[1]))
    await s.send_all(encode_frame(0, Hello(PROTOCOL_VERSION, peer_node=2)) + encode_frame(0, PeerMessages(b"abc")))
    with trio.fail_after(5):
        while not payloads:
            await trio.sleep(0.01)
    assert payloads == [(2, b"abc")]
    await s.aclose()
