"""`galip-bench eval --checkpoint PATH --data CONFIG --protocols a,b`: evaluate any checkpoint (ours or official)."""
import json
import time
from pathlib import Path

import pandas as pd

from galip_bench.atomic import atomic_write_json
from galip_bench.checkpoint import config_of, load_nets, load_official_nets, read_checkpoint
from galip_bench.clip_weights import build_clip
from galip_bench.config import merge_onto, read_yaml, to_object
from galip_bench.data.config import DataConfig
from galip_bench.evaluate import Evaluator, make_protocols
from galip_bench.metrics.weights import file_sha256
from galip_bench.modelcfg import model_config
from galip_bench.schema import EvalConfig, RunConfig
from galip_bench.site import load_site
from galip_bench.train.loop import resolve_device
from models import GALIP


def add_arguments(p):
    p.add_argument("--checkpoint", required=True, help="galip-bench checkpoint or official GALIP .pth")
    p.add_argument("--data", required=True, help="YAML with a `data:` section (the evaluation captions/references)")
    p.add_argument("--protocols", default="fid_galip,clip_score_galip", help="comma-separated protocol names")
    p.add_argument("--num", type=int, help="samples per protocol (default: each protocol's own)")
    p.add_argument("--batch", type=int, default=100, help="generation batch size")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise stream")
    p.add_argument("--out", help="write the JSON records here")
    p.add_argument("--save-images", metavar="DIR", help="also write the generated images as PNGs")
    p.add_argument("--extractor", choices=["default", "tiny"], default="default",
                   help="tiny: small random-init extractors (tests, smoke; not comparable to published numbers)")
    add_model_source_arguments(p)


def add_model_source_arguments(p):
    """How to build the model of a checkpoint and where to run it (shared by eval and regress)."""
    p.add_argument("--model-config", help="YAML `model:` section describing an official checkpoint")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--clip-weights", help="OpenAI CLIP ViT-B/32 weights (overrides the checkpoint's model.clip.pretrained)")
    p.add_argument("--device", default="auto")
    p.add_argument("--bench", help="site config (default: $GALIP_BENCH_CONFIG or ./bench.yaml)")
    p.add_argument("--allow-download", action="store_true", help="let metric weights download when missing")


def data_config(path) -> DataConfig:
    """The `data:` section of a YAML file as a DataConfig (unknown keys / wrong types name the key and file)."""
    return to_object(merge_onto(DataConfig, read_yaml(path).get("data", {}), source=path), path)


def load_model(args, device):
    kind, ckpt = read_checkpoint(args.checkpoint)
    cfg = config_of(ckpt, args.checkpoint) if kind == "ours" else model_config(args.model_config, args.overrides)
    if args.clip_weights:
        cfg.clip.pretrained = args.clip_weights
    galip = GALIP(cfg, clip=build_clip(cfg.clip, taps=cfg.d_taps, device=device))
    (load_nets if kind == "ours" else load_official_nets)(galip, ckpt, args.checkpoint)
    return galip.to(device).eval(), kind, ckpt.get("step", ckpt.get("epoch"))


def run(args) -> int:
    device = resolve_device(args.device)
    site = load_site(args.bench)
    data = data_config(args.data)
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    eval_cfg = EvalConfig(protocols=protocols, num_samples=args.num, batch_size=args.batch, seed=args.seed,
                          extractor=args.extractor)
    make_protocols(protocols, eval_cfg)  # unknown names fail before any model is loaded
    galip, kind, step = load_model(args, device)
    cfg = RunConfig(model=galip.cfg, data=data, eval=eval_cfg)
    evaluator = Evaluator(cfg, site, device, args.allow_download, save_images=args.save_images)
    t0 = time.time()
    records = evaluator(galip, step) + evaluator.measure_speed(galip)
    context = {"checkpoint": str(Path(args.checkpoint).resolve()), "checkpoint_sha256": file_sha256(args.checkpoint),
               "checkpoint_format": kind, "device": str(device), "wall_s": time.time() - t0}
    records = [{**r, **context} for r in records]
    if args.out:
        atomic_write_json(args.out, records)
    table = pd.DataFrame([{"protocol": r["protocol"], "metric": r["metric"], "value": r["value"],
                           "samples": r.get("num_samples")} for r in records])
    print(table.to_string(index=False))
    if args.out:
        print(f"wrote {len(records)} record(s) to {args.out}")
    else:
        print(json.dumps(records[0]["settings"], indent=1) if records else "")
    return 0
