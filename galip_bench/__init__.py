"""galip-bench: evaluation and ablation benchmarking for GALIP."""

__version__ = "0.1.0"
