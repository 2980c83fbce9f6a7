"""fd_dinov2, prdc and prdc_dinov2 against independent implementations on identical inputs.

- DINOv2: our extractor (timm modules + the hub position step + dgm-eval's transform) against a test-local
  re-expression of the DINOv2 hub model's forward (facebookresearch/dinov2 ``DinoVisionTransformer``) fed by
  dgm-eval's ``DINOv2Encoder.transform`` (torchvision on PIL images), with seeded random weights of the real
  architecture (ViT-S/14 in the default suite, ViT-L/14 under ``-m slow``); negative controls: torch-fidelity's
  TF-1.x bilinear resize and timm's own position-embedding resampling each give other features.
- FD: ``StatsAccumulator`` + ``frechet_distance`` against dgm-eval's ``compute_FD_with_reps`` written out (np.cov,
  scipy sqrtm) on 1024-d features.
- PRDC: against the ``prdc`` package's ``compute_prdc`` (pip ``prdc``, dev extra), blocked k-NN against unblocked.
- The protocols through the Evaluator with the smoke stand-ins, `galip-bench weights`, and the missing-weights line.
"""
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
import torchvision.transforms as TF
from PIL import Image
from helpers import tiny_galip

from galip_bench.cli import main
from galip_bench.config.schema import DataConfig, EvalConfig, SiteConfig
from galip_bench.errors import UserError
from galip_bench.evaluation import get_protocol
from galip_bench.evaluation.driver import Evaluator
from galip_bench.evaluation.planning import check_sample_count
from galip_bench.evaluation.spec import TINY_FEATURES
from galip_bench.metrics import prdc as prdc_mod
from galip_bench.metrics.dinov2 import ARCHS, DINOv2Features, build_dinov2, dinov2_cls, imagenet_normalise

HEADS = {"vits14": 6, "vitl14": 16}


# ---- DINOv2 forward ----------------------------------------------------------------------------------------------

def random_dinov2_state(arch: str, seed: int = 0) -> dict:
    """Seeded random weights with the official file's keys and shapes (mask_token included), scaled so that every
    part counts: LayerScale gammas O(1) (not DINOv2's 1e-5 init), LayerNorm affine away from (1, 0), a position
    embedding of O(1) (its interpolation shows)."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in build_dinov2(arch).state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in shapes.items():
        r = torch.randn(shape, generator=g)
        if key.endswith(".gamma"):
            sd[key] = 0.5 + torch.rand(shape, generator=g)
        elif "norm" in key:
            sd[key] = (1 + 0.2 * r) if key.endswith("weight") else 0.1 * r
        elif len(shape) >= 2 and key.endswith("weight"):
            sd[key] = r / math.sqrt(shape[1:].numel())
        elif key.endswith("bias"):
            sd[key] = 0.1 * r
        else:  # cls_token, pos_embed
            sd[key] = 0.5 * r
    sd["mask_token"] = torch.zeros(1, shapes["cls_token"][-1])
    return sd


def hub_dinov2_forward(sd: dict, x: torch.Tensor, heads: int, patch: int = 14) -> torch.Tensor:
    """The DINOv2 hub model's ``forward`` (``DinoVisionTransformer.forward_features`` -> ``x_norm_clstoken``, head =
    identity) re-expressed in plain torch: conv patch embedding, class token, ``interpolate_pos_encoding`` (bicubic,
    antialias False, scale_factor (w0 + 0.1) / sqrt(N)), blocks x + ls1(attn(norm1 x)), x + ls2(mlp(norm2 x)) with
    the explicit softmax attention of ``dinov2/layers/attention.py``, final LayerNorm (eps 1e-6)."""
    b, _, w, h = x.shape
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=patch)
    t = t.flatten(2).transpose(1, 2)
    dim = t.shape[-1]
    t = torch.cat([sd["cls_token"].expand(b, -1, -1), t], dim=1)
    n = sd["pos_embed"].shape[1] - 1
    m = int(math.sqrt(n))
    w0, h0 = w // patch, h // patch
    if n == w0 * h0 and w == h:
        pos = sd["pos_embed"]
    else:
        grid = F.interpolate(sd["pos_embed"][:, 1:].reshape(1, m, m, dim).permute(0, 3, 1, 2),
                             scale_factor=((w0 + 0.1) / m, (h0 + 0.1) / m), mode="bicubic", antialias=False)
        pos = torch.cat([sd["pos_embed"][:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)
    t = t + pos
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(depth):
        p = {k[len(f"blocks.{i}."):]: v for k, v in sd.items() if k.startswith(f"blocks.{i}.")}
        y = F.layer_norm(t, (dim,), p["norm1.weight"], p["norm1.bias"], eps=1e-6)
        qkv = F.linear(y, p["attn.qkv.weight"], p["attn.qkv.bias"]).reshape(b, -1, 3, heads, dim // heads)
        qkv = qkv.permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * (dim // heads) ** -0.5, qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(b, -1, dim)
        t = t + p["ls1.gamma"] * F.linear(y, p["attn.proj.weight"], p["attn.proj.bias"])
        y = F.layer_norm(t, (dim,), p["norm2.weight"], p["norm2.bias"], eps=1e-6)
        y = F.linear(F.gelu(F.linear(y, p["mlp.fc1.weight"], p["mlp.fc1.bias"])), p["mlp.fc2.weight"],
                     p["mlp.fc2.bias"])
        t = t + p["ls2.gamma"] * y
    return F.layer_norm(t, (dim,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)[:, 0]


def dgm_eval_transform(pil: Image.Image) -> torch.Tensor:
    """dgm-eval's ``DINOv2Encoder.transform`` with its default ``clean_resize=False``."""
    x = TF.Compose([TF.Resize((224, 224), TF.InterpolationMode.BICUBIC), TF.ToTensor()])(pil)
    return TF.Normalize(np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225]))(x)


def smooth_images(n: int, side: int, seed: int) -> torch.Tensor:
    low = torch.rand(n, 3, 9, 9, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return F.interpolate(low, size=(side, side), mode="bicubic", align_corners=False).clamp(-1, 1)


def as_files(images: torch.Tensor) -> list:
    """The images as written to PNG files (uint8, stylegan3's rounding) and read back by dgm-eval's loader."""
    u8 = (images * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return [Image.fromarray(img.permute(1, 2, 0).numpy()).convert("RGB") for img in u8]


def check_against_hub(arch: str, n: int) -> None:
    sd = random_dinov2_state(arch)
    ours = DINOv2Features({k: v for k, v in sd.items() if k != "mask_token"}, "cpu", arch=arch)
    for side in (256, 224):  # PIL bicubic downsizing; 224 px: PIL's same-size resize is a copy (our fast path)
        images = smooth_images(n, side, seed=side)
        with torch.no_grad():
            ref = hub_dinov2_forward(sd, torch.stack([dgm_eval_transform(p) for p in as_files(images)]),
                                     HEADS[arch]).double()
        got = ours(images)
        assert got.shape == (n, ARCHS[arch][1]) and got.dtype == torch.float64
        err = (got - ref).abs().max().item()
        assert err < 1e-5, (arch, side, err)
        assert ref.std().item() > 0.1  # features that vary (not a degenerate comparison)


def test_dinov2_forward_equals_the_hub_model_on_dgm_eval_inputs_vits14():
    check_against_hub("vits14", n=3)


@pytest.mark.slow
def test_dinov2_forward_equals_the_hub_model_on_dgm_eval_inputs_vitl14():
    check_against_hub("vitl14", n=2)


def test_the_vitl14_build_is_the_hub_architecture():
    """fd_dinov2's network (built on the meta device: no memory, no time) has the hub dinov2_vitl14's shape: 24
    blocks of width 1024 with 16 heads, MLP 4096, LayerScale, LayerNorm eps 1e-6, a 37x37 (+ class) position
    grid, and the parameter count of the architecture's formula (304,367,616; the official file adds the
    1,024-value mask_token)."""
    with torch.device("meta"):
        model = build_dinov2("vitl14")
    d = 1024
    per_block = 12 * d * d + 15 * d  # norm1, qkv, proj, ls1, norm2, fc1, fc2, ls2
    expected = 24 * per_block + (3 * 14 * 14 * d + d) + d + 1370 * d + 2 * d  # + patch conv, cls, pos, norm
    assert sum(p.numel() for p in model.parameters()) == expected == 304_367_616
    block = model.blocks[0]
    assert len(model.blocks) == 24 and block.attn.num_heads == 16 and block.mlp.fc1.out_features == 4 * d
    assert tuple(model.pos_embed.shape) == (1, 1370, d) and block.ls1.gamma.shape == (d,)
    assert model.norm.eps == block.norm1.eps == 1e-6 and model.patch_embed.proj.stride == (14, 14)


def test_other_preprocessing_or_position_resampling_gives_other_features():
    """Negative controls at ViT-S/14: torch-fidelity 0.4's dinov2 input (TF-1.x bilinear, no antialias) and timm's
    own variable-size position embedding (size=(16, 16) instead of the hub's scale_factor with offset 0.1)."""
    import timm
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
    sd = random_dinov2_state("vits14")
    sd.pop("mask_token")
    ours = DINOv2Features(sd, "cpu", arch="vits14")
    images = smooth_images(2, 256, seed=1)
    good = ours(images)
    u8 = (images * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    tf1 = interpolate_bilinear_2d_like_tensorflow1x(u8.float(), size=(224, 224), align_corners=False) / 255
    with torch.no_grad():
        fidelity_style = dinov2_cls(ours.model, imagenet_normalise(tf1)).double()
        timm_model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=518, num_classes=0,
                                       dynamic_img_size=True)
        timm_model.load_state_dict(sd)
        pixels = torch.stack([dgm_eval_transform(p) for p in as_files(images)])
        timm_own = timm_model.eval().forward_features(pixels)[:, 0].double()
    for other in (fidelity_style, timm_own):
        assert (other - good).abs().max().item() > 1e-3


def test_dinov2_weight_file_is_read_and_a_bad_one_is_one_line(tmp_path):
    sd = random_dinov2_state("vits14")
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "prefixed.pth")
    torch.save(sd, tmp_path / "official.pth")
    images = smooth_images(1, 224, seed=3)
    a = DINOv2Features(tmp_path / "official.pth", arch="vits14")
    assert torch.equal(a(images), DINOv2Features(tmp_path / "prefixed.pth", arch="vits14")(images))
    assert a.weights_path == str(tmp_path / "official.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "official.pth").read_bytes()[:1000])
    for name, words in (("cut.pth", "could not be read"), ("official.pth", "not a DINOv2 vitl14 state_dict")):
        with pytest.raises(UserError, match=words) as err:
            DINOv2Features(tmp_path / name)  # the protocol's ViT-L/14: a ViT-S file is refused
        assert "\n" not in str(err.value)


# ---- Frechet distance on DINOv2-shaped features --------------------------------------------------------------

def dgm_eval_fd(reps1, reps2):
    """dgm-eval's ``compute_FD_with_reps`` -> ``compute_statistics`` + ``compute_FD_with_stats``, written out."""
    mu1, mu2 = np.mean(reps1, axis=0), np.mean(reps2, axis=0)
    s1, s2 = np.cov(reps1, rowvar=False), np.cov(reps2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1.dot(s2))  # dgm-eval passes disp=False (deprecated in scipy 1.17): same matrix
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * 1e-6
        covmean = scipy.linalg.sqrtm((s1 + offset).dot(s2 + offset))
    covmean = covmean.real
    diff = mu1 - mu2
    return diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


def test_fd_equals_dgm_eval_on_dinov2_shaped_features():
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((1024, 1024)) / 32
    real = rng.standard_normal((1300, 1024)) @ mix
    fake = (rng.standard_normal((1100, 1024)) * 1.1 + 0.05) @ mix
    proto = get_protocol("fd_dinov2")
    acc_fake, acc_real = proto.new_accumulator(), proto.new_accumulator()
    for chunk in np.array_split(fake, 17):  # streamed in batches, as the driver feeds it
        acc_fake.update(torch.from_numpy(chunk))
    acc_real.update(real)
    ours = proto.compute(acc_fake, acc_real.state())
    expected = dgm_eval_fd(real, fake)
    assert ours == pytest.approx(expected, rel=1e-6, abs=1e-6)
    # negative control: an FD with biased covariances (np.cov(bias=True), i.e. S*(n-1)/n) fails this tolerance; its
    # value without another sqrtm: Tr sqrt(a S1 b S2) = sqrt(a b) Tr sqrt(S1 S2)
    a, b = (len(fake) - 1) / len(fake), (len(real) - 1) / len(real)
    s_f, s_r = np.cov(fake, rowvar=False), np.cov(real, rowvar=False)
    diff = fake.mean(0) - real.mean(0)
    tr_covmean = (diff.dot(diff) + np.trace(s_f) + np.trace(s_r) - expected) / 2
    biased = diff.dot(diff) + a * np.trace(s_f) + b * np.trace(s_r) - 2 * np.sqrt(a * b) * tr_covmean
    assert abs(biased - expected) > 100 * 1e-6 * expected


# ---- precision, recall, density, coverage ------------------------------------------------------------------------

def two_sets(n_real, n_fake, dim, seed=0):
    """Overlapping, unequal sets (no metric at 0 or 1): 8-d Gaussians embedded in `dim` dimensions plus a little
    noise (in 1024 full dimensions every distance would be about the same)."""
    rng = np.random.default_rng(seed)
    embed = rng.standard_normal((8, dim))
    real = rng.standard_normal((n_real, 8)) @ embed + 0.05 * rng.standard_normal((n_real, dim))
    fake = (rng.standard_normal((n_fake, 8)) * 1.2 + 0.3) @ embed + 0.05 * rng.standard_normal((n_fake, dim))
    return real, fake


@pytest.mark.parametrize("k", [5, 3])
def test_prdc_equals_the_prdc_package(k, capsys):
    from prdc import compute_prdc as reference
    for dim in (64, 1024):
        real, fake = two_sets(700, 600, dim, seed=dim)
        ours = prdc_mod.compute_prdc(real, fake, nearest_k=k)
        expected = reference(real, fake, nearest_k=k)
        for m in ("precision", "recall", "density", "coverage"):
            assert ours[m] == pytest.approx(float(expected[m]), abs=1e-6), (dim, m)
            assert 0 < ours[m] < 1 or m == "density", (dim, m, ours[m])
    if k == 3:  # negative control: k changes the numbers (the record's k matters)
        assert ours != prdc_mod.compute_prdc(real, fake, nearest_k=5)


def test_blocked_knn_equals_unblocked_and_never_holds_n_by_n(monkeypatch):
    real, fake = two_sets(301, 257, 32, seed=4)
    d = np.linalg.norm(real[:, None] - real[None], axis=-1)
    direct = np.sort(d, axis=1)[:, 5]  # the 6th smallest, itself (0) included
    for rows in (1, 7, 64, None):
        assert np.allclose(prdc_mod.knn_radii(real, 5, block_rows=rows).numpy(), direct, rtol=0, atol=1e-10)
    assert prdc_mod._rows_per_block(40_000, None) * 40_000 * 8 <= prdc_mod.BLOCK_BYTES  # 40k x 40k never whole
    whole = prdc_mod.compute_prdc(real, fake, 5, block_rows=10**6)
    shapes = []
    cdist = torch.cdist

    def recording_cdist(a, b, *args, **kwargs):
        shapes.append((len(a), len(b)))
        return cdist(a, b, *args, **kwargs)

    monkeypatch.setattr(torch, "cdist", recording_cdist)
    monkeypatch.setattr(prdc_mod, "BLOCK_BYTES", 8 * 301 * 20)  # 20 rows of the larger set per block
    assert prdc_mod.compute_prdc(real, fake, 5) == whole
    assert shapes and max(a * b for a, b in shapes) <= 20 * 301 and max(a for a, _ in shapes) < 257


def test_prdc_options_and_minimum_samples():
    assert get_protocol("prdc").option("nearest_k") == 5 and get_protocol("prdc_dinov2").option("nearest_k") == 5
    with pytest.raises(UserError, match="nearest_k must be an integer >= 1"):
        get_protocol("prdc", options={"nearest_k": 0})
    proto = get_protocol("prdc_dinov2", options={"nearest_k": 3})
    check_sample_count(proto, 4)
    with pytest.raises(UserError, match="fewer than the 4 it needs"):
        check_sample_count(proto, 3)


# ---- through the driver, the weights listing and preflight -------------------------------------------------------

def test_protocols_run_through_the_evaluator_with_smoke_stand_ins(tmp_path):
    data = DataConfig(kind="synthetic", size=32, num_test=130)
    site = SiteConfig()
    site.paths.cache = str(tmp_path / "cache")
    protocols = ["fd_dinov2", "prdc", "prdc_dinov2"]
    evaluator = Evaluator(EvalConfig(protocols=protocols, extractor="tiny", bootstrap=20), data, site, "cpu",
                          progress=False)
    records = evaluator(tiny_galip(seed=1), step=3)
    by_metric = {r["metric"]: r for r in records}
    assert set(by_metric) == {"fd_dinov2", "precision", "recall", "density", "coverage", "precision_dinov2",
                              "recall_dinov2", "density_dinov2", "coverage_dinov2"}
    for r in records:
        s = r["settings"]
        assert "error" not in r and r["value"] is not None and math.isfinite(r["value"]), r
        assert s["smoke"] is True and s["extractor"] == TINY_FEATURES and s["weights"] is None
        assert s["matches"].startswith(f"smoke-profile stand-in for {r['protocol']}")
        assert r["num_samples"] == s["num_samples"] == 128 and s["reference"] == "split:test"
        if r["protocol"] != "fd_dinov2":
            assert s["nearest_k"] == 5 and s["options"] == {"nearest_k": 5} and s["reference_num_samples"] == 130
            assert 0 <= r["value"] <= (1 / 5 * 130 if "density" in r["metric"] else 1)
    assert by_metric["fd_dinov2"]["ci_low"] <= by_metric["fd_dinov2"]["ci_high"]
    # each protocol has its own seeded stand-in, so the two PRDC protocols give their own numbers
    assert [by_metric[m]["value"] for m in ("precision", "recall", "density", "coverage")] != \
        [by_metric[f"{m}_dinov2"]["value"] for m in ("precision", "recall", "density", "coverage")]
    # the PRDC references keep the features themselves (130 of them), the FD reference its moments
    cached = {p.name.split("-")[0]: np.load(p) for p in (tmp_path / "cache").glob("*.npz")}
    assert cached["prdc"]["features"].shape == (130, 64) and "mu" in cached["fd_dinov2"]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no cached weights are found
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    (tmp_path / "bench.yaml").write_text("paths: {weights: weights, runs: runs, cache: cache}\n")
    return tmp_path


def test_weights_lists_the_dinov2_file_and_a_missing_file_is_one_error_line(workdir, capsys):
    assert main(["weights"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "dinov2_vitl14 " in line]
    assert {line.split()[0] for line in lines} == {"fd_dinov2", "prdc_dinov2"}
    url = "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth"
    assert all(f"MISSING dinov2_vitl14_pretrain.pth <- {url}" in line for line in lines), lines
    (workdir / "grid.yaml").write_text("name: g\nprofile: smoke\nvariants: [{name: full}]\n"
                                       "eval: {protocols: [fd_dinov2, prdc_dinov2]}\n")
    for command in ("run", "train"):
        # (N above fd_dinov2's 1024 dimensions: the missing file is the one problem)
        assert main([command, "grid.yaml", "--set", "eval.extractor=default", "--set", "eval.num_samples=1100"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), err
        assert "dinov2_vitl14_pretrain.pth" in err[0] and "fd_dinov2" in err[0] and url in err[0], err[0]
        assert not (workdir / "runs").exists()
    (workdir / "weights").mkdir()
    (workdir / "weights" / "dinov2_vitl14_pretrain.pth").write_bytes(b"x")  # found (never loaded here)
    assert main(["weights"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "dinov2_vitl14 " in line]
    assert len(lines) == 2 and all("found weights/dinov2_vitl14_pretrain.pth" in line for line in lines), lines
