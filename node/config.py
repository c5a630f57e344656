"""Node settings: from command-line flags, a TOML file, or both (flags win).

    TIDEMQ_PEER_SECRET=... python -m node --id 1 --listen 127.0.0.1:9401 \
        --peer-listen 127.0.0.1:9501 \
        --peers 1=127.0.0.1:9501,2=127.0.0.1:9502,3=127.0.0.1:9503 \
        --advertise 1=127.0.0.1:9401,2=127.0.0.1:9402,3=127.0.0.1:9403 --data data/n1

A node has two listeners: `--listen` for clients and `--peer-listen` for the other
nodes (Raft and broker-to-broker requests), as Kafka separates its inter-broker
listener. `--peers` names every node's peer listener, this one's included; it is the
initial membership of the controller group (group 0). `--advertise` names every node's
client address, which clients are told in metadata and in leader and coordinator hints
(the chaos runner puts a fault-injecting proxy on every link, so these differ from the
addresses the nodes bind). Nodes prove themselves to each other with the peer secret
(`--peer-secret` or, better, `$TIDEMQ_PEER_SECRET`, which `ps` does not show); a
one-node cluster without one makes a throwaway secret of its own.
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


def _principals(spec: str | list[str]) -> tuple[str, ...]:
    names = spec.split(",") if isinstance(spec, str) else spec
    out = tuple(n.strip() for n in names if n.strip())
    bad = [n for n in out if not n.startswith("User:") or n == "User:"]
    if bad:
        raise argparse.ArgumentTypeError(f"--super-users wants principals like User:admin, not {bad[0]!r}")
    return out


@dataclass
class NodeConfig:
    node_id: int
    listen: str
    data_dir: Path
    peers: dict[int, str] = field(default_factory=dict)  # node -> its peer listener
    advertise: dict[int, str] = field(default_factory=dict)  # node -> its client address
    peer_listen: str = ""  # default: this node in `peers`, else the client host, any port
    kafka_listen: str = ""  # HOST:PORT of the Kafka protocol listener; empty: none (docs/kafka.md)
    kafka_advertise: str = ""  # the Kafka address clients are told for this node (default: kafka_listen)
    peer_secret: str | None = None
    #: A node of an existing cluster's peer listener: this node is new and asks to join
    #: (`tidemq cluster add-node` admits it; node/roster.py); `peers` is then only how it
    #: reaches those nodes (the roster names the rest). Without it, `peers` founds a cluster.
    join: str | None = None
    # TLS (node/tls.py): with a certificate and key, the client and Kafka listeners speak
    # only TLS; with the CA too, the peer links are mutual TLS.
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    require_users: bool = False  # clients must log in as a user (SCRAM); the token still admits, deprecated
    super_users: tuple[str, ...] = ()  # principals (User:NAME) the ACLs do not bind (node/acl.py)
    token: str | None = None
    metrics: str | None = None  # HOST:PORT of the Prometheus endpoint, or None
    metrics_token: str | None = None  # scrapes must send it as a bearer token
    fsync: str = "always"  # always | interval | never (see docs/node.md)
    fsync_interval_ms: int = 50
    tick_ms: int = 50  # one Raft tick
    election_ticks: int = 10
    heartbeat_ticks: int = 2
    quiesce: bool = True  # idle Raft groups go quiet (docs/raft.md, "Idle groups: quiescence")
    #: A partition's new entries go at once to a commit's quorum, the other replicas
    #: trail by up to a tick (docs/raft.md, "Thrifty appends").
    thrifty_appends: bool = True
    segment_bytes: int = 128 * 1024 * 1024
    min_segment_bytes: int = 1 << 20  # the least segment.bytes a topic may set
    min_segment_ms: int = 60_000  # the least segment.ms a topic may set
    retention_check_ms: int = 60_000
    controller_snapshot_every: int = 1000  # controller entries between snapshots
    delay_tiers_ms: list[int] | None = None  # the delay ladder (None: client.conventions.DEFAULT_TIERS_MS)
    delay_partitions: int = 3
    max_batch_bytes: int = 8 * 1024 * 1024
    max_records_bytes: int = 32 * 1024 * 1024  # a batch's records, decompressed
    min_free_bytes: int = 64 * 1024 * 1024  # below this free on the data disk, produce is refused (retriable)
    message_timestamp_before_max_ms: int | None = None  # how old a create time may be (None: any)
    message_timestamp_after_max_ms: int | None = 3_600_000  # how far ahead of this node's clock
    max_frame_bytes: int = 16 * 1024 * 1024 + 4096
    max_inflight_per_connection: int = 256
    max_connections: int = 1000  # per listener
    max_queued_bytes_per_connection: int = 64 * 1024 * 1024  # answers not yet read by the client
    idle_timeout_s: float = 600.0  # a client connection with nothing asked or owed
    offsets_retention_ms: int = 7 * 24 * 3600 * 1000  # a group with no members keeps its offsets this long
    producer_id_expiration_ms: int = 7 * 24 * 3600 * 1000  # an idle producer id's dedup state, by log time
    offsets_partitions: int = 8  # partitions of __consumer_offsets (fixed once created)
    txn_partitions: int = 4  # partitions of __transaction_state (fixed once created)
    half_partitions: int = 4  # partitions of __half_messages (fixed once created)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        parse_addr(self.listen)
        if not self.peer_listen:
            self.peer_listen = self.peers.get(self.node_id) or f"{parse_addr(self.listen)[0]}:0"
        parse_addr(self.peer_listen)
        if self.peers.get(self.node_id, self.peer_listen) != self.peer_listen:
            raise ValueError(
                f"--peers says node {self.node_id} is at {self.peers[self.node_id]}, "
                f"--peer-listen says {self.peer_listen}"
            )
        self.peers.setdefault(self.node_id, self.peer_listen)
        if self.peer_listen == self.listen:
            raise ValueError("--peer-listen must differ from --listen: clients never reach the peer listener")
        self.advertise.setdefault(self.node_id, self.listen)
        unadvertised = sorted(set(self.peers) - set(self.advertise))
        if unadvertised:
            raise ValueError(
                f"--advertise must name the client address of every node in --peers; missing {unadvertised}"
            )
        if self.join is not None:  # (its --peers, if any, only say how it reaches those nodes)
            parse_addr(self.join)
        if self.peer_secret is None and (len(self.peers) > 1 or self.join is not None):
            raise ValueError(
                "a cluster of several nodes needs a peer secret: set TIDEMQ_PEER_SECRET (or --peer-secret) "
                "to the same value on every node; scripts/cluster up makes one"
            )
        if self.offsets_partitions < 1:
            raise ValueError(f"offsets_partitions must be >= 1, not {self.offsets_partitions}")
        if self.txn_partitions < 1:
            raise ValueError(f"txn_partitions must be >= 1, not {self.txn_partitions}")
        if self.half_partitions < 1:
            raise ValueError(f"half_partitions must be >= 1, not {self.half_partitions}")
        for name in ("offsets_retention_ms", "producer_id_expiration_ms"):
            if getattr(self, name) < 1000:
                raise ValueError(f"{name} must be at least 1000, not {getattr(self, name)}")
        if self.fsync not in ("always", "interval", "never"):
            raise ValueError(f"fsync must be always, interval or never, not {self.fsync!r}")
        if set(self.advertise) - set(self.peers):
            raise ValueError(
                f"--advertise names nodes that --peers does not: {sorted(set(self.advertise) - set(self.peers))}"
            )
        for addr in self.advertise.values():
            parse_addr(addr)
        if self.kafka_listen:
            parse_addr(self.kafka_listen)
            if self.kafka_listen in (self.listen, self.peer_listen):
                raise ValueError("--kafka-listen must differ from --listen and --peer-listen")
            self.kafka_advertise = self.kafka_advertise or self.kafka_listen
        if self.kafka_advertise:
            parse_addr(self.kafka_advertise)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.tls_ca is not None and self.tls_cert is None:
            raise ValueError("--tls-ca needs --tls-cert and --tls-key: the CA checks peers, the certificate is ours")
        for flag, path in (("--tls-cert", self.tls_cert), ("--tls-key", self.tls_key), ("--tls-ca", self.tls_ca)):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{flag} {path}: no such file")

    @property
    def config_minimums(self) -> dict[str, int]:
        """The least topic config values this node accepts (and clamps to on apply)."""
        return {"segment.bytes": self.min_segment_bytes, "segment.ms": self.min_segment_ms}

    def client_addr(self, node: int) -> str | None:
        """Where clients reach `node` (never its peer listener)."""
        return self.advertise.get(node)

    @classmethod
    def from_args(cls, argv: list[str] | None = None) -> NodeConfig:
        p = argparse.ArgumentParser(prog="python -m node", description="Run one TideMQ broker node.")
        p.add_argument(
            "--config",
            type=Path,
            help="TOML file with the same keys as the flags (node_id, listen, peers, data_dir, ...)",
        )
        p.add_argument("--id", dest="node_id", type=int)
        p.add_argument("--listen", help="HOST:PORT for clients")
        p.add_argument(
            "--peer-listen", dest="peer_listen", help="HOST:PORT for the other nodes (default: this node in --peers)"
        )
        p.add_argument("--peers", help="every node's peer listener: ID=HOST:PORT,...")
        p.add_argument(
            "--join",
            metavar="HOST:PORT",
            help="join an existing cluster through this node's peer listener (then: tidemq cluster add-node)",
        )
        p.add_argument(
            "--advertise", help="every node's client address: ID=HOST:PORT,... (this node's default: --listen)"
        )
        p.add_argument(
            "--kafka-listen", dest="kafka_listen", help="HOST:PORT for Kafka protocol clients (default: none)"
        )
        p.add_argument(
            "--kafka-advertise",
            dest="kafka_advertise",
            help="the HOST:PORT Kafka clients are told for this node (default: --kafka-listen)",
        )
        p.add_argument(
            "--peer-secret",
            dest="peer_secret",
            help="shared secret the nodes prove to each other (default: $TIDEMQ_PEER_SECRET)",
        )
        p.add_argument("--tls-cert", dest="tls_cert", help="this node's certificate (PEM): listeners speak TLS only")
        p.add_argument("--tls-key", dest="tls_key", help="the certificate's private key (PEM)")
        p.add_argument(
            "--tls-ca",
            dest="tls_ca",
            help="CA (PEM) of the cluster: peer links become mutual TLS, client certificates are checked",
        )
        p.add_argument(
            "--require-users",
            dest="require_users",
            action="store_const",
            const=True,
            help="clients must log in as a user (tidemq user add); the token, if set, still admits; ACLs apply",
        )
        p.add_argument(
            "--super-users",
            dest="super_users",
            type=_principals,
            metavar="User:A,User:B",
            help="principals allowed everything whatever the ACLs say (with --require-users)",
        )
        p.add_argument("--data", dest="data_dir", type=Path, help="data directory")
        p.add_argument("--token", help="cluster token (default: $TIDEMQ_TOKEN)")
        p.add_argument("--metrics", help="HOST:PORT for the Prometheus endpoint")
        p.add_argument(
            "--metrics-token",
            dest="metrics_token",
            help="scrapes must send 'Authorization: Bearer TOKEN' (default: $TIDEMQ_METRICS_TOKEN)",
        )
        p.add_argument("--fsync", choices=["always", "interval", "never"])
        p.add_argument("--tick-ms", dest="tick_ms", type=int)
        p.add_argument(
            "--no-thrifty-appends",
            dest="thrifty_appends",
            action="store_const",
            const=False,
            help="send a partition's new entries to every replica at once, not only to a commit's quorum",
        )
        p.add_argument(
            "--delay-tiers",
            dest="delay_tiers_ms",
            type=_tiers,
            help="delay ladder in seconds, e.g. 0.5,1,2 (default 0.1,0.5,1,5,30,120,600,3600,21600,86400)",
        )
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
        for fld in fields(cls):
            v = getattr(args, fld.name, None)
            if v is not None:
                values[fld.name] = parse_peers(v) if fld.name in ("peers", "advertise") else v
        if isinstance(values.get("super_users"), list):  # (from the TOML file)
            try:
                values["super_users"] = _principals(values["super_users"])
            except argparse.ArgumentTypeError as exc:
                p.error(str(exc))
        values.setdefault("token", os.environ.get("TIDEMQ_TOKEN") or None)
        values.setdefault("peer_secret", os.environ.get("TIDEMQ_PEER_SECRET") or None)
        values.setdefault("metrics_token", os.environ.get("TIDEMQ_METRICS_TOKEN") or None)
        missing = [n for n in ("node_id", "listen", "data_dir") if values.get(n) is None]
        if missing:
            p.error(
                "missing " + ", ".join("--" + m.replace("node_id", "id").replace("data_dir", "data") for m in missing)
            )
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            p.error(f"unknown settings in {args.config}: {', '.join(sorted(unknown))}")
        try:
            return cls(**values)
        except (ValueError, TypeError) as exc:
            p.error(str(exc))
