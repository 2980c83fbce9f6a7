"""The one model loader every command uses: a galip-bench checkpoint, an official GALIP checkpoint, or a random
init of a model config, with its CLIP."""
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from galip_bench.checkpoints.clip import build_clip
from galip_bench.checkpoints.format import config_of, load_nets, load_official_nets, read_checkpoint
from galip_bench.config.model import model_config as read_model_config
from galip_bench.files import file_sha256
from models import GALIP


@dataclass
class LoadedModel:
    galip: GALIP
    kind: str                  # ours | official | config (random init, no checkpoint)
    step: Optional[int]
    path: Optional[str]
    sha256: Optional[str]

    def provenance(self) -> dict:
        return {"checkpoint": self.path, "checkpoint_sha256": self.sha256, "checkpoint_format": self.kind}


def load_model(checkpoint=None, *, model_config=None, overrides=(), clip_weights=None, device="cpu",
               allow_clip_mismatch: bool = False) -> LoadedModel:
    """The model of a galip-bench checkpoint, an official GALIP checkpoint (described by `model_config`, a YAML
    `model:` section, and `overrides`; the paper model by default) or, without a checkpoint, a random init of that
    config. `clip_weights` overrides the CLIP weights file (official checkpoints need one; without a checkpoint a
    random-init CLIP is used when none is given). An official checkpoint's CLIP-ViT copy must equal the CLIP
    weights loaded here unless `allow_clip_mismatch`."""
    kind, ckpt = read_checkpoint(checkpoint) if checkpoint is not None else ("config", None)
    cfg = config_of(ckpt, str(checkpoint)) if kind == "ours" else read_model_config(model_config, overrides)
    if clip_weights:
        cfg.clip.pretrained = str(clip_weights)
    elif kind == "config" and cfg.clip.model != "tiny":
        cfg.clip.pretrained = cfg.clip.pretrained or "random"
    galip = GALIP(cfg, clip=build_clip(cfg.clip, taps=cfg.d_taps, device=device))
    if kind == "ours":
        load_nets(galip, ckpt, str(checkpoint))
    elif kind == "official":
        from_file = cfg.clip.model != "tiny" and cfg.clip.pretrained not in (None, "random")
        load_official_nets(galip, ckpt, str(checkpoint), check_clip=from_file and not allow_clip_mismatch)
    step = None if ckpt is None else ckpt.get("step", ckpt.get("epoch"))
    path = str(Path(checkpoint).resolve()) if checkpoint is not None else None
    return LoadedModel(galip.to(device).eval(), kind, step, path, file_sha256(checkpoint) if path else None)
