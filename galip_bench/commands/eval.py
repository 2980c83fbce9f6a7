"""`galip-bench eval --checkpoint PATH --data CONFIG --protocols a,b`: evaluate any checkpoint (ours or official)."""
import json
import sys

import pandas as pd

from galip_bench.commands.options import (add_model_source_arguments, add_plan_arguments, announce, eval_config,
                                          model_source, protocol_list)
from galip_bench.config.io import read_data_section
from galip_bench.config.site import load_site
from galip_bench.evaluation.evaluate import evaluate_checkpoint
from galip_bench.files import atomic_write_json


def add_arguments(p):
    p.add_argument("--checkpoint", required=True, help="galip-bench checkpoint or official GALIP .pth")
    p.add_argument("--data", required=True, help="YAML with a `data:` section (the evaluation captions/references)")
    p.add_argument("--protocols", default="fid_galip,clip_score_galip", help="comma-separated protocol names")
    add_plan_arguments(p)
    p.add_argument("--out", help="write the JSON records here")
    p.add_argument("--save-images", metavar="DIR", help="also write the generated images as PNGs")
    add_model_source_arguments(p)


def run(args) -> int:
    eval_cfg = eval_config(args, protocol_list(args.protocols))
    records = evaluate_checkpoint(args.checkpoint, read_data_section(args.data), eval_cfg, load_site(args.bench),
                                  save_images=args.save_images, announce=announce, **model_source(args))
    if args.out:
        atomic_write_json(args.out, records)
    table = pd.DataFrame([{"protocol": r["protocol"], "metric": r["metric"], "value": r["value"],
                           "samples": r.get("num_samples"), "error": r.get("error", "")} for r in records])
    print(table.to_string(index=False))
    if args.out:
        print(f"wrote {len(records)} record(s) to {args.out}")
    else:
        print(json.dumps(records[0]["settings"], indent=1) if records else "")
    failed = sorted({r["protocol"] for r in records if r.get("error")})
    if failed:
        print(f"{len(failed)} protocol(s) failed: {', '.join(failed)} (their records say why)", file=sys.stderr)
        return 1
    return 0
