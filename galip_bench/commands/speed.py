"""`galip-bench speed`: synthesis latency (batch 1) and throughput (largest batch that fits) of text encoding +
generator, plus parameter counts, for a checkpoint or a random init of a model config."""
import json

import pandas as pd

from galip_bench.commands.options import add_synthesis_argument, model_source
from galip_bench.config.schema import EvalConfig
from galip_bench.config.site import load_site
from galip_bench.errors import UserError
from galip_bench.evaluation.evaluate import evaluate_checkpoint
from galip_bench.devices import check_device
from galip_bench.files import atomic_write_json, check_output_file


def add_arguments(p):
    p.add_argument("--checkpoint", help="galip-bench or official checkpoint (default: random init of the config)")
    p.add_argument("--config", dest="model_config", help="YAML `model:` section (without --checkpoint, or for an "
                                                         "official one)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--clip-weights", help="OpenAI CLIP weights (default: random init of the architecture)")
    p.add_argument("--allow-clip-mismatch", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--bench", help="site config (default: $GALIP_BENCH_CONFIG or ./bench.yaml)")
    p.add_argument("--batch-sizes", help="comma-separated batch sizes (default: 1,8,32,64,128,256 on a GPU, "
                                          "1,4,16 on a CPU)")
    p.add_argument("--repeats", type=int, help="timed calls per batch size (default: 10 on a GPU, 5 on a CPU)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first (default: 3)")
    add_synthesis_argument(p)
    p.add_argument("--out", help="write the JSON records here")
    p.set_defaults(allow_download=False)


def _batch_sizes(text) -> tuple:
    try:
        sizes = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise UserError(f"--batch-sizes {text!r}: expected comma-separated integers, e.g. 1,8,64") from None
    if not sizes or min(sizes) < 1:
        raise UserError(f"--batch-sizes {text!r}: batch sizes must be at least 1")
    return sizes


def run(args) -> int:
    check_device(args.device, "--device")
    if args.out:
        check_output_file(args.out, "--out")
    if (args.repeats is not None and args.repeats < 1) or args.warmup < 0:
        raise UserError("--repeats must be at least 1 and --warmup at least 0")
    options = {"speed": {"batch_sizes": _batch_sizes(args.batch_sizes) if args.batch_sizes else None,
                         "repeats": args.repeats, "warmup": args.warmup}}
    eval_cfg = EvalConfig(protocols=["speed"], synthesis=args.synthesis)
    records = evaluate_checkpoint(args.checkpoint, None, eval_cfg, load_site(args.bench),
                                  options=options, **model_source(args))
    values = {r["metric"]: r["value"] for r in records}
    table = pd.DataFrame([{"batch": int(k[len("img_s_b"):]), "img_per_s": v} for k, v in values.items()
                          if k.startswith("img_s_b")])
    print(table.to_string(index=False))
    print(f"latency {values['latency_ms']:.1f} ms (batch {int(values['latency_batch'])}), throughput "
          f"{values['throughput_img_s']:.1f} img/s (batch {int(values['throughput_batch'])}) on {records[0]['device']}")
    print("parameters: " + ", ".join(f"{k[len('params_'):]} {int(v):,}" for k, v in values.items()
                                     if k.startswith("params_")))
    if args.out:
        atomic_write_json(args.out, json.loads(json.dumps(records, default=str)))
        print(f"wrote {len(records)} record(s) to {args.out}")
    return 0
