"""Bootstrap 95% interval of an FID: resample the generated features with replacement (the reference statistics stay
fixed) and take percentiles of the resampled FIDs. The evaluation keeps the generated features of each FID protocol
for this (`eval.bootstrap` resamples; 0 turns it off) and records `ci_low`, `ci_high`, `ci_resamples`, which the
report shows beside a single seed's value.

The resampled FIDs use Tr sqrt(S R) = Tr sqrt(A S A) with A = sqrt(R) computed once (R, the reference covariance,
is fixed), so a resample costs one covariance and one symmetric eigendecomposition, on the evaluation's device. The
point estimate itself stays the protocol's own (scipy sqrtm, as the official code). Resampled FIDs are biased
upwards (duplicated rows shrink the covariance's rank), as for any bootstrap of FID: the interval describes the
sampling spread of the generated set, not the reference's."""
import torch

ALPHA = 0.05


def resample_indices(n: int, resamples: int, seed: int = 0) -> torch.Tensor:
    """[resamples, n] row indices drawn with replacement from a generator seeded with `seed`."""
    return torch.randint(0, n, (resamples, n), generator=torch.Generator().manual_seed(seed))


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(matrix)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def fid_interval(features, ref_mu, ref_sigma, resamples: int = 100, seed: int = 0, alpha: float = ALPHA,
                 device="cpu") -> dict:
    """{'ci_low', 'ci_high', 'ci_std', 'ci_resamples', 'ci_alpha', 'ci_seed'} of the FID of `features` ([N, D])
    against (ref_mu, ref_sigma), from `resamples` bootstrap resamples."""
    x = torch.as_tensor(features, dtype=torch.float64, device=device)
    mu_r = torch.as_tensor(ref_mu, dtype=torch.float64, device=device)
    sigma_r = torch.as_tensor(ref_sigma, dtype=torch.float64, device=device)
    root_r, trace_r = _sqrt_psd(sigma_r), torch.trace(sigma_r)
    values = []
    for idx in resample_indices(len(x), resamples, seed):
        sample = x[idx.to(device)]
        mu = sample.mean(0)
        centred = sample - mu
        sigma = centred.T @ centred / (len(sample) - 1)
        cross = torch.linalg.eigvalsh(root_r @ sigma @ root_r).clamp(min=0).sqrt().sum()
        values.append(((mu - mu_r).square().sum() + torch.trace(sigma) + trace_r - 2 * cross).item())
    v = torch.tensor(values, dtype=torch.float64)
    lo, hi = torch.quantile(v, torch.tensor([alpha / 2, 1 - alpha / 2], dtype=torch.float64)).tolist()
    return {"ci_low": lo, "ci_high": hi, "ci_std": float(v.std()), "ci_resamples": int(resamples),
            "ci_alpha": alpha, "ci_seed": seed}
