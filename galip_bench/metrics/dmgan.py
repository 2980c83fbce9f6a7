"""DM-GAN's and CogView's released PyTorch evaluation: the FID of DM-GAN's ``eval/FID`` and the Inception Score of
CogView's ``eval_utils/inception_score.py``, both on torchvision's ImageNet ``inception_v3`` (not the TF FID
Inception of ``fid`` / ``is``). CLIP-GEN's MS-COCO table (IS, FID-0/1/2) copies CogView's, which most likely used
this code (DM-GAN's README: its PyTorch FID and the TF FID differ, COCO AttnGAN 35.49 vs 29.53).

What the released code does, step by step (MinfengZhu/DM-GAN ``code/trainer.py`` ``sampling``, ``eval/FID/*.py``;
THUDM/CogView ``eval_utils/*.py``), and what we match:

1. The generator's [-1, 1] image is written as a PNG: ``im = (im + 1.0) * 127.5; im = im.astype(np.uint8)``, i.e.
   uint8 by *truncation* (float32 arithmetic, no rounding; the generator's tanh keeps it in range, our images are
   clamped first). PNG is lossless, so the file holds exactly these bytes: we quantise in memory (`quantise`).
2. ``eval/FID/img_data.py`` opens each file with PIL (``convert('RGB')``) and ``fid_score.py`` applies
   ``transforms.Resize((299, 299))`` (PIL bilinear, antialiased when shrinking, rounded back to uint8) and
   ``ToTensor()`` ([0, 1] float32, ``/255``): `loader_299` (``resize_at: loader``). CogView's
   ``calculate_fid_given_dataset`` takes datasets whose transform is not released; ``resize_at: network`` reads
   it as tensors at the image's own size, resized by the wrapper below.
3. ``eval/FID/inception.py`` is pytorch-fid's early ``InceptionV3`` wrapper around torchvision's ImageNet
   ``inception_v3(pretrained=True)``: ``F.upsample(x, size=(299, 299), mode='bilinear', align_corners=True)``
   (an exact identity on 299 px input), then per channel ``x * std/0.5 + (mean - 0.5)/0.5`` with ImageNet
   mean/std (torchvision's ``transform_input`` applied to the [0, 1] image), then the blocks Conv2d_1a..2b +
   MaxPool(3, 2), Conv2d_3b..4a + MaxPool(3, 2), Mixed_5b..6e, Mixed_7a..7c + adaptive average pool: the 2048-d
   pool features, float32 (`DMGANInception.pool_features`). ``fid_score.py`` stores them in a float64 array, takes
   ``np.mean`` and ``np.cov(rowvar=False)`` and the TTUR / pytorch-fid Frechet distance (scipy ``sqrtm``, the
   1e-6 diagonal fallback): `metrics.fid.frechet_distance`. Its loader has ``drop_last=True`` with the batch size
   of the command (50 in the README): N mod 50 images are dropped; we use every sample of the plan (none are
   dropped for N = 30,000).
4. CogView's ``inception_score(imgs, batch_size=32, resize=False, splits=1)`` takes images "normalized in the range
   [-1, 1]" (``ToTensor`` then ``Normalize(0.5, 0.5)``: `(x - 0.5) / 0.5`), runs the *whole* torchvision
   ``inception_v3(pretrained=True, transform_input=False)`` in eval mode (the 1000 ImageNet logits, with the fc
   bias), ``F.softmax`` in float32, and per split (``part = preds[k*(N//splits):(k+1)*(N//splits)]``, no shuffle)
   ``exp(mean_i entropy(p_i, p_y))`` with scipy's ``entropy`` (which renormalises both distributions), then the
   mean and std over the splits (`inception_score_cogview`). With ``resize=False`` the images must come at 299 px:
   we take them from step 2's loader (``resize_at: loader``); ``resize_at: network`` is its ``resize=True``,
   ``nn.Upsample(size=(299, 299), mode='bilinear')`` (align_corners False) on the [-1, 1] tensor.

DM-GAN's own COCO Inception Score (``eval/IS/coco/inception_score_coco.py``) is OpenAI's TF one (the 2015 TF
Inception graph, 1008 logits without bias, ``scipy.misc.imresize`` bilinear, 10 splits): that is the ``is``
protocol's family, not this one.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from PIL import Image

from galip_bench.metrics.legacy import _load_state_dict, pytorch_fid_blocks, transform_input

SIDE = 299
RESIZE_AT = ("loader", "network")


def quantise(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] float images in [-1, 1] -> uint8, DM-GAN's PNG writer: ``((x + 1) * 127.5).astype(uint8)``
    (float32, truncation; clamped first)."""
    return ((images.float().clamp(-1, 1) + 1.0) * 127.5).to(torch.uint8)


def loader_299(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> [B, 3, 299, 299] float32 in [0, 1]: each image through PIL as
    ``Image.open(png).convert('RGB')`` gives it, ``transforms.Resize((299, 299))`` (PIL bilinear), ``ToTensor()``."""
    out = []
    for image in images_uint8.cpu():
        pil = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())  # H x W x 3 uint8: RGB
        pil = pil.resize((SIDE, SIDE), Image.Resampling.BILINEAR)
        out.append(torch.from_numpy(np.array(pil, dtype=np.uint8)).permute(2, 0, 1).contiguous())
    return torch.stack(out).float().div(255)


def as_unit(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 -> [0, 1] float32 at the image's own size (``ToTensor`` without a resize)."""
    return images_uint8.float().div(255)


class DMGANInception(nn.Module):
    """torchvision ``inception_v3`` (ImageNet weights: ``inception_v3_google-0cc3c7bd.pth``, or a state_dict),
    ``transform_input=False``: `pool_features` is DM-GAN's ``eval/FID/inception.py`` wrapper (pool3, 2048-d),
    `logits` the whole network as CogView's Inception Score runs it (1000 logits with bias)."""

    def __init__(self, weights):
        super().__init__()
        net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False,
                                              transform_input=False)
        net.load_state_dict(_load_state_dict(weights))
        self.net = net
        self.blocks = pytorch_fid_blocks(net)
        self.eval().requires_grad_(False)

    @torch.no_grad()
    def pool_features(self, x01: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] float32 in [0, 1] -> [B, 2048] float32, the wrapper's resize, normalisation and blocks."""
        x = F.interpolate(x01, size=(SIDE, SIDE), mode="bilinear", align_corners=True)
        x = transform_input(x)  # ImageNet mean/std, as the wrapper's normalize_input
        for block in self.blocks:
            x = block(x)
        return x.flatten(1)

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, 299, 299] float32 in [-1, 1] -> [B, 1000] logits (eval mode: no auxiliary head)."""
        return self.net(x)


class _DMGANExtractor:
    """Images in [-1, 1] -> float64 rows: the generated image written as DM-GAN's PNG (`quantise`), then read back
    at 299 px by the loader or at its own size (`resize_at`)."""

    def __init__(self, weights, device="cpu", resize_at: str = "loader"):
        if resize_at not in RESIZE_AT:
            raise ValueError(f"resize_at must be one of {', '.join(RESIZE_AT)}, got {resize_at!r}")
        self.device, self.resize_at = torch.device(device), resize_at
        self.net = DMGANInception(weights).to(self.device)

    def unit_images(self, images: torch.Tensor) -> torch.Tensor:
        """The [0, 1] float32 batch the evaluation code's loader yields (``ToTensor``), on the device."""
        q = quantise(images.detach())
        x = loader_299(q) if self.resize_at == "loader" else as_unit(q)
        return x.to(self.device)


class DMGANFeatures(_DMGANExtractor):
    """DM-GAN's ``eval/FID`` feature path: [B, 2048] float64 pool features."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.pool_features(self.unit_images(images)).double()


class CogViewLogits(_DMGANExtractor):
    """CogView's Inception Score input path: [B, 1000] float64 logits (their float32 values; the softmax is taken
    in float32 by `inception_score_cogview`, as CogView's ``F.softmax``)."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = (self.unit_images(images) - 0.5) / 0.5  # transforms.Normalize((0.5,) * 3, (0.5,) * 3)
        if self.resize_at == "network":  # inception_score(..., resize=True): nn.Upsample((299, 299), 'bilinear')
            x = F.interpolate(x, size=(SIDE, SIDE), mode="bilinear", align_corners=False)
        return self.net.logits(x).double()


def inception_score_cogview(logits, splits: int = 1) -> tuple[float, float]:
    """(mean, std) over `splits` of CogView's Inception Score of [N, classes] logits: float32 softmax, consecutive
    splits of N // splits samples (the remainder unused), exp of the mean KL(p(y|x) || p(y)) with both
    distributions renormalised to sum 1 as ``scipy.stats.entropy`` does."""
    from scipy.special import rel_entr
    logits = torch.as_tensor(logits)
    n = len(logits)
    if splits < 1 or n < splits:
        raise ValueError(f"the Inception Score needs at least one sample per split: {n} samples, {splits} splits")
    preds = torch.softmax(logits.float(), dim=1).double().numpy()
    scores = []
    for k in range(splits):
        part = preds[k * (n // splits):(k + 1) * (n // splits)]
        py = part.mean(axis=0)
        p = part / part.sum(axis=1, keepdims=True)
        q = py / py.sum()
        scores.append(np.exp(np.mean(rel_entr(p, q).sum(axis=1))))
    return float(np.mean(scores)), float(np.std(scores))
