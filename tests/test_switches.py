"""Every combination of GALIP's switches builds, runs forward and backward on a tiny CLIP, and counts its
parameters; the switches change exactly the parts they name."""
import itertools

import pytest
import torch
from helpers import tiny_galip

from models import parameter_counts
from models.clip import FrozenCLIP
from models.losses import d_loss, g_loss

SWITCHES = dict(d_backbone=["clip", "scratch"], mate_d=[True, False], g_clip_vit=[True, False],
                bridge=[True, False], prompts=[True, False])
COMBOS = [dict(zip(SWITCHES, values)) for values in itertools.product(*SWITCHES.values())]


@pytest.fixture(scope="module")
def clips():
    torch.manual_seed(0)
    return {pp: FrozenCLIP.from_open_clip("tiny", preprocess=pp) for pp in ("official", "standard")}


def one_step(galip, batch=3):
    cfg = galip.cfg
    tokens = torch.randint(1, 400, (batch, 77))
    tokens[:, 10] = 49407  # EOT: argmax position
    tokens[:, 11:] = 0
    sent, _ = galip.clip.encode_text(tokens)
    real = torch.rand(batch, 3, cfg.img_size, cfg.img_size) * 2 - 1
    fake = galip.netG(torch.randn(batch, cfg.z_dim), sent)
    assert fake.shape == real.shape
    real_in, _ = galip.d_input(real)
    fake_in, fake_emb = galip.d_input(fake, with_embedding=True)
    errD = d_loss(galip.netD, galip.netC, real_in, fake_in, sent)["errD"]
    errD.backward()
    d_grads = [p.grad for p in galip.netD.parameters()] + [p.grad for p in galip.netC.parameters()]
    galip.zero_grad(set_to_none=True)
    g_terms = g_loss(galip.netD, galip.netC, fake_in, fake_emb, sent)
    g_terms["errG"].backward()
    return errD, g_terms, d_grads


@pytest.mark.parametrize("preprocess", ["official", "standard"])
@pytest.mark.parametrize("switches", COMBOS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_every_combination_trains(clips, preprocess, switches):
    galip = tiny_galip(clip=clips[preprocess], preprocess=preprocess, **switches)
    errD, g_terms, d_grads = one_step(galip)
    assert torch.isfinite(errD) and torch.isfinite(g_terms["errG"])
    assert any(g is not None and g.abs().sum() > 0 for g in d_grads), "D got no gradient"
    g_grads = [p.grad for p in galip.netG.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in g_grads), "every G parameter gets a gradient"
    assert all(p.grad is None for p in galip.clip.parameters()), "CLIP stays frozen"
    counts = parameter_counts(galip)
    assert counts["netG"]["trainable"] == sum(p.numel() for p in galip.netG.parameters())
    assert counts["netG"]["frozen"] > 0 if switches["g_clip_vit"] else counts["netG"]["frozen"] == 0


def trainable(galip, net):
    return parameter_counts(galip)[net]["trainable"]


def test_prompt_switch_removes_exactly_the_prompt_predictor(clips):
    full, off = tiny_galip(clip=clips["official"]), tiny_galip(clip=clips["official"], prompts=False)
    cfg, width = full.cfg, clips["official"].width
    n_prompts = len(cfg.prompt_layers)
    linear = (cfg.z_dim + cfg.cond_dim + 1) * width * n_prompts  # Linear(cond -> 8 prompts x width)
    assert trainable(full, "netG") - trainable(off, "netG") == linear


def test_mate_d_switch_removes_the_clip_gates_only(clips):
    full, off = tiny_galip(clip=clips["official"]), tiny_galip(clip=clips["official"], mate_d=False)
    assert trainable(full, "netD") - trainable(off, "netD") == len(full.cfg.d_taps) - 1  # one beta per D_Block


def test_mate_d_off_ignores_all_but_the_last_tap(clips):
    galip = tiny_galip(clip=clips["official"], mate_d=False)
    with torch.no_grad():
        for p in galip.netD.parameters():
            p.normal_(0, 0.1)
        maps = torch.randn(2, 3, 64, 7, 7)
        other = maps.clone()
        other[:, :2] = torch.randn(2, 2, 64, 7, 7)
        assert torch.equal(galip.netD(maps), galip.netD(other))
        changed = maps.clone()
        changed[:, -1] += 1
        assert not torch.equal(galip.netD(maps), galip.netD(changed))


def generator_output(galip, seed=0):
    torch.manual_seed(seed)
    noise, sent = torch.randn(2, galip.cfg.z_dim), torch.randn(2, galip.cfg.cond_dim)
    with torch.no_grad():
        return galip.netG(noise, sent)


@pytest.mark.parametrize("g_clip_vit", [True, False])
def test_g_clip_vit_switch_decides_whether_the_clip_mapper_runs(g_clip_vit):
    torch.manual_seed(0)
    clip_a = FrozenCLIP.from_open_clip("tiny")
    torch.manual_seed(1)
    clip_b = FrozenCLIP.from_open_clip("tiny")
    out_a = generator_output(tiny_galip(seed=5, clip=clip_a, g_clip_vit=g_clip_vit))
    out_b = generator_output(tiny_galip(seed=5, clip=clip_b, g_clip_vit=g_clip_vit))
    assert torch.equal(out_a, out_b) != g_clip_vit


def test_bridge_switch_drops_the_text_conditioned_blocks(clips):
    off = tiny_galip(clip=clips["official"], bridge=False)
    assert not hasattr(off.netG.mapping, "FBlocks")
    full = tiny_galip(clip=clips["official"])
    assert len(full.netG.mapping.FBlocks) == full.cfg.bridge_blocks


def test_standard_preprocess_maps_once_and_official_twice():
    torch.manual_seed(0)
    official = FrozenCLIP.from_open_clip("tiny", preprocess="official")
    standard = FrozenCLIP.from_open_clip("tiny", preprocess="standard")
    white = torch.ones(1, 3, 56, 56)  # 1.0 in [-1,1]
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    assert torch.allclose(standard.to_clip_input(white), (1 - mean) / std)
    black = -torch.ones(1, 3, 56, 56)  # -1 -> 0 -> 0.5 under the official double map
    assert torch.allclose(official.to_clip_input(black), (0.5 - mean) / std)
