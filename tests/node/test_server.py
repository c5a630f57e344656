"""The front door: framing, Hello, token, hostile input closes only that connection."""

import struct

import msgspec
import pytest
import trio

from client.connection import open_connection
from client.errors import (
    AuthFailedError,
    ClusterAuthorizationError,
    ConnectionClosedError,
    ConnectionLimitError,
    CoordinatorNotAvailableError,
    ErrorCode,
    UnknownError,
    UnknownTopicError,
    UnsupportedVersionError,
)
from client.protocol import (
    CLIENT_VERSIONS,
    PROTOCOL_VERSION,
    ErrorResponse,
    FetchResponse,
    FetchResult,
    FrameDecoder,
    Hello,
    HelloOk,
    ListOffsets,
    ListOffsetsResponse,
    Metadata,
    PeerProof,
    Produce,
    decode_payload,
    encode_frame,
)
from node.peerauth import PeerCredential
from node.peerprotocol import NODE_VERSIONS, EndTxnOffsets, PeerMessages, PendTxnOffsets, WriteTxnMarker
from node.server import ConnectionLimits, Server


class EchoHandler:
    """Answers ListOffsets with its timestamp, fails UnknownTopic for topic 'missing'."""

    served = 0

    def dispatch(self, body, client):
        return self.handle(body)

    async def handle(self, body):
        if isinstance(body, ListOffsets):
            if body.topic == "missing":
                raise UnknownTopicError("topic 'missing' does not exist")
            if body.topic == "boom":
                raise RuntimeError("handler bug")
            if body.topic == "fanout":
                async with trio.open_nursery() as nursery:  # typed errors from child tasks

                    async def fail():
                        raise UnknownTopicError("fanned out")

                    nursery.start_soon(fail)
            if body.topic == "slow":
                await trio.sleep(0.3)
            if body.topic == "big":
                self.served += 1
                return FetchResponse([FetchResult("big", 0, records=b"x" * 65536)])
            return ListOffsetsResponse(body.timestamp)
        if isinstance(body, Produce) and body.acks == 0:
            return None
        return ListOffsetsResponse(-99)


async def start(nursery, token=None, max_frame=1 << 20, limits=ConnectionLimits(), handler=None):
    peer_payloads = []
    server = Server(
        1,
        handler or EchoHandler(),
        lambda frm, payload: peer_payloads.append((frm, payload)),
        token=token,
        max_frame_bytes=max_frame,
        limits=limits,
    )
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


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x00\x00\x00\x01",  # zero length
        struct.pack(">IB", 2**31, PROTOCOL_VERSION),  # 2 GB length
        struct.pack(">IB", 5, 7) + b"abcd",  # unknown version
        struct.pack(">IB", 5, PROTOCOL_VERSION) + b"\xc1\xc1\xc1\xc1",  # not msgpack
        encode_frame(3, Metadata()),  # no Hello first
    ],
)
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
    await bad.send_all(struct.pack(">IB", 9, PROTOCOL_VERSION) + b"\x92\x01\x92\x01\xa3Bad")  # no tag first
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


SECRET = "peer-secret-for-the-server-tests"


async def start_peer_listener(nursery, secret=SECRET, peer_ids=(1, 2, 3)):
    payloads = []
    server = Server(
        1,
        EchoHandler(),
        lambda frm, payload: payloads.append((frm, payload)),
        max_frame_bytes=1 << 20,
        peer_auth=PeerCredential(1, secret),
        peer_ids=peer_ids,
    )
    listeners = await nursery.start(server.serve, "127.0.0.1", 0)
    return f"127.0.0.1:{listeners[0].socket.getsockname()[1]}", payloads


async def test_a_node_with_the_secret_gets_in_and_its_raft_traffic_is_delivered(nursery):
    addr, payloads = await start_peer_listener(nursery)
    async with open_connection(addr, peer=PeerCredential(2, SECRET)) as conn:
        assert conn.node_id == 1
        await conn.send_only(PeerMessages(b"abc"))
        assert (await conn.request(ListOffsets("ok", 0, 3))).offset == 3  # requests too
    assert payloads == [(2, b"abc")]


async def test_a_wrong_peer_secret_is_refused_and_delivers_nothing(nursery):
    addr, payloads = await start_peer_listener(nursery)
    with pytest.raises(AuthFailedError, match="does not hold"):
        # The listener proves itself first: a dialer with another secret refuses it.
        async with open_connection(addr, peer=PeerCredential(2, "another-secret-entirely")):
            pass
    s = await trio.open_tcp_stream("127.0.0.1", int(addr.split(":")[1]))
    await s.send_all(
        encode_frame(0, Hello(PROTOCOL_VERSION, peer_node=2, nonce=b"n" * 32))
        + encode_frame(0, PeerProof(b"x" * 32))
        + encode_frame(0, PeerMessages(b"abc"))
    )
    with trio.fail_after(5):
        data = b""
        while chunk := await s.receive_some(65536):
            data += chunk
    assert b"wrong peer secret" in data and payloads == []


async def test_only_members_and_only_nodes_get_onto_the_peer_listener(nursery):
    addr, _ = await start_peer_listener(nursery, peer_ids=(1, 2))
    with pytest.raises(ClusterAuthorizationError, match="not a member"):
        async with open_connection(addr, peer=PeerCredential(7, SECRET)):
            pass
    with pytest.raises(ClusterAuthorizationError, match="clients use --listen"):
        async with open_connection(addr):
            pass


async def test_the_client_listener_refuses_peers_and_broker_to_broker_requests(nursery):
    addr, payloads = await start(nursery)
    with pytest.raises(ClusterAuthorizationError, match="client listener"):
        async with open_connection(addr, peer=PeerCredential(2, SECRET)):
            pass
    async with open_connection(addr) as conn:
        for body in (
            PeerMessages(b"abc"),
            WriteTxnMarker("t", 0, 1, 0, True, 1),
            PendTxnOffsets("g", "tid", 1, []),
            EndTxnOffsets("g", "tid", 1, True, []),
        ):
            with pytest.raises(ClusterAuthorizationError, match="nodes only"):
                await conn.request(body)
        assert (await conn.request(ListOffsets("ok", 0, 4))).offset == 4  # the connection goes on
    assert payloads == []


async def test_a_big_frame_before_hello_closes_the_connection(nursery):
    addr, _ = await start(nursery)
    s = await trio.open_tcp_stream("127.0.0.1", int(addr.split(":")[1]))
    await s.send_all(struct.pack(">IB", 1 << 20, PROTOCOL_VERSION) + b"\0" * 1000)
    with trio.fail_after(5):
        assert await s.receive_some(100) == b""


async def test_a_client_that_never_reads_its_answers_is_not_read_either(nursery):
    handler = EchoHandler()
    addr, _ = await start(nursery, limits=ConnectionLimits(max_queued_bytes=256 * 1024), handler=handler)
    s = await trio.open_tcp_stream("127.0.0.1", int(addr.split(":")[1]))
    await s.send_all(encode_frame(0, Hello(PROTOCOL_VERSION)))
    requests = b"".join(encode_frame(i, ListOffsets("big", 0, i)) for i in range(1, 2001))

    async def flood():
        with trio.move_on_after(3):
            await s.send_all(requests)  # blocks once the node stops reading

    await flood()
    # 2,000 answers of 64 KiB would be 128 MiB queued; the node stopped at its budget
    # plus what the sockets buffer.
    assert handler.served < 600, handler.served
    async with open_connection(addr) as other:  # everyone else is served
        assert (await other.request(ListOffsets("ok", 0, 9))).offset == 9
    await s.aclose()


async def test_connections_beyond_the_cap_are_refused_with_a_retriable_error(nursery):
    addr, _ = await start(nursery, limits=ConnectionLimits(max_connections=2))
    async with open_connection(addr), open_connection(addr):
        with pytest.raises(ConnectionLimitError) as err:
            async with open_connection(addr):
                pass
        assert err.value.retriable
    async with open_connection(addr) as conn:  # room again once they closed
        assert (await conn.request(ListOffsets("ok", 0, 1))).offset == 1


async def test_an_idle_client_connection_is_closed(nursery):
    addr, _ = await start(nursery, limits=ConnectionLimits(idle_timeout_s=0.3))
    async with open_connection(addr) as conn:
        assert (await conn.request(ListOffsets("slow", 0, 1))).offset == 1  # in flight: not idle
        await trio.sleep(0.8)
        with pytest.raises(ConnectionClosedError):
            await conn.request(ListOffsets("ok", 0, 2))


# -- versions -------------------------------------------------------------------------------


async def raw_answers(addr: str, data: bytes, want: int) -> tuple[dict[int, object], bool]:
    """Write raw frames; (answers by request id, whether the node closed) once `want`
    answers came or the node closed."""
    s = await trio.open_tcp_stream("127.0.0.1", int(addr.split(":")[1]))
    got: dict[int, object] = {}
    closed = False
    async with s:
        await s.send_all(data)
        decoder = FrameDecoder()
        with trio.fail_after(5):
            while len(got) < want:
                chunk = await s.receive_some(65536)
                if not chunk:
                    closed = True
                    break
                decoder.feed(chunk)
                while (frame := decoder.next_frame()) is not None:
                    env = decode_payload(frame[1])
                    got[env.id] = env.body
    return got, closed


def raw_frame(obj: object, version: int = PROTOCOL_VERSION) -> bytes:
    payload = msgspec.msgpack.encode(obj)
    return struct.pack(">IB", len(payload) + 1, version) + payload


async def test_hellook_offers_the_listeners_versions_and_requests_go_at_the_agreed_one(nursery):
    addr, _ = await start(nursery)
    async with open_connection(addr) as conn:
        assert conn.node_versions == CLIENT_VERSIONS and conn.versions["ListOffsets"] == 1
    peer_addr, _ = await start_peer_listener(nursery)
    async with open_connection(peer_addr, peer=PeerCredential(2, SECRET)) as conn:
        assert conn.node_versions == NODE_VERSIONS and conn.versions["WriteTxnMarker"] == 1


async def test_unspoken_versions_and_unknown_requests_are_answered_and_the_connection_goes_on(nursery):
    addr, _ = await start(nursery)
    data = (
        encode_frame(0, Hello(PROTOCOL_VERSION))
        + encode_frame(1, ListOffsets("ok", 0, 1), version=2)  # a version this node lacks
        + raw_frame([2, ["FromTheFuture", 1, "x"]], version=3)  # a request it lacks at all
        + encode_frame(3, ListOffsets("ok", 0, 5))  # and the connection still serves
    )
    got, closed = await raw_answers(addr, data, 4)
    assert not closed
    assert isinstance(got[1], ErrorResponse) and got[1].code == ErrorCode.UNSUPPORTED_VERSION
    assert got[1].message == "ListOffsets v2: node 1 speaks ListOffsets 1..1"
    assert isinstance(got[2], ErrorResponse) and got[2].code == ErrorCode.UNSUPPORTED_VERSION
    assert "'FromTheFuture'" in got[2].message
    assert got[3] == ListOffsetsResponse(5)


async def test_a_client_refuses_locally_what_the_node_does_not_speak(nursery):
    addr, _ = await start(nursery)
    async with open_connection(addr) as conn:
        conn.speaks["ListOffsets"] = (2, 3)  # as a client that dropped version 1 would
        conn.versions.pop("ListOffsets")
        with pytest.raises(UnsupportedVersionError, match=r"ListOffsets: .*this side 2..3, node 1 at .* 1..1"):
            await conn.request(ListOffsets("ok", 0, 1))
        assert (await conn.request(Metadata())) is not None  # nothing was sent; the connection is fine


@pytest.mark.parametrize(
    "versions",
    [
        {"ListOffsets": [9, 1], "Fetch": [-5, -1], "Nope": [1, 1 << 62]},  # ranges that make no sense
        {f"Unknown{i}": [1, 2] for i in range(2000)},  # a long list of names nobody knows
        {},
    ],
)
async def test_a_hello_with_garbage_ranges_is_admitted_and_served(nursery, versions):
    addr, _ = await start(nursery)
    hello = raw_frame([0, ["Hello", PROTOCOL_VERSION, "c", None, None, None, versions, None, None, "a newer field", 7]])
    got, closed = await raw_answers(addr, hello + encode_frame(1, ListOffsets("ok", 0, 2)), 2)
    assert isinstance(got[0], HelloOk) and got[1] == ListOffsetsResponse(2) and not closed


@pytest.mark.parametrize(
    "hello, code",
    [
        (raw_frame([0, ["Hello", PROTOCOL_VERSION, "c", None, None, None, "not a map"]]), ErrorCode.INVALID_REQUEST),
        (raw_frame([0, ["Hello", PROTOCOL_VERSION, "c", None, None, None, {"A": [1]}]]), ErrorCode.INVALID_REQUEST),
        (encode_frame(0, Hello(2)), ErrorCode.UNSUPPORTED_VERSION),  # another handshake
        (encode_frame(0, Hello(PROTOCOL_VERSION), version=2), ErrorCode.UNSUPPORTED_VERSION),
    ],
)
async def test_a_hello_that_cannot_be_read_gets_a_typed_answer_and_the_node_goes_on(nursery, hello, code):
    addr, _ = await start(nursery)
    got, closed = await raw_answers(addr, hello, 2)  # read on until the node closes
    assert isinstance(got[0], ErrorResponse) and got[0].code == code and closed
    async with open_connection(addr) as conn:
        assert (await conn.request(ListOffsets("ok", 0, 6))).offset == 6


async def test_a_user_unknown_before_the_state_is_loaded_is_told_to_retry(nursery):
    """A restarted node may not have replayed a user yet: not a wrong password."""
    loaded = False
    server = Server(
        1, EchoHandler(), lambda frm, payload: None, max_frame_bytes=1 << 20, require_users=True, loaded=lambda: loaded
    )
    listeners = await nursery.start(server.serve, "127.0.0.1", 0)
    addr = f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"
    with pytest.raises(CoordinatorNotAvailableError, match="still loading the cluster's users"):
        async with open_connection(addr, user="alice", password="pw"):
            pass
    loaded = True
    with pytest.raises(AuthFailedError, match="wrong user or password"):
        async with open_connection(addr, user="alice", password="pw"):
            pass


async def test_a_request_is_counted_before_its_answer_leaves(nursery, monkeypatch):
    """A client that has its answer and then scrapes /metrics finds its request counted:
    the answer may be written at once (node/eager.py), so counting after it raced the
    scrape."""
    import node.server
    from node.metrics import NodeMetrics

    metrics = NodeMetrics(1)
    server = Server(1, EchoHandler(), lambda frm, payload: None, max_frame_bytes=1 << 20, metrics=metrics)
    listeners = await nursery.start(server.serve, "127.0.0.1", 0)
    addr = f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"
    counted_at_put = []
    put = node.server._Outbox.put

    def watching_put(self, frame):
        counted_at_put.append(
            metrics.registry.get_sample_value("tidemq_requests_total", {"kind": "ListOffsets", "outcome": "ok"})
        )
        put(self, frame)

    monkeypatch.setattr(node.server._Outbox, "put", watching_put)
    async with open_connection(addr) as conn:
        for n in range(1, 4):
            assert (await conn.request(ListOffsets("t", 0, n))).offset == n
    assert counted_at_put[-3:] == [1.0, 2.0, 3.0]
