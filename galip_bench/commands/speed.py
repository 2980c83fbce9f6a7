"""`galip-bench speed`: synthesis latency (batch 1) and throughput (largest batch that fits) of text encoding +
generator, plus parameter counts, for a checkpoint or a model config."""
import json

import pandas as pd
import torch

from galip_bench.atomic import atomic_write_json
from galip_bench.checkpoint import config_of, load_nets, load_official_nets, read_checkpoint
from galip_bench.clip_weights import build_clip
from galip_bench.data import tokenize
from galip_bench.metrics import get_protocol
from galip_bench.modelcfg import model_config
from galip_bench.train.loop import resolve_device
from models import GALIP, parameter_counts

CAPTIONS = ["a small red circle above a large blue square on a white background",
            "a bird with a red head and a short beak", "a plate of food next to a glass of water"]


def add_arguments(p):
    p.add_argument("--checkpoint", help="galip-bench or official checkpoint (default: random init of the config)")
    p.add_argument("--config", help="YAML `model:` section (without --checkpoint, or for an official one)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--clip-weights", help="OpenAI CLIP weights (default: random init of the architecture)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-sizes", default="1,8,32,64,128,256")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--out", help="write the JSON record here")


def run(args) -> int:
    device = resolve_device(args.device)
    kind, ckpt = read_checkpoint(args.checkpoint) if args.checkpoint else (None, None)
    cfg = config_of(ckpt) if kind == "ours" else model_config(args.config, args.overrides)
    cfg.clip.pretrained = args.clip_weights or (cfg.clip.pretrained if kind == "ours" else None) or "random"
    galip = GALIP(cfg, clip=build_clip(cfg.clip, taps=cfg.d_taps, device=device))
    if kind == "ours":
        load_nets(galip, ckpt, args.checkpoint)
    elif kind == "official":
        load_official_nets(galip, ckpt, args.checkpoint)
    galip = galip.to(device).eval()
    sizes = tuple(int(b) for b in args.batch_sizes.split(","))
    proto = get_protocol("speed", options=(("batch_sizes", sizes), ("repeats", args.repeats), ("warmup", args.warmup)))
    with torch.no_grad():
        result = proto.measure(lambda t: galip.clip.encode_text(t)[0], galip.netG, tokenize(CAPTIONS).to(device),
                               cfg.z_dim, device)
    record = {"protocol": "speed", "settings": proto.settings_dict(), "result": result,
              "parameters": parameter_counts(galip)}
    table = pd.DataFrame([{"batch": b, "median_s": v["median_s"], "img_per_s": v["img_s"]}
                          for b, v in result["per_batch"].items()])
    print(table.to_string(index=False))
    print(f"latency {result['latency_ms']:.1f} ms (batch {result['latency_batch']}), throughput "
          f"{result['throughput_img_s']:.1f} img/s (batch {result['throughput_batch']}) on {result['device']}")
    if args.out:
        atomic_write_json(args.out, json.loads(json.dumps(record, default=str)))
    return 0
