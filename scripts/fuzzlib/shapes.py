"""Hostile request shapes: each a small function of a seeded `random.Random`.

A request shape returns a `Req`: where it goes (a partition's leader, the controller, a
group's or transactional id's coordinator, any node) and a well-formed protocol body
carrying hostile values. The node must answer it normally or with a typed error; an
UNKNOWN answer (the node hit an exception it did not expect), no answer at all, or a
closed connection is a finding. Broker-only requests must be refused with exactly
CLUSTER_AUTHORIZATION_FAILED (`Req.expect`).

A raw shape (`RAW`) writes frames that break the protocol on a connection of its own;
there the node may also close the connection, but it must never admit a client to the
peer listener or answer UNKNOWN. Raw shapes raise `Finding` for what they catch.

`mem` is the client's memory of real ids it was given (producer ids of transactional
ids, member ids of groups), so some requests hit live state rather than only misses.
"""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import msgspec
import trio
from crc32c import crc32c

from client.connection import open_connection
from client.conventions import H_DELAY_DUE, H_DELAY_PARTITION, H_DELAY_TARGET, H_HALF_GROUP, H_HALF_TARGET
from client.errors import ClusterAuthorizationError, ErrorCode, TideMQError
from client.protocol import (
    CLIENT_VERSIONS,
    DEFAULT_MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    AddPartitionsToTxn,
    CreateTopic,
    DeleteTopic,
    DescribeGroup,
    DescribeTransaction,
    EndHalf,
    EndTxn,
    ErrorResponse,
    Fetch,
    FetchPartition,
    FrameDecoder,
    GroupHeartbeat,
    Hello,
    HelloOk,
    InitProducerId,
    ListGroups,
    ListHalves,
    ListOffsets,
    ListTransactions,
    Metadata,
    OffsetCommit,
    OffsetFetch,
    PeerChallenge,
    PeerProof,
    PollHalfChecks,
    Produce,
    TopicPartition,
    TxnOffsetCommit,
    decode_payload,
    encode_frame,
    split_addr,
)
from scripts.fuzzlib.forged import EndTxnOffsets, PeerMessages, PendTxnOffsets, WriteTxnMarker
from segments import Compression, build_batch, build_transaction_marker
from segments.batch import ATTRIBUTES_OFFSET, CRC_OFFSET, HEADER_SIZE, MIN_BATCH_LENGTH
from segments.compression import compress

CANARY = "canary"
DATA_TOPICS = {"fz-a": 3, "fz-b": 1}  # created at start; hostile writes land here
CHURN_TOPICS = [f"fz-t{i}" for i in range(6)]  # created and deleted by the clients
GROUPS = [f"fz-g{i}" for i in range(4)]
TXN_IDS = [f"fz-tx{i}" for i in range(4)]
INTERNAL = ["__consumer_offsets", "__transaction_state", "__half_messages", "__delay_100ms"]
INTS = [-(1 << 63), -(1 << 62), -(1 << 31), -2, -1, 0, 1, 2, (1 << 31) - 1, 1 << 31, 1 << 62, (1 << 63) - 1]
EPOCHS = [-(1 << 15), -1, 0, 1, (1 << 15) - 1]
NAMES = ["", ".", "..", "a" * 300, "a" * 200, "ü🙂名前", "__x", "x/../y", "\x00", " ", "-", "fz-t0", "a.b_c-D"]
YEAR_9999_MS = 253_402_300_799_000

Route = tuple  # ("leader", topic, p) | ("controller",) | ("any",) | ("group", g) | ("txn", id)


class Req(NamedTuple):
    route: Route
    body: Any
    expect: ErrorCode | None = None  # the only acceptable refusal, when there is one


class Finding(Exception):
    """A raw shape caught the node doing what it must not."""


SHAPES: dict[str, tuple[int, Callable[[random.Random, dict], Req]]] = {}


def shape(weight: int = 1):
    def register(fn):
        SHAPES[fn.__name__] = (weight, fn)
        return fn

    return register


# -- values ------------------------------------------------------------------------------


def now_ms() -> int:
    return int(time.time() * 1000)


def wild_int(rng: random.Random) -> int:
    return rng.choice(INTS) if rng.random() < 0.7 else rng.randrange(-1000, 100_000)


def wild_name(rng: random.Random) -> str:
    return rng.choice(NAMES) if rng.random() < 0.7 else f"fz-{rng.randrange(1 << 30):x}"


def long_str(rng: random.Random) -> str:
    return rng.choice(["", "x" * 10_000, "ü" * 3_000, "\x00\xff", f"m-{rng.randrange(100)}", " "])


def data_tp(rng: random.Random) -> tuple[str, int]:
    topic = rng.choice(list(DATA_TOPICS))
    return topic, rng.randrange(DATA_TOPICS[topic])


def read_tp(rng: random.Random) -> tuple[str, int]:
    """Somewhere to read or name: mostly real partitions (the canary's too), else not."""
    r = rng.random()
    if r < 0.5:
        return data_tp(rng)
    if r < 0.65:
        return CANARY, rng.randrange(3)
    if r < 0.8:
        return rng.choice(INTERNAL), rng.randrange(-1, 4)
    return (wild_name(rng), 0) if r < 0.9 else (data_tp(rng)[0], wild_int(rng))


def records(rng: random.Random, ts: int | None = None, size: int = 2000) -> list:
    headers = [("h", rng.randbytes(rng.randrange(8)))] if rng.random() < 0.3 else []
    return [
        (rng.choice([None, b"k%d" % rng.randrange(100)]), rng.randbytes(rng.randrange(size)), headers, ts)
        for _ in range(rng.randint(1, 5))
    ]


def recrc(buf: bytes | bytearray) -> bytes:
    out = bytearray(buf)
    struct.pack_into(">I", out, CRC_OFFSET, crc32c(memoryview(out)[ATTRIBUTES_OFFSET:]))
    return bytes(out)


def patched(buf: bytes, offset: int, fmt: str, value: int) -> bytes:
    """`buf` with one header field overwritten and the CRC made valid again."""
    out = bytearray(buf)
    struct.pack_into(fmt, out, offset, value)
    return recrc(out)


_BOMBS: dict[Compression, bytes] = {}


def prepare_bombs() -> None:
    """64 MiB of zeros compressed once (gzip takes a moment): run in a thread at start."""
    for codec in (Compression.GZIP, Compression.ZSTD):
        section = compress(codec, bytes(64 << 20))
        head = bytearray(build_batch([(None, b"x", (), None)])[:HEADER_SIZE])
        struct.pack_into(">i", head, 8, MIN_BATCH_LENGTH + len(section))
        struct.pack_into(">h", head, ATTRIBUTES_OFFSET, int(codec))
        _BOMBS[codec] = recrc(head + section)


def _produce(rng: random.Random, batch: bytes, tp: tuple[str, int] | None = None, **kw: Any) -> Req:
    topic, p = tp or data_tp(rng)
    kw.setdefault("timeout_ms", 10_000)
    return Req(("leader", topic, p), Produce(topic, p, batch, **kw))


# -- produce -------------------------------------------------------------------------------


@shape(3)
def produce_valid(rng, mem):
    codec = rng.choice([Compression.NONE, Compression.GZIP, Compression.ZSTD])
    return _produce(rng, build_batch(records(rng), compression=codec), acks=rng.choice([-1, 1]))


@shape(1)
def produce_big(rng, mem):
    """Fill fz-a-0, so the never-read connections have big answers to leave unread."""
    return _produce(rng, build_batch([(None, rng.randbytes(200_000), (), None) for _ in range(4)]), ("fz-a", 0))


@shape(2)
def produce_random_bytes(rng, mem):
    return _produce(rng, rng.randbytes(rng.randrange(0, 5000)))


@shape(2)
def produce_truncated(rng, mem):
    good = build_batch(records(rng))
    return _produce(rng, good[: rng.randrange(1, len(good))])


@shape(2)
def produce_bad_crc(rng, mem):
    out = bytearray(build_batch(records(rng)))
    out[rng.randrange(CRC_OFFSET, len(out))] ^= 1 << rng.randrange(8)
    return _produce(rng, bytes(out))


@shape(3)
def produce_garbage_records(rng, mem):
    """A CRC-valid batch whose records are noise (into plain, delay and half topics)."""
    head = bytearray(build_batch(records(rng))[:HEADER_SIZE])
    body = rng.randbytes(rng.randrange(0, 3000))
    struct.pack_into(">i", head, 8, MIN_BATCH_LENGTH + len(body))
    tp = data_tp(rng) if rng.random() < 0.6 else (rng.choice(INTERNAL), rng.randrange(3))
    return _produce(rng, recrc(head + body), tp)


@shape(2)
def produce_codec_bits(rng, mem):
    good = build_batch(records(rng), compression=rng.choice([Compression.NONE, Compression.GZIP]))
    attrs = struct.unpack_from(">h", good, ATTRIBUTES_OFFSET)[0]
    attrs = (
        (attrs & ~0x07) | rng.choice([2, 3, 5, 6, 7]) if rng.random() < 0.7 else attrs | rng.choice([0x08, 0x20, 0x40])
    )
    tp = data_tp(rng) if rng.random() < 0.6 else (rng.choice(INTERNAL), rng.randrange(3))
    return _produce(rng, patched(good, ATTRIBUTES_OFFSET, ">h", attrs), tp)


@shape(1)
def produce_bomb(rng, mem):
    tp = data_tp(rng) if rng.random() < 0.7 else (rng.choice(INTERNAL[2:]), 0)
    return _produce(rng, _BOMBS[rng.choice([Compression.GZIP, Compression.ZSTD])], tp)


@shape(2)
def produce_timestamps(rng, mem):
    ts = rng.choice([-5, 0, YEAR_9999_MS, 1 << 62, now_ms() - 400 * 86_400_000, now_ms() + 3_600_000])
    tp = data_tp(rng) if rng.random() < 0.6 else (rng.choice(INTERNAL[2:]), 0)
    return _produce(rng, build_batch(records(rng, ts=ts)), tp)


@shape(2)
def produce_counts(rng, mem):
    """Record count and last offset delta that disagree with the records, or overflow."""
    out = build_batch(records(rng))
    out = patched(out, 57, ">i", rng.choice([-1, 0, 1000, (1 << 31) - 1, -(1 << 31)]))
    if rng.random() < 0.5:
        out = patched(out, 23, ">i", rng.choice([-1, 0, 999, (1 << 31) - 1]))
    return _produce(rng, out)


@shape(3)
def produce_internal(rng, mem):
    """Valid batches into internal topics, with delay/half headers made up."""
    headers = [
        (k, rng.choice(vals))
        for k, vals in (
            (H_DELAY_TARGET, [b"fz-a", b"", b"__consumer_offsets", b"nope", b"fz-b"]),
            (H_DELAY_DUE, [b"-5", b"0", b"99999999999999999999", b"abc", str(now_ms() + 200).encode()]),
            (H_DELAY_PARTITION, [b"-1", b"0", b"99", b"x"]),
            (H_HALF_TARGET, [b"fz-a", b"__transaction_state", b""]),
            (H_HALF_GROUP, [b"fz-g0", b"", b"x" * 5000]),
        )
        if rng.random() < 0.6
    ]
    batch = build_batch([(None, rng.randbytes(rng.randrange(100)), headers, None)])
    return _produce(rng, batch, (rng.choice(INTERNAL), rng.choice([0, 0, 1, -1, 99])))


@shape(2)
def produce_nowhere(rng, mem):
    tp = (wild_name(rng), rng.choice([0, 1])) if rng.random() < 0.5 else (data_tp(rng)[0], wild_int(rng))
    return _produce(rng, build_batch(records(rng)), tp)


@shape(1)
def produce_acks(rng, mem):
    return _produce(
        rng,
        build_batch(records(rng)),
        acks=rng.choice([2, -2, 100, -(1 << 31), 1 << 62]),
        timeout_ms=rng.choice([-1, 0, 1, 1 << 62]),
    )


@shape(1)
def produce_acks_none(rng, mem):
    """acks=0 carrying garbage: nothing is answered, and nothing may break."""
    batch = rng.choice([rng.randbytes(300), build_batch(records(rng))[:-3], build_batch(records(rng))])
    return _produce(rng, batch, acks=0)


@shape(3)
def produce_forged_idempotent(rng, mem):
    pid = rng.choice([0, 1, 2, rng.randrange(1000), 1 << 62, -5])
    batch = build_batch(
        records(rng),
        producer_id=pid,
        producer_epoch=rng.choice(EPOCHS),
        base_sequence=rng.choice([0, 1, -5, (1 << 31) - 1, rng.randrange(1000)]),
    )
    return _produce(rng, batch)


@shape(2)
def produce_transactional(rng, mem):
    tid = rng.choice(TXN_IDS + [wild_name(rng), None])
    pid, epoch = mem.get("pids", {}).get(tid) or (rng.randrange(100), rng.choice(EPOCHS))
    batch = build_batch(
        records(rng), producer_id=pid, producer_epoch=epoch, base_sequence=rng.randrange(3), transactional=True
    )
    return _produce(rng, batch, transactional_id=tid)


@shape(1)
def produce_control(rng, mem):
    """A client forging a COMMIT/ABORT marker."""
    batch = build_transaction_marker(
        rng.random() < 0.5,
        producer_id=rng.randrange(100),
        producer_epoch=rng.choice(EPOCHS[1:]),
        coordinator_epoch=rng.randrange(1 << 20),
    )
    return _produce(rng, batch)


# -- read ------------------------------------------------------------------------------------


@shape(3)
def fetch(rng, mem):
    parts = [
        FetchPartition(
            *read_tp(rng), rng.choice([-1, 0, 1, 1 << 62, rng.randrange(100)]), rng.choice([0, -1, 1 << 62, 1 << 20])
        )
        for _ in range(rng.randint(1, 4))
    ]
    body = Fetch(
        parts,
        max_wait_ms=rng.choice([0, 100, -1, 1 << 62]),
        min_bytes=rng.choice([0, 1, 1 << 62]),
        max_bytes=rng.choice([0, -1, 1 << 62, 1 << 20]),
        isolation=rng.choice([0, 1, 2, -1]),
    )
    return Req(("leader", parts[0].topic, parts[0].partition), body)


@shape(1)
def fetch_many(rng, mem):
    n = rng.choice([1000, 1001, 2000])
    parts = [
        FetchPartition(*data_tp(rng), 0, 1 << 20) if i % 2 else FetchPartition(f"nope-{i}", i, 0) for i in range(n)
    ]
    return Req(("any",), Fetch(parts, max_wait_ms=rng.choice([0, 1 << 62]), max_bytes=1 << 62))


@shape(2)
def list_offsets(rng, mem):
    topic, p = read_tp(rng)
    ts = rng.choice([-1, -2, -3, -(1 << 62), 0, 1 << 62, now_ms(), YEAR_9999_MS])
    return Req(("leader", topic, p), ListOffsets(topic, p, ts, isolation=rng.choice([0, 1, 7])))


@shape(1)
def metadata(rng, mem):
    topics = rng.choice([None, [], [wild_name(rng) for _ in range(rng.randint(1, 50))], ["x" * 100_000]])
    return Req(("any",), Metadata(topics, authoritative=rng.random() < 0.3))


# -- admin -----------------------------------------------------------------------------------


@shape(2)
def create_topic(rng, mem):
    name = rng.choice(CHURN_TOPICS) if rng.random() < 0.5 else wild_name(rng)
    configs = dict(
        rng.choice(
            [
                [],
                [("segment.bytes", "1")],
                [("segment.bytes", str(1 << 31))],
                [("segment.ms", "1")],
                [("retention.ms", "-5")],
                [("x", "1")],
                [("retention.ms", "abc")],
                [("segment.bytes", "")],
                [("segment.bytes", str(1 << 20)), ("retention.ms", "60000")],
            ]
        )
    )
    partitions = rng.choice([0, -1, 10**6, 1, 2, 3]) if rng.random() < 0.6 else rng.randint(1, 3)
    replication = rng.choice([0, 99, -1, 1, 2, 3])
    return Req(("controller",), CreateTopic(name, partitions, replication, configs))


@shape(1)
def delete_topic(rng, mem):
    name = rng.choice(CHURN_TOPICS + INTERNAL + [wild_name(rng), "__cluster", "nope"])
    return Req(("controller",), DeleteTopic(name))


# -- producers and transactions --------------------------------------------------------------


@shape(2)
def init_producer_id(rng, mem):
    tid = rng.choice(TXN_IDS + [None, wild_name(rng), long_str(rng)])
    body = InitProducerId(tid, rng.choice([60_000, -1, 0, 1, 1 << 62, 10_000]))
    return Req(("txn", tid) if tid is not None else ("controller",), body)


def _txn_ids(rng, mem) -> tuple[str, int, int]:
    tid = rng.choice(TXN_IDS + [wild_name(rng)])
    pid, epoch = mem.get("pids", {}).get(tid) or (rng.randrange(100), rng.randrange(5))
    if rng.random() < 0.3:
        pid, epoch = wild_int(rng), rng.choice(EPOCHS + [1 << 40])
    return tid, pid, epoch


@shape(2)
def add_partitions_to_txn(rng, mem):
    tid, pid, epoch = _txn_ids(rng, mem)
    parts = [TopicPartition(*read_tp(rng)) for _ in range(rng.randint(0, 4))]
    return Req(
        ("txn", tid),
        AddPartitionsToTxn(
            tid, pid, epoch, parts, transaction=rng.choice([0, 1, -1, 1 << 62]), verify_only=rng.random() < 0.2
        ),
    )


@shape(2)
def end_txn(rng, mem):
    tid, pid, epoch = _txn_ids(rng, mem)
    return Req(("txn", tid), EndTxn(tid, pid, epoch, commit=rng.random() < 0.5))


@shape(1)
def txn_offset_commit(rng, mem):
    tid, pid, epoch = _txn_ids(rng, mem)
    offsets = [(*read_tp(rng), rng.choice([-5, 0, 1 << 62])) for _ in range(rng.randint(0, 3))]
    body = TxnOffsetCommit(
        tid,
        pid,
        epoch,
        rng.choice(GROUPS + [long_str(rng)]),
        offsets,
        member_id=long_str(rng),
        assigned_epochs=[wild_int(rng) for _ in range(rng.randint(0, 4))],
    )
    return Req(("txn", tid), body)


@shape(1)
def describe_transactions(rng, mem):
    if rng.random() < 0.5:
        return Req(("any",), ListTransactions())
    tid = rng.choice(TXN_IDS + [wild_name(rng)])
    return Req(("txn", tid), DescribeTransaction(tid))


# -- groups ------------------------------------------------------------------------------------


@shape(3)
def group_heartbeat(rng, mem):
    group = rng.choice(GROUPS) if rng.random() < 0.8 else long_str(rng)
    member_id, epoch = mem.get("members", {}).get(group) or ("", 0)
    if rng.random() < 0.5:
        member_id, epoch = rng.choice(["", member_id, long_str(rng)]), rng.choice([-2, -1, 0, 1, 1 << 31, 1 << 62])
    topics = rng.choice([["fz-a"], ["fz-a", "fz-b"], [], ["nope"], ["__consumer_offsets"], ["x" * 1000] * 3])
    owned = [TopicPartition(*read_tp(rng)) for _ in range(rng.randint(0, 3))]
    body = GroupHeartbeat(
        group,
        member_id,
        epoch,
        topics,
        owned,
        client_id=long_str(rng),
        session_timeout_ms=rng.choice([10_000, 0, -1, 1 << 62, 1000]),
        rebalance_timeout_ms=rng.choice([30_000, 0, -1, 1 << 62]),
    )
    return Req(("group", group), body)


@shape(2)
def offset_commit(rng, mem):
    group = rng.choice(GROUPS + [long_str(rng)])
    member_id, epoch = mem.get("members", {}).get(group) or (long_str(rng), wild_int(rng))
    offsets = [(*read_tp(rng), rng.choice([-5, -1, 0, 1 << 62, rng.randrange(1000)])) for _ in range(rng.randint(0, 5))]
    return Req(("group", group), OffsetCommit(group, offsets, rng.choice(["", member_id]), epoch))


@shape(2)
def group_reads(rng, mem):
    group = rng.choice(GROUPS + [long_str(rng), "canary-check"])
    body = rng.choice(
        [
            OffsetFetch(group, rng.choice([None, [TopicPartition(*read_tp(rng))]]), require_stable=rng.random() < 0.5),
            DescribeGroup(group),
            ListGroups(),
        ]
    )
    return Req(("group", group), body)


# -- half messages -------------------------------------------------------------------------------


@shape(1)
def halves(rng, mem):
    group = rng.choice(["fz-pg", long_str(rng)])
    body = rng.choice(
        [
            EndHalf(
                group, rng.choice([0, -1, 1 << 31]), rng.choice([0, -1, 1 << 62]), rng.random() < 0.5, long_str(rng)
            ),
            PollHalfChecks(group, max_wait_ms=rng.choice([0, -1, 1 << 62]), limit=rng.choice([0, -1, 1 << 31, 10])),
            ListHalves(rng.choice([None, group]), resolved=rng.random() < 0.5),
        ]
    )
    return Req(("any",), body)


# -- broker-only requests, on the client listener ---------------------------------------------------


@shape(2)
def broker_only(rng, mem):
    topic, p = data_tp(rng)
    body = rng.choice(
        [
            WriteTxnMarker(topic, p, rng.randrange(100), rng.choice(EPOCHS), rng.random() < 0.5, wild_int(rng)),
            PendTxnOffsets(rng.choice(GROUPS), rng.choice(TXN_IDS), 1, [TopicPartition(topic, p)]),
            EndTxnOffsets(rng.choice(GROUPS), rng.choice(TXN_IDS), 1, commit=True, offsets=[(topic, p, 1 << 62)]),
            PeerMessages(rng.randbytes(rng.randrange(200))),
        ]
    )
    return Req(("leader", topic, p), body, ErrorCode.CLUSTER_AUTHORIZATION_FAILED)


# -- raw frames, each on a connection of its own -----------------------------------------------------


class Target(NamedTuple):
    client: str  # a node's client listener
    peer: str  # the same node's peer listener


async def exchange(addr: str, data: bytes, *, want: int | None = None, wait: float = 15.0) -> tuple[list, bool]:
    """Write `data` on a fresh connection, read answers until the node closes it, `want`
    answers came or `wait` passed: (answer bodies, whether the node closed it)."""
    host, port = split_addr(addr)
    bodies: list = []
    stream = await trio.open_tcp_stream(host, port)
    try:
        try:
            await stream.send_all(data)
        except (trio.BrokenResourceError, OSError):
            return bodies, True
        decoder = FrameDecoder(DEFAULT_MAX_FRAME_BYTES)
        with trio.move_on_after(wait):
            while want is None or len(bodies) < want:
                try:
                    chunk = await stream.receive_some(1 << 16)
                except (trio.BrokenResourceError, OSError):
                    chunk = b""
                if not chunk:
                    return _checked(bodies), True
                decoder.feed(chunk)
                while (frame := decoder.next_frame()) is not None:
                    bodies.append(decode_payload(frame[1]).body)
        return _checked(bodies), False
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


def _checked(bodies: list) -> list:
    for b in bodies:
        if isinstance(b, ErrorResponse) and b.code == ErrorCode.UNKNOWN:
            raise Finding(f"UNKNOWN answer: {b.message}")
    return bodies


def _outcome(bodies: list, closed: bool) -> str:
    kinds = [
        (ErrorCode(b.code).name if b.code in ErrorCode._value2member_map_ else f"code {b.code}")
        if isinstance(b, ErrorResponse)
        else type(b).__name__
        for b in bodies
    ]
    return "+".join(kinds[:2] + (["closed"] if closed else ["open"]))


def _hello(**kw: Any) -> bytes:
    return encode_frame(0, Hello(PROTOCOL_VERSION, **kw))


async def raw_garbage(rng: random.Random, t: Target) -> str:
    return _outcome(*await exchange(t.client, rng.randbytes(rng.randrange(1, 4096))))


async def raw_bad_version(rng, t):
    """A Hello in a frame of another version (0 is none at all: forged by hand)."""
    frame = bytearray(encode_frame(0, Hello(PROTOCOL_VERSION)))
    frame[4] = rng.choice([0, 2, 255])
    return _outcome(*await exchange(t.client, bytes(frame)))


async def raw_huge_length(rng, t):
    head = struct.pack(">IB", rng.choice([1 << 31, (1 << 32) - 1, 0, 70_000]), PROTOCOL_VERSION)
    return _outcome(*await exchange(t.client, head + rng.randbytes(64)))


async def raw_no_hello(rng, t):
    return _outcome(*await exchange(t.client, encode_frame(1, rng.choice([Metadata(), ListGroups(), Fetch([])]))))


async def raw_huge_hello(rng, t):
    """Beyond the small first-frame limit the node closes; below it, it must serve."""
    big = rng.random() < 0.5
    data = _hello(client_id="c" * (rng.choice([70_000, 1 << 20]) if big else 60_000)) + encode_frame(1, Metadata([]))
    bodies, closed = await exchange(t.client, data, want=None if big else 2)
    if not big and (len(bodies) < 2 or not isinstance(bodies[0], HelloOk)):
        raise Finding(f"a 60 kB client id was not served: {_outcome(bodies, closed)}")
    return _outcome(bodies, closed)


async def raw_bad_hello(rng, t):
    """A wrong protocol version in Hello, or a peer's Hello on the client listener."""
    if rng.random() < 0.5:
        data = encode_frame(0, Hello(rng.choice([0, 2, -1, 1 << 62]), token="t" * rng.randrange(5000)))
        want = ErrorCode.UNSUPPORTED_VERSION
    else:
        data = _hello(peer_node=rng.choice([1, 2, 3, -1]), nonce=rng.randbytes(32)) + encode_frame(
            1, PeerMessages(b"x")
        )
        want = ErrorCode.CLUSTER_AUTHORIZATION_FAILED
    bodies, closed = await exchange(t.client, data)
    if not bodies or not isinstance(bodies[0], ErrorResponse) or bodies[0].code != want:
        raise Finding(f"expected {want.name}, got {_outcome(bodies, closed)}")
    return _outcome(bodies, closed)


async def raw_bad_payload(rng, t):
    payload = rng.choice([rng.randbytes(rng.randrange(1, 500)), b"\x92\x01\x92\xa7Nothing\x00", b"\x92\x01\xc0"])
    frame = struct.pack(">IB", len(payload) + 1, PROTOCOL_VERSION) + payload
    return _outcome(*await exchange(t.client, _hello() + frame))


async def raw_duplicate_ids(rng, t):
    """Well-formed requests with repeated and out-of-order ids: every one is answered."""
    bodies = [
        Metadata([]),
        ListGroups(),
        ListOffsets(CANARY, 0),
        Fetch([FetchPartition(CANARY, 1, 0)], max_wait_ms=0),
        OffsetFetch("fz-g0"),
    ]
    ids = [7, 7, 3, 9, 3, 0, 0]
    data = _hello() + b"".join(encode_frame(i, rng.choice(bodies)) for i in ids)
    got, closed = await exchange(t.client, data, want=len(ids) + 1, wait=30)
    if len(got) < len(ids) + 1:
        raise Finding(f"{len(ids)} requests with ids {ids}: {len(got) - 1} answered ({_outcome(got, closed)})")
    return "answered"


async def raw_never_read(rng, t):
    """Pipeline big answers and never read them; the node must not buffer them all."""
    host, port = split_addr(t.client)
    stream = await trio.open_tcp_stream(host, port)
    frames = [
        encode_frame(i, Fetch([FetchPartition("fz-a", 0, 0, 1 << 20)], max_wait_ms=0) if i % 4 else Metadata())
        for i in range(1, 201)
    ]
    try:
        with trio.move_on_after(rng.uniform(2, 5)):
            await stream.send_all(_hello() + b"".join(frames))
            await trio.sleep_forever()
    except (trio.BrokenResourceError, OSError):
        return "closed"
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()
    return "abandoned"


async def raw_peer_as_client(rng, t):
    """A client with no secret on the peer listener must be refused."""
    try:
        async with open_connection(t.peer, connect_timeout=10):
            pass
    except ClusterAuthorizationError:
        return "CLUSTER_AUTHORIZATION_FAILED"
    except TideMQError as exc:
        if exc.code == ErrorCode.UNKNOWN and type(exc).__name__ == "UnknownError":
            raise Finding(f"UNKNOWN answer on the peer listener: {exc}") from exc
        return type(exc).__name__
    raise Finding("the peer listener admitted a client without the peer secret")


async def raw_peer_bad_proof(rng, t):
    """A peer Hello that cannot prove the secret must never be answered HelloOk."""
    data = _hello(peer_node=rng.choice([1, 2, 3, 99]), nonce=rng.randbytes(rng.choice([32, 1, 300])))
    data += encode_frame(0, PeerProof(rng.randbytes(32))) + encode_frame(1, PeerMessages(rng.randbytes(64)))
    bodies, closed = await exchange(t.peer, data)
    if any(isinstance(b, HelloOk) for b in bodies):
        raise Finding(f"the peer listener admitted a forged proof: {_outcome(bodies, closed)}")
    if bodies and not isinstance(bodies[0], (ErrorResponse, PeerChallenge)):
        raise Finding(f"unexpected answer to a peer Hello: {_outcome(bodies, closed)}")
    return _outcome(bodies, closed)


def _raw_frame(obj: object, version: int = PROTOCOL_VERSION) -> bytes:
    """A frame around any msgpack, not only what the protocol's classes can say."""
    payload = msgspec.msgpack.encode(obj)
    return struct.pack(">IB", len(payload) + 1, version) + payload


async def raw_hello_versions(rng, t):
    """A Hello whose version ranges are garbage, huge or name requests nobody has (with
    trailing fields from a "newer" client), then requests at versions and of types the
    node may not speak: each is answered, a typed error at worst, and the connection
    goes on. A Hello whose ranges are not even a map of pairs is refused, typed."""
    kind = rng.choice(["ranges", "huge", "names", "types"])
    names = list(CLIENT_VERSIONS)
    versions: object
    if kind == "ranges":
        versions = {n: [wild_int(rng), wild_int(rng)] for n in rng.sample(names, rng.randrange(1, len(names)))}
    elif kind == "huge":
        versions = {f"x{i}": [1, rng.choice(INTS)] for i in range(rng.choice([100, 1000, 3000]))}
    elif kind == "names":
        versions = {wild_name(rng) + long_str(rng)[:1000]: [1, 1] for _ in range(rng.randrange(1, 20))}
    else:
        versions = rng.choice(["x", [1, 2], {"Fetch": "b"}, {"Fetch": [1, 2, 3]}, {"Fetch": [1.5, 2]}])
    trailing = rng.choice([[], [None, None, "from a newer client", 7], [None] * 20])  # (after user and scram)
    hello = _raw_frame([0, ["Hello", PROTOCOL_VERSION, "fz-versions", None, None, None, versions, *trailing]])
    if kind == "types":
        bodies, closed = await exchange(t.client, hello)
        if not bodies or not isinstance(bodies[0], ErrorResponse) or bodies[0].code != ErrorCode.INVALID_REQUEST:
            raise Finding(f"a Hello with versions {str(versions)[:60]}: {_outcome(bodies, closed)}")
        return _outcome(bodies, closed)
    newest = CLIENT_VERSIONS["Metadata"][1]
    unspoken = min(newest + rng.choice([1, 2, 200]), 255)  # (a version past what this build speaks)
    data = (
        hello
        + encode_frame(1, Metadata([]), version=unspoken)
        + _raw_frame([2, [f"FromTheFuture{rng.randrange(10)}", wild_int(rng)]], version=rng.randrange(1, 256))
        + encode_frame(3, Metadata([]))
    )
    bodies, closed = await exchange(t.client, data, want=4)
    refused = [b for b in bodies if isinstance(b, ErrorResponse) and b.code == ErrorCode.UNSUPPORTED_VERSION]
    if (
        len(bodies) < 4
        or not isinstance(bodies[0], HelloOk)
        or len(refused) != 2
        or not any(type(b).__name__ == "MetadataResponse" for b in bodies)
    ):
        raise Finding(f"Hello with {kind} versions, then unspoken requests: {_outcome(bodies, closed)}")
    return f"{kind}: answered"


RAW: dict[str, Callable[[random.Random, Target], Awaitable[str]]] = {
    f.__name__: f
    for f in (
        raw_garbage,
        raw_bad_version,
        raw_huge_length,
        raw_no_hello,
        raw_huge_hello,
        raw_bad_hello,
        raw_bad_payload,
        raw_duplicate_ids,
        raw_never_read,
        raw_peer_as_client,
        raw_peer_bad_proof,
        raw_hello_versions,
    )
}
RAW_WEIGHT = 1  # each raw shape, against the request shapes' weights
