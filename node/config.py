"""Node settings: from command-line flags, a TOML file, or both (flags win).

    python -m node --id 1 --listen 127.0.0.1:9401 \
        --peers 1=127.0.0.1:9401,2=127.0.0.1:9402,3=127.0.0.1:9403 --data data/n1

The peer list names every node of the cluster including this one; it is the initial
membership of the controller group (group 0). `--advertise` (optional, same shape)
names the address clients are told to use for each node, in metadata and in leader and
coordinator hints, when it is not the address this node dials (a proxy or NAT between
clients and nodes; the chaos runner puts a fault-injecting proxy on every link).
"""

from __future__ import annotations

import argparse
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from client.protocol import split_addr as parse_addr


def parse_peers(spec: str) -> dict[int, str]:
    peers: dict[int, str] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        node, sep, addr = item.partition("=")
        if not sep or not node.isdigit():
            raise ValueError(f"peer {item!r} is not ID=HOST:PORT")
        parse_addr(addr)
        peers[int(node)] = addr
    return peers


def _tiers(spec: str) -> list[int]:
    try:
        tiers = sorted({int(float(x) * 1000) for x in spec.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--delay-tiers wants seconds like 0.5,1,2, not {spec!r}") from None
    if not tiers or tiers[0] <= 0:
        raise argparse.ArgumentTypeError("--delay-tiers needs positive durations")
    return tiers


@dataclass
class NodeConfig:
    node_id: int
    listen: str
    data_dir: Path
    peers: dict[int, str] = field(default_factory=dict)
    advertise: dict[int, str] = field(default_factory=dict)   # node -> address for clients; default: peers
    token: str | None = None
    metrics: str | None = None          # HOST:PORT of the Prometheus endpoint, or None
    fsync: str = "always"               # always | interval | never (see docs/node.md)
    fsync_interval_ms: int = 50
    tick_ms: int = 50                   # one Raft tick
    election_ticks: int = 10
    heartbeat_ticks: int = 2
    segment_bytes: int = 128 * 1024 * 1024
    retention_check_ms: int = 60_000
    controller_snapshot_every: int = 1000   # controller entries between snapshots
    delay_tiers_ms: list[int] | None = None  # the delay ladder (None: client.delay.DEFAULT_TIERS_MS)
    delay_partitions: int = 3
    max_batch_bytes: int = 8 * 1024 * 1024
    max_frame_bytes: int = 16 * 1024 * 1024 + 4096
    max_inflight_per_connection: int = 256
    offsets_partitions: int = 8          # partitions of __consumer_offsets (fixed once created)
    txn_partitions: int = 4              # partitions of __transaction_state (fixed once created)
    half_partitions: int = 4             # partitions of __half_messages (fixed once created)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        if not self.peers:
            self.peers = {self.node_id: self.listen}
        if self.peers.get(self.node_id, self.listen) != self.listen:
            raise ValueError(f"--peers says node {self.node_id} is at {self.peers[self.node_id]}, --listen says {self.listen}")
        self.peers.setdefault(self.node_id, self.listen)
        if self.offsets_partitions < 1:
            raise ValueError(f"offsets_partitions must be >= 1, not {self.offsets_partitions}")
        if self.txn_partitions < 1:
            raise ValueError(f"txn_partitions must be >= 1, not {self.txn_partitions}")
        if self.half_partitions < 1:
            raise ValueError(f"half_partitions must be >= 1, not {self.half_partitions}")
        if self.fsync not in ("always", "interval", "never"):
            raise ValueError(f"fsync must be always, interval or never, not {self.fsync!r}")
        parse_addr(self.listen)
        if set(self.advertise) - set(self.peers):
            raise ValueError(f"--advertise names nodes that --peers does not: {sorted(set(self.advertise) - set(self.peers))}")
        for addr in self.advertise.values():
            parse_addr(addr)

    def client_addr(self, node: int) -> str | None:
        """Where clients reach `node`: its advertised address, else its peer address."""
        return self.advertise.get(node) or self.peers.get(node)

    @classmethod
    def from_args(cls, argv: list[str] | None = None) -> "NodeConfig":
        p = argparse.ArgumentParser(prog="python -m node", description="Run one TideMQ broker node.")
        p.add_argument("--config", type=Path, help="TOML file with the same keys as the flags (node_id, listen, peers, data_dir, ...)")
        p.add_argument("--id", dest="node_id", type=int)
        p.add_argument("--listen", help="HOST:PORT for clients and peers")
        p.add_argument("--peers", help="every node of the cluster: ID=HOST:PORT,...")
        p.add_argument("--advertise", help="address clients should use for each node: ID=HOST:PORT,... (default: --peers)")
        p.add_argument("--data", dest="data_dir", type=Path, help="data directory")
        p.add_argument("--token", help="cluster token (default: $TIDEMQ_TOKEN)")
        p.add_argument("--metrics", help="HOST:PORT for the Prometheus endpoint")
        p.add_argument("--fsync", choices=["always", "interval", "never"])
        p.add_argument("--tick-ms", dest="tick_ms", type=int)
        p.add_argument("--delay-tiers", dest="delay_tiers_ms", type=_tiers,
                       help="delay ladder in seconds, e.g. 0.5,1,2 (default 0.1,0.5,1,5,30,120,600,3600,21600,86400)")
        args = p.parse_args(argv)
        values: dict = {}
        if args.config:
            with open(args.config, "rb") as f:
                values.update(tomllib.load(f))
            for key in ("peers", "advertise"):
                if isinstance(values.get(key), dict):
                    values[key] = {int(k): v for k, v in values[key].items()}
                elif isinstance(values.get(key), str):
                    values[key] = parse_peers(values[key])
        for f in fields(cls):
            v = getattr(args, f.name, None)
            if v is not None:
                values[f.name] = parse_peers(v) if f.name in ("peers", "advertise") else v
        values.setdefault("token", os.environ.get("TIDEMQ_TOKEN") or None)
        missing = [n for n in ("node_id", "listen", "data_dir") if values.get(n) is None]
        if missing:
            p.error("missing " + ", ".join("--" + m.replace("node_id", "id").replace("data_dir", "data") for m in missing))
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            p.error(f"unknown settings in {args.config}: {', '.join(sorted(unknown))}")
        try:
            return cls(**values)
        except (ValueError, TypeError) as exc:
            p.error(str(exc))
