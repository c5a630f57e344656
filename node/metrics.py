"""Prometheus metrics of one node, on a registry of its own (several nodes may share a
process in tests) and served over HTTP by prometheus-client on the configured address."""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from node.config import parse_addr

log = logging.getLogger(__name__)


class NodeMetrics:
    def __init__(self, node_id: int) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tidemq_requests", "Requests served", ["kind", "outcome"], registry=r)
        self.latency = Histogram(
            "tidemq_request_seconds",
            "Request latency",
            ["kind"],
            registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.bytes_in = Counter("tidemq_produce_bytes", "Record batch bytes accepted", ["topic"], registry=r)
        self.bytes_out = Counter("tidemq_fetch_bytes", "Record batch bytes served", ["topic"], registry=r)
        self.sendfile_bytes = Counter(
            "tidemq_fetch_sendfile_bytes",
            "Record batch bytes of fetch answers sent from the segment files to the socket (os.sendfile)",
            registry=r,
        )
        self.protocol_errors = Counter(
            "tidemq_protocol_errors", "Connections closed for a protocol violation", registry=r
        )
        self.auth_failures = Counter(
            "tidemq_auth_failures",
            "Connections refused: bad token, wrong peer secret, or a peer Hello on the client listener",
            registry=r,
        )
        self.authorization_failures = Counter(
            "tidemq_authorization_failures",
            "Requests refused by the ACLs (each also logged with principal, address and resource)",
            ["operation", "resource_type"],
            registry=r,
        )
        self.throttle_seconds = Counter(
            "tidemq_quota_throttle_seconds",
            "Time connections of over-quota principals waited before their next request was read",
            registry=r,
        )
        self.connections_refused = Counter(
            "tidemq_connections_refused", "Connections refused because the listener was at its cap", registry=r
        )
        self.peer_messages_refused = Counter(
            "tidemq_peer_messages_refused",
            "Raft messages from a peer dropped for a forged sender, non-membership or values out of range",
            registry=r,
        )
        self.leaders = Gauge(
            "tidemq_partition_leader", "1 when this node leads the partition", ["topic", "partition"], registry=r
        )
        self.high_watermark = Gauge(
            "tidemq_high_watermark", "Committed offset (exclusive)", ["topic", "partition"], registry=r
        )
        self.under_replicated = Gauge(
            "tidemq_under_replicated_partitions", "Led partitions with a replica behind", registry=r
        )
        self.apply_errors = Gauge(
            "tidemq_apply_errors",
            "Committed entries skipped because they failed to apply (bad data in the log)",
            registry=r,
        )
        self.fsyncs = Gauge("tidemq_log_fsyncs", "Log fsyncs since start (one per group commit)", registry=r)
        self.fsyncs_in_kernel = Gauge(
            "tidemq_log_fsyncs_in_kernel",
            "Log fdatasyncs done by io_uring, without a worker thread (node/aio.py)",
            registry=r,
        )
        self.awake_groups = Gauge(
            "tidemq_raft_groups_awake", "Raft groups not quiescent (the ones ticked); idle groups go quiet", registry=r
        )
        self.move_behind = Gauge(
            "tidemq_replica_move_behind",
            "Offsets a replica being added to a partition (a move) still lacks, on the partition's leader",
            ["topic", "partition", "node"],
            registry=r,
        )
        self.peers_down = Gauge(
            "tidemq_peers_down", "Peers the failure detector has heard nothing from for an election timeout", registry=r
        )

    def forget_topic(self, topic: str, partitions: list[int]) -> None:
        """Drop a deleted topic's label sets: topics come and go, series must not pile up."""
        for metric, labels in (
            (self.bytes_in, [(topic,)]),
            (self.bytes_out, [(topic,)]),
            (self.leaders, [(topic, str(p)) for p in partitions]),
            (self.high_watermark, [(topic, str(p)) for p in partitions]),
        ):
            for values in labels:
                try:
                    metric.remove(*values)
                except KeyError:
                    pass

    def observe_request(self, kind: str, seconds: float, outcome: str) -> None:
        self.requests.labels(kind, outcome).inc()
        self.latency.labels(kind).observe(seconds)

    def serve(self, addr: str, token: str | None = None) -> None:
        """Start the HTTP endpoint on a daemon thread; with `token`, a scrape must send
        `Authorization: Bearer <token>` (others get 401 and count as auth failures)."""
        host, port = parse_addr(addr)
        app = make_wsgi_app(self.registry)
        if token is not None:
            app = _bearer_only(app, token, self.auth_failures)
        httpd = make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
        threading.Thread(target=httpd.serve_forever, name="metrics", daemon=True).start()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - (the stdlib's name)
        pass


def _bearer_only(app: Callable, token: str, failures: Counter) -> Callable:
    expected = f"Bearer {token}".encode()

    def guarded(environ: dict, start_response: Callable) -> Iterable[bytes]:
        given = environ.get("HTTP_AUTHORIZATION", "").encode()
        if hmac.compare_digest(given, expected):
            return app(environ, start_response)
        failures.inc()
        log.warning("refused a metrics scrape from %s: no or a wrong bearer token", environ.get("REMOTE_ADDR"))
        start_response("401 Unauthorized", [("WWW-Authenticate", 'Bearer realm="tidemq"'), ("Content-Length", "0")])
        return [b""]

    return guarded
