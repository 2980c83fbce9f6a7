"""CLIP score protocols against the official GALIP outputs and hand-computed cosines."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from galip_bench.evaluation import get_protocol
from galip_bench.evaluation.plans import SamplePlan
from galip_bench.metrics.clip_score import (ClipEmbedder, clip_score, clip_score_galip, preprocess_official,
                                            preprocess_standard)

FIXTURE = Path(__file__).parent / "fixtures" / "galip_official_reference.pt"


@pytest.fixture(scope="module")
def outputs():
    assert FIXTURE.is_file(), f"golden fixture missing: {FIXTURE}"
    return torch.load(FIXTURE, weights_only=False)["outputs"]


def _np_cos(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_clip_score_galip_matches_official(outputs):
    img, txt = outputs["fake_clip_emb"], outputs["sent_emb"]
    value = clip_score_galip(img, txt)
    assert value == pytest.approx(_np_cos(img, txt).mean(), rel=1e-6)
    assert value == pytest.approx(float(outputs["text_img_sim"]), rel=1e-5, abs=1e-6)  # the official number


def test_clip_score_galip_is_mean_of_batch_means():
    rng = np.random.default_rng(0)
    img, txt = rng.standard_normal((7, 16)), rng.standard_normal((7, 16))
    cos = _np_cos(img, txt)
    expected = np.mean([cos[0:3].mean(), cos[3:6].mean(), cos[6:7].mean()])  # uneven last batch, as GALIP's loop
    assert clip_score_galip(torch.tensor(img), torch.tensor(txt), batch_size=3) == pytest.approx(expected, rel=1e-10)
    proto = get_protocol("clip_score_galip", plan=SamplePlan(batch=3))  # the plan's score batch, not the update size
    acc = proto.new_accumulator()
    for i in range(0, 7, 2):
        acc.update(torch.tensor(img[i:i + 2]), torch.tensor(txt[i:i + 2]))
    assert proto.compute(acc) == pytest.approx(expected, rel=1e-10)


def test_clip_score_common_definition(outputs):
    img, txt = outputs["fake_clip_emb"], outputs["sent_emb"]
    expected = np.mean(100 * np.maximum(_np_cos(img, txt), 0))
    assert clip_score(img, txt) == pytest.approx(expected, rel=1e-6)
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((50, 8)), rng.standard_normal((50, 8))
    proto = get_protocol("clip_score")
    acc = proto.new_accumulator()
    acc.update(torch.tensor(a[:20]), torch.tensor(b[:20]))
    acc.update(torch.tensor(a[20:]), torch.tensor(b[20:]))
    assert proto.compute(acc) == pytest.approx(np.mean(100 * np.maximum(_np_cos(a, b), 0)), rel=1e-10)


def test_preprocessing_formulas():
    x = torch.rand(2, 3, 256, 256) * 2 - 1
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    # official: nearest 256->224 picks source index floor(i*256/224); the [-1,1]->[0,1] map is applied twice
    idx = torch.floor(torch.arange(224) * (256 / 224)).long()
    expected = (((x[:, :, idx][:, :, :, idx] * 0.5 + 0.5) + 1) * 0.5 - mean) / std
    torch.testing.assert_close(preprocess_official(x), expected)
    flat = torch.zeros(1, 3, 224, 224)  # standard: a constant image in [-1,1] maps once, to 0.5
    torch.testing.assert_close(preprocess_standard(flat), ((0.5 - mean) / std).expand(1, 3, 224, 224))
    assert preprocess_standard(torch.zeros(1, 3, 256, 320)).shape == (1, 3, 224, 224)  # short side + centre crop


def test_clip_embedder_tiny_random_model(tmp_path):
    import open_clip
    cfg = {"embed_dim": 32, "quick_gelu": True,
           "vision_cfg": {"image_size": 224, "layers": 1, "width": 64, "patch_size": 32, "head_width": 32},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / "galip-bench-tiny-clip.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "galip-bench-tiny-clip.json")
    emb = ClipEmbedder("galip-bench-tiny-clip", None, "official")
    img = emb.encode_image(torch.rand(3, 3, 256, 256) * 2 - 1)
    txt = emb.encode_text(["a bird", "a plate of food", "a red car"])
    assert img.shape == txt.shape == (3, 32)
    assert -1 <= clip_score_galip(img, txt) <= 1 and 0 <= clip_score(img, txt) <= 100
    torch.save(emb.model.state_dict(), tmp_path / "tiny.pt")  # a weights file is loaded, not re-initialised
    torch.testing.assert_close(ClipEmbedder("galip-bench-tiny-clip", tmp_path / "tiny.pt", "official")
                               .encode_text(["a bird", "a plate of food", "a red car"]), txt)


def test_fid_clip_protocol_uses_clip_image_embeddings(tmp_path):
    import open_clip
    cfg = {"embed_dim": 16, "quick_gelu": True,
           "vision_cfg": {"image_size": 224, "layers": 1, "width": 64, "patch_size": 32, "head_width": 32},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / "galip-bench-tiny-clip16.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "galip-bench-tiny-clip16.json")
    torch.manual_seed(0)
    reference = ClipEmbedder("galip-bench-tiny-clip16", None, "standard")
    torch.save(reference.model.state_dict(), tmp_path / "ViT-B-32.pt")
    proto = get_protocol("fid_clip", options=(("clip_model", "galip-bench-tiny-clip16"),))
    extractor = proto.make_extractor(lambda name, protocol: tmp_path / "ViT-B-32.pt")
    images = torch.rand(6, 3, 256, 256) * 2 - 1
    feats = extractor(images)
    assert feats.shape == (6, 16) and feats.dtype == torch.float64
    torch.testing.assert_close(feats, reference.encode_image(images).double())
    acc_a, acc_b = proto.new_accumulator(), proto.new_accumulator()
    acc_a.update(feats)
    acc_b.update(feats)
    assert abs(proto.compute(acc_a, acc_b.state())) < 1e-6
    assert proto.reference_settings("d", extractor)["weights_sha256"] is not None
