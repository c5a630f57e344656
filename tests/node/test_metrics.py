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
