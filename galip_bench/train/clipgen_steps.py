"""One optimiser step of each CLIP-GEN stage on one process's share of the global batch. With several processes
the gradients are averaged before each update (`distributed.sync_grads`), the discriminator's BatchNorm sees the
global batch (`train.global_batchnorm`) and the adaptive weight compares the global batch's last-layer gradients,
so a step of N processes x B images is one process's step on the N x B images, up to float rounding.

`run` is the trainer's namespace: model, opts ({"opt_vqgan", "opt_disc"} or {"opt_prior"}), amp (None for fp32),
perceptual, adversarial_start (steps) and lr_at (step -> learning rate)."""
from typing import Callable, Optional

import torch

from galip_bench import distributed
from galip_bench.train.amp import autocast
from galip_bench.train.clipgen_optim import set_lr
from models.clipgen import prior_loss, vqgan_d_loss, vqgan_g_loss


def _update(opt, loss: torch.Tensor, lr: float) -> None:
    """zero_grad, backward, the cross-process gradient average (a no-op with one process), step at `lr`."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    distributed.sync_grads([p for group in opt.param_groups for p in group["params"]])
    set_lr(opt, lr)
    opt.step()


def _fp32_out(fn: Optional[Callable], amp) -> Optional[Callable]:
    """`fn` run under the run's autocast with its output back in fp32, so that the loss arithmetic on it is fp32."""
    if fn is None or amp is None:
        return fn

    def wrapped(*args):
        with autocast(amp):
            return fn(*args).float()
    return wrapped


def _grad_reduce() -> Optional[Callable]:
    """The adaptive weight's reduction of each last-layer gradient: its mean over the processes (None with one)."""
    return distributed.mean_over_processes if distributed.rank_size()[1] > 1 else None


def _zero_d_terms(like: torch.Tensor) -> dict:
    zero = like.new_zeros(())
    return {"d_loss": zero, "d_real": zero, "d_fake": zero, "logits_real": zero, "logits_fake": zero}


def vqgan_step(cfg, run, step: int, images: torch.Tensor) -> dict:
    """One generator-side update, then one discriminator-side update on the updated generator's reconstruction
    (re-encoded without gradients, as HF's stage 1) from `run.adversarial_start` on (before it the discriminator
    neither runs nor updates: HF's epoch 0); the loss terms and the codes used on this process."""
    vq_cfg, m, amp = cfg.clipgen.model.vqgan, run.model, run.amp
    m.vqgan.train()
    m.disc.train()
    lr = run.lr_at(step)
    with autocast(amp):
        recon, indices, commit = m.vqgan(images)
    recon, commit = recon.float(), commit.float()
    g = vqgan_g_loss(m.vqgan, _fp32_out(m.disc, amp), images, recon, commit, step, vq_cfg,
                     perceptual=_fp32_out(run.perceptual, amp), adversarial_start=run.adversarial_start,
                     grad_reduce=_grad_reduce())
    _update(run.opts["opt_vqgan"], g["loss"], lr)
    if step >= run.adversarial_start:
        m.vqgan.eval()  # an EMA codebook moves once per step, in the generator's pass
        with torch.no_grad(), autocast(amp):  # HF (models/vqgan.py stage 1): D sees the updated generator's output
            updated = m.vqgan(images)[0].float()
        m.vqgan.train()
        d = vqgan_d_loss(_fp32_out(m.disc, amp), images, updated, step, vq_cfg,
                         adversarial_start=run.adversarial_start)
        _update(run.opts["opt_disc"], d["loss"], lr)  # also clears the discriminator gradients of the G side
        d = {"d_loss": d.pop("loss"), **d}
    else:
        d = _zero_d_terms(g["loss"])
    used = torch.zeros(vq_cfg.codebook_size, device=images.device).index_fill_(0, indices.flatten(), 1.0).sum()
    return {"g_loss": g.pop("loss"), **g, **d, "codes_used": used, "lr": torch.tensor(lr, dtype=torch.float64)}


def prior_step(cfg, run, step: int, images: torch.Tensor) -> dict:
    """One prior update on the frozen VQGAN's tokens of `images` and their CLIP image embeddings (both computed in
    fp32: they are the targets and the condition), the prior itself under the run's precision."""
    m = run.model
    m.eval()  # the VQGAN in eval mode: encoding must not move an EMA codebook
    m.prior.train()
    lr = run.lr_at(step)
    with torch.no_grad():
        tokens = m.vqgan.encode(images)[0]
        emb = m.image_condition(images)
    with autocast(run.amp):
        terms = prior_loss(m.prior, m.vqgan, tokens, emb, cfg.clipgen.model.prior, encode_image=m.image_condition)
    terms = {k: v.float() for k, v in terms.items()}
    _update(run.opts["opt_prior"], terms["loss"], lr)
    return {**terms, "lr": torch.tensor(lr, dtype=torch.float64)}
