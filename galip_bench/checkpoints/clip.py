"""Building the frozen CLIP from a CLIPConfig: the tiny test CLIP, a random-init architecture, or local weights.
Nothing downloads here; galip_bench.metrics.weights resolves names to files."""
from pathlib import Path

import torch

from galip_bench.errors import UserError
from galip_bench.metrics.weights import CLIP_HINT, read_clip_state_dict
from models import CLIPConfig
from models.clip import FrozenCLIP


def check_clip_weights(cfg: CLIPConfig):
    """The weight file `cfg` needs (None for random-init CLIPs); a UserError when it is unset or missing."""
    if cfg.model == "tiny" or cfg.pretrained == "random":
        return None
    if cfg.pretrained is None:
        raise UserError(f"model.clip.pretrained is not set: GALIP needs {CLIP_HINT}; set "
                        "model.clip.pretrained=PATH (or =random for an untrained architecture check)")
    if not Path(cfg.pretrained).is_file():
        raise UserError(f"CLIP weights {cfg.pretrained} not found: expected {CLIP_HINT}")
    return Path(cfg.pretrained)


def clip_load_precision(device) -> str:
    """The precision OpenAI's clip.load gives on `device` (the official GALIP code's CLIP4trn / CLIP4evl):
    clip.load-fp16 on a GPU (convert_weights: fp16 weights, fp32 LayerNorms and embeddings), fp32 on a CPU
    (model.float())."""
    return "clip.load-fp16" if torch.device(device).type == "cuda" else "fp32"


def build_clip(cfg: CLIPConfig, taps=(1, 4, 8), device="cpu", seed: int = 0, precision=None) -> FrozenCLIP:
    """tiny -> the random-init test CLIP (seeded); pretrained='random' -> random-init architecture;
    pretrained=PATH -> OpenAI-format weights. Matches the official clip.load(device=...): `precision` None follows
    the device (clip_load_precision); name it ('fp32' | 'clip.load-fp16') to build either form on any device."""
    precision = precision or clip_load_precision(device)
    if check_clip_weights(cfg) is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            clip = FrozenCLIP.from_open_clip(cfg.model, preprocess=cfg.preprocess, taps=taps, precision=precision)
    else:
        clip = FrozenCLIP.from_openai_state_dict(read_clip_state_dict(cfg.pretrained), cfg.preprocess, taps,
                                                 precision=precision)
    return clip.to(device)  # a device move keeps each tensor's dtype
