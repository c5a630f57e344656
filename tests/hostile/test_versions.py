"""Version negotiation under hostile input, against the process cluster: Hellos with
garbage, huge or unknown version ranges (and trailing fields from a "newer" client),
requests at versions and of types no node speaks. Each is answered, a typed error at
worst, the connection goes on where the Hello could be read, and no node stops."""

from __future__ import annotations

import random

import pytest

from scripts.fuzzlib.shapes import Target, raw_hello_versions
from tests.hostile.conftest import assert_unharmed

pytestmark = pytest.mark.timeout(240)


async def test_hellos_with_hostile_version_ranges_get_typed_answers(cluster):
    outcomes = set()
    for seed in range(24):
        node = 1 + seed % 3
        target = Target(cluster.peers[node], cluster.peer_addrs[node])
        outcomes.add((await raw_hello_versions(random.Random(seed), target)).split(":")[0])
    # every kind was drawn: garbage ranges, huge lists, unknown names, and not-a-map
    assert {"ranges", "huge", "names", "INVALID_REQUEST+closed"} <= outcomes, outcomes
    await assert_unharmed(cluster)
