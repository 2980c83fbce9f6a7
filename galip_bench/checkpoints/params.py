"""Parameter tables of model configs: trainable and frozen counts per net, for one config or for every combination
of the ablation switches."""
import itertools
from dataclasses import replace

import pandas as pd

from galip_bench.checkpoints.clip import build_clip
from models import GALIP, parameter_counts

SWITCHES = dict(d_backbone=["clip", "scratch"], mate_d=[True, False], g_clip_vit=[True, False],
                bridge=[True, False], prompts=[True, False])


def count_row(cfg, clip) -> dict:
    counts = parameter_counts(GALIP(cfg, clip=clip))
    row = {f"{net} {kind}": counts[net][kind] for net in ("netG", "netD", "netC") for kind in ("trainable", "frozen")}
    row["CLIP (frozen)"] = counts["clip"]["frozen"]
    row["total trainable"] = sum(counts[n]["trainable"] for n in ("netG", "netD", "netC"))
    return row


def parameter_table(cfg, switches: bool = False) -> pd.DataFrame:
    """One row per net and kind for `cfg`, or (`switches`) one row per switch combination (random-init CLIP)."""
    clip = build_clip(replace(cfg.clip, pretrained="random") if cfg.clip.model != "tiny" else cfg.clip,
                      taps=cfg.d_taps)
    if not switches:
        return pd.DataFrame([count_row(cfg, clip)]).T.rename(columns={0: "parameters"})
    rows = []
    for values in itertools.product(*SWITCHES.values()):
        combo = dict(zip(SWITCHES, values))
        if combo["d_backbone"] == "scratch" and not combo["mate_d"]:
            continue  # mate_d only concerns the CLIP backbone
        rows.append({**combo, **count_row(replace(cfg, **combo), clip)})
    return pd.DataFrame(rows)


def clipgen_parameter_table(cfg) -> pd.DataFrame:
    """CLIP-GEN's parameter counts (a ClipGenConfig) beside HFAiLab/clip-gen's, built on the meta device (the
    336 M-parameter prior takes no memory); the frozen CLIP (ViT-B/32 by default) is not counted."""
    import torch

    from models.clipgen import HF_PARAMETERS, ClipGen, parameter_counts
    with torch.device("meta"):
        counts = parameter_counts(ClipGen(cfg))
    vq = counts["vqgan"]
    rows = [("VQGAN without codebook", vq["with_codebook"] - vq["codebook"],
             HF_PARAMETERS["vqgan"] - HF_PARAMETERS["codebook"]),
            ("VQGAN codebook", vq["codebook"], HF_PARAMETERS["codebook"]),
            ("VQGAN incl. codebook", vq["with_codebook"], HF_PARAMETERS["vqgan"]),
            ("discriminator", counts["disc"]["trainable"], HF_PARAMETERS["disc"]),
            ("prior", counts["prior"]["trainable"], HF_PARAMETERS["prior"])]
    table = pd.DataFrame(rows, columns=["net", "ours", "HFAiLab/clip-gen"]).set_index("net")
    table["difference"] = table["ours"] - table["HFAiLab/clip-gen"]
    return table


def checkpoint_bytes(cfg) -> int:
    """The size of one of our GALIP checkpoints of model config `cfg`: netG, netD and netC (the frozen CLIP is not
    stored) and Adam's two moments of every trainable parameter, in fp32. Counted on the meta device: no memory,
    no weights read."""
    import torch

    from models.clip import FrozenCLIP
    with torch.device("meta"):
        clip = FrozenCLIP.from_open_clip(cfg.clip.model, taps=cfg.d_taps)
        galip = GALIP(cfg, clip=clip)
    total = 0
    for name in ("netG", "netD", "netC"):
        net = getattr(galip, name)
        total += sum(v.numel() * 4 for v in net.state_dict().values())
        total += 2 * sum(p.numel() * 4 for p in net.parameters() if p.requires_grad)
    return total
