import random
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2 as kafka_murmur2

from client.partitioner import StickyPartitioner, murmur2, partition_for_key


def test_kafka_reference_vectors():
    # From Kafka's UtilsTest.testMurmur2.
    cases = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    for key, want in cases.items():
        assert murmur2(key) == want, key


@given(st.binary(max_size=64))
def test_matches_kafka_python(key):
    assert murmur2(key) & 0xFFFFFFFF == kafka_murmur2(bytearray(key)) & 0xFFFFFFFF


@given(st.binary(max_size=32), st.integers(1, 1000))
def test_key_partition_in_range_and_stable(key, n):
    p = partition_for_key(key, n)
    assert 0 <= p < n and partition_for_key(key, n) == p


def test_sticky_moves_to_another_partition_per_batch():
    sp = StickyPartitioner(random.Random(1))
    seen = Counter()
    p = sp.partition("t", 4)
    for _ in range(400):
        assert sp.partition("t", 4) == p
        sp.next_batch("t", 4)
        q = sp.partition("t", 4)
        assert q != p
        seen[q] += 1
        p = q
    assert set(seen) == {0, 1, 2, 3}
    sp.next_batch("one", 1)
    assert sp.partition("one", 1) == 0
