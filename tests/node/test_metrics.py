"""Metrics: a deleted topic's series go with it (label sets must not pile up)."""

from prometheus_client import generate_latest

from node.metrics import NodeMetrics


def test_a_deleted_topic_leaves_no_series():
    m = NodeMetrics(1)
    m.bytes_in.labels("gone").inc(10)
    m.leaders.labels("gone", "0").set(1)
    m.high_watermark.labels("gone", "1").set(5)
    m.bytes_in.labels("kept").inc(1)
    m.forget_topic("gone", [0, 1])
    m.forget_topic("never-seen", [0])
    text = generate_latest(m.registry).decode()
    assert 'topic="gone"' not in text and 'topic="kept"' in text


def test_the_endpoint_can_require_a_bearer_token():
    import urllib.error
    import urllib.request

    from tests.cluster import free_ports

    m = NodeMetrics(1)
    (port,) = free_ports(1)
    m.serve(f"127.0.0.1:{port}", token="s3cret")
    url = f"http://127.0.0.1:{port}/metrics"
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        try:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5)
            raise AssertionError("scraped without the token")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401 and exc.headers["WWW-Authenticate"].startswith("Bearer")
    with urllib.request.urlopen(
        urllib.request.Request(url, headers={"Authorization": "Bearer s3cret"}), timeout=5
    ) as r:
        text = r.read().decode()
    assert "tidemq_auth_failures_total 2.0" in text
