"""frechet_distance and the streaming statistics against closed forms and an independent eigh-based formula."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest

from galip_bench.metrics.fid import StatsAccumulator, feature_stats, frechet_distance


def _random_spd(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _psd_sqrt(a):
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def test_diagonal_gaussians_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.standard_normal(16), rng.standard_normal(16)
    v1, v2 = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)


def test_random_spd_matches_symmetric_formula():
    # Tr sqrt(S1 S2) = Tr sqrt(S1^1/2 S2 S1^1/2): an independent computation through eigh
    rng = np.random.default_rng(1)
    for d in (2, 8, 64):
        mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
        s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
        r1 = _psd_sqrt(s1)
        expected = (np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
                    - 2 * np.trace(_psd_sqrt(r1 @ s2 @ r1)))
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_symmetric_and_zero_on_identical():
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.standard_normal(32), rng.standard_normal(32)
    s1, s2 = _random_spd(rng, 32), _random_spd(rng, 32)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-8)
    assert abs(frechet_distance(mu1, s1, mu1, s1)) < 1e-8


def test_rank_deficient_is_finite():
    rng = np.random.default_rng(3)
    f1, f2 = rng.standard_normal((5, 40)), rng.standard_normal((5, 40)) + 0.5
    value = frechet_distance(*feature_stats(f1), *feature_stats(f2))
    assert np.isfinite(value) and value > 0


def test_stream_accumulator_matches_numpy():
    rng = np.random.default_rng(4)
    feats = rng.standard_normal((103, 12)) * 3 + 100.0  # large offset: checks the shifted sums stay accurate
    acc = StatsAccumulator()
    for chunk in np.array_split(feats, 7):
        acc.update(chunk)
    mu, sigma = acc.stats()
    assert acc.n == 103
    np.testing.assert_allclose(mu, feats.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(feats, rowvar=False), rtol=1e-9, atol=1e-12)
    assert acc.state()["n"] == 103
