"""The CLIP-GEN COCO table's protocols: `is` against torch-fidelity's Inception Score, `fid_blur1`/`fid_blur2` against
a reference blur (scipy) + torch-fidelity features + scipy Frechet distance, and `is` (no reference) through the
driver, the regression gate and the report."""
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage
import torch
import yaml
from helpers import tiny_galip
from test_metrics_standard import _Images, _smooth_images, tf_inception_dir  # noqa: F401 (a fixture)

from galip_bench.config.schema import DataConfig, EvalConfig, SiteConfig
from galip_bench.errors import UserError
from galip_bench.evaluation import get_protocol
from galip_bench.evaluation.driver import Evaluator
from galip_bench.evaluation.planning import preview
from galip_bench.evaluation.regress import check_settings, compare
from galip_bench.metrics.blur import blur
from galip_bench.metrics.standard import inception_score, to_uint8
from galip_bench.metrics.weights import WeightsResolver
from galip_bench.report import build_report

TF_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"


@pytest.fixture(scope="module")
def weights_dir(tf_inception_dir, tmp_path_factory):
    """The random-init TF Inception with its classifier scaled up: its logits then differ enough between images for
    an Inception Score above 1 (the pool features are untouched)."""
    state = torch.load(tf_inception_dir / TF_WEIGHTS, weights_only=True)
    state["fc.weight"] = state["fc.weight"] * 100
    folder = tmp_path_factory.mktemp("confident")
    torch.save(state, folder / TF_WEIGHTS)
    return folder


@pytest.fixture(scope="module")
def tf_net(weights_dir):
    """torch-fidelity's own extractor, for the reference features."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    return FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                       feature_extractor_weights_path=str(weights_dir / TF_WEIGHTS))


@pytest.fixture(scope="module")
def extractor(weights_dir):
    """proto -> its extractor, built once per protocol and options (loading the Inception takes a while)."""
    built = {}

    def get(proto):
        key = (proto.name, json.dumps(proto.options, sort_keys=True))
        if key not in built:
            built[key] = proto.make_extractor(WeightsResolver(weights_dir), "cpu")
        return built[key]
    return get


def test_is_agrees_with_torch_fidelity(weights_dir, extractor):
    """3 splits of 6 images (2 each: quick), torch-fidelity's default shuffle seed."""
    import torch_fidelity
    from torch_fidelity.defaults import DEFAULTS
    assert get_protocol("is").options == {"isc_splits": DEFAULTS["isc_splits"], "isc_rng_seed": DEFAULTS["rng_seed"],
                                          "isc_shuffle": DEFAULTS["samples_shuffle"]}
    assert DEFAULTS["isc_splits"] == 10 and DEFAULTS["rng_seed"] == 2020 and DEFAULTS["samples_shuffle"] is True
    gen = _smooth_images(4, 6, 0.0)
    proto = get_protocol("is", options={"isc_splits": 3})
    acc = proto.new_accumulator()
    for chunk in gen.split(3):
        acc.update(extractor(proto)(chunk))
    ours = proto.compute_all(acc)
    theirs = torch_fidelity.calculate_metrics(
        input1=_Images(to_uint8(gen)), isc=True, isc_splits=3, cuda=False, batch_size=3, cache=False,
        feature_extractor="inception-v3-compat", verbose=False, save_cpu_ram=True,
        feature_extractor_weights_path=str(weights_dir / TF_WEIGHTS))
    print(f"is ours={ours} torch-fidelity={theirs}")
    assert theirs["inception_score_mean"] > 1.01 and theirs["inception_score_std"] > 0  # not a degenerate case
    assert ours["is"] == pytest.approx(theirs["inception_score_mean"], rel=1e-5)  # float32 convs: batch-dependent
    assert ours["is_std"] == pytest.approx(theirs["inception_score_std"], rel=1e-4)
    other = get_protocol("is", options={"isc_splits": 3, "isc_rng_seed": 0}).compute_all(acc)["is"]
    assert abs(other - theirs["inception_score_mean"]) > 1e-4  # the seed draws the splits: it must be theirs


def test_inception_score_of_confident_uniform_classes_is_the_class_count():
    """Each sample sure of one of 8 classes, the classes equally frequent: p(y) uniform, KL = log 8, IS = 8."""
    logits = 40.0 * torch.eye(8).repeat(5, 1)
    mean, std = inception_score(logits, splits=1)
    assert mean == pytest.approx(8.0, rel=1e-6) and std == 0
    assert inception_score(torch.zeros(40, 8), splits=4)[0] == pytest.approx(1.0)  # no confidence: IS 1
    with pytest.raises(ValueError, match="at least one sample per split"):
        inception_score(logits[:9], splits=10)


def test_too_few_samples_for_the_is_splits_stop_before_generation():
    from galip_bench.errors import UserError
    from galip_bench.evaluation import get_protocol
    from galip_bench.evaluation.planning import check_sample_count
    check_sample_count(get_protocol("is"), 10)  # torch-fidelity's default: 10 splits
    with pytest.raises(UserError, match="9 samples are fewer than the 10 it needs"):
        check_sample_count(get_protocol("is"), 9)
    check_sample_count(get_protocol("is", options={"isc_splits": 3}), 3)


@pytest.mark.parametrize("sigma", [1, 2, 0.7, 1.3])
def test_blur_is_scipys_gaussian_filter_mirror_truncated_at_3_sigma(sigma):
    g = torch.Generator().manual_seed(int(sigma * 10))
    images = torch.rand(2, 3, 21, 30, generator=g) * 2.4 - 1.2  # some values outside [-1, 1]: clamped first
    expected = scipy.ndimage.gaussian_filter(images.clamp(-1, 1).double().numpy(), sigma=(0, 0, sigma, sigma),
                                             mode="mirror", truncate=3.0)
    np.testing.assert_allclose(blur(images, sigma).numpy(), expected, atol=2e-6)
    assert np.abs(images.clamp(-1, 1).numpy() - expected).max() > 0.1  # the tolerance is telling
    assert torch.equal(blur(images, 0), images)
    with pytest.raises(TypeError):
        blur(to_uint8(images), sigma)


def test_blur_radius_is_relative_to_the_image_side():
    """GALIP's 224 px samples and its 256 px reference canvas get the same blur relative to their content: blurring
    then halving the size is close to halving then blurring with the scaled sigma, and far from an unscaled one."""
    from galip_bench.metrics.blur import Blurred
    low = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    big = torch.nn.functional.interpolate(low, size=(256, 256), mode="bilinear", align_corners=False)
    half = lambda x: torch.nn.functional.interpolate(x, size=(128, 128), mode="area")  # noqa: E731
    blurred = Blurred(lambda x: x, 2)
    first = half(blurred(big))
    scaled_after = blurred(half(big))
    unscaled_after = blur(half(big), 2)
    assert (first - scaled_after).abs().mean() < 0.25 * (first - unscaled_after).abs().mean()


def _reference_features(images, sigma, net):
    """scipy blur per channel on numpy images, stylegan3's uint8 rounding, torch-fidelity's extractor."""
    x = np.clip(images.double().numpy(), -1, 1)
    x = scipy.ndimage.gaussian_filter(x, sigma=(0, 0, sigma, sigma), mode="mirror", truncate=3.0)
    x = np.clip(x * 127.5 + 128, 0, 255).astype(np.uint8)
    with torch.no_grad():
        return net(torch.from_numpy(x))[0].double().numpy()


def _frechet(f1, f2):
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


@pytest.mark.parametrize("k", [1, 2])
def test_fid_blur_matches_scipy_blur_then_torch_fidelity_features(extractor, tf_net, k):
    """Few images (Inception at 299 is slow on a CPU): the 2048-d features in full, the FID on 2 of them (3 samples
    give a full-rank 2-d covariance)."""
    gen, real = _smooth_images(5, 3, 0.0), _smooth_images(6, 3, 0.3)
    proto = get_protocol(f"fid_blur{k}")
    assert proto.option("blur_sigma") == k and f"sigma={k} px at 256 px" in proto.resize
    assert f"kernel {2 * 3 * k + 1} at 256 px" in proto.resize
    ours = extractor(proto)(torch.cat([gen, real])).numpy()
    ref = _reference_features(torch.cat([gen, real]), k * 64 / 256, tf_net)  # 64 px images: sigma scaled
    err = np.abs(ours - ref).max() / np.abs(ref).max()
    print(f"fid_blur{k} features: max error {err:.2e} of the largest feature")
    assert err < 1e-4
    acc_gen, acc_real = proto.new_accumulator(), proto.new_accumulator()
    acc_gen.update(ours[:3, :2])
    acc_real.update(ours[3:, :2])
    fid, expected = proto.compute(acc_gen, acc_real.state()), _frechet(ref[:3, :2], ref[3:, :2])
    print(f"fid_blur{k} ours={fid!r} reference={expected!r}")
    assert fid == pytest.approx(expected, rel=1e-4)


def test_blur_radius_0_is_fid(extractor):
    gen = _smooth_images(7, 2, 0.0)
    radius0 = get_protocol("fid_blur1", options={"blur_sigma": 0})
    assert torch.equal(extractor(radius0)(gen), extractor(get_protocol("fid"))(gen))
    # the blur is part of the reference statistics' cache key
    keys = {json.dumps(get_protocol(n, options=o).reference_settings("d"), sort_keys=True)
            for n, o in (("fid_blur1", {"blur_sigma": 0}), ("fid_blur1", None), ("fid_blur2", None), ("fid", None))}
    assert len(keys) == 4
    with pytest.raises(UserError, match="blur_sigma must be a number >= 0"):
        get_protocol("fid_blur2", options={"blur_sigma": -1})


def test_is_without_reference_through_driver_regress_and_report(tmp_path):
    data = DataConfig(kind="synthetic", size=32, num_test=70)
    eval_cfg = EvalConfig(protocols=["is"], extractor="tiny")
    site = SiteConfig()
    site.paths.cache = str(tmp_path / "cache")
    assert preview(eval_cfg, data)[0]["reference"] == "n/a"
    evaluator = Evaluator(eval_cfg, data, site, "cpu", progress=False)
    line = evaluator.plan_lines()[0]
    assert line.startswith("is: N=64 ") and line.endswith("reference n/a")
    records = evaluator(tiny_galip(seed=1), step=5)
    assert [r["metric"] for r in records] == ["is", "is_std"] and not (tmp_path / "cache").exists()
    for r in records:
        assert "error" not in r and r["value"] is not None and r["settings"]["reference"] == "n/a"
        assert r["settings"]["reference_sha256"] is None and "16 logits" in r["settings"]["extractor"]
    assert records[0]["value"] > 1 - 1e-9  # exp(KL) of the tiny net's softmax
    check_settings(records, records)
    other_splits = [{**r, "settings": {**r["settings"], "options": {**r["settings"]["options"], "isc_splits": 5}}}
                    for r in records]
    with pytest.raises(UserError, match="isc_splits"):
        check_settings(records, other_splits)
    rows, code = compare(records, [{**records[0], "value": records[0]["value"] - 0.5}, records[1]])
    assert code == 1 and {r["metric"]: r["verdict"] for r in rows} == {"is": "regressed", "is_std": "info"}
    assert compare(records, records)[1] == 0

    run = tmp_path / "runs" / "g" / "a"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"grid": "g", "variant": "v", "seed": 0,
                                                     "eval": {"protocols": ["is"], "extractor": "tiny"}}))
    (run / "status.json").write_text(json.dumps({"state": "finished", "step": 5, "steps": 5, "variant": "v",
                                                 "seed": 0, "executor": "local"}))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    table = build_report(run.parent, tmp_path / "out", "g", references={"references": []})["table"]
    row = table[table.metric == "is"].iloc[0]
    assert row.better == "higher" and row.final_mean == pytest.approx(records[0]["value"])
