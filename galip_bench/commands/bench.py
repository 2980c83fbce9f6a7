"""`galip-bench bench`: synthesis, training and evaluation speed of the faithful and the fast paths, as a table
and a JSON file (device, versions, settings, every row)."""
import json
import sys

from galip_bench.benchmark import run_bench, table
from galip_bench.config.site import load_site
from galip_bench.devices import check_device
from galip_bench.files import atomic_write_json, check_output_dir, check_output_file


def add_arguments(p):
    p.add_argument("--device", default="auto", help="auto (the GPU when visible), cpu, cuda, cuda:1 ...")
    p.add_argument("--quick", action="store_true",
                   help="the smoke model and small batches (a minute on a CPU) instead of the paper's full-size "
                        "GALIP at batch 64 (about 5 minutes on one H100/H200)")
    p.add_argument("--clip-weights", help="OpenAI CLIP ViT-B/32 weights for the model (default: random init; "
                                          "speed does not depend on the values)")
    p.add_argument("--bench", help="site config (paths.weights: metric weights; default: random init)")
    p.add_argument("--work", help="folder for the generated COCO tree and the training run (default: a temp folder)")
    p.add_argument("--out", help="write the JSON result here")


def run(args) -> int:
    check_device(args.device, "--device")  # before minutes of work, not at its end
    if args.out:
        check_output_file(args.out, "--out")
    if args.work:
        check_output_dir(args.work, "--work")
    result = run_bench(args.device, quick=args.quick, site=load_site(args.bench), clip_weights=args.clip_weights,
                       work=args.work, report=lambda line: print(line, file=sys.stderr, flush=True))
    print(f"galip-bench bench on {result['device']} ({'quick' if args.quick else 'full size'}; metric weights: "
          f"{result['metric_weights']})")
    print(table(result))
    gap = result["fast_vs_faithful_images"]
    print(f"fast vs faithful images (same noise, {gap['images']}): max |diff| {gap['max_abs']:.2e}, mean "
          f"{gap['mean_abs']:.2e}, CLIP cosine mean {gap['cosine_mean']:.5f} (min {gap['cosine_min']:.5f})")
    moved = result["fast_vs_faithful_metrics"]["fast_minus_faithful"]
    print("fast minus faithful on the same samples: " + ", ".join(f"{k} {v:+.4g}" for k, v in moved.items()))
    if args.out:
        atomic_write_json(args.out, json.loads(json.dumps(result, default=str)))
        print(f"wrote {args.out}")
    return 0
