"""The console's consumption chart: messages consumed per bucket from the samples the
overview takes of the groups' committed offsets (a drop, as when a group is deleted,
counts as nothing consumed)."""

from client.console.app import Console


def test_consumption_per_bucket_from_the_overviews_samples():
    c = Console("127.0.0.1:1")
    for t, total in [(5.0, 100), (12.0, 130), (18.0, 150), (31.0, 150), (40.0, 140)]:  # (a group deleted: 140)
        c.consumed.append((t, total))
    assert c.consume_rate([0.0, 10.0, 20.0, 30.0, 50.0]) == [0, 50, 0, 0]
