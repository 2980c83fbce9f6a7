"""CMMD (Jayasumana et al., CVPR 2024, "Rethinking FID: Towards a Better Evaluation Metric for Image Generation") as
google-research/cmmd computes it (``main.compute_cmmd``):

- images (``io_util._read_image``): uint8 files, ``_center_crop_and_resize``: the centred square of side
  min(w, h), then PIL ``resize((336, 336), Image.BICUBIC)`` (antialiased when it shrinks), as float32 / 255;
- embeddings (``embedding.ClipEmbeddingModel``): scenic's CLIP ViT-L/14@336 (OpenAI weights) after
  ``_clip_preprocess`` (a bicubic resize to 336, a no-op on 336-px input, and ``clip.normalize_image``: CLIP
  mean/std); scenic's ``encode_image`` L2-normalises them;
- distance (``distance.mmd``): the Gaussian RBF kernel exp(-||x - y||^2 / (2 sigma^2)) with sigma = 10, squared
  distances through the expansion ||x||^2 + ||y||^2 - 2 x.y, the minimum-variance (biased, V-statistic) MMD^2
  estimate of Gretton et al. (2012) eq. 5: mean k(x, x') + mean k(y, y') - 2 mean k(x, y) over all pairs, the
  diagonal included, times 1000.

Here: our images are [-1, 1] tensors, not files. ``to_uint8`` makes the uint8 pixels the official code would read
from a PNG written by ``torchvision.utils.save_image(x, normalize=True, value_range=(-1, 1))`` (what GALIP's
official code saves): clamp, (x + 1) / 2, * 255 + 0.5, truncated. ``pil_resize`` is PIL's 8-bit resampler
(``libImaging/Resample.c``: ``precompute_coeffs`` with the bicubic filter a = -0.5, the coefficients in 22-bit fixed
point as ``normalize_coeffs_8bpc``, a horizontal then a vertical pass each rounded and clipped to uint8) in torch,
so it runs on the GPU; the tests check it equals PIL's ``Image.resize`` pixel for pixel. The CLIP is open_clip's
``ViT-L-14-336-quickgelu`` with OpenAI's ``ViT-L-14-336px.pt`` (the file scenic converts), in fp32. The kernel sums
are computed in float64 blocks (``mmd``; N = 40k is 1.6e9 pairs); the official code computes in float32 with JAX.
``mmd`` also gives the unbiased U-statistic (the diagonal left out: 1/(m(m-1)) and 1/(n(n-1)) for the within-set
means), which the official code does not report.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
import torch

from models.clip import CLIP_MEAN, CLIP_STD

SIGMA = 10      # distance._SIGMA
SCALE = 1000    # distance._SCALE
CLIP_MODEL = "ViT-L-14-336-quickgelu"  # embedding._CLIP_MODEL_NAME 'vit_l14_336px' (OpenAI weights: QuickGELU)
PRECISION_BITS = 32 - 8 - 2            # PIL's 8-bit resampler: fixed-point coefficients


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images -> the uint8 pixel values (as float32) of the PNG ``torchvision.utils.save_image`` writes with
    ``normalize=True, value_range=(-1, 1)``: clamp, (x + 1) / 2, then ``mul(255).add_(0.5).clamp_(0, 255)`` and the
    cast to uint8 (truncation), in float32 as torchvision computes it."""
    x = images.float().clamp(-1, 1)
    x = x.sub(-1.0).div(2.0)
    return x.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).float()


def _bicubic_filter(x: float) -> float:
    """PIL's ``bicubic_filter`` (Keys cubic convolution, a = -0.5)."""
    a = -0.5
    x = -x if x < 0.0 else x
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


@lru_cache(maxsize=16)
def pil_coefficients(in_size: int, out_size: int) -> torch.Tensor:
    """[out_size, in_size] float64 matrix of PIL's fixed-point bicubic coefficients for a resize of the whole axis
    (``precompute_coeffs`` with box (0, in_size), then ``normalize_coeffs_8bpc``); integers, so products with uint8
    values and their sums are exact in float64. Cached: treat as read-only."""
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    out = np.zeros((out_size, in_size), dtype=np.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        ss = 1.0 / filterscale
        xmin = max(int(center - support + 0.5), 0)           # C's (int) truncates toward zero, as int()
        xmax = min(int(center + support + 0.5), in_size) - xmin
        k = [_bicubic_filter((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        ww = 0.0
        for w in k:
            ww += w
        if ww != 0.0:
            k = [w / ww for w in k]
        out[xx, xmin:xmin + xmax] = [int(-0.5 + w * (1 << PRECISION_BITS)) if w < 0
                                     else int(0.5 + w * (1 << PRECISION_BITS)) for w in k]
    return torch.from_numpy(out)


def _clip8(acc: torch.Tensor) -> torch.Tensor:
    """PIL's ``clip8``: (sum + 2^(P-1)) >> P, clipped to [0, 255] (an arithmetic shift: floor)."""
    return torch.floor((acc + float(1 << (PRECISION_BITS - 1))) / float(1 << PRECISION_BITS)).clamp_(0, 255)


def pil_resize(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 values (any float dtype) [..., H, W] -> PIL ``Image.resize((width, height), Image.BICUBIC)`` of them
    (float64 values 0..255): ``ImagingResampleInner``'s horizontal pass (only when the width changes), rounded to
    uint8, then its vertical pass (only when the height changes)."""
    x = pixels.double()
    if x.shape[-1] != width:
        coeffs = pil_coefficients(x.shape[-1], width).to(x.device)
        x = _clip8(x @ coeffs.T)
    if x.shape[-2] != height:
        coeffs = pil_coefficients(x.shape[-2], height).to(x.device)
        x = _clip8(coeffs @ x)
    return x


def centre_crop_square(x: torch.Tensor) -> torch.Tensor:
    """``io_util._center_crop_and_resize``'s crop box: the centred square of side min(h, w)."""
    h, w = x.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return x[..., top:top + side, left:left + side]


def cmmd_input(images: torch.Tensor, size: int = 336) -> torch.Tensor:
    """[-1, 1] images [B, 3, H, W] -> the official CMMD CLIP input [B, 3, size, size] (float32): uint8 as
    ``to_uint8``, centre square crop, PIL bicubic resize to `size`, / 255, CLIP mean/std (scenic's
    ``normalize_image``)."""
    pixels = pil_resize(centre_crop_square(to_uint8(images)), size, size)
    x = pixels.float() / 255.0
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class ClipImageEmbedder:
    """An extractor: [-1, 1] images -> L2-normalised CLIP image embeddings [B, E] (float64) of an open_clip CLIP
    (``model``), through ``cmmd_input`` at the model's input size (336 for ViT-L/14@336). The smoke stand-in
    wraps the model's own tiny CLIP the same way."""

    weights_path = None

    def __init__(self, model, size: int | None = None):
        self.model = model.eval().requires_grad_(False)
        image_size = model.visual.image_size
        self.size = int(size or (image_size[0] if isinstance(image_size, (tuple, list)) else image_size))

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        conv = self.model.visual.conv1.weight
        x = cmmd_input(images.to(conv.device), self.size)
        emb = self.model.encode_image(x.to(conv.dtype)).float()
        return (emb / emb.norm(dim=-1, keepdim=True)).double()  # scenic CLIP.encode_image(normalize=True)


def state_sha256(module: torch.nn.Module) -> str:
    """sha256 of a module's state (names, shapes, float32 values): identifies a stand-in CLIP in a cache key."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _kernel_sums(a: torch.Tensor, b: torch.Tensor, gamma: float, block: int, symmetric: bool,
                 columns: bool = False) -> tuple:
    """(sum over all pairs of k(a_i, b_j), sum of the diagonal k(a_i, a_i) when `symmetric` (b is a)), computed in
    blocks of `block` x `block` pairs; the squared distances through the official expansion. With `symmetric`
    only the blocks on and above the diagonal are computed (the others by symmetry). With `columns` (not
    symmetric), the diagonal's place holds the [len(b)] sums over a of k(a_i, b_j) instead."""
    a_sq, b_sq = (a * a).sum(1), (b * b).sum(1)
    total = diag = 0.0
    if columns:
        diag = torch.zeros(len(b), dtype=torch.float64, device=b.device)
    for i in range(0, len(a), block):
        for j in range(i if symmetric else 0, len(b), block):
            d2 = -2 * a[i:i + block] @ b[j:j + block].T + a_sq[i:i + block, None] + b_sq[None, j:j + block]
            k = torch.exp(-gamma * d2)
            if symmetric and i == j:
                total += k.sum().item()
                diag += k.diagonal().sum().item()
            else:
                total += (2.0 if symmetric else 1.0) * k.sum().item()
                if columns:
                    diag[j:j + block] += k.sum(0)
    return total, diag


def mmd(x, y, sigma: float = SIGMA, scale: float = SCALE, block: int = 4096, device="cpu") -> dict:
    """MMD^2 between embedding sets x [m, D] and y [n, D] with the Gaussian RBF kernel of bandwidth `sigma`, times
    `scale`, in float64: {'biased': distance.mmd's V-statistic (all pairs, diagonal included), 'unbiased': the
    U-statistic (the within-set diagonal left out), 'm', 'n'}. The official code is symmetric in x and y."""
    x, y = (torch.as_tensor(np.asarray(a, dtype=np.float64) if not torch.is_tensor(a) else a).double().to(device)
            for a in (x, y))
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"expected two [N, D] embedding sets of one D, got {tuple(x.shape)} and {tuple(y.shape)}")
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError(f"MMD needs at least 2 embeddings per set, got {m} and {n}")
    gamma = 1.0 / (2.0 * sigma ** 2)
    k_xx, d_xx = _kernel_sums(x, x, gamma, block, symmetric=True)
    k_yy, d_yy = _kernel_sums(y, y, gamma, block, symmetric=True)
    k_xy, y_sums = _kernel_sums(x, y, gamma, block, symmetric=False, columns=True)
    cross = 2.0 * k_xy / (m * n)
    biased = k_xx / (m * m) + k_yy / (n * n) - cross
    unbiased = (k_xx - d_xx) / (m * (m - 1)) + (k_yy - d_yy) / (n * (n - 1)) - cross
    # what a resample of y needs (evaluation.paired): x's own terms and each y's mean kernel value over x
    return {"biased": scale * biased, "unbiased": scale * unbiased, "m": m, "n": n,
            "x_biased": k_xx / (m * m), "x_unbiased": (k_xx - d_xx) / (m * (m - 1)),
            "y_cross": (y_sums / m).cpu().numpy()}
