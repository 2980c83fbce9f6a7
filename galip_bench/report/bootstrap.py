"""Bootstrap confidence interval of an FID: resample the generated features with replacement (the reference
statistics stay fixed) and take percentiles of the resampled FIDs.

    ci = fid_bootstrap(gen_features, ref["mu"], ref["sigma"], n_boot=200)   # {'fid', 'ci_low', 'ci_high', ...}

A record that carries `ci_low` / `ci_high` (e.g. `{**record, **ci}`) shows its interval in the report table.
"""
import numpy as np

from galip_bench.metrics.fid import feature_stats, frechet_distance


def fid_bootstrap(features, ref_mu, ref_sigma, n_boot: int = 200, alpha: float = 0.05, seed: int = 0) -> dict:
    """Percentile bootstrap: `n_boot` resamples of the N generated feature rows (N drawn with replacement, seeded);
    returns the FID of all features, the (alpha/2, 1 - alpha/2) percentiles and the std of the resampled FIDs.
    Note the resampled FIDs are biased upwards (duplicated rows shrink the covariance's rank), as for any
    bootstrap of FID; the interval describes the sampling spread of the generated set, not the reference's."""
    feats = np.asarray(features, np.float64)
    if feats.ndim != 2 or len(feats) < 2:
        raise ValueError(f"need an [N, D] feature array with N >= 2, got shape {feats.shape}")
    rng = np.random.default_rng(seed)
    mu, sigma = feature_stats(feats)
    full = frechet_distance(mu, sigma, ref_mu, ref_sigma)
    values = []
    for _ in range(int(n_boot)):
        m, s = feature_stats(feats[rng.integers(0, len(feats), len(feats))])
        values.append(frechet_distance(m, s, ref_mu, ref_sigma))
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return {"fid": full, "ci_low": float(lo), "ci_high": float(hi), "boot_std": float(np.std(values, ddof=1)),
            "n_boot": int(n_boot), "alpha": alpha, "boot_seed": seed}
