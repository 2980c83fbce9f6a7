"""CLIP as OpenAI's clip.load builds it on a GPU (the official GALIP code's CLIP4trn / CLIP4evl), checked on the CPU
with the tiny random CLIP: which tensors are fp16, LayerNorm computing in fp32, the embeddings against the fp32
model, and the GALIP mapper / D-side encoder / training step running on the mixed-dtype model."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from galip_bench.checkpoints.clip import build_clip, clip_load_precision
from galip_bench.data.tokens import tokenize
from models import CLIPConfig
from models.clip import FrozenCLIP

CAPTIONS = ["a small bird with a red crown", "a plate of food on a wooden table", "a red car parked by a wall"]

# OpenAI CLIP's clip/model.py convert_weights, written out: what it turns to fp16, by module type and attribute name
HALF_BY_TYPE = {nn.Conv1d: ("weight", "bias"), nn.Conv2d: ("weight", "bias"), nn.Linear: ("weight", "bias"),
                nn.MultiheadAttention: ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight",
                                        "in_proj_bias", "bias_k", "bias_v")}
HALF_ANY_MODULE = ("text_projection", "proj")


def convert_weights_rule(model: nn.Module) -> dict:
    """{parameter name: the dtype OpenAI's convert_weights leaves it in} (fp32 for everything it does not touch)."""
    expected = {}
    for prefix, module in model.named_modules():
        for name, _ in module.named_parameters(recurse=False):
            half = name in HALF_ANY_MODULE or any(isinstance(module, t) and name in attrs
                                                  for t, attrs in HALF_BY_TYPE.items())
            expected[f"{prefix}.{name}" if prefix else name] = torch.float16 if half else torch.float32
    return expected


def rule_violations(model: nn.Module) -> list:
    expected = convert_weights_rule(model)
    return [(k, p.dtype) for k, p in model.named_parameters() if p.dtype != expected[k]]


@pytest.fixture(scope="module")
def state_dict():
    """A tiny OpenAI-format state_dict whose every tensor is random (LayerNorm weights too, so that rounding any
    of them to fp16 shows), in fp32."""
    torch.manual_seed(0)
    sd = FrozenCLIP.from_open_clip("tiny").model.state_dict()
    g = torch.Generator().manual_seed(1)
    out = {}
    for k, v in sd.items():
        if k.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight", "ln_final.weight")):
            v = 1 + 0.2 * torch.randn(v.shape, generator=g)
        elif ".ln_" in k or k.startswith("ln_"):
            v = 0.1 * torch.randn(v.shape, generator=g)
        out[k] = v.float()
    return out


@pytest.fixture(scope="module")
def clips(state_dict):
    return {"fp32": FrozenCLIP.from_openai_state_dict(state_dict),
            "clip.load-fp16": FrozenCLIP.from_openai_state_dict(state_dict, precision="clip.load-fp16"),
            "all-fp16": FrozenCLIP.from_openai_state_dict(state_dict).half()}


def test_every_parameter_has_the_dtype_openais_convert_weights_gives(clips):
    mixed = clips["clip.load-fp16"]
    assert rule_violations(mixed.model) == []
    dtypes = {k: p.dtype for k, p in mixed.model.named_parameters()}
    # the rule is not vacuous: both kinds occur, at the tensors named in the brief
    assert dtypes["visual.conv1.weight"] == dtypes["transformer.resblocks.0.attn.in_proj_weight"] == torch.float16
    assert dtypes["visual.transformer.resblocks.3.attn.out_proj.bias"] == dtypes["text_projection"] == torch.float16
    assert dtypes["visual.proj"] == dtypes["transformer.resblocks.1.mlp.c_fc.weight"] == torch.float16
    for key in ("visual.ln_pre.weight", "ln_final.bias", "token_embedding.weight", "positional_embedding",
                "visual.class_embedding", "visual.positional_embedding", "visual.transformer.resblocks.0.ln_1.weight"):
        assert dtypes[key] == torch.float32, key
    assert mixed.precision == "clip.load-fp16" and mixed.dtype == torch.float16
    # negative controls: an all-fp16 cast and the fp32 model break the rule
    assert any(k.endswith("ln_pre.weight") for k, _ in rule_violations(clips["all-fp16"].model))
    assert any(k == "visual.conv1.weight" for k, _ in rule_violations(clips["fp32"].model))
    assert {p.dtype for p in clips["fp32"].parameters()} == {torch.float32}


def test_fp16_values_are_the_files_values_rounded_and_the_rest_exact(state_dict, clips):
    sd = clips["clip.load-fp16"].model.state_dict()
    assert torch.equal(sd["visual.conv1.weight"], state_dict["visual.conv1.weight"].half())
    assert torch.equal(sd["visual.ln_pre.weight"], state_dict["visual.ln_pre.weight"])  # not rounded
    assert torch.equal(sd["token_embedding.weight"], state_dict["token_embedding.weight"])
    assert all(torch.equal(v, state_dict[k]) for k, v in clips["fp32"].model.state_dict().items())


def _layer_norm_calls(monkeypatch):
    calls = []
    real = F.layer_norm

    def spy(x, shape, weight=None, bias=None, eps=1e-5):
        calls.append((x.dtype, None if weight is None else weight.dtype))
        return real(x, shape, weight, bias, eps)
    monkeypatch.setattr(torch.nn.functional, "layer_norm", spy)
    return calls


def test_layer_norm_computes_in_fp32_on_fp16_inputs_and_returns_fp16(clips, monkeypatch):
    clip = clips["clip.load-fp16"]
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((i[0].dtype, o.dtype)))
             for m in clip.model.modules() if isinstance(m, nn.LayerNorm)]
    calls = _layer_norm_calls(monkeypatch)
    try:
        with torch.no_grad():
            clip.encode_text(tokenize(CAPTIONS))
            clip.encode_image(torch.rand(3, 3, 64, 64) * 2 - 1)
    finally:
        for h in hooks:
            h.remove()
    n_ln = 2 * 2 + 1 + 2 * 12 + 2  # text: 2 blocks x 2 + ln_final; vision: 12 blocks x 2 + ln_pre + ln_post
    assert len(seen) == len(calls) == n_ln
    assert set(seen) == {(torch.float16, torch.float16)}  # the module sees fp16 and casts back to it
    assert set(calls) == {(torch.float32, torch.float32)}  # the normalisation itself runs in fp32
    # negative control: the all-fp16 cast normalises in fp16
    calls.clear()
    with torch.no_grad():
        clips["all-fp16"].encode_text(tokenize(CAPTIONS))
    assert calls and set(calls) == {(torch.float16, torch.float16)}


def test_layer_norm_output_equals_an_fp32_normalisation_rounded_once(clips):
    ln = clips["clip.load-fp16"].model.visual.ln_pre
    x = (torch.randn(4, 50, 64) * 3 + 1).half()
    expected = F.layer_norm(x.float(), (64,), ln.weight.float(), ln.bias.float(), ln.eps).half()  # written out
    assert torch.equal(ln(x), expected)


def _embeddings(clip, images):
    with torch.no_grad():
        sent, words = clip.encode_text(tokenize(CAPTIONS))
        maps, emb = clip.encode_image(images)
    return {"sent": sent.float(), "words": words.float(), "maps": maps.float(), "emb": emb.float()}


def test_embeddings_close_to_fp32_and_not_an_all_fp16_cast(clips):
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    out = {name: _embeddings(clip, images) for name, clip in clips.items()}
    for key, ref in out["fp32"].items():
        mixed, half = out["clip.load-fp16"][key], out["all-fp16"][key]
        scale = ref.abs().max()
        assert (mixed - ref).abs().max() / scale < 1e-2, key  # fp16 weights: close to fp32
        assert not torch.equal(mixed, ref), key  # but it did run in fp16
        assert not torch.equal(mixed, half), key  # negative control: not what casting everything gives


def test_our_forward_matches_open_clips_on_the_clip_load_model(state_dict, clips):
    """Independent forward: open_clip's own encode_text / encode_image of open_clip's build_model_from_openai_state_dict
    (which reproduces clip.load's build_model) on the same weights; FrozenCLIP's encoders reimplement them."""
    from open_clip.model import build_model_from_openai_state_dict
    reference = build_model_from_openai_state_dict(dict(state_dict), cast_dtype=torch.float16).eval()
    assert rule_violations(reference) == []
    clip = clips["clip.load-fp16"]
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    tokens = tokenize(CAPTIONS)
    with torch.no_grad():
        expected_txt = reference.encode_text(tokens).float()
        expected_img = reference.encode_image(clip.to_clip_input(images).half()).float()
        torch.testing.assert_close(clip.encode_text(tokens)[0].float(), expected_txt, rtol=2e-3, atol=2e-3)
        torch.testing.assert_close(clip.encode_image(images)[1], expected_img, rtol=2e-3, atol=2e-3)


def test_build_clip_follows_the_device_and_builds_either_form_on_request():
    cfg = CLIPConfig(model="tiny")
    assert clip_load_precision("cpu") == "fp32" and clip_load_precision("cuda:1") == "clip.load-fp16"
    cpu = build_clip(cfg, seed=3)
    assert {p.dtype for p in cpu.parameters()} == {torch.float32} and cpu.precision == "fp32"
    gpu_form = build_clip(cfg, seed=3, precision="clip.load-fp16")
    assert rule_violations(gpu_form.model) == [] and gpu_form.precision == "clip.load-fp16"
    for (k, a), (_, b) in zip(cpu.model.named_parameters(), gpu_form.model.named_parameters()):
        assert torch.equal(a.to(b.dtype), b), k  # the same seeded weights, converted
    with pytest.raises(ValueError, match="precision"):
        build_clip(cfg, precision="fp8")


def test_galip_mapper_d_encoder_and_a_training_step_run_on_the_mixed_model():
    from helpers import tiny_galip

    from galip_bench.train import make_optimizers, train_step
    cfg = CLIPConfig(model="tiny")
    results = {}
    for precision in ("fp32", "clip.load-fp16"):
        galip = tiny_galip(seed=5, clip=build_clip(cfg, taps=(1, 4, 8), seed=0, precision=precision))
        tokens = tokenize(CAPTIONS[:2])
        noise = torch.randn(2, galip.cfg.z_dim, generator=torch.Generator().manual_seed(4))
        sent = galip.text_condition(tokens)
        fake = galip.netG(noise, sent)  # the mapper runs the converted ViT blocks
        maps, emb = galip.d_input(fake)  # the D-side encoder
        assert fake.dtype == maps.dtype == emb.dtype == sent.dtype == torch.float32
        real = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(6)) * 2 - 1
        opt_d, opt_g = make_optimizers(galip)
        losses = train_step(galip, opt_d, opt_g, real, tokens, noise)  # MA-GP differentiates through the maps
        assert all(torch.isfinite(v) for v in losses.values())
        grads = [p.grad for p in galip.netG.parameters() if p.grad is not None]
        assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
        results[precision] = (fake.detach(), {k: float(v) for k, v in losses.items()})
    (f32, l32), (f16, l16) = results["fp32"], results["clip.load-fp16"]
    assert (f16 - f32).abs().max() / f32.abs().max() < 2e-2 and not torch.equal(f16, f32)
    assert all(abs(l16[k] - l32[k]) <= 2e-2 * max(1.0, abs(l32[k])) for k in l32), (l16, l32)


def _register_tiny_open_clip(folder) -> str:
    import open_clip
    name = "galip-bench-precision-tiny"  # 224 px input: the embedder's preprocessing resizes to 224
    cfg = {"embed_dim": 32, "quick_gelu": True,
           "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32, "head_width": 32},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
    (folder / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder / f"{name}.json")
    return name


def test_clip_score_embedder_clip_load_form(tmp_path, monkeypatch):
    from galip_bench.metrics.clip_score import ClipEmbedder
    name = _register_tiny_open_clip(tmp_path)
    torch.manual_seed(0)
    fp32 = ClipEmbedder(name, None, "official")
    torch.save(fp32.model.state_dict(), tmp_path / "w.pt")
    fp32 = ClipEmbedder(name, tmp_path / "w.pt", "official")
    mixed = ClipEmbedder(name, tmp_path / "w.pt", "official", fp16_weights=True)  # what clip_score_galip asks on a GPU
    assert mixed.precision == "clip.load-fp16" and fp32.precision == "fp32"
    assert rule_violations(mixed.model) == [] and {p.dtype for p in fp32.model.parameters()} == {torch.float32}
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(7)) * 2 - 1
    calls = _layer_norm_calls(monkeypatch)
    img, txt = mixed.encode_image(images), mixed.encode_text(CAPTIONS)
    assert calls and set(calls) == {(torch.float32, torch.float32)}
    for a, b in ((img, fp32.encode_image(images)), (txt, fp32.encode_text(CAPTIONS))):
        assert a.dtype == torch.float32 and (a - b).abs().max() / b.abs().max() < 1e-2 and not torch.equal(a, b)
