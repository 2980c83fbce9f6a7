"""GALIP's legacy FID path (GALIPInception + frechet_distance) against the golden fixture made by the official code."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from galip_bench.metrics.fid import feature_stats, frechet_distance
from galip_bench.metrics.legacy import GALIPInception

FIXTURE = Path(__file__).parent / "fixtures" / "galip_legacy_fid_reference.pt"


def recipe_inception_state_dict() -> dict:
    """The torchvision inception_v3 weights described by the fixture's 'recipe' text."""
    net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    state = {}
    for key, value in net.state_dict().items():
        if not value.is_floating_point():
            state[key] = value  # num_batches_tracked kept as built
            continue
        shape = tuple(value.shape)
        noise = np.random.RandomState(zlib.crc32(key.encode()) & 0xFFFFFFFF).standard_normal(shape).astype(np.float32)
        noise = torch.from_numpy(noise)
        if ".bn." in key:
            leaf = key.rsplit(".", 1)[1]
            value = {"running_var": 1 + 0.1 * noise.abs(), "running_mean": 0.1 * noise,
                     "weight": 1 + 0.1 * noise, "bias": 0.1 * noise}[leaf]
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            value = noise * np.sqrt(2.0 / fan_in)
        state[key] = value.float()
    return state


@pytest.fixture(scope="module")
def recipe_state():
    return recipe_inception_state_dict()


@pytest.fixture(scope="module")
def legacy(recipe_state):
    assert FIXTURE.is_file(), f"golden fixture missing: {FIXTURE}"  # fail, never skip
    ref = torch.load(FIXTURE, weights_only=False)
    net = GALIPInception(recipe_state)
    gen = net.features(ref["generated_images"])
    real = net.features(ref["reference_images"])
    return ref, gen, real


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def test_features_match_fixture(legacy):
    ref, gen, real = legacy
    assert gen.shape == (6, 2048) and gen.dtype == torch.float64
    assert _rel(gen, ref["generated_features"]) <= 1e-4
    assert _rel(real, ref["reference_features"]) <= 1e-4


def test_fid_matches_fixture(legacy):
    ref, gen, real = legacy
    expected = ref["fid_reference_vs_generated"]
    fid = frechet_distance(*feature_stats(real), *feature_stats(gen))
    assert abs(fid - expected) / abs(expected) <= 1e-3


def test_weights_from_file(tmp_path, recipe_state, legacy):
    ref, gen, _ = legacy
    path = tmp_path / "inception_v3_google-0cc3c7bd.pth"
    torch.save(recipe_state, path)
    from_file = GALIPInception(path).features(ref["generated_images"][:1])
    torch.testing.assert_close(from_file, gen[:1], rtol=0, atol=0)
