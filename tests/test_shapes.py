"""The shapes benchmark's evaluators: caption parsing against the renderer's own scenes, the scene reader's accuracy
on fresh renders (a small build), `shapes_acc`'s arithmetic against a direct per-object check and its chance levels
against a random reader, the reader on exact renders (right captions: ~1; other scenes' captions: chance), the
protocol through the Evaluator (records, chance, intervals, kept samples), and its paired test."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from helpers import tiny_galip

from galip_bench.config.schema import DataConfig, EvalConfig, PathsConfig, SiteConfig
from galip_bench.data.synthetic import SyntheticShapes
from galip_bench.evaluation import paired, shapes_protocol
from galip_bench.evaluation.driver import Evaluator
from galip_bench.shapes.accuracy import METRICS, chance, correctness
from galip_bench.shapes.labels import CLASSES, FIELDS, NONE, caption_labels, scene_labels

@pytest.fixture(scope="module")
def reader(shapes_small):
    """The session's small build (conftest: 4,000 renders, 6 epochs; trained once, ~30 s)."""
    folder, model, info = shapes_small
    return model, info, folder


def test_every_caption_parses_to_its_scenes_labels():
    for split in ("train", "test"):
        data = SyntheticShapes(size=32, num=400, split=split)
        for i in range(400):
            scene = data.scene(i)
            for caption in data.captions(scene):
                assert (caption_labels(caption) == scene_labels(scene)).all(), caption
    # "A above B" and "B below A" are one scene; the upper object comes first
    a = caption_labels("a small red circle above a large blue square on a white background")
    b = caption_labels("a large blue square below a small red circle, white background")
    assert (a == b).all() and a[2] == 0 and list(a[3:6]) == [0, 0, 0]
    assert list(caption_labels("a large blue square left of a small red circle, gray background")[2:4]) == [1, 1]
    single = caption_labels("a large pink triangle in front of a plain black backdrop")
    assert single[1] == 0 and (single[[2, 6, 7, 8]] == NONE).all()
    with pytest.raises(ValueError, match="not a synthetic-shapes caption"):
        caption_labels("a photo of a cat")


def test_the_small_reader_reads_fresh_renders(reader):
    """>= 98% per attribute on 1,000 renders of a scene seed it never saw (recorded at build time)."""
    _, info, _ = reader
    assert set(info["accuracy"]) == set(FIELDS) | {"scene"}
    assert min(info["accuracy"][f] for f in FIELDS) >= 0.98, info["accuracy"]
    assert info["recipe_hash"] and len(info["sha256"]) == 64


def direct_row(read, truth) -> list:
    """The metric definitions written out per object (an independent reading of shapes.accuracy's docstring)."""
    objects = [(3, 4, 5)] + ([(6, 7, 8)] if truth[1] == 1 else [])
    share = lambda k: np.mean([read[o[k]] == truth[o[k]] for o in objects])  # noqa: E731
    relation = float(read[1] == 1 and read[2] == truth[2]) if truth[1] == 1 else np.nan
    return [share(1), share(0), share(2), relation, float(read[0] == truth[0]), float(read[1] == truth[1]),
            float(all(r == t for r, t in zip(read, truth)))]


def random_labels(rng, n) -> np.ndarray:
    out = np.stack([rng.integers(0, c, n) for c in CLASSES], axis=1)
    single = out[:, 1] == 0
    out[single, 2], out[single, 6:] = NONE, NONE
    return out


def test_correctness_is_the_per_object_check_and_chance_is_a_random_readers_score():
    rng = np.random.default_rng(0)
    truth = random_labels(rng, 400)
    read = np.where(rng.random(truth.shape) < 0.6, truth, random_labels(rng, 400))
    got = correctness(read, truth)
    want = np.array([direct_row(r, t) for r, t in zip(read, truth)])
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(np.nan_to_num(got, nan=-1), np.nan_to_num(want, nan=-1))
    # a reader answering at random scores the chance levels (Monte Carlo, 200 x 400 readings)
    scores = np.nanmean(np.stack([correctness(random_labels(rng, 400), truth) for _ in range(200)]), axis=(0, 1))
    expected = chance(truth)
    for j, m in enumerate(METRICS):
        assert scores[j] == pytest.approx(expected[m], abs=0.01), m


def test_the_reader_on_exact_renders_scores_one_and_on_other_captions_chance(reader):
    model, _, _ = reader
    data = SyntheticShapes(size=64, num=500, split="test")
    scenes = [data.scene(i) for i in range(500)]
    images = torch.stack([torch.from_numpy(data.render(s)).permute(2, 0, 1) / 127.5 - 1 for s in scenes])
    extractor = shapes_protocol.ReaderExtractor(model, "cpu")
    read = extractor.encode_image(images).numpy()
    right = correctness(read, extractor.encode_text([data.captions(s)[1] for s in scenes]).numpy())
    assert np.nanmean(right, axis=0).min() >= 0.95
    wrong = correctness(read, extractor.encode_text([data.captions(s)[0] for s in scenes[1:] + scenes[:1]]).numpy())
    truth = np.stack([scene_labels(s) for s in scenes[1:] + scenes[:1]])
    colour = METRICS.index("shapes_colour")
    assert np.nanmean(wrong[:, colour]) == pytest.approx(chance(truth)["shapes_colour"], abs=0.05)


def test_shapes_acc_through_the_evaluator(reader, tmp_path):
    _, info, cache = reader
    evaluator = Evaluator(EvalConfig(protocols=["shapes_acc"], num_samples=128, batch_size=64, extractor="tiny",
                                     bootstrap=0),
                          DataConfig(kind="synthetic", size=32, num_test=130, num_workers=0),
                          SiteConfig(paths=PathsConfig(cache=str(cache))), "cpu", progress=False,
                          keep_dir=tmp_path / "run")
    records = {r["metric"]: r for r in evaluator(tiny_galip(seed=1), step=3)}
    assert set(records) == set(METRICS)
    for m, r in records.items():
        s = r["settings"]
        assert s["reader_sha256"] == info["sha256"] and s["reader_recipe_hash"] == info["recipe_hash"]
        assert 0 <= r["chance"] <= 0.5 and r["ci_resamples"] == 1000
        if r["value"] is not None:
            assert r["ci_low"] <= r["value"] <= r["ci_high"]
            samples = paired.load_kept(r["kept_samples"], tmp_path / "run")  # the kept rows give the value back
            assert samples.value() == pytest.approx(r["value"], abs=1e-12)
    assert 3 / 32 <= records["shapes_colour"]["chance"] <= 1 / 8


def test_paired_column_means():
    rng = np.random.default_rng(3)
    base = (rng.random((600, len(METRICS))) < 0.3).astype(float)
    better = np.maximum(base, (rng.random(base.shape) < 0.2))
    base[:100, 3] = better[:100, 3] = np.nan  # relation: not applicable to these samples
    params = {"metrics": list(METRICS)}
    a, b = (paired.for_metric(paired.Samples("columns", x, params=params), "shapes_relation") for x in (base, better))
    assert a.statistic == "column_mean" and a.value() == pytest.approx(np.nanmean(base[:, 3]))
    idx = paired.resample_indices(600, 0)
    assert paired.resampled_values(a, [idx])[0] == pytest.approx(np.nanmean(base[idx, 3]))
    result = paired.paired_difference(a, b)
    assert result["ci_low"] > 0 and result["significant"]
