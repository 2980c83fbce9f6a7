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


def build_clip(cfg: CLIPConfig, taps=(1, 4, 8), device="cpu", seed: int = 0) -> FrozenCLIP:
    """tiny -> the random-init test CLIP (seeded); pretrained='random' -> random-init architecture;
    pretrained=PATH -> OpenAI-format weights. As the official clip.load, weights stay fp16 on a GPU and are
    cast to fp32 on the CPU."""
    if check_clip_weights(cfg) is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            clip = FrozenCLIP.from_open_clip(cfg.model, preprocess=cfg.preprocess, taps=taps)
    else:
        clip = FrozenCLIP.from_openai_state_dict(read_clip_state_dict(cfg.pretrained), cfg.preprocess, taps)
    clip = clip.to(device)
    return clip.float() if torch.device(device).type == "cpu" else clip
