"""CLIP-GEN losses: one VQGAN step (generator and discriminator side) and the prior's loss. Each returns a dict of
0-d tensors; "loss" is the one to back-propagate."""
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from models.clipgen.config import PriorConfig, VQGANConfig


def _zero(like: torch.Tensor) -> torch.Tensor:
    return like.new_zeros(())


def adaptive_weight(rec: torch.Tensor, adv: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
    """||d rec / d last|| / ||d adv / d last||, clamped to [0, 1e4] and detached: balances the two terms' pull on
    the decoder's last layer (VQGAN, Esser et al. 2021, eq. 7)."""
    g_rec = torch.autograd.grad(rec, last_layer, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adv, last_layer, retain_graph=True)[0]
    return (g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(0.0, 1e4).detach()


def vqgan_g_loss(vqgan, disc, images: torch.Tensor, recon: torch.Tensor, commit: torch.Tensor, step: int,
                 cfg: VQGANConfig, perceptual: Optional[Callable] = None) -> dict:
    """Generator side: reconstruction (L1 or L2) + perceptual_weight * perceptual(recon, images) (when given, e.g.
    LPIPS) + commitment + adversarial weight * -mean(disc(recon)) from `adversarial_start` on. recon and commit
    come from vqgan(images)."""
    diff = recon - images
    rec = diff.abs().mean() if cfg.recon_loss == "l1" else diff.pow(2).mean()
    percep = perceptual(recon, images).mean() if perceptual is not None else _zero(rec)
    nll = rec + cfg.perceptual_weight * percep
    adv, weight = _zero(rec), _zero(rec)
    if step >= cfg.adversarial_start and cfg.adversarial_weight > 0:
        adv = -disc(recon).mean()
        weight = rec.new_tensor(cfg.adversarial_weight)
        if cfg.adaptive_weight and torch.is_grad_enabled() and adv.requires_grad:
            weight = weight * adaptive_weight(nll, adv, vqgan.decoder.last_layer)
    return {"loss": nll + commit + weight * adv, "rec": rec, "perceptual": percep, "commit": commit,
            "g_adv": adv, "adv_weight": weight}


def vqgan_d_loss(disc, images: torch.Tensor, recon: torch.Tensor, step: int, cfg: VQGANConfig) -> dict:
    """Hinge loss 0.5 * (mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))), times 0 before `adversarial_start`
    (still a graph, so the caller's step is the same every time). recon is detached here."""
    real, fake = disc(images), disc(recon.detach())
    on = 1.0 if step >= cfg.adversarial_start else 0.0
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


def prior_loss(prior, vqgan, tokens: torch.Tensor, clip_emb: torch.Tensor, cfg: PriorConfig,
               encode_image: Optional[Callable] = None, generator: Optional[torch.Generator] = None) -> dict:
    """Token cross-entropy + emb_rec_weight * mean(1 - cos(encode_image(vqgan.decode_soft(relaxed logits)), clip_emb)).
    tokens [B, L] are the image's VQGAN tokens, clip_emb [B, E] its CLIP image embedding; encode_image maps images
    in [-1,1] to CLIP embeddings (the embedding term is skipped without it or with weight 0). The VQGAN and CLIP
    stay as they are: freeze them so that only the prior learns."""
    logits = prior(tokens, clip_emb)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tokens.reshape(-1))
    emb_rec = _zero(ce)
    if encode_image is not None and cfg.emb_rec_weight > 0:
        probs = relaxed_probs(logits.float(), cfg.relax_temperature, cfg.relaxation, generator)
        rebuilt = embedding(encode_image(vqgan.decode_soft(probs)))
        emb_rec = (1.0 - F.cosine_similarity(rebuilt.float(), clip_emb.float(), dim=-1)).mean()
    return {"loss": ce + cfg.emb_rec_weight * emb_rec, "ce": ce, "emb_rec": emb_rec}
