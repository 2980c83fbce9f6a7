"""`galip-bench weights`: what each metric protocol needs and what was found (nothing is downloaded);
`galip-bench weights build shapes`: build the shapes benchmark's trained CLIP and scene reader into paths.cache (or
find them there) and print what they score."""
from galip_bench.config.site import load_site
from galip_bench.evaluation.protocols import PROTOCOLS
from galip_bench.metrics.weights import format_weights_report, weights_report


def add_arguments(p):
    p.add_argument("action", nargs="?", choices=["build"], help="build: train the project's own evaluators")
    p.add_argument("target", nargs="?", choices=["shapes"], help="shapes: the shapes CLIP and scene reader")
    p.add_argument("--bench", help="site config (default: $GALIP_BENCH_CONFIG or ./bench.yaml)")


def run(args) -> int:
    site = load_site(args.bench)
    if args.action == "build":
        from galip_bench.shapes.cache import load_clip, load_reader
        clip = load_clip(site.paths.cache)[1]
        print(f"shapes CLIP    {clip['path']}\n  recipe {clip['recipe_hash']}, sha256 {clip['sha256']}\n"
              f"  caption -> image top-1 retrieval on {clip['recipe']['test_scenes']:,} fresh scenes: "
              f"{clip['retrieval_top1']:.3f}")
        reader = load_reader(site.paths.cache)[1]
        accuracy = ", ".join(f"{k} {v:.4f}" for k, v in reader["accuracy"].items())
        print(f"shapes reader  {reader['path']}\n  recipe {reader['recipe_hash']}, sha256 {reader['sha256']}\n"
              f"  accuracy on {reader['recipe']['test_scenes']:,} other fresh renders: {accuracy}")
        return 0
    needs = {name: cls.weights_needed() for name, cls in PROTOCOLS.items()}
    print(format_weights_report(weights_report(needs, site.paths.weights)))
    built = [name for name, cls in PROTOCOLS.items() if getattr(cls, "build_cached", None)]
    print(f"{', '.join(built)}: the project's own evaluators (and the shapes profile's CLIP), trained into "
          f"{site.paths.cache}/shapes on first use or by `galip-bench weights build shapes`; nothing to download")
    return 0
