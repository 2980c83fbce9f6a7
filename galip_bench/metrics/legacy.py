"""GALIP's own ("legacy") Inception feature path.

Matches the official GALIP code's FID pipeline: generated images are clamped to [-1, 1], mapped to [0, 1], and fed to
the pytorch-fid style ``InceptionV3`` wrapper built around *torchvision's ImageNet* ``inception_v3`` (not the TF FID
weights). The wrapper resizes bilinearly to 299x299 (align_corners=False, no antialias), applies the input
normalisation below and runs four blocks, the last ending in a global average pool: the 2048-d pool features.
Features stay float (no uint8 quantisation).

Input normalisation, established bit-exactly against the golden fixture ``tests/fixtures/galip_legacy_fid_reference.pt``
(relative feature error 0.0): the [0, 1] image reaches the network through torchvision's ``transform_input``
(``x * std/0.5 + (mean-0.5)/0.5`` with ImageNet mean/std, i.e. the [0, 1] image is treated as if it were
ImageNet-normalised). Plain ``2x - 1`` gives 23-54 % relative feature error; ``2x - 1`` followed by
``transform_input`` gives 10 %. An equivalent reading (1.8e-7 relative, float rounding): the image is mapped to
[0, 1] twice (``(x+1)/2`` then ``Normalize(-1, 2)``), the wrapper's ``2x - 1`` undoes one map, and torchvision's
``transform_input`` follows. We implement the single-map form because it is bit-exact.
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from galip_bench.errors import UserError

FEATURE_DIM = 2048
_MEAN = (0.485, 0.456, 0.406)  # ImageNet, as in torchvision's inception_v3 transform_input
_STD = (0.229, 0.224, 0.225)


def _load_state_dict(weights) -> dict:
    if isinstance(weights, dict):
        return weights
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise UserError(f"Inception weights not found: {path} (torchvision inception_v3_google-0cc3c7bd.pth)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def pytorch_fid_blocks(net) -> nn.ModuleList:
    """A torchvision ``inception_v3``'s layers in pytorch-fid's (early) four-block layout, ending in the 2048-d
    adaptive average pool (GALIP's and DM-GAN's FID wrappers)."""
    return nn.ModuleList([
        nn.Sequential(net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, nn.MaxPool2d(kernel_size=3, stride=2)),
        nn.Sequential(net.Conv2d_3b_1x1, net.Conv2d_4a_3x3, nn.MaxPool2d(kernel_size=3, stride=2)),
        nn.Sequential(net.Mixed_5b, net.Mixed_5c, net.Mixed_5d, net.Mixed_6a,
                      net.Mixed_6b, net.Mixed_6c, net.Mixed_6d, net.Mixed_6e),
        nn.Sequential(net.Mixed_7a, net.Mixed_7b, net.Mixed_7c, nn.AdaptiveAvgPool2d(output_size=(1, 1))),
    ])


def transform_input(x01: torch.Tensor) -> torch.Tensor:
    """torchvision's ``transform_input`` on a [0, 1] image: per channel x * std/0.5 + (mean - 0.5)/0.5 (ImageNet)."""
    return torch.cat([x01[:, c:c + 1] * (_STD[c] / 0.5) + (_MEAN[c] - 0.5) / 0.5 for c in range(3)], dim=1)


class GALIPInception(nn.Module):
    """torchvision inception_v3 in the pytorch-fid block layout, as used by GALIP's ``calculate_fid`` path.

    ``weights``: a path to a torchvision ``inception_v3`` state_dict (``inception_v3_google-0cc3c7bd.pth``) or the
    state_dict itself.
    """

    def __init__(self, weights):
        super().__init__()
        net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
        net.load_state_dict(_load_state_dict(weights))
        self.blocks = pytorch_fid_blocks(net)
        self.eval().requires_grad_(False)

    def wrapper_forward(self, x01: torch.Tensor) -> torch.Tensor:
        """The wrapper as GALIP runs it: input in [0, 1] -> [B, 2048] pool features (float32)."""
        x = F.interpolate(x01, size=(299, 299), mode="bilinear", align_corners=False, antialias=False)
        x = transform_input(x)
        for block in self.blocks:
            x = block(x)
        return x.flatten(1)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (any size, [B,3,H,W]) -> [B, 2048] float64 features, GALIP's legacy pipeline."""
        param = next(self.parameters())
        x = images.to(device=param.device, dtype=torch.float32)
        x = torch.nan_to_num(x.clamp(-1.0, 1.0), nan=-1.0, posinf=1.0, neginf=-1.0)
        return self.wrapper_forward((x + 1.0) / 2.0).double()
