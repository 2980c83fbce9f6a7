"""CLIP-GEN (models/clipgen): the VQGAN's token round trip and training, the prior's loss and sampling, and the
embedding-reconstruction term's gradient path, all on the tiny presets. What follows HFAiLab/clip-gen in particular
(parameter counts, quantizer, loss forms, nucleus, reranking, earlier checkpoints) is in test_clipgen_reference.py."""
import math
import time

import pytest
import torch
import torch.nn.functional as F

from models.clip import FrozenCLIP
from models.clipgen import (ClipGen, ClipGenConfig, PatchDiscriminator, Prior, PriorConfig, VQGAN, VQGANConfig,
                            filter_logits, prior_loss, vqgan_d_loss, vqgan_g_loss)


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: on a shared 2-core machine, two OpenMP threads per process thrash (a conv can get
    20x slower), while one thread gives stable timings."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def shapes(n: int = 12, size: int = 32, seed: int = 0) -> torch.Tensor:
    """n images in [-1,1]: a colour gradient background with a flat-coloured rectangle or disc."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    images = []
    for i in range(n):
        c0, c1, fg = (torch.rand(3, 1, 1, generator=g) for _ in range(3))
        img = c0 * (1 - xx) + c1 * yy
        cy, cx = (torch.rand(2, generator=g) * 0.5 + 0.25).tolist()
        r = 0.12 + 0.15 * torch.rand(1, generator=g).item()
        mask = (((yy - cy) ** 2 + (xx - cx) ** 2) < r ** 2) if i % 2 else ((yy - cy).abs() < r) & ((xx - cx).abs() < r)
        images.append(torch.where(mask, fg, img))
    return torch.stack(images).clamp(0, 1) * 2 - 1


def tiny_vqgan(seed: int = 0) -> VQGAN:
    torch.manual_seed(seed)
    return VQGAN(VQGANConfig.tiny())


def tiny_prior(seed: int = 0, **overrides) -> Prior:
    torch.manual_seed(seed)
    return Prior(PriorConfig(**{**PriorConfig.tiny().__dict__, **overrides}))


# configs --------------------------------------------------------------------------------------------------------
def test_full_config_is_f16_on_256px_and_tiny_is_4x_on_32px():
    full = ClipGenConfig()
    full.validate()
    assert (full.vqgan.img_size, full.vqgan.downsample, full.vqgan.num_tokens) == (256, 16, 256)
    assert (full.prior.vocab_size, full.prior.seq_len, full.prior.clip_dim) == (16384, 256, 512)
    s = full.sampling  # HFAiLab/clip-gen's train_gpt.py and demo.py
    assert (s.temperature, s.top_k, s.top_p, s.candidates) == (1.0, 500, 0.95, 1)
    assert (full.vqgan.codebook, full.vqgan.commitment_weight, full.vqgan.codebook_weight) == ("gradient", 1.0, 0.2)
    assert (full.prior.emb_rec_form, full.prior.emb_rec_weight) == ("mse_straight_through", 0.0)
    tiny = ClipGenConfig.tiny()
    tiny.validate()
    assert (tiny.vqgan.img_size, tiny.vqgan.downsample, tiny.vqgan.num_tokens, tiny.prior.vocab_size) == (32, 4, 64, 64)


def test_mismatched_prior_and_vqgan_are_refused():
    cfg = ClipGenConfig.tiny()
    cfg.prior.vocab_size = 128
    with pytest.raises(ValueError, match="vocab_size"):
        ClipGen(cfg)
    cfg = ClipGenConfig.tiny()
    cfg.vqgan.width_mults = (1, 2, 2, 2)  # 8x down: 16 tokens, the prior expects 64
    with pytest.raises(ValueError, match="seq_len"):
        cfg.validate()


# VQGAN ----------------------------------------------------------------------------------------------------------
def test_vqgan_round_trips_an_image_through_tokens():
    vq = tiny_vqgan().eval()
    x = shapes(3)
    indices, quantized, _ = vq.encode(x)
    recon, fwd_indices, _ = vq(x)
    assert indices.shape == (3, 64) and indices.dtype == torch.long
    assert quantized.shape == (3, 32, 8, 8) and recon.shape == x.shape
    assert 0 <= int(indices.min()) and int(indices.max()) < 64
    assert torch.equal(indices, fwd_indices)
    assert torch.allclose(vq.decode_indices(indices), recon, atol=1e-6)
    # one-hot probabilities are the hard tokens; a softer distribution decodes to something else
    assert torch.allclose(vq.decode_soft(F.one_hot(indices, 64).float()), recon, atol=1e-5)
    uniform = torch.full((3, 64, 64), 1 / 64)
    assert (vq.decode_soft(uniform) - recon).abs().max() > 1e-3


def test_vqgan_learns_to_reconstruct_and_uses_several_codes():
    torch.manual_seed(0)
    cfg = VQGANConfig.tiny()
    vq, disc = VQGAN(cfg), PatchDiscriminator(cfg)
    x = shapes(12)
    opt_g = torch.optim.Adam(vq.parameters(), lr=1e-3)
    opt_d = torch.optim.Adam(disc.parameters(), lr=2e-4)

    def l1():
        with torch.no_grad():
            return (vq.eval()(x)[0] - x).abs().mean().item()

    before = l1()
    vq.train()
    for step in range(40):
        recon, _, commit = vq(x)
        g = vqgan_g_loss(vq, disc, x, recon, commit, step, cfg)
        opt_g.zero_grad()
        g["loss"].backward()
        opt_g.step()
        d = vqgan_d_loss(disc, x, recon, step, cfg)
        opt_d.zero_grad()
        d["loss"].backward()
        opt_d.step()
        assert all(math.isfinite(v.item()) for v in (*g.values(), *d.values()))
    after = l1()
    assert after < 0.8 * before, (before, after)  # seeds 0-3 reach 0.59-0.67 of it (EMA codebook: 0.48-0.60)
    used = vq.eval().encode(x)[0].unique().numel()
    assert used > 4, used


def test_adversarial_terms_start_at_the_start_step():
    cfg = VQGANConfig.tiny()
    cfg.adversarial_start = 5
    vq = tiny_vqgan()
    calls = []

    def disc(images):
        calls.append(images.shape[0])
        return images.mean(dim=(1, 2, 3), keepdim=True)

    x = shapes(2)
    recon, _, commit = vq(x)
    early = vqgan_g_loss(vq, disc, x, recon, commit, 4, cfg)
    assert calls == [] and early["g_adv"].item() == 0 and early["adv_weight"].item() == 0
    assert torch.allclose(early["loss"], early["rec"] + early["commit"])
    late = vqgan_g_loss(vq, disc, x, recon, commit, 5, cfg)
    assert calls == [2] and late["adv_weight"].item() > 0
    assert torch.allclose(late["g_adv"], -recon.mean())
    cfg.adaptive_weight = False
    fixed = vqgan_g_loss(vq, disc, x, recon, commit, 5, cfg)
    assert fixed["adv_weight"].item() == pytest.approx(cfg.adversarial_weight)
    assert vqgan_d_loss(disc, x, recon, 4, cfg)["loss"].item() == 0
    assert vqgan_d_loss(disc, x, recon, 5, cfg)["loss"].item() > 0


def test_adversarial_gradient_reaches_the_decoder_and_the_perceptual_term_is_weighted():
    cfg = VQGANConfig.tiny()
    cfg.adaptive_weight, cfg.perceptual_weight = False, 0.5
    vq = tiny_vqgan()
    disc = PatchDiscriminator(cfg)
    x = shapes(2)
    recon, _, commit = vq(x)
    plain = vqgan_g_loss(vq, disc, x, recon, commit, 0, cfg)
    with_p = vqgan_g_loss(vq, disc, x, recon, commit, 0, cfg, perceptual=lambda a, b: torch.full((2,), 3.0))
    assert plain["perceptual"].item() == 0 and with_p["perceptual"].item() == 3.0
    assert with_p["loss"].item() == pytest.approx(plain["loss"].item() + 1.5, abs=1e-5)
    plain["g_adv"].backward()
    assert vq.decoder.last_layer.grad.abs().sum() > 0


def test_discriminator_learns_to_tell_real_from_fake():
    torch.manual_seed(0)
    cfg = VQGANConfig.tiny()
    disc = PatchDiscriminator(cfg)
    real, fake = shapes(8), torch.rand(8, 3, 32, 32) * 2 - 1
    opt = torch.optim.Adam(disc.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        d = vqgan_d_loss(disc, real, fake, 0, cfg)
        opt.zero_grad()
        d["loss"].backward()
        opt.step()
        losses.append(d["loss"].item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert d["logits_real"] > d["logits_fake"]


# prior ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("conditioning", ["prefix", "cross"])
def test_prior_fits_a_fixed_batch(conditioning):
    prior = tiny_prior(conditioning=conditioning)
    g = torch.Generator().manual_seed(1)
    tokens, emb = torch.randint(0, 64, (4, 64), generator=g), torch.randn(4, 64, generator=g)
    opt = torch.optim.Adam(prior.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        terms = prior_loss(prior, None, tokens, emb, prior.cfg)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        losses.append(terms["ce"].item())
    assert losses[0] == pytest.approx(math.log(64), rel=0.1)  # near uniform at init
    assert losses[-1] < 0.6 * losses[0], losses


def test_prior_output_depends_on_the_condition_and_only_on_earlier_tokens():
    prior = tiny_prior().eval()
    tokens, emb = torch.randint(0, 64, (2, 64)), torch.randn(2, 64)
    logits = prior(tokens, emb)
    assert logits.shape == (2, 64, 64)
    changed = tokens.clone()
    changed[:, 40] = (changed[:, 40] + 1) % 64
    other = prior(changed, emb)
    assert torch.allclose(logits[:, :41], other[:, :41], atol=1e-5)  # position 40 predicts token 40: unaffected
    assert not torch.allclose(logits[:, 41:], other[:, 41:], atol=1e-5)
    assert not torch.allclose(prior(tokens, torch.randn(2, 64)), logits, atol=1e-5)


@pytest.mark.parametrize("conditioning", ["prefix", "cross"])
def test_sampling_is_seeded(conditioning):
    prior = tiny_prior(conditioning=conditioning)
    emb = torch.randn(2, 64)
    a = prior.sample(emb, top_k=20, top_p=0.95, generator=torch.Generator().manual_seed(0))
    b = prior.sample(emb, top_k=20, top_p=0.95, generator=torch.Generator().manual_seed(0))
    c = prior.sample(emb, top_k=20, top_p=0.95, generator=torch.Generator().manual_seed(1))
    assert a.shape == (2, 64) and 0 <= int(a.min()) and int(a.max()) < 64
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("conditioning", ["prefix", "cross"])
def test_top_k_1_is_greedy_decoding(conditioning):
    """The cached step-by-step sampler must agree with the teacher-forced forward pass."""
    prior = tiny_prior(conditioning=conditioning).eval()
    emb = torch.randn(3, 64)
    tokens = prior.sample(emb, top_k=1, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(tokens, prior(tokens, emb).argmax(dim=-1))
    assert torch.equal(tokens, prior.sample(emb, top_p=1e-6, generator=torch.Generator().manual_seed(9)))


def test_filter_logits_keeps_the_top_k_and_the_top_p_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.05, 0.3, 0.15]]))
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, True, False, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.7)).tolist() == [[False, True, False, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.85)).tolist() == [[False, True, False, False]]
    assert not torch.isinf(filter_logits(logits, top_p=1.0)).any()


@pytest.mark.parametrize("relaxation", ["gumbel", "softmax"])
def test_embedding_reconstruction_gradient_reaches_the_prior(relaxation):
    torch.manual_seed(0)
    clip = FrozenCLIP.from_open_clip("tiny")
    vq = tiny_vqgan().eval().requires_grad_(False)
    prior = tiny_prior(relaxation=relaxation, emb_rec_form="cos_relaxed", emb_rec_weight=1.0)
    x = shapes(2)
    with torch.no_grad():
        tokens = vq.encode(x)[0]
        emb = clip.encode_image(x)[1]
    terms = prior_loss(prior, vq, tokens, emb, prior.cfg, encode_image=clip.encode_image,
                       generator=torch.Generator().manual_seed(0))
    assert 0 < terms["emb_rec"].item() < 2
    expected = terms["ce"].item() + prior.cfg.emb_rec_weight * terms["emb_rec"].item()
    assert terms["loss"].item() == pytest.approx(expected, rel=1e-5)
    terms["emb_rec"].backward()
    for name in ("cond.weight", "net.to_logits.weight", "net.token_emb.emb.weight"):
        grad = dict(prior.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert all(p.grad is None for p in (*vq.parameters(), *clip.parameters()))


def test_without_an_image_encoder_the_loss_is_the_cross_entropy():
    prior, vq = tiny_prior(), tiny_vqgan().eval()
    tokens, emb = torch.randint(0, 64, (2, 64)), torch.randn(2, 64)
    terms = prior_loss(prior, vq, tokens, emb, prior.cfg)
    assert terms["emb_rec"].item() == 0 and torch.equal(terms["loss"], terms["ce"])


# the whole model ------------------------------------------------------------------------------------------------
def test_generate_gives_seeded_images_in_range():
    torch.manual_seed(0)
    model = ClipGen(ClipGenConfig.tiny()).eval()
    emb = torch.randn(2, 64)
    a = model.generate(emb, top_k=10, generator=torch.Generator().manual_seed(3))
    b = model.generate(emb, top_k=10, generator=torch.Generator().manual_seed(3))
    assert a.shape == (2, 3, 32, 32) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b)


def first_step(scale: float = 1.0) -> dict:
    """One training step of the tiny CLIP-GEN (VQGAN G, its discriminator, the prior) from fresh Adams, every loss
    multiplied by `scale` (1: as trained; 0: the negative control). Returns, per net, the share of parameter
    entries with a nonzero gradient, the largest distance of the stepped parameters from Adam's first step computed
    from those gradients (p - lr * g / (|g| + eps)), and each net's loss on the same batch before and after."""
    torch.manual_seed(0)
    cfg = ClipGenConfig.tiny()
    model, disc = ClipGen(cfg), PatchDiscriminator(cfg.vqgan)
    nets = {"vqgan": model.vqgan, "disc": disc, "prior": model.prior}
    opts = {name: torch.optim.Adam(net.parameters(), lr=1e-3) for name, net in nets.items()}
    before = {name: [p.detach().clone() for p in net.parameters()] for name, net in nets.items()}
    x, emb = shapes(4), torch.randn(4, 64)
    recon, tokens, commit = model.vqgan(x)
    losses = {"vqgan": vqgan_g_loss(model.vqgan, disc, x, recon, commit, 0, cfg.vqgan)["loss"]}
    opts["vqgan"].zero_grad()
    (scale * losses["vqgan"]).backward()
    opts["vqgan"].step()
    losses["disc"] = vqgan_d_loss(disc, x, recon, 0, cfg.vqgan)["loss"]
    opts["disc"].zero_grad()
    (scale * losses["disc"]).backward()
    opts["disc"].step()
    losses["prior"] = prior_loss(model.prior, model.vqgan, tokens, emb, cfg.prior)["ce"]
    opts["prior"].zero_grad()
    (scale * losses["prior"]).backward()
    opts["prior"].step()
    out = {}
    for name, net in nets.items():
        params = list(net.parameters())
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        nonzero = sum(int((g != 0).sum()) for g in grads) / sum(g.numel() for g in grads)
        adam = max(float((p.detach() - (b - 1e-3 * g / (g.abs() + 1e-8))).abs().max())
                   for p, b, g in zip(params, before[name], grads))
        out[name] = {"nonzero": nonzero, "adam": adam, "loss": losses[name].item()}
    with torch.no_grad():  # the D and prior losses again on the same batch
        out["disc"]["after"] = float(vqgan_d_loss(disc, x, recon.detach(), 0, cfg.vqgan)["loss"])
        out["prior"]["after"] = float(prior_loss(model.prior, model.vqgan, tokens, emb, cfg.prior)["ce"])
    return out


def learned(step: dict) -> list:
    """What the step failed to do, as the losses say it should have: [] when every net got gradients on nearly all
    of its parameters, moved by Adam's first step from them, and the D and prior losses fell on the same batch."""
    problems = [f"{n}: {s['nonzero']:.0%} of the gradient is nonzero" for n, s in step.items() if s["nonzero"] < 0.95]
    problems += [f"{n}: {s['adam']:.1e} from Adam's first step" for n, s in step.items() if s["adam"] > 1e-6]
    problems += [f"{n}: loss {s['loss']:.4f} -> {s['after']:.4f}" for n, s in step.items()
                 if "after" in s and not s["after"] < s["loss"] - 1e-3]
    return problems


def test_tiny_config_trains_a_step_fast():
    assert learned(first_step()) == []
    # negative control: every loss multiplied by 0 still runs a step, and is caught
    zero = learned(first_step(scale=0.0))
    assert any("vqgan: 0% of the gradient" in p for p in zero) and any("prior: loss" in p for p in zero), zero

    torch.manual_seed(0)
    cfg = ClipGenConfig.tiny()
    model, disc = ClipGen(cfg), PatchDiscriminator(cfg.vqgan)
    opt_g, opt_d = torch.optim.Adam(model.vqgan.parameters()), torch.optim.Adam(disc.parameters())
    opt_p = torch.optim.Adam(model.prior.parameters())
    x, emb = shapes(4), torch.randn(4, 64)

    def step():
        recon, tokens, commit = model.vqgan(x)
        g = vqgan_g_loss(model.vqgan, disc, x, recon, commit, 0, cfg.vqgan)
        opt_g.zero_grad()
        g["loss"].backward()
        opt_g.step()
        d = vqgan_d_loss(disc, x, recon, 0, cfg.vqgan)
        opt_d.zero_grad()
        d["loss"].backward()
        opt_d.step()
        p = prior_loss(model.prior, model.vqgan, tokens, emb, cfg.prior)
        opt_p.zero_grad()
        p["loss"].backward()
        opt_p.step()

    step()  # warm-up: first-call allocations
    times = []
    for _ in range(3):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    assert min(times) < 1.0, times
