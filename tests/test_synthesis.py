"""Synthesis numerics: the faithful path is the plain fp32 generator; the fast path (bf16 autocast, channels_last)
stays within a stated tolerance of it and leaves the model as it found it; the mode is a recorded, gated setting;
device-side FID sums equal host ones; reference statistics do not depend on loader workers."""
import numpy as np
import pytest
import torch
from helpers import tiny_galip

from galip_bench.config.schema import DataConfig, EvalConfig, SiteConfig
from galip_bench.data import reference_images
from galip_bench.data.tokens import tokenize
from galip_bench.errors import UserError
from galip_bench.evaluation.driver import Evaluator
from galip_bench.evaluation.synthesis import Synthesizer, compare
from galip_bench.metrics.fid import StatsAccumulator, feature_stats

CAPTIONS = ["a small red circle on a white background", "a large blue square below a small green triangle"] * 4
# bf16 keeps 8 mantissa bits (relative rounding 2^-9 per op): through the tiny generator's ~10 layers the images
# move by a few 1e-3 on average; these bounds are for images of unit scale
FAST_MEAN_ABS, FAST_MAX_ABS = 0.02, 0.15


def _inputs(galip, n=8):
    noise = torch.randn(n, galip.cfg.z_dim, generator=torch.Generator().manual_seed(0))
    return tokenize(CAPTIONS[:n]), noise


def test_faithful_is_the_plain_generator_and_fast_stays_close():
    galip = tiny_galip(seed=2).eval()
    tokens, noise = _inputs(galip)
    with torch.no_grad():
        plain = galip.netG(noise, galip.clip.encode_text(tokens)[0].float())
    with Synthesizer(galip, "faithful") as synth:
        faithful = synth(tokens, noise)
    assert torch.equal(faithful, plain)
    with Synthesizer(galip, "fast", compile=False) as synth:
        assert galip.netG.to_rgb[-1].weight.is_contiguous(memory_format=torch.channels_last)
        fast = synth(tokens, noise)
    assert fast.dtype == torch.float32 and fast.shape == plain.shape
    assert all(p.is_contiguous() for p in galip.netG.parameters()), "the layout comes back after the block"
    scale = plain.abs().mean()
    gap = compare(fast / scale, plain / scale)
    print(f"fast vs fp32 (unit scale): mean {gap['mean_abs']:.2e}, max {gap['max_abs']:.2e}")
    assert 0 < gap["mean_abs"] < FAST_MEAN_ABS and gap["max_abs"] < FAST_MAX_ABS
    embed = lambda x: galip.clip.encode_image(x)[1]  # noqa: E731
    assert compare(fast, plain, embed)["cosine_min"] > 0.99


def test_synthesis_mode_is_recorded_and_gated(tmp_path):
    data = DataConfig(kind="synthetic", size=32, num_test=70)
    records = {}
    for mode in ("faithful", "fast"):
        cfg = EvalConfig(protocols=["fid_galip"], num_samples=70, extractor="tiny", bootstrap=0, synthesis=mode)
        evaluator = Evaluator(cfg, data, SiteConfig(), "cpu", progress=False)
        records[mode] = evaluator(tiny_galip(seed=1))[0]
        assert records[mode]["settings"]["synthesis"] == mode
    proto = evaluator.protos[0]
    old = {k: v for k, v in records["faithful"]["settings"].items() if k != "synthesis"}  # written before the key
    assert proto.gated_settings(old) == proto.gated_settings(records["faithful"]["settings"])
    assert proto.gated_settings(records["fast"]["settings"]) != proto.gated_settings(old)
    assert records["fast"]["value"] == pytest.approx(records["faithful"]["value"], rel=0.05)
    with pytest.raises(UserError, match="eval.synthesis"):
        Evaluator(EvalConfig(protocols=["fid_galip"], synthesis="turbo"), data, SiteConfig(), "cpu")


def test_device_side_fid_sums_equal_host_sums():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, (n, 16)) for n in (7, 64, 5)]
    on_device, host = StatsAccumulator(), StatsAccumulator()
    for b in batches:
        on_device.update(torch.from_numpy(b).float())
        host.update(b.astype(np.float32))
    mu, sigma = feature_stats(np.concatenate(batches).astype(np.float32))
    for acc in (on_device, host):
        got_mu, got_sigma = acc.stats()
        np.testing.assert_allclose(got_mu, mu, rtol=0, atol=1e-9)
        np.testing.assert_allclose(got_sigma, sigma, rtol=0, atol=1e-9)


def test_reference_images_do_not_depend_on_loader_workers():
    data = DataConfig(kind="synthetic", size=32, num_test=40)
    plain = torch.cat(list(reference_images(data, batch_size=16)))
    workers = torch.cat(list(reference_images(data, batch_size=16, num_workers=2)))
    limited = torch.cat(list(reference_images(data, batch_size=16, limit=20, num_workers=2)))
    assert plain.shape[0] == 40 and torch.equal(plain, workers) and torch.equal(limited, plain[:20])
