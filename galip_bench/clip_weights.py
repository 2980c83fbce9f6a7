"""Building the frozen CLIP from a CLIPConfig: the tiny test CLIP, a random-init architecture, or local weights.
Nothing downloads here; galip_bench.metrics.weights resolves names to files."""
from pathlib import Path

import torch

from galip_bench.errors import UserError
from models import CLIPConfig
from models.clip import FrozenCLIP

OPENAI_VIT_B32_HINT = ("the OpenAI CLIP ViT-B/32 checkpoint ViT-B-32.pt (from the openai/CLIP repository's model "
                       "list, or ~/.cache/clip/ViT-B-32.pt after `clip.load('ViT-B/32')` on a machine with internet)")


def load_openai_state_dict(path) -> dict:
    """An OpenAI CLIP checkpoint (TorchScript archive as released, or a plain state_dict) as a state_dict."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"CLIP weights {path} not found: expected {OPENAI_VIT_B32_HINT}")
    try:
        sd = torch.jit.load(str(path), map_location="cpu").state_dict()
    except (RuntimeError, ValueError):
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise UserError(f"CLIP weights {path} could not be read ({type(err).__name__}): corrupt file?") from None
        sd = sd.get("state_dict", sd)
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    if "visual.conv1.weight" not in sd or "visual.proj" not in sd:
        raise UserError(f"{path} is not an OpenAI-format CLIP ViT state_dict (no visual.conv1.weight/visual.proj)")
    return sd


def check_clip_weights(cfg: CLIPConfig):
    """The weight file `cfg` needs (None for random-init CLIPs); a UserError when it is unset or missing."""
    if cfg.model == "tiny" or cfg.pretrained == "random":
        return None
    if cfg.pretrained is None:
        raise UserError(f"model.clip.pretrained is not set: GALIP needs {OPENAI_VIT_B32_HINT}; set "
                        "model.clip.pretrained=PATH (or =random for an untrained architecture check)")
    if not Path(cfg.pretrained).is_file():
        raise UserError(f"CLIP weights {cfg.pretrained} not found: expected {OPENAI_VIT_B32_HINT}")
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
        clip = FrozenCLIP.from_openai_state_dict(load_openai_state_dict(cfg.pretrained), cfg.preprocess, taps)
    clip = clip.to(device)
    return clip.float() if torch.device(device).type == "cpu" else clip
