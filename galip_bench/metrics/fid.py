"""Frechet distance between Gaussians fitted to features.

``frechet_distance`` matches pytorch-fid's ``calculate_frechet_distance`` (which GALIP's official code uses):
float64 numpy, ``scipy.linalg.sqrtm``, an ``eps * I`` offset on both covariances when the product's square root is
not finite, and a check that the imaginary part of the square root is negligible.
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import torch


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)); matches pytorch-fid's ``calculate_frechet_distance``."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"statistics differ in shape: mu {mu1.shape} vs {mu2.shape}, "
                         f"sigma {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():  # product is singular: offset both covariances (pytorch-fid's fallback)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm has a significant imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def _sqrtm(a: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():  # scipy warns on (near-)singular input; the finiteness check handles it
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        return scipy.linalg.sqrtm(a)


def _as_numpy64(features) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().double().numpy()
    return np.asarray(features, dtype=np.float64)


def feature_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of [N, D] features; sigma is the unbiased covariance, as ``np.cov(rowvar=False)`` (pytorch-fid)."""
    f = _as_numpy64(features)
    return f.mean(axis=0), np.cov(f, rowvar=False)


class StatsAccumulator:
    """Streaming mean/covariance in float64 sums, so features need not be kept in memory.

    Gives the same (mu, sigma) as ``feature_stats`` on the concatenated features (sigma unbiased, N - 1).
    """

    def __init__(self, dim: int | None = None):
        self.n = 0
        self.dim = dim
        self._sum = None
        self._outer = None
        self._shift = None  # first batch mean: subtracting it keeps the sums well conditioned

    def update(self, features) -> None:
        """features [B, D]: a numpy array, or a tensor, whose sums then stay on its device (in float64), so a GPU
        evaluation does not wait for a copy to the host at every batch."""
        f = features.detach().double() if torch.is_tensor(features) else _as_numpy64(features)
        if f.ndim != 2 or (self.dim is not None and f.shape[1] != self.dim):
            raise ValueError(f"expected features of shape [N, {self.dim or 'D'}], got {tuple(f.shape)}")
        if f.shape[0] == 0:
            return
        if self._sum is None:
            self.dim = f.shape[1]
            self._shift = f.mean(axis=0) if isinstance(f, np.ndarray) else f.mean(dim=0)
            self._sum, self._outer = 0.0, 0.0
        if torch.is_tensor(f) != torch.is_tensor(self._shift):  # a stream that mixes the two: sum on the host
            self._to_numpy()
            f = _as_numpy64(f)
        c = f - self._shift
        self._sum = self._sum + c.sum(0)
        self._outer = self._outer + c.T @ c
        self.n += f.shape[0]

    def _to_numpy(self) -> None:
        self._shift, self._sum, self._outer = (_as_numpy64(x) if torch.is_tensor(x) else x
                                               for x in (self._shift, self._sum, self._outer))

    def sync(self, comm) -> None:
        """Merge every process's moments into this accumulator (each process calls it, in the same order as every
        other collective; a process that saw no features takes part too). `comm`: the collectives of
        ``galip_bench.distributed`` (rank_size, all_reduce, broadcast). The sums are re-centred on one
        common shift, the first process with samples' (rank 0's first batch mean in a sharded plan: the shift one
        process would use), then summed in float64; afterwards every process holds the merged moments."""
        rank, size = comm.rank_size()
        if size == 1:
            return
        self._to_numpy()
        dim = int(comm.all_reduce(torch.tensor([float(self.dim if self.n else 0)], dtype=torch.float64), "max"))
        if dim == 0:  # no process saw a feature
            return
        if self.n and self.dim != dim:
            raise ValueError(f"processes accumulated features of different sizes ({self.dim} vs {dim})")
        src = int(comm.all_reduce(torch.tensor([float(rank if self.n else size)], dtype=torch.float64), "min"))
        own = torch.from_numpy(np.asarray(self._shift if self.n else np.zeros(dim), dtype=np.float64))
        shift = comm.broadcast(own, src).numpy()
        n, total, outer = self.n, np.zeros(dim), np.zeros((dim, dim))
        if n:
            # x - shift = (x - own) + d: sum += n d, outer += sum d^T + d sum^T + n d d^T
            d = self._shift - shift
            total = self._sum + n * d
            outer = self._outer + np.outer(self._sum, d) + np.outer(d, self._sum) + n * np.outer(d, d)
        packed = np.concatenate([[float(n)], total, outer.ravel()])
        merged = comm.all_reduce(torch.from_numpy(packed)).numpy()
        self.n, self.dim, self._shift = int(round(merged[0])), dim, shift
        self._sum, self._outer = merged[1:1 + dim], merged[1 + dim:].reshape(dim, dim)

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n < 2:
            raise ValueError(f"need at least 2 samples for a covariance, got {self.n}")
        self._to_numpy()
        mean_c = self._sum / self.n
        sigma = (self._outer - self.n * np.outer(mean_c, mean_c)) / (self.n - 1)
        return self._shift + mean_c, sigma

    def state(self) -> dict:
        """Arrays for the reference-statistics cache and ``Protocol.compute``."""
        mu, sigma = self.stats()
        return {"mu": mu, "sigma": sigma, "n": np.array(self.n)}


class FeatureBank:
    """Keeps every feature (float64); for metrics that need samples, not moments (KID)."""

    def __init__(self):
        self.chunks: list[np.ndarray] = []

    def update(self, features) -> None:
        self.chunks.append(_as_numpy64(features))

    def state(self) -> dict:
        features = np.concatenate(self.chunks) if self.chunks else np.zeros((0, 0))
        return {"features": features, "n": np.array(len(features))}

    def sync(self, comm) -> None:
        """Gather every process's features, in rank order (a sharded plan's order), onto process 0 (each process
        calls it; `comm`: ``galip_bench.distributed``'s collectives). The other processes keep their own."""
        if comm.rank_size()[1] == 1:
            return
        gathered = comm.gather_rows(torch.from_numpy(self.state()["features"]))
        if gathered is not None:
            self.chunks = [gathered.numpy()]


def load_stats_npz(path) -> dict:
    """A given ``mu``/``sigma`` npz (e.g. GALIP's ``coco_val256_FIDK0.npz``, pytorch-fid's ``--save-stats`` files)."""
    with np.load(path) as data:
        missing = {"mu", "sigma"} - set(data.files)
        if missing:
            raise ValueError(f"{path}: no {', '.join(sorted(missing))} array (has {', '.join(data.files)})")
        return {"mu": data["mu"].astype(np.float64), "sigma": data["sigma"].astype(np.float64),
                "n": np.array(int(data["n"]) if "n" in data.files else -1)}
