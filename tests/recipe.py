"""Rebuilds the deterministic "recipe" weights that the golden fixtures were made with (the recipe text is stored
inside each fixture file; this follows it)."""
import math
import zlib
from pathlib import Path

import numpy as np
import torch

FIXTURES = Path(__file__).parent / "fixtures"


def load_fixture(name: str) -> dict:
    path = FIXTURES / name
    if not path.exists():
        raise FileNotFoundError(f"golden fixture {path} is missing: copy it unchanged from ../shared/fixtures/")
    return torch.load(path, weights_only=False, map_location="cpu")


def _noise(key: str, shape) -> np.ndarray:
    rng = np.random.RandomState(zlib.crc32(key.encode()) & 0xFFFFFFFF)
    return rng.standard_normal(tuple(shape)).astype(np.float32)


def galip_recipe_value(key: str, shape) -> torch.Tensor:
    """The recipe of galip_official_reference.pt for one floating tensor."""
    last = key.split(".")[-1]
    if key.endswith("logit_scale"):
        return torch.full(tuple(shape), math.log(1 / 0.07), dtype=torch.float32)
    noise = _noise(key, shape)
    if last == "weight" and (key.startswith("ln_") or ".ln_" in key):
        return torch.from_numpy(1 + 0.02 * noise)
    if last in ("gamma", "beta"):
        return torch.from_numpy(0.5 * noise)
    return torch.from_numpy(0.02 * noise)


def galip_recipe_weights(fixture: dict):
    """(OpenAI-format CLIP state_dict, {'netG','netD','netC'} official state_dicts) from the recipe."""
    clip_sd = {k: galip_recipe_value(k, s) for k, s in fixture["clip_state_dict_shapes"].items()}
    nets = {}
    for net, shapes in fixture["official_state_dict_shapes"].items():
        sd = {}
        for key, shape in shapes.items():
            if key.startswith("mapping.CLIP_ViT."):
                sd[key] = clip_sd["visual." + key[len("mapping.CLIP_ViT."):]]
            else:
                sd[key] = galip_recipe_value(key, shape)
        nets[net] = sd
    return clip_sd, nets
