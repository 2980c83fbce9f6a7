"""Building the frozen CLIP from a CLIPConfig: the tiny test CLIP, a random-init architecture, or local weights.
Nothing downloads here; galip_bench.metrics.weights resolves names to files."""
from pathlib import Path

import torch

from galip_bench.errors import UserError
from galip_bench.metrics.weights import CLIP_HINT, read_clip_state_dict
from models import CLIPConfig
from models.clip import FrozenCLIP


SHAPES = "shapes"  # model.clip.pretrained: the shapes benchmark's trained tiny CLIP (paths.cache, built on first use)


def check_clip_weights(cfg: CLIPConfig):
    """The weight file `cfg` needs (None for random-init CLIPs and the shapes CLIP, which is built when missing); a
    UserError when it is unset or missing."""
    if cfg.pretrained == SHAPES:
        if cfg.model != "tiny":
            raise UserError(f"model.clip.pretrained=shapes is the trained tiny CLIP: set model.clip.model=tiny "
                            f"(got {cfg.model!r})")
        return None
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


def build_clip(cfg: CLIPConfig, taps=(1, 4, 8), device="cpu", seed: int = 0, precision=None,
               cache_dir=None) -> FrozenCLIP:
    """tiny -> the random-init test CLIP (seeded); tiny with pretrained='shapes' -> the shapes benchmark's trained
    tiny CLIP from `cache_dir` (default: the site's paths.cache; trained there on first use; its `weights_info`
    says which); pretrained='random' -> random-init architecture; pretrained=PATH -> OpenAI-format weights. Matches
    the official clip.load(device=...): `precision` None follows the device (clip_load_precision); name it
    ('fp32' | 'clip.load-fp16') to build either form on any device."""
    precision = precision or clip_load_precision(device)
    if cfg.pretrained == SHAPES:
        check_clip_weights(cfg)
        from galip_bench.config.site import load_site
        from galip_bench.shapes.cache import load_clip
        state, info = load_clip(cache_dir or load_site().paths.cache, preprocess=cfg.preprocess)
        clip = FrozenCLIP.from_open_clip("tiny", preprocess=cfg.preprocess, taps=taps, precision=precision)
        clip.model.load_state_dict(state)  # cast to each parameter's dtype, as clip.load does
        clip.weights_info = info
        return clip.to(device)
    if check_clip_weights(cfg) is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            clip = FrozenCLIP.from_open_clip(cfg.model, preprocess=cfg.preprocess, taps=taps, precision=precision)
    else:
        clip = FrozenCLIP.from_openai_state_dict(read_clip_state_dict(cfg.pretrained), cfg.preprocess, taps,
                                                 precision=precision)
    return clip.to(device)  # a device move keeps each tensor's dtype
