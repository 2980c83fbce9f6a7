"""The one model loader every command uses: a galip-bench checkpoint (GALIP or CLIP-GEN), an official GALIP
checkpoint, or a random init of a model config, with its CLIP."""
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from torch import nn

from galip_bench.checkpoints.clip import build_clip
from galip_bench.checkpoints.format import (clip_config_of, config_of, load_nets, load_official_nets,
                                            read_checkpoint, system_of)
from galip_bench.config.io import dotlist, merge_onto, to_object
from galip_bench.config.model import model_config as read_model_config
from galip_bench.errors import UserError
from galip_bench.files import file_sha256
from models import GALIP

CLIPGEN_CLIP_TAPS = (0,)  # CLIP-GEN reads the CLIP's embeddings only: one tap that every CLIP has


@dataclass
class LoadedModel:
    galip: nn.Module           # the text-to-image model: a GALIP, or a models.clipgen.ClipGen (same interface)
    kind: str                  # ours | official | config (random init, no checkpoint)
    step: Optional[int]
    path: Optional[str]
    sha256: Optional[str]

    @property
    def system(self) -> str:
        return "galip" if isinstance(self.galip, GALIP) else "clipgen"

    @property
    def img_size(self) -> int:
        """The generator's output size."""
        cfg = self.galip.cfg
        return cfg.img_size if self.system == "galip" else cfg.vqgan.img_size

    def provenance(self) -> dict:
        return {"checkpoint": self.path, "checkpoint_sha256": self.sha256, "checkpoint_format": self.kind}


SAMPLING_PREFIX = "clipgen.model.sampling."


def _with_sampling(cfg, overrides, source: str):
    """`cfg` (a ClipGenConfig) with `--set clipgen.model.sampling.KEY=VALUE` overrides: how the prior samples is an
    evaluation setting (the records carry it); everything else a CLIP-GEN checkpoint fixes."""
    other = [o for o in overrides if not o.startswith(SAMPLING_PREFIX)]
    if other:
        raise UserError(f"{source} is a CLIP-GEN checkpoint: it carries its model, and --set takes only its sampling "
                        f"(e.g. --set {SAMPLING_PREFIX}candidates=64), not {other[0]}")
    if not overrides:
        return cfg
    from models.clipgen import SamplingConfig
    conf = merge_onto(SamplingConfig, asdict(cfg.sampling), dotlist([o[len(SAMPLING_PREFIX):] for o in overrides]),
                      source="--set")
    cfg.sampling = to_object(conf, "--set")
    try:
        cfg.sampling.validate()
    except ValueError as err:
        raise UserError(f"--set: {err}") from None
    return cfg


def _clipgen_model(ckpt: dict, source: str, clip_weights, device, overrides=()):
    """The ClipGen of a prior-stage CLIP-GEN checkpoint, with the CLIP it was trained with (and the sampling
    `overrides` give)."""
    if ckpt.get("stage") != "prior":
        raise UserError(f"{source} is a CLIP-GEN stage-1 (vqgan) checkpoint: it has no text-to-image model; "
                        "evaluate the prior stage's checkpoint")
    from models.clipgen import ClipGen
    clip_cfg = clip_config_of(ckpt, source)
    if clip_weights:
        clip_cfg.pretrained = str(clip_weights)
    clip = build_clip(clip_cfg, taps=CLIPGEN_CLIP_TAPS, device=device, seed=ckpt.get("clip_seed", 0))
    try:
        model = ClipGen(_with_sampling(config_of(ckpt, source), overrides, source), clip=clip)
    except ValueError as err:
        raise UserError(f"{source}: {err}") from None
    load_nets(model, ckpt, source)
    # frozen as in the prior stage that saved them, so parameter counts read as in that run's own evaluation
    model.vqgan.requires_grad_(False)
    model.disc.requires_grad_(False)
    return model


def load_model(checkpoint=None, *, model_config=None, overrides=(), clip_weights=None, device="cpu",
               allow_clip_mismatch: bool = False) -> LoadedModel:
    """The model of a galip-bench checkpoint (GALIP, or CLIP-GEN's prior stage as a ClipGen), an official GALIP
    checkpoint (described by `model_config`, a YAML `model:` section, and `overrides`; the paper model by default)
    or, without a checkpoint, a random init of that config. `clip_weights` overrides the CLIP weights file
    (official checkpoints need one; without a checkpoint a random-init CLIP is used when none is given). An
    official checkpoint's CLIP-ViT copy must equal the CLIP weights loaded here unless `allow_clip_mismatch`."""
    kind, ckpt = read_checkpoint(checkpoint) if checkpoint is not None else ("config", None)
    if kind == "ours" and system_of(ckpt) == "clipgen":
        model = _clipgen_model(ckpt, str(checkpoint), clip_weights, device, overrides)
    else:
        cfg = config_of(ckpt, str(checkpoint)) if kind == "ours" else read_model_config(model_config, overrides)
        if clip_weights:
            cfg.clip.pretrained = str(clip_weights)
        elif kind == "config" and cfg.clip.model != "tiny":
            cfg.clip.pretrained = cfg.clip.pretrained or "random"
        clip_seed = ckpt.get("clip_seed", 0) if kind == "ours" else 0  # a random-init CLIP as in training
        model = GALIP(cfg, clip=build_clip(cfg.clip, taps=cfg.d_taps, device=device, seed=clip_seed))
        if kind == "ours":
            load_nets(model, ckpt, str(checkpoint))
        elif kind == "official":
            from_file = cfg.clip.model != "tiny" and cfg.clip.pretrained not in (None, "random")
            load_official_nets(model, ckpt, str(checkpoint), check_clip=from_file and not allow_clip_mismatch)
    step = None if ckpt is None else ckpt.get("step", ckpt.get("epoch"))
    path = str(Path(checkpoint).resolve()) if checkpoint is not None else None
    return LoadedModel(model.to(device).eval(), kind, step, path, file_sha256(checkpoint) if path else None)
