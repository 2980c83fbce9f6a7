"""Small shared builders for tests: a tiny random-init GALIP that runs in well under a second on a CPU."""
import torch

from models import GALIP, CLIPConfig, GALIPConfig
from models.clip import FrozenCLIP

TINY = dict(cond_dim=64, ngf=8, img_size=32, d_out_ch=32, ndf=8, bridge_ch=16, bridge_mid_ch=8, c_hidden=16)


def tiny_config(preprocess: str = "official", **switches) -> GALIPConfig:
    return GALIPConfig(**TINY, clip=CLIPConfig(model="tiny", preprocess=preprocess), **switches)


def tiny_galip(seed: int = 0, preprocess: str = "official", clip: FrozenCLIP = None, **switches) -> GALIP:
    torch.manual_seed(seed)
    return GALIP(tiny_config(preprocess, **switches), clip=clip)
