"""The hostile-input fuzzer behind `scripts/fuzz` (issue 13, "Tests and tools").

- `shapes`: one small function per hostile request shape, each drawing its values from
  a seeded `random.Random`, plus the raw-socket shapes (frames that break the protocol);
- `runner`: the live cluster, the concurrent hostile clients, the canary producer and
  consumer, and the end-of-run checks (nodes up, canary intact, replicas identical,
  memory bounded).
"""
