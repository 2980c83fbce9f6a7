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


def _tiny_open_clip_config(folder, name: str, embed_dim: int) -> None:
    """Register a one-block random-init open_clip model config under `name`."""
    import open_clip
    cfg = {"embed_dim": embed_dim, "quick_gelu": True,
           "vision_cfg": {"image_size": 224, "layers": 1, "width": 64, "patch_size": 32, "head_width": 32},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (folder / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder / f"{name}.json")


def test_clip_embedder_tiny_random_model(tmp_path):
    _tiny_open_clip_config(tmp_path, "galip-bench-tiny-clip", 32)
    emb = ClipEmbedder("galip-bench-tiny-clip", None, "official")
    img = emb.encode_image(torch.rand(3, 3, 256, 256) * 2 - 1)
    txt = emb.encode_text(["a bird", "a plate of food", "a red car"])
    assert img.shape == txt.shape == (3, 32)
    assert -1 <= clip_score_galip(img, txt) <= 1 and 0 <= clip_score(img, txt) <= 100
    torch.save(emb.model.state_dict(), tmp_path / "tiny.pt")  # a weights file is loaded, not re-initialised
    torch.testing.assert_close(ClipEmbedder("galip-bench-tiny-clip", tmp_path / "tiny.pt", "official")
                               .encode_text(["a bird", "a plate of food", "a red car"]), txt)


def test_fid_clip_protocol_uses_clip_image_embeddings(tmp_path):
    _tiny_open_clip_config(tmp_path, "galip-bench-tiny-clip16", 16)
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
    assert extractor.weights_path == str(tmp_path / "ViT-B-32.pt")  # its hash enters the statistics' cache key


def test_clip_score_galip_through_the_evaluator_clamps_as_the_official_loop(tmp_path):
    """The golden fixture's recipe CLIP (full ViT-B/32) as the evaluation CLIP, a generator pushed out of [-1, 1] (and
    a NaN and an inf pixel): the driver's clip_score_galip equals the official computation written out here --
    clamp(-1, 1), nan_to_num(nan=-1, posinf=1, neginf=-1), the official CLIP input map, an independent CLIP
    (open_clip built from the same OpenAI state_dict) on both sides, the batch-mean cosine. (The generator is a
    tiny one: what is checked is the image preparation and the score, not the generator.)"""
    import open_clip
    import torch.nn.functional as F
    from helpers import tiny_galip
    from open_clip.model import build_model_from_openai_state_dict
    from recipe import galip_recipe_value, load_fixture

    from galip_bench.config.schema import DataConfig, EvalConfig, PathsConfig, SiteConfig
    from galip_bench.evaluation.driver import Evaluator

    shapes = load_fixture("galip_official_reference.pt")["clip_state_dict_shapes"]
    clip_sd = {key: galip_recipe_value(key, shape) for key, shape in shapes.items()}  # the recipe's CLIP
    galip = tiny_galip(seed=2)
    with torch.no_grad():
        galip.netG.to_rgb[1].weight.mul_(400.0)  # pixels far outside [-1, 1]
    raw, netG = [], galip.netG.forward
    tokenizer = open_clip.get_tokenizer("ViT-B-32")

    def generate(noise, sent):
        out = netG(noise, sent)
        out[0, 0, :3, :3], out[1, 2, 5, 5], out[2, 1, 7, 7] = float("nan"), float("inf"), float("-inf")
        raw.append(out.clone())
        return out
    galip.netG.forward = generate
    (tmp_path / "weights").mkdir()
    torch.save(clip_sd, tmp_path / "weights" / "ViT-B-32.pt")  # the evaluation CLIP reads this file
    site = SiteConfig(paths=PathsConfig(weights=str(tmp_path / "weights"), cache=str(tmp_path / "cache")))
    data = DataConfig(kind="synthetic", size=32, num_test=6)
    evaluator = Evaluator(EvalConfig(protocols=["clip_score_galip"], num_samples=6, batch_size=3), data, site, "cpu",
                          progress=False)
    ((resolved, _),) = evaluator.groups.values()
    captions = resolved.captions
    (record,) = evaluator(galip)
    images = torch.cat(raw).double()
    assert torch.nan_to_num(images).abs().max() > 1.5 and torch.isnan(images).any()  # it did leave the range

    official_clip = build_model_from_openai_state_dict(dict(clip_sd)).float().eval()
    official_clip.load_state_dict(clip_sd)  # the builder rounds weights to fp16: put the exact fp32 values back
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)

    def official_score(x):
        x = F.interpolate(x.float() * 0.5 + 0.5, size=(224, 224))  # transf_to_CLIP_input: nearest, double map
        x = ((x + 1) * 0.5 - mean) / std
        with torch.no_grad():
            img = official_clip.encode_image(x).double()
            txt = official_clip.encode_text(tokenizer(captions)).double()
        return torch.nn.functional.cosine_similarity(img, txt).mean().item()  # one batch of <= 64

    expected = official_score(torch.nan_to_num(images.clamp(-1, 1), nan=-1.0, posinf=1.0, neginf=-1.0))
    print(f"clip_score_galip driver={record['value']!r} official={expected!r}")
    assert record["value"] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert record["settings"]["prepare"].startswith("clamp(-1, 1), then nan_to_num")
    assert abs(official_score(torch.nan_to_num(images, nan=-1.0).clamp(-50, 50)) - expected) > 1e-3  # it matters
