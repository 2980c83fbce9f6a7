"""CMMD (google-research/cmmd) and the held-out CLIP score: the distance against the official formula written out
here and a direct pair loop, the image steps against PIL itself, the ViT-L/14@336 forward, the protocols through the
Evaluator with their smoke stand-ins, `self_referential`, and the weight files in `galip-bench weights` / preflight."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import math
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from galip_bench.evaluation import get_protocol
from galip_bench.metrics.cmmd import ClipImageEmbedder, cmmd_input, mmd, to_uint8

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


def official_mmd(x, y):
    """google-research/cmmd distance.mmd written out in numpy float64: Gaussian RBF with sigma = 10 (gamma =
    1 / (2 sigma^2)), squared distances by the expansion, the mean over all pairs (diagonal included), x 1000."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    gamma = 1 / (2 * 10 ** 2)
    xs, ys = np.diag(x @ x.T), np.diag(y @ y.T)
    k_xx = np.mean(np.exp(-gamma * (-2 * x @ x.T + xs[:, None] + xs[None, :])))
    k_xy = np.mean(np.exp(-gamma * (-2 * x @ y.T + xs[:, None] + ys[None, :])))
    k_yy = np.mean(np.exp(-gamma * (-2 * y @ y.T + ys[:, None] + ys[None, :])))
    return 1000 * (k_xx + k_yy - 2 * k_xy)


def unbiased_loop(x, y, sigma=10.0, scale=1000.0):
    """The U-statistic MMD^2 by a direct loop over pairs, distances computed directly (no expansion)."""
    def k(a, b):
        return math.exp(-sum((float(p) - float(q)) ** 2 for p, q in zip(a, b)) / (2 * sigma ** 2))
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return scale * (xx + yy - 2 * xy)


def embeddings(n, dim, seed, shift=0.0):
    """Fixed L2-normalised embeddings (as CLIP's after scenic's normalisation); `shift` moves the distribution."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)) + shift * np.linspace(1, -1, dim)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ---- the distance ---------------------------------------------------------------------------------------------------

def test_cmmd_equals_the_official_formula():
    x, y = embeddings(60, 32, 0), embeddings(45, 32, 1, shift=0.5)
    expected = official_mmd(x, y)
    got = mmd(x, y)
    print(f"cmmd={got['biased']!r} official formula={expected!r}")
    assert got["biased"] == pytest.approx(expected, rel=1e-6, abs=1e-6) and expected > 0.1
    assert mmd(y, x)["biased"] == pytest.approx(expected, rel=1e-6, abs=1e-6)  # symmetric, as the official one
    proto = get_protocol("cmmd")  # the protocol's computation: generated vs reference features
    acc = proto.new_accumulator()
    acc.update(y[:20])
    acc.update(y[20:])
    values = proto.compute_all(acc, {"features": x})
    assert values["cmmd"] == pytest.approx(expected, rel=1e-6, abs=1e-6)
    assert values["cmmd_unbiased"] == pytest.approx(got["unbiased"], rel=1e-12)
    assert proto.settings_dict()["reference_num_samples"] == 60


def test_cmmd_unbiased_equals_a_direct_loop_over_pairs():
    x, y = embeddings(18, 8, 2), embeddings(13, 8, 3, shift=1.0)
    expected = unbiased_loop(x, y)
    got = mmd(x, y)["unbiased"]
    print(f"cmmd_unbiased={got!r} loop={expected!r}")
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert mmd(x, y, sigma=2.0, scale=1.0)["unbiased"] == pytest.approx(unbiased_loop(x, y, 2.0, 1.0), rel=1e-9)


def test_blocked_sums_equal_unblocked():
    x, y = embeddings(101, 16, 4), embeddings(77, 16, 5, shift=0.3)
    whole = mmd(x, y, block=10 ** 6)
    for block in (3, 7, 32, 100):
        part = mmd(x, y, block=block)
        assert part["biased"] == pytest.approx(whole["biased"], rel=1e-10)
        assert part["unbiased"] == pytest.approx(whole["unbiased"], rel=1e-10)
    assert (whole["m"], whole["n"]) == (101, 77)


def test_negative_control_same_distribution_gives_zero_in_expectation_and_a_shift_gives_more():
    x = embeddings(40, 16, 6)
    same = mmd(x, x)  # identical sets: the V-statistic is exactly 0, the U-statistic is its bias correction (< 0)
    assert abs(same["biased"]) < 1e-9 and same["unbiased"] < 0
    u, v = [], []
    for seed in range(30):  # independent draws of one distribution: E[U] = 0, V carries a positive bias
        d = mmd(embeddings(40, 16, 100 + seed), embeddings(40, 16, 200 + seed))
        u.append(d["unbiased"])
        v.append(d["biased"])
    u, v = np.array(u), np.array(v)
    se = u.std(ddof=1) / np.sqrt(len(u))
    print(f"same distribution: mean U {u.mean():.4f} (se {se:.4f}), mean V {v.mean():.4f}")
    assert abs(u.mean()) < 3 * se
    assert v.mean() > u.mean() + 10 * se and (v > u).all()
    shifted = [mmd(embeddings(40, 16, 100), embeddings(40, 16, 200, shift=s)) for s in (1.0, 2.0)]
    print(f"shift 1: {shifted[0]}, shift 2: {shifted[1]}")
    assert shifted[1]["unbiased"] > shifted[0]["unbiased"] > u.max() + 3 * u.std()
    assert shifted[1]["biased"] > shifted[0]["biased"] > v.max() + 3 * v.std()


def test_sets_of_one_and_mismatched_sizes_are_refused():
    with pytest.raises(ValueError, match="at least 2"):
        mmd(embeddings(1, 4, 0), embeddings(5, 4, 1))
    with pytest.raises(ValueError, match="one D"):
        mmd(embeddings(3, 4, 0), embeddings(5, 8, 1))


# ---- the image steps ------------------------------------------------------------------------------------------------

def test_uint8_is_what_save_image_writes_to_a_png(tmp_path):
    from torchvision.utils import save_image
    images = torch.rand(2, 3, 20, 24, generator=torch.Generator().manual_seed(0)) * 2.6 - 1.3  # out of range too
    images[0, 0, 0, :4] = torch.tensor([-1.0, 1.0, 0.0, 1 / 255 - 1])
    for i, image in enumerate(images):
        save_image(image, tmp_path / f"{i}.png", normalize=True, value_range=(-1, 1))
        read = np.asarray(Image.open(tmp_path / f"{i}.png"))  # io_util._read_image, before astype(float32)
        np.testing.assert_array_equal(to_uint8(image[None])[0].permute(1, 2, 0).numpy().astype(np.uint8), read)


@pytest.mark.parametrize("height,width", [(224, 224), (61, 47), (400, 520)])
def test_preprocessing_equals_pil_centre_crop_and_bicubic_resize(height, width):
    """cmmd_input from [-1, 1] pixels that are exact uint8 values equals io_util's steps done with PIL itself:
    crop the centred square, Image.resize((336, 336), BICUBIC), float32 / 255, CLIP mean/std."""
    u = np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    pil = Image.fromarray(u).crop((left, top, left + side, top + side)).resize((336, 336), resample=Image.BICUBIC)
    expected = (np.asarray(pil).astype(np.float32) / 255.0 - MEAN) / STD
    images = torch.from_numpy(u).permute(2, 0, 1)[None].float() / 127.5 - 1
    got = cmmd_input(images, 336)[0].permute(1, 2, 0).numpy()
    assert got.shape == (336, 336, 3)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    # control: torch's own antialiased bicubic (a = -0.75, no uint8 rounding) is not PIL's
    x = torch.from_numpy(u).permute(2, 0, 1)[None].float()[..., top:top + side, left:left + side]
    torch_bicubic = torch.nn.functional.interpolate(x, size=(336, 336), mode="bicubic", antialias=True,
                                                    align_corners=False)
    assert (torch_bicubic[0].permute(1, 2, 0).clamp(0, 255).round().numpy() != np.asarray(pil)).mean() > 0.05


def _register_tiny_config(folder, name, cfg) -> None:
    import open_clip
    (folder / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder / f"{name}.json")


TINY_L14_LIKE = {"embed_dim": 16, "quick_gelu": True,
                 "vision_cfg": {"image_size": 42, "layers": 2, "width": 64, "patch_size": 14, "head_width": 32},
                 "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def test_cmmd_extractor_reads_its_weight_file_and_embeds_as_written_out(tmp_path, monkeypatch):
    """The protocol's extractor (the same code path as ViT-L/14@336, at a tiny open_clip config): the weight file
    read, PIL's crop and resize, the CLIP forward, L2 normalisation."""
    import open_clip

    import galip_bench.metrics.cmmd as cmmd
    _register_tiny_config(tmp_path, "galip-bench-tiny-cmmd", TINY_L14_LIKE)
    monkeypatch.setattr(cmmd, "CLIP_MODEL", "galip-bench-tiny-cmmd")
    torch.manual_seed(3)
    reference = open_clip.create_model("galip-bench-tiny-cmmd").eval()
    torch.save(reference.state_dict(), tmp_path / "ViT-L-14-336px.pt")
    extractor = get_protocol("cmmd").make_extractor(lambda name, protocol: tmp_path / "ViT-L-14-336px.pt")
    assert extractor.weights_path == str(tmp_path / "ViT-L-14-336px.pt") and extractor.size == 42
    u = np.random.default_rng(1).integers(0, 256, (3, 50, 60, 3), dtype=np.uint8)
    inputs = []
    for image in u:  # io_util + embedding._clip_preprocess with PIL and numpy
        pil = Image.fromarray(image).crop((5, 0, 55, 50)).resize((42, 42), resample=Image.BICUBIC)
        inputs.append((np.asarray(pil).astype(np.float32) / 255.0 - MEAN) / STD)
    with torch.no_grad():
        emb = reference.encode_image(torch.from_numpy(np.stack(inputs)).permute(0, 3, 1, 2)).double()
    expected = emb / emb.norm(dim=1, keepdim=True)
    got = extractor(torch.from_numpy(u).permute(0, 3, 1, 2).float() / 127.5 - 1)
    assert got.dtype == torch.float64 and got.shape == (3, 16)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.norm(dim=1), torch.ones(3, dtype=torch.float64))


@pytest.mark.slow  # ~5 s alone, up to ~40 s on a busy 2-core machine; the same path runs at a tiny config above
def test_the_vit_l14_336_clip_builds_and_embeds_on_the_cpu():
    """The real architecture (random init, no weights): open_clip ViT-L-14-336-quickgelu, 336 px input, 768-d
    unit embeddings, equal to the forward on PIL-prepared input."""
    from open_clip.transformer import QuickGELU
    proto = get_protocol("cmmd")
    torch.manual_seed(0)
    extractor = proto.build(None, "cpu")
    visual = extractor.model.visual
    assert extractor.size == 336 and visual.conv1.kernel_size == (14, 14) and visual.conv1.out_channels == 1024
    assert len(visual.transformer.resblocks) == 24 and isinstance(visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    u = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    got = extractor(torch.from_numpy(u).permute(2, 0, 1)[None].float() / 127.5 - 1)
    pil = Image.fromarray(u).resize((336, 336), resample=Image.BICUBIC)
    x = torch.from_numpy((np.asarray(pil).astype(np.float32) / 255.0 - MEAN) / STD).permute(2, 0, 1)[None]
    with torch.no_grad():
        emb = extractor.model.encode_image(x).double()
    assert got.shape == (1, 768)
    torch.testing.assert_close(got, emb / emb.norm(), rtol=1e-5, atol=1e-6)


# ---- the protocols through the Evaluator (smoke stand-ins) ----------------------------------------------------------

def _evaluator(tmp_path, protocols, num=12):
    from galip_bench.config.schema import DataConfig, EvalConfig, PathsConfig, SiteConfig
    from galip_bench.evaluation.driver import Evaluator
    site = SiteConfig(paths=PathsConfig(weights=str(tmp_path / "weights"), cache=str(tmp_path / "cache")))
    data = DataConfig(kind="synthetic", size=32, num_test=num)
    return Evaluator(EvalConfig(protocols=protocols, num_samples=num, batch_size=5, extractor="tiny"), data, site,
                     "cpu", progress=False), data


def test_protocols_run_through_the_evaluator_with_their_stand_ins(tmp_path):
    """cmmd's stand-in: the model's tiny CLIP through CMMD's steps, against the test split's embeddings (cached per
    stand-in CLIP); the record equals mmd() of embeddings computed here from the generated and reference images.
    clip_score_heldout's stand-in: a seeded tiny CLIP that is not the model's."""
    from helpers import tiny_galip

    from galip_bench.data import reference_images
    from galip_bench.evaluation.spec import prepare_official
    from galip_bench.metrics.clip_score import same_clip
    galip = tiny_galip(seed=1)
    raw, netG = [], galip.netG.forward

    def generate(noise, sent):
        out = netG(noise, sent)
        raw.append(out.clone())
        return out
    galip.netG.forward = generate
    evaluator, data = _evaluator(tmp_path, ["cmmd", "clip_score_heldout", "clip_score"])
    lines = evaluator.plan_lines()
    assert any(line.startswith("cmmd: N=12 ") for line in lines), lines
    records = {r["metric"]: r for r in evaluator(galip, step=3)}
    assert set(records) == {"cmmd", "cmmd_unbiased", "clip_score_heldout", "clip_score"}
    assert not any(r.get("error") for r in records.values())

    embed = ClipImageEmbedder(galip.clip.model)
    generated = embed(prepare_official(torch.cat(raw)))
    reference = torch.cat([embed(images) for images in reference_images(data)])
    expected = mmd(reference, generated)
    for metric, key in (("cmmd", "biased"), ("cmmd_unbiased", "unbiased")):
        record = records[metric]
        print(f"{metric}: record {record['value']!r} here {expected[key]!r}")
        assert record["value"] == pytest.approx(expected[key], rel=1e-6)  # float32 CLIP batches of 5 vs 12
        s = record["settings"]
        assert record["num_samples"] == 12 and s["reference_num_samples"] == 12
        assert s["options"] == {"sigma": 10, "scale": 1000} and s["smoke"] is True
        assert s["self_referential"] is True  # the stand-in runs the model's own CLIP
        assert "smoke-profile stand-in for cmmd" in s["matches"] and "model's own CLIP" in s["extractor"]
    held = records["clip_score_heldout"]["settings"]
    assert held["self_referential"] is False and held["smoke"] is True and "not the model's" in held["extractor"]
    assert records["clip_score"]["settings"]["self_referential"] is True
    stand_in = evaluator.extractors["clip_score_heldout"]
    assert not same_clip(galip.clip, stand_in)
    assert records["clip_score_heldout"]["value"] != records["clip_score"]["value"]

    # the cached reference is the stand-in CLIP's: another model's tiny CLIP computes its own, the same one reuses it
    cache = tmp_path / "cache"
    assert len(list(cache.glob("cmmd-*.npz"))) == 1
    _evaluator(tmp_path, ["cmmd"])[0](tiny_galip(seed=2), step=0)
    assert len(list(cache.glob("cmmd-*.npz"))) == 2
    again = _evaluator(tmp_path, ["cmmd"])[0](galip, step=3)
    assert len(list(cache.glob("cmmd-*.npz"))) == 2
    assert {r["metric"]: r["value"] for r in again} == {m: records[m]["value"] for m in ("cmmd", "cmmd_unbiased")}


# ---- self_referential -----------------------------------------------------------------------------------------------

def test_self_referential_is_a_setting_of_every_clip_protocol():
    for name, value in (("clip_score_galip", True), ("clip_score", True), ("fid_clip", True), ("cmmd", False),
                        ("clip_score_heldout", False)):
        assert get_protocol(name).settings_dict()["self_referential"] is value, name
    assert "self_referential" not in get_protocol("fid").settings_dict()  # no CLIP, no key
    from galip_bench.evaluation.spec import COMPARABLE, GATED
    assert "self_referential" in GATED and "self_referential" in COMPARABLE


TINY_GALIP_CLIP = {"embed_dim": 64, "quick_gelu": True,
                   "vision_cfg": {"image_size": 56, "layers": 12, "width": 64, "patch_size": 8, "head_width": 32},
                   "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


def test_self_referential_is_decided_from_the_models_clip(tmp_path):
    """A metric that loads the model's own CLIP weights (here the tiny GALIP's CLIP as the metric's file) is
    self-referential, in fp32 or rounded to fp16 (clip.load on a GPU); another CLIP of the same architecture, the
    real ViT-B-32 against a tiny GALIP, and a stand-in without a CLIP are not; a model without a CLIP keeps the
    class's value."""
    from types import SimpleNamespace

    from helpers import tiny_galip

    from galip_bench.evaluation.smoke import TinyExtractor
    _register_tiny_config(tmp_path, "galip-bench-tiny-galip-clip", TINY_GALIP_CLIP)
    galip = tiny_galip(seed=4)
    own = {k: v.clone() for k, v in galip.clip.model.state_dict().items()}
    torch.save(own, tmp_path / "own.pt")
    torch.save({k: v.half().float() for k, v in own.items()}, tmp_path / "own_fp16.pt")
    torch.manual_seed(5)
    other = tiny_galip(seed=5).clip.model.state_dict()
    torch.save(other, tmp_path / "other.pt")
    opts = (("clip_model", "galip-bench-tiny-galip-clip"),)
    for name in ("clip_score", "clip_score_heldout", "fid_clip"):
        for weights, expected in (("own.pt", True), ("own_fp16.pt", True), ("other.pt", False)):
            proto = get_protocol(name, options=opts)
            extractor = proto.make_extractor(lambda w, p: tmp_path / weights)
            proto.observe_model(galip, extractor)
            assert proto.settings_dict()["self_referential"] is expected, (name, weights)
    proto = get_protocol("fid_clip", smoke=True)  # a stand-in that runs no CLIP
    proto.observe_model(galip, TinyExtractor())
    assert proto.settings_dict()["self_referential"] is False
    proto = get_protocol("clip_score")
    proto.observe_model(SimpleNamespace(), None)  # nothing known about the model's CLIP: the class's value
    assert proto.settings_dict()["self_referential"] is True
    proto = get_protocol("clip_score")  # the real ViT-B/32 (random init) against a tiny GALIP: not its CLIP
    proto.observe_model(galip, proto.build(None, "cpu"))
    assert proto.settings_dict()["self_referential"] is False


# ---- weight files ---------------------------------------------------------------------------------------------------

@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    import galip_bench.metrics.weights as w
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # ~/.cache/clip
    monkeypatch.setattr(w, "_hf_hub_dir", lambda: tmp_path / "hf_hub")
    (tmp_path / "bench.yaml").write_text("paths: {weights: weights, runs: runs, cache: cache}\n")
    return tmp_path


def test_weights_lists_the_new_files(no_weights, capsys):
    from galip_bench.cli import main
    assert main(["weights", "--bench", "bench.yaml"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "MISSING ViT-L-14-336px.pt <- https://openaipublic.azureedge.net/clip/models/3035c92b" in rows["cmmd"]
    assert "MISSING ViT-L-14.pt <- https://openaipublic.azureedge.net/clip/models/b8cca3fd" in rows[
        "clip_score_heldout"]
    (no_weights / "weights").mkdir()
    (no_weights / "weights" / "ViT-L-14-336px.pt").write_bytes(b"x")
    assert main(["weights", "--bench", "bench.yaml"]) == 0
    assert "found weights/ViT-L-14-336px.pt" in capsys.readouterr().out


@pytest.mark.parametrize("protocol,file", [("cmmd", "ViT-L-14-336px.pt"), ("clip_score_heldout", "ViT-L-14.pt")])
def test_a_missing_weight_file_is_one_error_line_in_preflight(no_weights, capsys, protocol, file):
    from galip_bench.cli import main
    (no_weights / "grid.yaml").write_text(f"name: g\nprofile: smoke\nvariants: [{{name: full}}]\n"
                                          f"eval: {{protocols: [{protocol}]}}\n")
    assert main(["run", "grid.yaml", "--set", "eval.extractor=default"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert file in err[0] and protocol in err[0], err[0]
    assert not (no_weights / "runs").exists()


def test_the_held_out_stand_in_is_seeded_and_not_the_models():
    from helpers import tiny_galip

    from galip_bench.evaluation.smoke import HeldOutTinyClip
    from galip_bench.metrics.clip_score import same_clip
    seed = zlib.crc32(b"clip_score_heldout")
    a, b = HeldOutTinyClip(seed), HeldOutTinyClip(seed)
    assert same_clip(a, b) and not same_clip(a, HeldOutTinyClip(seed + 1))
    assert not same_clip(a, tiny_galip(seed=0).clip)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    torch.testing.assert_close(a.encode_image(images), b.encode_image(images))
    assert a.encode_text(["a bird", "a red car"]).shape == (2, 64)
