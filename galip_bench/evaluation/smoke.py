"""The smoke profile's stand-ins for the real extractors: a fixed, seeded random conv net for the Inception
features (with a linear head giving logits for the Inception Score) and the model's own (tiny) CLIP for the CLIP
protocols. Their numbers only compare runs of the same profile; the records say so (`smoke: true` and the
extractor's description)."""
import zlib

import torch
import torch.nn.functional as F
from torch import nn

from models.clip import FrozenCLIP

TINY_DIM = 64
TINY_CLASSES = 16


class TinyExtractor(nn.Module):
    """Images in [-1, 1] -> [B, 64] float64 features of a seeded random conv net (a cheap Inception stand-in);
    with `logits`, [B, 16] logits of a seeded random linear head on them."""

    weights_path = None

    def __init__(self, seed: int = 0, logits: bool = False):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(16, 32, 3, 2, 1),
                                     nn.LeakyReLU(0.2), nn.Conv2d(32, TINY_DIM, 3, 2, 1), nn.AdaptiveAvgPool2d(1),
                                     nn.Flatten())
            if logits:
                self.net.append(nn.Linear(TINY_DIM, TINY_CLASSES))
        self.requires_grad_(False)

    @torch.no_grad()
    def __call__(self, images):
        x = F.interpolate(images.float().clamp(-1, 1), size=(64, 64), mode="bilinear", align_corners=False)
        return self.net.to(x.device)(x).double()


def smoke_extractor(proto, galip):
    """The stand-in for `proto`'s extractor: TinyExtractor for features (inside the protocol's own image step, e.g.
    a blur), the model's CLIP with the protocol's preprocessing for the CLIP scores."""
    if proto.kind == "features":  # one net per protocol, so two protocols never report the same number by design
        return proto.wrap(TinyExtractor(seed=zlib.crc32(proto.name.encode()), logits=proto.smoke_logits))
    return FrozenCLIP(galip.clip.model, preprocess=proto.clip_preprocess, taps=galip.clip.taps)
