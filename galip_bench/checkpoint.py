"""Our checkpoint format (format version, model config, the three nets, optimiser and scaler state, step), and the
one model loader every command uses (`load_model`: ours, official, or a random init of a config). Written
atomically; read back with clear errors for missing, corrupt or mismatching files. No RNG state is stored: every
training step reseeds from (seed, rank, step)."""
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from galip_bench.atomic import atomic_torch_save
from galip_bench.clip_weights import build_clip
from galip_bench.config import merge_onto, to_object
from galip_bench.errors import UserError
from galip_bench.metrics.weights import file_sha256
from galip_bench.modelcfg import model_config as read_model_config
from models import GALIP, GALIPConfig
from models.galip import NETS, CheckpointMismatch, ClipWeightsMismatch, check_state_dict

FORMAT = "galip-bench"
FORMAT_VERSION = 1


def make_checkpoint(galip, step: int = 0, optimizers: dict = None, scaler=None, extra: dict = None) -> dict:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": dataclasses.asdict(galip.cfg),
        "nets": {name: getattr(galip, name).state_dict() for name in NETS},
        "optimizers": {k: opt.state_dict() for k, opt in (optimizers or {}).items()},
        "scaler": scaler.state_dict() if scaler is not None else None,
        "step": int(step),
        "extra": extra or {},
    }


def save_checkpoint(path, galip, **kwargs) -> Path:
    return atomic_torch_save(make_checkpoint(galip, **kwargs), path)


def read_checkpoint(path) -> tuple:
    """('ours' | 'official', dict) for a checkpoint file; UserError when it is missing, unreadable or unknown."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"checkpoint {path} is a directory: give the checkpoint file (e.g. {path}/step_*.pt)")
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise UserError(f"checkpoint {path} could not be read ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else 'truncated?'}); it is corrupt or incomplete") from None
    if not isinstance(ckpt, dict):
        raise UserError(f"checkpoint {path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    if ckpt.get("format") == FORMAT:
        if ckpt.get("format_version", 0) > FORMAT_VERSION:
            raise UserError(f"checkpoint {path} has format version {ckpt['format_version']}; this galip-bench "
                            f"reads up to {FORMAT_VERSION}: upgrade galip-bench")
        return "ours", ckpt
    nets = ckpt.get("model", ckpt)
    if isinstance(nets, dict) and all(n in nets for n in NETS):
        return "official", ckpt
    raise UserError(f"{path} is neither a galip-bench checkpoint nor an official GALIP one "
                    f"(expected {{'model': {{netG, netD, netC}}}})")


def config_of(ckpt: dict, source: str = "checkpoint") -> GALIPConfig:
    return to_object(merge_onto(GALIPConfig, ckpt["model_config"], source=source), source)


def load_nets(galip, ckpt: dict, source: str = "checkpoint") -> None:
    """Load our checkpoint's nets into galip; a key or shape mismatch is a UserError naming the first key."""
    try:
        for name in NETS:
            check_state_dict(getattr(galip, name), ckpt["nets"][name], name)
    except CheckpointMismatch as err:
        raise UserError(f"{source}: {err}") from None
    for name in NETS:
        getattr(galip, name).load_state_dict(ckpt["nets"][name])


def load_official_nets(galip, ckpt: dict, source: str = "checkpoint", check_clip: bool = True) -> None:
    try:
        galip.load_official(ckpt, check_clip=check_clip)
    except ClipWeightsMismatch as err:
        raise UserError(f"{source}: {err}; load it with the CLIP weights it was trained with (--clip-weights), or "
                        "pass --allow-clip-mismatch to use these anyway") from None
    except CheckpointMismatch as err:
        raise UserError(f"{source}: {err}") from None


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
