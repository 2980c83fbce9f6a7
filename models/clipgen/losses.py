"""CLIP-GEN losses, as HFAiLab/clip-gen's (taming-transformers' for the VQGAN's adversarial part): one VQGAN step
(generator and discriminator side) and the prior's loss. Each returns a dict of 0-d tensors; "loss" is the one to
back-propagate."""
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from models.clipgen.config import PriorConfig, VQGANConfig


def _zero(like: torch.Tensor) -> torch.Tensor:
    return like.new_zeros(())


def adaptive_weight(rec: torch.Tensor, adv: torch.Tensor, last_layer: torch.Tensor,
                    grad_reduce: Optional[Callable] = None) -> torch.Tensor:
    """||d rec / d last|| / ||d adv / d last||, clamped to [0, 1e4] and detached: balances the two terms' pull on
    the decoder's last layer (VQGAN, Esser et al. 2021, eq. 7). `grad_reduce`, when given, maps each gradient
    before its norm is taken (e.g. an average over processes, so that the weight is the global batch's)."""
    g_rec = torch.autograd.grad(rec, last_layer, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adv, last_layer, retain_graph=True)[0]
    if grad_reduce is not None:
        g_rec, g_adv = grad_reduce(g_rec), grad_reduce(g_adv)
    return (g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(0.0, 1e4).detach()


def vqgan_g_loss(vqgan, disc, images: torch.Tensor, recon: torch.Tensor, commit: torch.Tensor, step: int,
                 cfg: VQGANConfig, perceptual: Optional[Callable] = None, adversarial_start: Optional[int] = None,
                 grad_reduce: Optional[Callable] = None) -> dict:
    """Generator side: reconstruction (L1 or L2) + perceptual_weight * perceptual(recon, images) (when given, e.g.
    LPIPS) + the quantizer loss (weight 1, as HF) + adversarial weight * -mean(disc(recon)) from the adversarial
    start on (`adversarial_start` steps when given, else cfg.adversarial_start). recon and commit (the quantizer
    loss) come from vqgan(images); `grad_reduce` goes to `adaptive_weight`."""
    start = cfg.adversarial_start if adversarial_start is None else adversarial_start
    diff = recon - images
    rec = diff.abs().mean() if cfg.recon_loss == "l1" else diff.pow(2).mean()
    percep = perceptual(recon, images).mean() if perceptual is not None else _zero(rec)
    nll = rec + cfg.perceptual_weight * percep
    adv, weight = _zero(rec), _zero(rec)
    if step >= start and cfg.adversarial_weight > 0:
        adv = -disc(recon).mean()
        weight = rec.new_tensor(cfg.adversarial_weight)
        if cfg.adaptive_weight and torch.is_grad_enabled() and adv.requires_grad:
            weight = weight * adaptive_weight(nll, adv, vqgan.decoder.last_layer, grad_reduce)
    return {"loss": nll + commit + weight * adv, "rec": rec, "perceptual": percep, "commit": commit,
            "g_adv": adv, "adv_weight": weight}


def vqgan_d_loss(disc, images: torch.Tensor, recon: torch.Tensor, step: int, cfg: VQGANConfig,
                 adversarial_start: Optional[int] = None) -> dict:
    """Hinge loss 0.5 * (mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))), times 0 before the adversarial start
    (`adversarial_start` steps when given, else cfg.adversarial_start; still a graph, so a caller may step the same
    way every time or skip the update). recon is detached here."""
    start = cfg.adversarial_start if adversarial_start is None else adversarial_start
    real, fake = disc(images), disc(recon.detach())
    on = 1.0 if step >= start else 0.0
    d_real, d_fake = F.relu(1.0 - real).mean(), F.relu(1.0 + fake).mean()
    return {"loss": on * 0.5 * (d_real + d_fake), "d_real": d_real, "d_fake": d_fake,
            "logits_real": real.detach().mean(), "logits_fake": fake.detach().mean()}


def relaxed_probs(logits: torch.Tensor, temperature: float, mode: str,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """A differentiable stand-in for the tokens the logits pick: softmax(logits / t), with Gumbel noise for
    "gumbel" (Gumbel-softmax; the noise comes from `generator` when one is given)."""
    if mode == "gumbel":
        u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
        neg_log_u = -torch.log(u.clamp_min(1e-10))
        logits = logits - torch.log(neg_log_u.clamp_min(1e-10))  # + Gumbel(0, 1) noise
    elif mode != "softmax":
        raise ValueError(f"relaxation must be 'gumbel' or 'softmax', got {mode!r}")
    return (logits / temperature).softmax(dim=-1)


def embedding(out):
    """An encode_image result: the embedding itself, or the last entry of a tuple (FrozenCLIP gives (maps, emb))."""
    return out[-1] if isinstance(out, (tuple, list)) else out


def straight_through_one_hot(logits: torch.Tensor) -> torch.Tensor:
    """Forward: exactly the one-hot of argmax(logits); backward: the gradient of softmax(logits) (HF logits_to_z)."""
    probs = logits.softmax(dim=-1)
    hard = F.one_hot(logits.argmax(dim=-1), logits.shape[-1]).to(probs.dtype)
    return hard + (probs - probs.detach())  # not probs + sg(hard - probs): rounding would move the forward off 0/1


def emb_rec_mse_straight_through(logits, vqgan, clip_emb, encode_image, cfg: PriorConfig, generator=None):
    """HF's term: mse(normalise(CLIP(decoded argmax tokens)), normalise(clip_emb)), the gradient reaching the
    logits through `straight_through_one_hot`. HF resizes the decoder's output bilinearly to 224 and feeds CLIP
    without CLIP's mean/std normalisation; here `encode_image` preprocesses it (ClipGen.image_condition: CLIP's
    standard preprocessing, as for the condition itself)."""
    rebuilt = embedding(encode_image(vqgan.decode_soft(straight_through_one_hot(logits))))
    return F.mse_loss(F.normalize(rebuilt.float(), dim=-1), F.normalize(clip_emb.float(), dim=-1))


def emb_rec_cos_relaxed(logits, vqgan, clip_emb, encode_image, cfg: PriorConfig, generator=None):
    """mean(1 - cos(CLIP(decoded relaxed tokens), clip_emb)), relaxed by `relaxed_probs` (our earlier form)."""
    probs = relaxed_probs(logits, cfg.relax_temperature, cfg.relaxation, generator)
    rebuilt = embedding(encode_image(vqgan.decode_soft(probs)))
    return (1.0 - F.cosine_similarity(rebuilt.float(), clip_emb.float(), dim=-1)).mean()


EMB_REC = {"mse_straight_through": emb_rec_mse_straight_through, "cos_relaxed": emb_rec_cos_relaxed}


def prior_loss(prior, vqgan, tokens: torch.Tensor, clip_emb: torch.Tensor, cfg: PriorConfig,
               encode_image: Optional[Callable] = None, generator: Optional[torch.Generator] = None) -> dict:
    """Token cross-entropy + emb_rec_weight * the embedding-reconstruction term of cfg.emb_rec_form (EMB_REC).
    tokens [B, L] are the image's VQGAN tokens, clip_emb [B, E] its CLIP image embedding; encode_image maps images
    in [-1,1] to CLIP embeddings (the embedding term is not computed without it or with weight 0, HF's default).
    The VQGAN and CLIP stay as they are: freeze them so that only the prior learns."""
    logits = prior(tokens, clip_emb)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tokens.reshape(-1))
    emb_rec = _zero(ce)
    if encode_image is not None and cfg.emb_rec_weight > 0:
        emb_rec = EMB_REC[cfg.emb_rec_form](logits.float(), vqgan, clip_emb, encode_image, cfg, generator)
    return {"loss": ce + cfg.emb_rec_weight * emb_rec, "ce": ce, "emb_rec": emb_rec}
