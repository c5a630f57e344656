"""The words of quotas: what may be limited per principal, and the check of a setting
before it reaches the controller's log (node/quotas.py applies them).

Kafka's names for the two byte rates; the third is a plain request rate (Kafka's
`request_percentage` is a share of its I/O threads, which a node here does not have).
"""

from __future__ import annotations

import math

from client.errors import InvalidRequestError

PRODUCE_RATE = "producer_byte_rate"  # bytes/s of record batches produced
FETCH_RATE = "consumer_byte_rate"  # bytes/s of record batches fetched
REQUEST_RATE = "request_rate"  # requests/s of any kind
QUOTA_KEYS = (PRODUCE_RATE, FETCH_RATE, REQUEST_RATE)
EVERY_USER = "User:*"  # the quotas of every user without their own
MAX_RATE = 1e12


def check_quotas(principal: str, values: dict[str, float], delete: list[str]) -> None:
    """Refuse a quota no node should apply (InvalidRequestError saying why)."""
    kind, _, name = principal.partition(":")
    if kind != "User" or not name or len(name) > 255:
        raise InvalidRequestError(f"principal {principal!r} is not User:NAME (or {EVERY_USER} for every user)")
    for key in [*values, *delete]:
        if key not in QUOTA_KEYS:
            raise InvalidRequestError(f"unknown quota {key!r}; known: {', '.join(QUOTA_KEYS)}")
    for key, value in values.items():
        if not (isinstance(value, int | float) and math.isfinite(value) and 0 < value <= MAX_RATE):
            raise InvalidRequestError(f"quota {key} must be a positive rate up to {MAX_RATE:.0e}, not {value!r}")
    if set(values) & set(delete):
        raise InvalidRequestError(f"{sorted(set(values) & set(delete))[0]!r} is both set and deleted")
