"""Our checkpoint format: format version, model config, the three nets, optimiser and scaler state, step. Written
atomically; read back with clear errors for missing, corrupt or mismatching files. No RNG state is stored: every
training step reseeds from (seed, rank, step).

A CLIP-GEN checkpoint (`system: clipgen`) holds its ClipGenConfig, the CLIP config (and the seed of a random-init
CLIP, which is not saved), the training stage and its nets: vqgan and disc (stage 1), vqgan and prior (stage 2).
No `system` key means GALIP."""
import dataclasses
from pathlib import Path

import torch

from galip_bench.config.io import merge_onto, to_object
from galip_bench.errors import UserError
from galip_bench.files import atomic_torch_save
from models import CLIPConfig, GALIPConfig
from models.clipgen.config import EARLIER_DEFAULTS, ClipGenConfig
from models.galip import NETS, CheckpointMismatch, ClipWeightsMismatch, check_state_dict

FORMAT = "galip-bench"
FORMAT_VERSION = 1
CLIPGEN_NETS = ("vqgan", "disc", "prior")  # models.clipgen.NETS, without importing the CLIP-GEN modules here
# what each stage's checkpoints hold: what it trains or needs (an untrained prior would be 1.3 GB at full size)
CLIPGEN_STAGE_NETS = {"vqgan": ("vqgan", "disc"), "prior": ("vqgan", "prior")}


def make_checkpoint(galip, step: int = 0, optimizers: dict = None, scaler=None, extra: dict = None,
                    clip_seed: int = 0) -> dict:
    """`clip_seed`: the seed a random-init CLIP (tiny, or `random`) was built with; the CLIP itself is not saved."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": dataclasses.asdict(galip.cfg),
        "clip_seed": int(clip_seed),
        "nets": {name: getattr(galip, name).state_dict() for name in NETS},
        "optimizers": {k: opt.state_dict() for k, opt in (optimizers or {}).items()},
        "scaler": scaler.state_dict() if scaler is not None else None,
        "step": int(step),
        "extra": extra or {},
    }


def save_checkpoint(path, galip, **kwargs) -> Path:
    return atomic_torch_save(make_checkpoint(galip, **kwargs), path)


def make_clipgen_checkpoint(model, clip_config, stage: str, step: int = 0, optimizers: dict = None,
                            extra: dict = None, clip_seed: int = 0) -> dict:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "system": "clipgen",
        "model_config": dataclasses.asdict(model.cfg),
        "clip_config": dataclasses.asdict(clip_config),
        "clip_seed": int(clip_seed),
        "stage": stage,
        "nets": {name: getattr(model, name).state_dict() for name in CLIPGEN_STAGE_NETS[stage]},
        "optimizers": {k: opt.state_dict() for k, opt in (optimizers or {}).items()},
        "step": int(step),
        "extra": extra or {},
    }


def save_clipgen_checkpoint(path, model, **kwargs) -> Path:
    return atomic_torch_save(make_clipgen_checkpoint(model, **kwargs), path)


def system_of(ckpt: dict) -> str:
    """'galip' or 'clipgen': which model one of our checkpoints holds."""
    return ckpt.get("system", "galip")


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


def config_of(ckpt: dict, source: str = "checkpoint"):
    """The model config of our checkpoint: a GALIPConfig, or a ClipGenConfig for a CLIP-GEN one. A CLIP-GEN config
    stored before the HFAiLab/clip-gen alignment lacks the settings it added: those take the values that rebuild
    the model it was written with (EARLIER_DEFAULTS), not today's defaults; every stored value is kept."""
    if system_of(ckpt) == "clipgen":
        return to_object(merge_onto(ClipGenConfig, EARLIER_DEFAULTS, ckpt["model_config"], source=source), source)
    return to_object(merge_onto(GALIPConfig, ckpt["model_config"], source=source), source)


def clip_config_of(ckpt: dict, source: str = "checkpoint") -> CLIPConfig:
    """The CLIP config of a CLIP-GEN checkpoint (a GALIP one keeps it in its model config)."""
    return to_object(merge_onto(CLIPConfig, ckpt["clip_config"], source=source), source)


def load_nets(model, ckpt: dict, source: str = "checkpoint", nets=None) -> None:
    """Load our checkpoint's nets (all of its system's, or those named in `nets`) into a GALIP or ClipGen; a
    checkpoint of the other system, or a key or shape mismatch, is a UserError naming the first key."""
    system = system_of(ckpt)
    model_system = "clipgen" if isinstance(model.cfg, ClipGenConfig) else "galip"
    if system != model_system:
        raise UserError(f"{source} is a {system} checkpoint; it does not load into a {model_system} model")
    names = nets or (tuple(n for n in CLIPGEN_NETS if n in ckpt["nets"]) if system == "clipgen" else NETS)
    try:
        for name in names:
            check_state_dict(getattr(model, name), ckpt["nets"][name], name)
    except CheckpointMismatch as err:
        raise UserError(f"{source}: {err}") from None
    for name in names:
        getattr(model, name).load_state_dict(ckpt["nets"][name])


def load_official_nets(galip, ckpt: dict, source: str = "checkpoint", check_clip: bool = True) -> None:
    try:
        galip.load_official(ckpt, check_clip=check_clip)
    except ClipWeightsMismatch as err:
        raise UserError(f"{source}: {err}; load it with the CLIP weights it was trained with (--clip-weights), or "
                        "pass --allow-clip-mismatch to use these anyway") from None
    except CheckpointMismatch as err:
        raise UserError(f"{source}: {err}") from None
