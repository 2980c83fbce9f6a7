"""CLIP-GEN as HFAiLab/clip-gen ("HF"): HF's parameter counts at full size, attention where attn_resolutions says,
HF's gradient quantizer and prior-loss form, its sampling (top-k, the top-p nucleus, CLIP reranking of candidates),
the trainer's loss overrides, and configs of earlier checkpoints rebuilding the earlier model."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from vector_quantize_pytorch import VectorQuantize

from galip_bench.checkpoints.format import config_of
from models.clip import FrozenCLIP
from models.clipgen import (HF_PARAMETERS, ClipGen, ClipGenConfig, GradientQuantizer, PatchDiscriminator, Prior,
                            PriorConfig, SamplingConfig, TokenSampler, VQGAN, VQGANConfig, draw, parameter_counts,
                            prior_loss, rerank, straight_through_one_hot, vqgan_d_loss, vqgan_g_loss)
from models.clipgen.config import EARLIER_DEFAULTS
from models.clipgen.vqgan import AttnBlock, Downsample, ResBlock


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one OpenMP thread is faster and steadier than two on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def clip():
    return FrozenCLIP.from_open_clip("tiny")


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def images(*shape, seed: int = 0) -> torch.Tensor:
    """Flat-coloured images in [-1,1] of shape [*shape, 3, 32, 32], one colour each (CLIP tells them apart)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, 3, 1, 1, generator=g) * 2 - 1).expand(*shape, 3, 32, 32).contiguous()


# architecture ---------------------------------------------------------------------------------------------------
def test_full_size_parameter_counts_equal_hfs():
    cfg = ClipGenConfig()
    vq, disc = VQGAN(cfg.vqgan), PatchDiscriminator(cfg.vqgan)
    assert (count(vq.encoder), count(vq.decoder), vq.codebook.numel()) == (29_363_968, 42_515_587, 4_194_304)
    assert count(vq) == 76_073_859 == HF_PARAMETERS["vqgan"]  # encoder + decoder + codebook ("76.07 M")
    assert count(disc) == 2_765_633
    with torch.device("meta"):  # the same prior without allocating its 1.3 GB
        prior = Prior(cfg.prior)
    assert count(prior) == 336_504_832 and HF_PARAMETERS["prior"] == 336_669_696  # x-transformers vs HF's GPT


@pytest.mark.parametrize("codebook", ["gradient", "ema"])
def test_parameter_counts_report_the_vqgan_with_its_codebook(codebook):
    cfg = ClipGenConfig()
    cfg.vqgan.codebook = codebook
    with torch.device("meta"):
        counts = parameter_counts(ClipGen(cfg))
    vq = counts["vqgan"]
    assert vq["codebook"] == 4_194_304 and vq["with_codebook"] == HF_PARAMETERS["vqgan"]
    assert vq["trainable"] == HF_PARAMETERS["vqgan"] - (4_194_304 if codebook == "ema" else 0)  # EMA: a buffer
    assert counts["prior"]["trainable"] == 336_504_832 and counts["disc"]["trainable"] == 2_765_633


def attention_sizes(vq: VQGAN) -> dict:
    """{'encoder'|'decoder': the feature-map side at each attention block, in order} from one forward pass."""
    sizes = {"encoder": [], "decoder": []}
    for part in sizes:
        for block in getattr(vq, part).modules():
            if isinstance(block, AttnBlock):
                block.register_forward_hook(lambda m, inputs, out, part=part: sizes[part].append(inputs[0].shape[-1]))
    vq(torch.zeros(1, 3, vq.cfg.img_size, vq.cfg.img_size, device=vq.codebook.device))
    return sizes


def test_attention_follows_each_res_block_at_the_attn_resolutions():
    with torch.device("meta"):  # shapes only
        full = VQGAN(VQGANConfig())
    assert attention_sizes(full) == {"encoder": [16] * 3, "decoder": [16] * 4}  # 2 + mid, 3 + mid
    encoder = list(full.encoder.net)
    assert all(isinstance(encoder[i - 1], ResBlock) for i, layer in enumerate(encoder) if isinstance(layer, AttnBlock))
    assert attention_sizes(VQGAN(VQGANConfig.tiny())) == {"encoder": [8] * 2, "decoder": [8] * 3}
    upper = VQGANConfig.tiny()
    upper.attn_resolutions = (16,)  # the middle level instead: only the mid blocks stay at 8
    assert attention_sizes(VQGAN(upper)) == {"encoder": [16, 8], "decoder": [8, 16, 16]}
    bare = VQGANConfig.tiny()
    bare.attn_resolutions, bare.mid_attention = (), False
    assert attention_sizes(VQGAN(bare)) == {"encoder": [], "decoder": []}


def test_downsampling_pads_right_and_bottom_or_every_side():
    x = torch.randn(1, 8, 16, 16)
    for padding, pad in (("asymmetric", (0, 1, 0, 1)), ("symmetric", (1, 1, 1, 1))):
        down = Downsample(8, padding)
        expected = F.conv2d(F.pad(x, pad), down.weight, down.bias, stride=2)
        assert down(x).shape == (1, 8, 8, 8) and torch.allclose(down(x), expected, atol=1e-6)


def test_the_quant_convs_sit_at_the_ends_of_encoder_and_decoder():
    cfg = VQGANConfig.tiny()
    vq = VQGAN(cfg)
    first, last = vq.decoder.net[0], vq.encoder.net[-1]
    assert all(isinstance(c, torch.nn.Conv2d) and c.kernel_size == (1, 1) and c.in_channels == c.out_channels == 32
               for c in (first, last))
    cfg.quant_convs = False
    vq = VQGAN(cfg)
    assert vq.encoder.net[-1].kernel_size == (3, 3) and vq.decoder.net[0].kernel_size == (3, 3)


# the quantizer and the VQGAN losses -----------------------------------------------------------------------------
def test_gradient_quantizer_is_hfs():
    torch.manual_seed(0)
    k, d = 16, 4
    quant = GradientQuantizer(k, d, commitment_weight=1.0, codebook_weight=0.2)
    book = quant.codebook.detach()
    assert isinstance(quant.codebook, torch.nn.Parameter)
    assert book.abs().max() <= 1 / k and book.min() < 0 < book.max()  # uniform(-1/K, 1/K)
    z = (torch.randn(2, d, 3, 3) * 0.05).requires_grad_()
    q, indices, loss = quant(z)
    vectors = z.detach().permute(0, 2, 3, 1).reshape(-1, d)
    nearest = [min(range(k), key=lambda j: float((v - book[j]).pow(2).sum())) for v in vectors]
    assert indices.shape == (2, 9) and indices.flatten().tolist() == nearest
    target = book[indices].view(2, 3, 3, d).permute(0, 3, 1, 2)
    assert torch.equal(q, target)  # exactly the codes forward
    mse = F.mse_loss(z.detach(), target)
    assert loss.item() == pytest.approx(1.2 * mse.item(), rel=1e-6)
    n = z.numel()
    g_z, g_book = torch.autograd.grad(loss, (z, quant.codebook), retain_graph=True)
    assert torch.allclose(g_z, 2 * (z.detach() - target) / n)  # the encoder term, weight 1
    per_vector = (0.2 * 2 * (target - z.detach()) / n).permute(0, 2, 3, 1).reshape(-1, d)
    assert torch.allclose(g_book, torch.zeros_like(book).index_add_(0, indices.flatten(), per_vector))  # beta 0.2
    g_st, g_none = torch.autograd.grad(q.sum(), (z, quant.codebook), allow_unused=True)
    assert torch.equal(g_st, torch.ones_like(z)) and g_none is None  # straight through to z only


def test_the_vqgan_loss_takes_the_trainers_adversarial_start_and_gradient_reduction():
    cfg = VQGANConfig.tiny()
    cfg.adversarial_start = 100
    torch.manual_seed(0)
    vq = VQGAN(cfg)
    x = images(2)
    recon, _, commit = vq(x)

    def disc(imgs):
        return imgs.mean(dim=(1, 2, 3), keepdim=True)

    assert vqgan_g_loss(vq, disc, x, recon, commit, 5, cfg)["adv_weight"].item() == 0
    on = vqgan_g_loss(vq, disc, x, recon, commit, 5, cfg, adversarial_start=5)
    assert on["adv_weight"].item() > 0
    assert vqgan_d_loss(disc, x, recon, 5, cfg)["loss"].item() == 0
    assert vqgan_d_loss(disc, x, recon, 5, cfg, adversarial_start=5)["loss"].item() > 0
    seen = []

    def triple_the_first(grad):  # stands in for an average over processes
        seen.append(tuple(grad.shape))
        return grad * 3 if len(seen) == 1 else grad

    reduced = vqgan_g_loss(vq, disc, x, recon, commit, 5, cfg, adversarial_start=5, grad_reduce=triple_the_first)
    assert seen == [tuple(vq.decoder.last_layer.shape)] * 2
    assert reduced["adv_weight"].item() == pytest.approx(3 * on["adv_weight"].item(), rel=1e-5)


# the prior's loss -----------------------------------------------------------------------------------------------
def tiny_prior(seed: int = 0, **overrides) -> Prior:
    torch.manual_seed(seed)
    return Prior(dataclasses.replace(PriorConfig.tiny(), **overrides))


def test_straight_through_one_hot_is_the_argmax_forward_and_the_softmax_backward():
    logits = torch.randn(2, 5, 7, requires_grad=True)
    st = straight_through_one_hot(logits)
    assert torch.equal(st, F.one_hot(logits.argmax(-1), 7).float())
    weights = torch.randn(2, 5, 7)
    (g_st,) = torch.autograd.grad((st * weights).sum(), logits)
    (g_soft,) = torch.autograd.grad((logits.softmax(-1) * weights).sum(), logits)
    assert torch.allclose(g_st, g_soft)


def test_the_straight_through_term_decodes_the_argmax_tokens_and_reaches_the_prior(clip):
    torch.manual_seed(0)
    vq = VQGAN(VQGANConfig.tiny()).eval().requires_grad_(False)
    prior = tiny_prior(emb_rec_weight=0.5)
    assert prior.cfg.emb_rec_form == "mse_straight_through"
    x = images(2)
    with torch.no_grad():
        tokens, emb = vq.encode(x)[0], clip.encode_image(x)[1]
    decoded = []

    def encode_image(imgs):
        decoded.append(imgs)
        return clip.encode_image(imgs)

    terms = prior_loss(prior, vq, tokens, emb, prior.cfg, encode_image=encode_image)
    with torch.no_grad():
        argmax_images = vq.decode_indices(prior(tokens, emb).argmax(dim=-1))
        expected = F.mse_loss(F.normalize(clip.encode_image(argmax_images)[1], dim=-1), F.normalize(emb, dim=-1))
    assert torch.equal(decoded[0].detach(), argmax_images)
    assert terms["emb_rec"].item() == pytest.approx(expected.item(), rel=1e-5) and terms["emb_rec"].item() > 0
    assert terms["loss"].item() == pytest.approx(terms["ce"].item() + 0.5 * terms["emb_rec"].item(), rel=1e-6)
    terms["emb_rec"].backward()
    for name in ("cond.weight", "net.to_logits.weight"):
        grad = dict(prior.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert all(p.grad is None for p in (*vq.parameters(), *clip.parameters()))


def test_with_weight_0_the_embedding_term_is_not_computed():
    prior, vq = tiny_prior(), VQGAN(VQGANConfig.tiny())
    assert prior.cfg.emb_rec_weight == 0

    def encode_image(imgs):
        raise AssertionError("decoded and encoded although the term weighs 0")

    terms = prior_loss(prior, vq, torch.randint(0, 64, (2, 64)), torch.randn(2, 64), prior.cfg, encode_image)
    assert terms["emb_rec"].item() == 0 and torch.equal(terms["loss"], terms["ce"])


# sampling -------------------------------------------------------------------------------------------------------
def test_top_k_1_takes_the_argmax_of_the_teacher_forced_logits_at_any_noise():
    prior = tiny_prior().eval()
    vq = VQGAN(VQGANConfig.tiny()).eval()
    emb = torch.randn(3, 64)
    sampler = TokenSampler(prior, vq, SamplingConfig(top_k=1, top_p=None))
    out = sampler(torch.randn(3, 64), emb)
    tokens = prior.sample(emb, top_k=1, uniforms=torch.rand(3, 64))
    with torch.no_grad():
        assert torch.equal(tokens, prior(tokens, emb).argmax(dim=-1))  # every step the argmax given the steps before
        assert torch.equal(out, vq.decode_indices(tokens))


def test_top_p_never_draws_outside_the_nucleus():
    weights = torch.tensor([1 / (i + 1) ** 1.2 for i in range(64)], dtype=torch.float64)
    order = [(37 * i) % 64 for i in range(64)]  # the most likely tokens scattered over the vocabulary
    logits = torch.empty(64).index_put_((torch.tensor(order),), weights.log().float())
    probs = sorted(((p, t) for t, p in enumerate(logits.double().softmax(0).tolist())), reverse=True)
    mass, nucleus = 0.0, set()
    for p, token in probs:  # the smallest most-likely set whose mass reaches 0.95
        nucleus.add(token)
        before, mass = mass, mass + p
        if mass >= 0.95:
            break
    assert len(nucleus) == 44 and before < 0.9495 and mass > 0.9505  # no rounding at the edge decides the test
    n = 20_000
    grid = torch.cat([torch.tensor([0.0, 1.0]), (torch.arange(n) + 0.5) / n])
    by_uniform = draw(logits.expand(len(grid), -1), top_k=500, top_p=0.95, uniforms=grid).flatten().tolist()
    by_generator = [t for seed in range(20) for t in draw(logits.expand(n // 20, -1), top_k=500, top_p=0.95,
                                                          generator=torch.Generator().manual_seed(seed))[:, 0].tolist()]
    assert set(by_uniform) == nucleus and set(by_generator) == nucleus  # never outside, and all of it drawn
    unfiltered = draw(logits.expand(n // 20, -1), generator=torch.Generator().manual_seed(0)).flatten().tolist()
    assert set(unfiltered) - nucleus  # the tail does get drawn without top_p


def test_reranking_keeps_the_candidate_closest_to_the_condition_in_clip(clip):
    torch.manual_seed(0)
    model = ClipGen(ClipGenConfig.tiny(), clip=clip).eval()
    candidates = images(6, 5)
    cond = torch.randn(6, 64)
    with torch.no_grad():
        for row, target in ((3, 4), (4, 0), (5, 2)):  # conditions that are (3x) one candidate's own embedding
            cond[row] = 3 * model.image_condition(candidates[row, target:target + 1])[0]
        chosen = rerank(candidates, cond, model.image_condition)
        expected = []
        for row in range(6):
            sims = [F.cosine_similarity(model.image_condition(candidates[row, c:c + 1]), cond[row:row + 1]).item()
                    for c in range(5)]
            expected.append(max(range(5), key=sims.__getitem__))
    assert chosen.tolist() == expected and expected[3:] == [4, 0, 2]


def test_the_sampler_returns_the_reranked_draw_of_each_noise_row(clip):
    torch.manual_seed(0)
    cfg = ClipGenConfig.tiny()
    cfg.sampling.candidates = 3
    model = ClipGen(cfg, clip=clip).eval()
    assert model.noise_dim == 3 * 64
    noise, cond = torch.randn(2, 3 * 64), torch.randn(2, 64)
    with torch.no_grad():
        out = model.generator(noise, cond)
        single = TokenSampler(model.prior, model.vqgan, dataclasses.replace(cfg.sampling, candidates=1))
        for row in range(2):
            drawn = torch.cat([single(noise[row:row + 1, c * 64:(c + 1) * 64], cond[row:row + 1]) for c in range(3)])
            sims = F.cosine_similarity(model.image_condition(drawn.clamp(-1, 1)), cond[row:row + 1])
            assert torch.allclose(out[row], drawn[sims.argmax()], atol=1e-5)
        assert torch.allclose(model.generator(noise[1:], cond[1:])[0], out[1], atol=1e-5)  # its own row only
        best = model.generate(cond, top_k=10, candidates=3, generator=torch.Generator().manual_seed(0))
    assert best.shape == (2, 3, 32, 32) and best.abs().max() <= 1
    with pytest.raises(ValueError, match="candidates"):
        _ = ClipGen(cfg).generator  # no CLIP to rerank with
    with pytest.raises(ValueError, match="noise"):
        model.generator(torch.randn(2, 64), cond)


# configs --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("section, name, value", [
    ("vqgan", "attn_resolutions", (12,)), ("vqgan", "dropout", 1.0), ("vqgan", "downsample_padding", "same"),
    ("vqgan", "codebook", "kmeans"), ("vqgan", "commitment_weight", -1.0), ("vqgan", "codebook_weight", -0.2),
    ("prior", "emb_rec_form", "cos"), ("prior", "emb_rec_weight", -1.0), ("sampling", "candidates", 0)])
def test_new_settings_are_validated(section, name, value):
    cfg = ClipGenConfig.tiny()
    setattr(getattr(cfg, section), name, value)
    with pytest.raises(ValueError, match=name):
        cfg.validate()


def test_an_earlier_checkpoints_config_rebuilds_the_earlier_model():
    stored = dataclasses.asdict(ClipGenConfig.tiny())
    for section, names in EARLIER_DEFAULTS.items():
        for name in names:
            del stored[section][name]
    stored["vqgan"]["commitment_weight"] = 0.25  # the earlier default, as such a checkpoint stores it
    stored["sampling"].update(top_k=None, top_p=None)
    cfg = config_of({"system": "clipgen", "model_config": stored})
    v = cfg.vqgan
    assert (v.attn_resolutions, v.quant_convs, v.downsample_padding, v.dropout, v.codebook) == \
        ((), False, "symmetric", 0.0, "ema")
    assert (cfg.prior.emb_rec_form, cfg.sampling.candidates) == ("cos_relaxed", 1)
    assert (v.commitment_weight, cfg.sampling.top_k, cfg.sampling.top_p) == (0.25, None, None)  # stored values kept
    vq = VQGAN(v)
    assert isinstance(vq.quantizer, VectorQuantize) and attention_sizes(vq) == {"encoder": [8], "decoder": [8]}
    # the earlier tiny VQGAN (models/clipgen/vqgan.py before the HF alignment): its state has these entries
    assert (len(vq.state_dict()), count(vq)) == (144, 257_235)
    current = dataclasses.asdict(ClipGenConfig.tiny())
    assert config_of({"system": "clipgen", "model_config": current}) == ClipGenConfig.tiny()


def test_params_prints_clipgen_beside_hfs_counts(capsys):
    from galip_bench.cli import main
    assert main(["params", "--system", "clipgen"]) == 0
    rows = {line[:22].strip(): line[22:].split() for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows["VQGAN incl. codebook"] == ["76,073,859", "76,073,859", "0"]
    assert rows["discriminator"] == ["2,765,633", "2,765,633", "0"]
    assert rows["prior"] == ["336,504,832", "336,669,696", "-164,864"]
    assert main(["params", "--system", "clipgen", "--set", "vqgan.codebook=ema"]) == 0  # a buffer, still counted
    assert "76,073,859       76,073,859" in capsys.readouterr().out
    assert main(["params", "--system", "clipgen", "--set", "vqgan.codebook=foo"]) == 2
    assert "codebook must be one of" in capsys.readouterr().err
