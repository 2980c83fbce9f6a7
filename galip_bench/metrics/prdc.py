"""Precision, recall, density and coverage (Naeem et al., ICML 2020) of generated features against real ones.

Matches ``compute_prdc(real_features, fake_features, nearest_k)`` of the ``prdc`` package (clovaai/generative-
evaluation-prdc), which dgm-eval copies (``dgm_eval/metrics/prdc.py``): each real (fake) sample's radius is the
distance to its k-th nearest neighbour in its own set, itself excluded (the (k+1)-th smallest distance, itself
included); with strict ``<`` comparisons

- precision: the share of fakes inside at least one real ball,
- recall: the share of reals inside at least one fake ball,
- density: the mean over fakes of the number of real balls holding it, divided by k,
- coverage: the share of reals whose nearest fake lies inside the real's ball.

The distances are Euclidean in float64 on the features' device, computed block by block (``torch.cdist`` of a block
of rows against the whole other set), so no N x N matrix is ever held: at N = 40k a full matrix is 12.8 GB, a block
at most ``BLOCK_BYTES``.
"""
from __future__ import annotations

import torch

from galip_bench.metrics.fid import FeatureBank

BLOCK_BYTES = 256 * 2**20  # one block of distances: [rows, N] float64


def _rows_per_block(n_other: int, block_rows: int | None) -> int:
    return block_rows or max(1, BLOCK_BYTES // (8 * max(n_other, 1)))


def knn_radii(features, k: int, block_rows: int | None = None) -> torch.Tensor:
    """[N] distance of each row to its k-th nearest other row (prdc's ``compute_nearest_neighbour_distances``)."""
    x = torch.as_tensor(features, dtype=torch.float64)
    if len(x) <= k:
        raise ValueError(f"the k-th nearest neighbour needs more than k = {k} samples, got {len(x)}")
    step = _rows_per_block(len(x), block_rows)
    return torch.cat([torch.cdist(x[i:i + step], x).topk(k + 1, dim=1, largest=False).values[:, k]
                      for i in range(0, len(x), step)])


def compute_prdc(real, fake, nearest_k: int = 5, device=None, block_rows: int | None = None) -> dict:
    """{'precision', 'recall', 'density', 'coverage'} of `fake` [M, D] against `real` [N, D] (numpy or tensors),
    as the prdc package's ``compute_prdc``, on `device` (default: the device of `fake` when a tensor, else the
    CPU); `block_rows` fixes the rows of each distance block (default: ``BLOCK_BYTES`` of float64)."""
    if device is None:
        device = fake.device if torch.is_tensor(fake) else "cpu"
    real = torch.as_tensor(real, dtype=torch.float64).to(device)
    fake = torch.as_tensor(fake, dtype=torch.float64).to(device)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"expected real [N, D] and fake [M, D] features, got {tuple(real.shape)} and "
                         f"{tuple(fake.shape)}")
    r_real, r_fake = knn_radii(real, nearest_k, block_rows), knn_radii(fake, nearest_k, block_rows)
    balls_per_fake = torch.zeros(len(fake), dtype=torch.int64, device=device)
    recalled = covered = 0
    step = _rows_per_block(len(fake), block_rows)
    for i in range(0, len(real), step):
        d = torch.cdist(real[i:i + step], fake)  # [rows, M]: real block x every fake
        radius = r_real[i:i + step, None]
        balls_per_fake += (d < radius).sum(0)
        recalled += int((d < r_fake[None, :]).any(1).sum())
        covered += int((d.min(1).values < radius[:, 0]).sum())
    return {"precision": float((balls_per_fake > 0).double().mean()),
            "recall": recalled / len(real),
            "density": float(balls_per_fake.sum()) / (nearest_k * len(fake)),
            "coverage": covered / len(real)}


class DeviceFeatureBank(FeatureBank):
    """A ``FeatureBank`` that remembers the device its features came from, where the k-NN distances then run."""

    device = "cpu"

    def update(self, features) -> None:
        if torch.is_tensor(features):
            self.device = features.device
        super().update(features)
