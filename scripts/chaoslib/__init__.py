"""The chaos runner's pieces (docs/chaos.md is the guide).

| module | one job |
|---|---|
| `proxy` | fault-injecting TCP proxies: one per directed node link, one per node for clients |
| `cluster` | the node processes, wired through the proxies; settle and leader lookups |
| `nemesis` | the seeded fault schedule, and carrying it out (and healing) step by step |
| `workloads/` | what clients do meanwhile (`Workload` interface; queue, delayed, transactions, ..., kafka) |
| `history` | the JSON-lines history every piece writes into |
| `checker` | the checks run over a history, and availability |
| `runner` | one run from cluster start to report |

`scripts/chaos` is the command; `tests/chaos/` holds the tests, including a seeded run.
"""
