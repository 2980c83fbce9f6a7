"""`galip-bench weights`: what each metric protocol needs and what was found (nothing is downloaded)."""
from galip_bench.config.site import load_site
from galip_bench.evaluation.protocols import PROTOCOLS
from galip_bench.metrics.weights import format_weights_report, weights_report


def add_arguments(p):
    p.add_argument("--bench", help="site config (default: $GALIP_BENCH_CONFIG or ./bench.yaml)")


def run(args) -> int:
    site = load_site(args.bench)
    needs = {name: cls.weights_needed() for name, cls in PROTOCOLS.items()}
    print(format_weights_report(weights_report(needs, site.paths.weights)))
    return 0
