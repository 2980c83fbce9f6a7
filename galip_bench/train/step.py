"""One GALIP training step, in the official order (lib/modules.py train()): the D step on real, mismatched and
detached fake inputs with MA-GP, then the G step through the updated D on the non-detached fake CLIP features."""
from typing import Callable, Optional

import torch

from galip_bench.train.amp import AMP, autocast, backward_and_step
from models.losses import d_loss, g_loss


def _chunks(x: torch.Tensor, n: int):
    return x.chunk(n) if n > 1 else (x,)


def train_step(galip, opt_d, opt_g, real_images, tokens, noise, *, sim_w: float = 4.0,
               amp: Optional[AMP] = None, sent: Optional[torch.Tensor] = None, accum: int = 1,
               grad_sync: Optional[Callable] = None) -> dict:
    """opt_d optimises netD+netC, opt_g netG (Adam, betas (0.0, 0.9) in the paper). Returns the loss terms as
    0-d tensors (`float()` them to log), averaged over micro-batches. `sent` may carry the condition instead of `tokens`: cached sentence
    embeddings (the text encoder is frozen) or, language-free, the real images' CLIP image embeddings. `accum` splits the batch into micro-batches whose gradients add up before each update;
    `grad_sync(params)` averages gradients across processes before each update (DDP)."""
    if sent is None:
        with torch.no_grad():
            sent = galip.text_condition(tokens)
    scaler_d = amp.scaler_d if amp is not None else None
    scaler_g = amp.scaler_g if amp is not None else None
    micro, totals = [], {}

    def add(terms):  # tensors: no host-device synchronisation per term
        for k, v in terms.items():
            totals[k] = totals.get(k, 0.0) + v.detach().float() / accum

    def d_backward():
        for real, z, s in zip(_chunks(real_images, accum), _chunks(noise, accum), _chunks(sent, accum)):
            s = s.detach().float().requires_grad_()
            with autocast(amp):
                real_in, _ = galip.d_input(real.detach().requires_grad_())
                fake = galip.netG(z, s)
                fake_in, fake_emb = galip.d_input(fake, with_embedding=True)
                gp_scale = scaler_d.get_scale() if scaler_d is not None else None
                terms = d_loss(galip.netD, galip.netC, real_in, fake_in, s, gp_scale=gp_scale)
            micro.append((fake_in, fake_emb, s))
            add(terms)
            (scaler_d.scale(terms["errD"]) if scaler_d is not None else terms["errD"]).div(accum).backward()

    def g_backward():
        for fake_in, fake_emb, s in micro:
            with autocast(amp):
                terms = g_loss(galip.netD, galip.netC, fake_in, fake_emb, s, sim_w=sim_w)
            add(terms)
            (scaler_g.scale(terms["errG"]) if scaler_g is not None else terms["errG"]).div(accum).backward()

    backward_and_step(d_backward, opt_d, scaler_d, grad_sync)
    backward_and_step(g_backward, opt_g, scaler_g, grad_sync)
    return totals


def make_optimizers(galip, lr_g: float = 1e-4, lr_d: float = 4e-4, betas=(0.0, 0.9), fused: bool = False):
    """The official optimisers: Adam over netG, and Adam over netD followed by netC. `fused` (on GPUs) runs the
    same update as one kernel per parameter group instead of a loop over the parameters."""
    impl = {"fused": True} if fused else {}
    opt_g = torch.optim.Adam([p for p in galip.netG.parameters() if p.requires_grad], lr=lr_g, betas=betas, **impl)
    d_params = list(galip.netD.parameters()) + list(galip.netC.parameters())
    opt_d = torch.optim.Adam([p for p in d_params if p.requires_grad], lr=lr_d, betas=betas, **impl)
    return opt_d, opt_g
