"""`galip-bench eval --checkpoint PATH --data CONFIG --protocols a,b`: evaluate any checkpoint (ours or official)."""
import json
import sys

import pandas as pd

from galip_bench.atomic import atomic_write_json
from galip_bench.config import merge_onto, read_yaml, to_object
from galip_bench.data.config import DataConfig
from galip_bench.errors import UserError
from galip_bench.evaluation.evaluate import evaluate_checkpoint
from galip_bench.schema import EvalConfig
from galip_bench.site import load_site


def add_arguments(p):
    p.add_argument("--checkpoint", required=True, help="galip-bench checkpoint or official GALIP .pth")
    p.add_argument("--data", required=True, help="YAML with a `data:` section (the evaluation captions/references)")
    p.add_argument("--protocols", default="fid_galip,clip_score_galip", help="comma-separated protocol names")
    add_plan_arguments(p)
    p.add_argument("--out", help="write the JSON records here")
    p.add_argument("--save-images", metavar="DIR", help="also write the generated images as PNGs")
    add_model_source_arguments(p)


def add_plan_arguments(p):
    """The sample plan and extractor options (shared by eval and regress --write-baseline)."""
    p.add_argument("--num", type=int, help="N samples cycling over the test images (default: each protocol's plan, "
                                           "for most the official test loop)")
    p.add_argument("--passes", type=int, help="passes of the official test loop (default: the dataset's "
                                              "sample_times: COCO 1, CUB 12)")
    p.add_argument("--batch", type=int, default=64, help="generation batch size (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise stream and caption choices")
    p.add_argument("--reference", choices=["auto", "npz", "split"], default="auto",
                   help="GALIP protocols' statistics: GALIP's released npz when present (auto), required (npz), "
                        "or the test split (split)")
    p.add_argument("--extractor", choices=["default", "tiny"], default="default",
                   help="tiny: small random-init extractors (tests, smoke; not comparable to published numbers)")


def add_model_source_arguments(p):
    """How to build the model of a checkpoint and where to run it (shared by eval, regress and speed)."""
    p.add_argument("--model-config", help="YAML `model:` section describing an official checkpoint")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--clip-weights", help="OpenAI CLIP ViT-B/32 weights (overrides the checkpoint's model.clip.pretrained)")
    p.add_argument("--allow-clip-mismatch", action="store_true",
                   help="load an official checkpoint although its CLIP-ViT copy differs from --clip-weights")
    p.add_argument("--device", default="auto")
    p.add_argument("--bench", help="site config (default: $GALIP_BENCH_CONFIG or ./bench.yaml)")
    p.add_argument("--allow-download", action="store_true", help="let metric weights download when missing")


def data_config(path) -> DataConfig:
    """The `data:` section of a YAML file as a DataConfig (unknown keys / wrong types name the key and file)."""
    conf = read_yaml(path)
    if "data" not in conf:
        raise UserError(f"{path} has no `data:` section (e.g. `data: {{kind: coco, root: data/coco}}`)")
    return to_object(merge_onto(DataConfig, conf["data"], source=path), path)


def protocol_list(text) -> list:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def eval_config(args, protocols) -> EvalConfig:
    return EvalConfig(protocols=protocols, num_samples=args.num, passes=args.passes, batch_size=args.batch,
                      seed=args.seed, extractor=args.extractor, reference=args.reference)


def model_source(args) -> dict:
    return {"device": args.device, "model_config": args.model_config, "overrides": list(args.overrides),
            "clip_weights": args.clip_weights, "allow_clip_mismatch": args.allow_clip_mismatch,
            "allow_download": args.allow_download}


def announce(lines) -> None:
    print("evaluation plan:\n" + "\n".join(f"  {line}" for line in lines), file=sys.stderr)


def run(args) -> int:
    eval_cfg = eval_config(args, protocol_list(args.protocols))
    records = evaluate_checkpoint(args.checkpoint, data_config(args.data), eval_cfg, load_site(args.bench),
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
