"""GALIP's losses: hinge D loss with mismatched captions and MA-GP, G loss with the CLIP-similarity term.
Term names match the official lib/modules.py train() logs."""
from typing import Optional

import torch
import torch.nn.functional as F


def hinge(logits: torch.Tensor, real: bool) -> torch.Tensor:
    return F.relu(1.0 - logits).mean() if real else F.relu(1.0 + logits).mean()


def mismatched(sent: torch.Tensor) -> torch.Tensor:
    """Sentence embeddings rolled by one (row i gets caption i+1), detached, as the official code pairs them."""
    return torch.roll(sent, shifts=-1, dims=0).detach()


def ma_gp(logits: torch.Tensor, real_in: torch.Tensor, sent: torch.Tensor, scale: Optional[float] = None):
    """Matching-aware gradient penalty: 2 * mean(||(d logits / d real_in, d logits / d sent)||_2 ^ 6).
    With AMP, pass the GradScaler's scale: the gradient is taken of the scaled logits and unscaled by
    1/(scale + 1e-8) (the official MA_GP_MP), so it does not underflow in fp16."""
    out = logits if scale is None else logits * scale
    grads = torch.autograd.grad(out, (real_in, sent), grad_outputs=torch.ones_like(out), create_graph=True)
    if scale is not None:
        grads = [g * (1.0 / (scale + 1e-8)) for g in grads]
    grad = torch.cat([g.reshape(g.shape[0], -1) for g in grads], dim=1)
    return 2.0 * grad.pow(2).sum(dim=1).sqrt().pow(6).mean()


def _grad_leaf(x: torch.Tensor) -> torch.Tensor:
    return x if x.requires_grad else x.detach().requires_grad_()


def d_loss(netD, netC, real_in: torch.Tensor, fake_in: torch.Tensor, sent: torch.Tensor,
           gp_scale: Optional[float] = None) -> dict:
    """errD = errD_real + (errD_fake + errD_mis)/2 + errD_MAGP. real_in/fake_in are D inputs (CLIP maps or
    pixels); fake_in is detached here. Returns the official terms as tensors."""
    real_in, sent = _grad_leaf(real_in), _grad_leaf(sent)
    real_feats = netD(real_in)
    pred_real = netC(real_feats, sent)
    pred_mis = netC(real_feats, mismatched(sent))
    pred_fake = netC(netD(fake_in.detach()), sent)
    terms = {
        "errD_real": hinge(pred_real, real=True),
        "errD_mis": hinge(pred_mis, real=False),
        "errD_fake": hinge(pred_fake, real=False),
        "errD_MAGP": ma_gp(pred_real, real_in, sent, gp_scale),
    }
    terms["errD"] = terms["errD_real"] + (terms["errD_fake"] + terms["errD_mis"]) / 2.0 + terms["errD_MAGP"]
    return terms


def g_loss(netD, netC, fake_in: torch.Tensor, fake_emb: torch.Tensor, sent: torch.Tensor,
           sim_w: float = 4.0) -> dict:
    """errG = -mean(C(D(fake), sent)) - sim_w * mean(cos(CLIP image embedding of fake, sent))."""
    pred = netC(netD(fake_in), sent)
    sim = F.cosine_similarity(fake_emb, sent, dim=-1).mean()
    return {"errG": -pred.mean() - sim_w * sim, "text_img_sim": sim}
