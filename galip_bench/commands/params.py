"""`galip-bench params`: trainable and frozen parameter counts of a model config (or of every switch combination)."""
import itertools
from dataclasses import replace as dataclass_replace

import pandas as pd

from galip_bench.clip_weights import build_clip
from galip_bench.modelcfg import model_config
from models import GALIP, parameter_counts

SWITCHES = dict(d_backbone=["clip", "scratch"], mate_d=[True, False], g_clip_vit=[True, False],
                bridge=[True, False], prompts=[True, False])


def add_arguments(p):
    p.add_argument("--config", help="YAML file with a `model:` section (default: the paper's full GALIP)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="model override, e.g. --set model.prompts=false (repeatable)")
    p.add_argument("--switches", action="store_true", help="one row per combination of the ablation switches")


def count_row(cfg, clip) -> dict:
    counts = parameter_counts(GALIP(cfg, clip=clip))
    row = {f"{net} {kind}": counts[net][kind] for net in ("netG", "netD", "netC") for kind in ("trainable", "frozen")}
    row["CLIP (frozen)"] = counts["clip"]["frozen"]
    row["total trainable"] = sum(counts[n]["trainable"] for n in ("netG", "netD", "netC"))
    return row


def run(args) -> int:
    cfg = model_config(args.config, args.overrides)
    clip_cfg = dataclass_replace(cfg.clip, pretrained="random") if cfg.clip.model != "tiny" else cfg.clip
    clip = build_clip(clip_cfg, taps=cfg.d_taps)
    if not args.switches:
        table = pd.DataFrame([count_row(cfg, clip)]).T.rename(columns={0: "parameters"})
        print(table.to_string(formatters={"parameters": "{:,}".format}))
        return 0
    rows = []
    for values in itertools.product(*SWITCHES.values()):
        switches = dict(zip(SWITCHES, values))
        if switches["d_backbone"] == "scratch" and not switches["mate_d"]:
            continue  # mate_d only concerns the CLIP backbone
        row = {k: v for k, v in switches.items()}
        row.update(count_row(dataclass_replace(cfg, **switches), clip))
        rows.append(row)
    print(pd.DataFrame(rows).to_string(index=False))
    return 0
