"""One GALIP training step, in the official order (lib/modules.py train()): the D step on real, mismatched and
detached fake inputs with MA-GP, then the G step through the updated D on the non-detached fake CLIP features."""
from typing import Optional

import torch

from galip_bench.train.amp import AMP, autocast, backward_and_step
from models.losses import d_loss, g_loss


def train_step(galip, opt_d, opt_g, real_images, tokens, noise, *, sim_w: float = 4.0,
               amp: Optional[AMP] = None, sent: Optional[torch.Tensor] = None) -> dict:
    """opt_d optimises netD+netC, opt_g netG (Adam, betas (0.0, 0.9) in the paper). Returns the loss terms as
    floats. `sent` may carry cached sentence embeddings for `tokens` (the text encoder is frozen)."""
    if sent is None:
        with torch.no_grad():
            sent = galip.clip.encode_text(tokens)[0]
    sent = sent.detach().float().requires_grad_()
    real = real_images.detach().requires_grad_()
    scaler_d = amp.scaler_d if amp is not None else None
    with autocast(amp):
        real_in, _ = galip.d_input(real)
        fake = galip.netG(noise, sent)
        fake_in, fake_emb = galip.d_input(fake, with_embedding=True)
        gp_scale = scaler_d.get_scale() if scaler_d is not None else None
        d_terms = d_loss(galip.netD, galip.netC, real_in, fake_in, sent, gp_scale=gp_scale)
    backward_and_step(d_terms["errD"], opt_d, scaler_d)
    with autocast(amp):
        g_terms = g_loss(galip.netD, galip.netC, fake_in, fake_emb, sent, sim_w=sim_w)
    backward_and_step(g_terms["errG"], opt_g, amp.scaler_g if amp is not None else None)
    return {k: float(v.detach()) for k, v in {**d_terms, **g_terms}.items()}


def make_optimizers(galip, lr_g: float = 1e-4, lr_d: float = 4e-4, betas=(0.0, 0.9)):
    """The official optimisers: Adam over netG, and Adam over netD followed by netC."""
    opt_g = torch.optim.Adam([p for p in galip.netG.parameters() if p.requires_grad], lr=lr_g, betas=betas)
    d_params = list(galip.netD.parameters()) + list(galip.netC.parameters())
    opt_d = torch.optim.Adam([p for p in d_params if p.requires_grad], lr=lr_d, betas=betas)
    return opt_d, opt_g
