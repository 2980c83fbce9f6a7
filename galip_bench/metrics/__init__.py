"""Metric protocols for galip-bench; see ``registry`` for the list and docs/metrics.md for what each matches."""
from galip_bench.metrics.registry import PROTOCOLS, Protocol, Settings, get_protocol  # noqa: F401
