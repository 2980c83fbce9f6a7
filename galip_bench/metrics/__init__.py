"""Metric implementations (FID statistics and distance, GALIP's legacy Inception, torch-fidelity / clean-fid
extractors, CLIP scores, speed, weight files, the reference-statistics cache). The protocols that combine them into
numbers are specs in ``galip_bench.evaluation.protocols``; docs/metrics.md lists them."""
