"""Per-request versions: the registries, the evolution rule, and the recorded shape of
every version this build speaks.

`wire_versions.json` holds a fingerprint of each (request, version): the fields, in
order, with types and defaults, of the request, its response, `ErrorResponse` and every
message inside them, at that version. A version once recorded never changes: an edit
that changes what an existing version sends fails `test_no_recorded_version_changed`
until the new fields are marked `added` at a new version and the range's max raised.
Record a new version (never rewrites one) with:

    .venv/bin/python -m tests.client.test_versions --record
"""

from __future__ import annotations

import hashlib
import json
import sys
import types
from pathlib import Path
from typing import Any, ClassVar, ForwardRef, Union, get_args, get_origin

import msgspec
import pytest

import client.protocol as protocol
import node.peerprotocol as peerprotocol
from client.errors import RemoteProtocolError
from client.protocol import (
    CLIENT_VERSIONS,
    PROTOCOL_VERSION,
    ErrorResponse,
    Hello,
    HelloOk,
    PeerChallenge,
    PeerProof,
    Request,
    WireMessage,
    agree,
    at_version,
    check_evolution,
    decode_payload,
    encode_frame,
    fields_at,
    newest,
    version_notes,
)
from node.peerprotocol import NODE_VERSIONS, PEER_VERSIONS

RECORD = Path(__file__).with_name("wire_versions.json")
HANDSHAKE = (Hello, HelloOk, PeerChallenge, PeerProof)


def _classes() -> dict[str, type[WireMessage]]:
    """Every message either side of this build knows, by wire name."""
    return {protocol.tag_of(cls): cls for cls in get_args(peerprotocol.NodeBody)}


def response_of(cls: type[WireMessage]) -> type[WireMessage] | None:
    """`R` of a `Request[R]`, resolved in the request's module."""
    for base in getattr(cls, "__orig_bases__", ()):
        if get_origin(base) is Request:
            (arg,) = get_args(base)
            if isinstance(arg, ForwardRef):
                arg = arg.__forward_arg__
            if isinstance(arg, str):
                arg = vars(sys.modules[cls.__module__])[arg]
            return arg
    return None


def _type(t: Any) -> str:
    if isinstance(t, type):
        return t.__name__
    origin, args = get_origin(t), get_args(t)
    if origin in (Union, types.UnionType):
        return " | ".join(_type(a) for a in args)
    if origin is not None:
        return f"{_type(origin)}[{', '.join(_type(a) for a in args)}]"
    return repr(t)


def _field(f: msgspec.structs.FieldInfo) -> str:
    if f.default is not msgspec.NODEFAULT:
        return f"{f.name}: {_type(f.type)} = {f.default!r}"
    if f.default_factory is not msgspec.NODEFAULT:
        return f"{f.name}: {_type(f.type)} = {f.default_factory()!r}"
    return f"{f.name}: {_type(f.type)}"


def shape(cls: type[WireMessage], version: int) -> list[str]:
    """What `cls` is at `version`: one line per message reachable from it."""
    out = []
    for t in sorted(protocol._nested(cls), key=lambda c: c.__name__):
        fields = {f.name: f for f in msgspec.structs.fields(t)}
        out.append(f"{protocol.tag_of(t)}({', '.join(_field(fields[n]) for n in fields_at(t, version))})")
    return out


def request_shape(name: str, version: int) -> list[str]:
    cls = _classes()[name]
    parts = [cls, ErrorResponse] + ([r] if (r := response_of(cls)) is not None else [])
    return sorted({line for part in parts for line in shape(part, version)})


def fingerprint(name: str, version: int) -> str:
    return hashlib.sha256(json.dumps(request_shape(name, version)).encode()).hexdigest()[:16]


def handshake_fields() -> dict[str, list[str]]:
    return {cls.__name__: [_field(f) for f in msgspec.structs.fields(cls)] for cls in HANDSHAKE}


def current() -> dict[str, Any]:
    return {
        "requests": {
            name: {str(v): fingerprint(name, v) for v in range(lo, hi + 1)}
            for name, (lo, hi) in sorted(NODE_VERSIONS.items())
        },
        "handshake": handshake_fields(),
    }


def recorded() -> dict[str, Any]:
    return json.loads(RECORD.read_text())


# -- the registries --------------------------------------------------------------------


def test_every_request_has_a_range_and_every_range_a_request():
    classes = _classes()
    requests = {n for n, c in classes.items() if issubclass(c, Request)}
    assert set(CLIENT_VERSIONS) == {n for n in requests if vars(protocol).get(n) is classes[n]}
    assert set(PEER_VERSIONS) == {protocol.tag_of(c) for c in peerprotocol.PEER_ONLY}
    assert not set(CLIENT_VERSIONS) & set(PEER_VERSIONS)
    for name, (lo, hi) in NODE_VERSIONS.items():
        assert 1 <= lo <= hi <= protocol.MAX_MESSAGE_VERSION, name
        # a field added to the request or its response at a version not yet spoken
        # would never be sent: raise the max with it
        own = [classes[name]] + ([r] if (r := response_of(classes[name])) is not None else [])
        assert all(v <= hi for cls in own for v in cls.added.values()), name


def test_no_recorded_version_changed():
    """An edit to what an existing version sends fails here (bump the version instead)."""
    old, now = recorded()["requests"], current()["requests"]
    changed = [
        f"{name} v{v}: now {request_shape(name, int(v))}"
        for name, versions in now.items()
        for v, fp in versions.items()
        if old.get(name, {}).get(v, fp) != fp
    ]
    assert not changed, (
        "these versions no longer send what they did; append the new fields with defaults, "
        "mark them `added` at a new version and raise the max:\n" + "\n".join(changed)
    )


def test_every_version_spoken_is_recorded():
    old, now = recorded()["requests"], current()["requests"]
    missing = [f"{n} v{v}" for n, vs in now.items() for v in vs if v not in old.get(n, {})]
    assert not missing, f"record them: python -m tests.client.test_versions --record ({missing})"


def test_the_handshake_only_ever_grows_at_its_end():
    """Hello and friends are outside per-request versions: an older node must read a
    newer one's, so their recorded fields stay a prefix of today's."""
    old, now = recorded()["handshake"], handshake_fields()
    for name, fields in old.items():
        assert now[name][: len(fields)] == fields, f"{name} changed a field an older node reads: {now[name]}"


# -- the evolution rule ----------------------------------------------------------------


class Thing(WireMessage):
    name: str
    size: int = 0


class ThingV2(WireMessage, tag="Thing"):
    """`Thing` as the next build would have it."""

    name: str
    size: int = 0
    colour: str = "none"
    parts: list[Thing] = []
    added: ClassVar[dict[str, int]] = {"colour": 2, "parts": 2}


class Box(WireMessage):
    things: list[ThingV2]
    added: ClassVar[dict[str, int]] = {}


def test_an_older_version_drops_the_newer_trailing_fields():
    v2 = ThingV2("a", 3, "red", [Thing("p")])
    assert newest(ThingV2) == 2 and newest(Box) == 2 and newest(Thing) == 1
    old = msgspec.msgpack.decode(encode_frame(1, v2, version=1)[5:])
    assert old == [1, ["Thing", "a", 3]]
    nested = msgspec.msgpack.decode(encode_frame(1, Box([v2]), version=1)[5:])
    assert nested == [1, ["Box", [["Thing", "a", 3]]]]
    whole = msgspec.msgpack.decode(encode_frame(1, v2, version=2)[5:])
    assert whole == [1, ["Thing", "a", 3, "red", [["Thing", "p", 0]]]]
    assert encode_frame(1, v2, version=2)[4] == 2  # the frame says which version it carries


def test_shorter_arrays_fill_defaults_and_longer_ones_are_read_past():
    older = msgspec.msgpack.encode(["Thing", "a", 3])
    assert msgspec.msgpack.decode(older, type=ThingV2) == ThingV2("a", 3)
    newer = msgspec.msgpack.encode(ThingV2("a", 3, "red"))
    assert msgspec.msgpack.decode(newer, type=Thing) == Thing("a", 3)


def test_a_body_is_read_at_its_frames_version():
    """A sender claiming v1 cannot smuggle v2 fields past a reader."""
    assert at_version(ThingV2("a", 3, "red", [Thing("p")]), 1) == ThingV2("a", 3)
    same = ThingV2("a", 3, "red")
    assert at_version(same, 2) is same


def test_the_rule_is_enforced_at_import():
    class Middle(WireMessage):
        a: int = 0
        b: int = 0
        added: ClassVar[dict[str, int]] = {"a": 2}

    class NoDefault(WireMessage):
        a: int
        added: ClassVar[dict[str, int]] = {"a": 2}

    class Disorder(WireMessage):
        a: int = 0
        b: int = 0
        added: ClassVar[dict[str, int]] = {"a": 3, "b": 2}

    class Strict(WireMessage, forbid_unknown_fields=True):
        a: int = 0

    for bad in (Middle, NoDefault, Disorder, Strict):
        with pytest.raises(TypeError):
            check_evolution([bad])
    check_evolution([ThingV2, Box])  # the good ones pass


# -- negotiation -------------------------------------------------------------------------


def test_both_sides_agree_on_the_highest_common_version():
    ours = {"A": (1, 3), "B": (2, 2), "C": (1, 1)}
    assert agree(ours, {"A": (1, 2), "B": (1, 1), "D": (1, 9)}) == {"A": 2}
    assert agree(ours, {}) == {"A": 1, "C": 1}  # a node from before negotiation: all at 1
    garbage = {"A": (5, 1), "B": (-(1 << 62), 1 << 62), "C": (0, 0)}
    assert agree(ours, garbage) == {"B": 2}
    notes = version_notes(ours, {"A": (1, 2), "B": (2, 2), "C": (1, 1), "D": (1, 1)}, "node 1", "node 2")
    assert notes == ["A v2 (node 1 1..3, node 2 1..2)", "D unspoken (node 1 none, node 2 1..1)"]


def test_a_newer_peers_longer_hello_is_read():
    # (fields as this build knows them, then two it does not)
    ours = ["Hello", PROTOCOL_VERSION, "c", None, None, None, {"Fetch": [1, 2]}, "alice", "n,,n=alice,r=x"]
    newer = msgspec.msgpack.encode([0, [*ours, "x", 7]])
    hello = decode_payload(newer).body
    assert isinstance(hello, Hello) and hello.versions == {"Fetch": (1, 2)} and hello.user == "alice"


def test_garbage_in_hello_versions_is_a_protocol_error_not_a_crash():
    bad = msgspec.msgpack.encode([0, ["Hello", PROTOCOL_VERSION, "c", None, None, None, {"Fetch": "x"}]])
    with pytest.raises(RemoteProtocolError, match="malformed Hello") as caught:
        decode_payload(bad)
    assert caught.value.details["tag"] == "Hello"


def record() -> None:
    """Add every version spoken and not yet recorded; never rewrite a recorded one."""
    data = recorded() if RECORD.exists() else {"requests": {}, "handshake": {}}
    now = current()
    for name, versions in now["requests"].items():
        for v, fp in versions.items():
            data["requests"].setdefault(name, {}).setdefault(v, fp)
    for name, fields in now["handshake"].items():
        old = data["handshake"].get(name, [])
        if fields[: len(old)] != old:
            raise SystemExit(f"{name} changed a field an older node reads; not recording")
        data["handshake"][name] = fields
    RECORD.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"recorded {RECORD}")


if __name__ == "__main__" and sys.argv[1:] == ["--record"]:
    record()
