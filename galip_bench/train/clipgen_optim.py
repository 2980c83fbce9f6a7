"""CLIP-GEN's optimisers and schedules, as the HFAiLab reference (train_vqgan.py, train_gpt.py, utils.py) sets them:
rates per image times the global batch, the VQGAN's adversarial start in epochs, the prior's linear warm-up then half
cosine, and its weight decay on the weights of Linear and attention layers only. Every learning rate is a pure
function of the step, so a resumed run continues the schedule exactly."""
import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from galip_bench.errors import UserError

# the attention projection weights of nn.MultiheadAttention (the reference's nn.TransformerEncoderLayer); its
# out_proj is an nn.Linear
_ATTENTION_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


def scaled_rate(rate: float, cg, global_batch: int) -> float:
    """A configured rate as the optimiser takes it: times the global batch under `lr_scaling: per_image`."""
    return rate * global_batch if cg.lr_scaling == "per_image" else rate


def epochs_to_steps(epochs: float, steps_per_epoch: Optional[int], setting: str, instead: str) -> int:
    """`epochs` (fractional) of the run's steps per epoch, rounded up: the first step at or after that point.
    `steps_per_epoch` None (a streamed training split of unknown size) is a UserError naming `instead`."""
    if steps_per_epoch is None:
        raise UserError(f"{setting}={epochs:g} counts epochs of the training split, whose size is unknown (streamed "
                        f"shards): {instead}")
    return math.ceil(round(epochs * steps_per_epoch, 9))


def adversarial_start(cg, steps_per_epoch: Optional[int]) -> int:
    """The step the VQGAN's adversarial term and discriminator updates start at."""
    if cg.adversarial_start_epochs is None:
        return cg.model.vqgan.adversarial_start
    return epochs_to_steps(cg.adversarial_start_epochs, steps_per_epoch, "clipgen.adversarial_start_epochs",
                           "set clipgen.adversarial_start_epochs=null and clipgen.model.vqgan.adversarial_start "
                           "(in steps) instead")


@dataclass(frozen=True)
class PriorSchedule:
    """The prior's learning rate at each step: `peak` x step / warmup_steps during the warm-up, then a half cosine
    from `peak` to `floor` that reaches it at `total_steps` (utils.CosineLRWarmUp in epochs, here in steps:
    epoch = step / steps_per_epoch); `constant`: `peak` throughout."""
    peak: float
    floor: float = 0.0
    warmup_steps: float = 0.0
    total_steps: int = 1
    constant: bool = False

    def __call__(self, step: int) -> float:
        if self.constant:
            return self.peak
        if step < self.warmup_steps:
            return self.peak * step / self.warmup_steps
        progress = (step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1)
        return self.floor + (self.peak - self.floor) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def prior_schedule(cg, global_batch: int, steps_per_epoch: Optional[int], total_steps: int) -> PriorSchedule:
    peak = scaled_rate(cg.lr_prior, cg, global_batch)
    if cg.prior_schedule == "constant":
        return PriorSchedule(peak, constant=True)
    warmup = 0.0
    if cg.prior_warmup_epochs:  # fractional steps, as the reference's fractional epochs
        if steps_per_epoch is None:
            epochs_to_steps(cg.prior_warmup_epochs, None, "clipgen.prior_warmup_epochs",
                            "set clipgen.prior_warmup_epochs=0 (no warm-up) or clipgen.prior_schedule=constant")
        warmup = cg.prior_warmup_epochs * steps_per_epoch
    return PriorSchedule(peak, scaled_rate(cg.prior_min_lr, cg, global_batch), warmup, total_steps)


def decayed_parameters(module: nn.Module, scope: str) -> list:
    """The parameters weight decay applies to: `all`, or `linear_weights`: the weights of nn.Linear layers and the
    projection weights of nn.MultiheadAttention (HF configure_optimizer); biases, norms, embeddings and position
    embeddings are not decayed."""
    if scope == "all":
        return [p for p in module.parameters() if p.requires_grad]
    chosen = []
    for layer in module.modules():
        names = ("weight",) if isinstance(layer, nn.Linear) else \
            _ATTENTION_WEIGHTS if isinstance(layer, nn.MultiheadAttention) else ()
        chosen += [p for name, p in layer.named_parameters(recurse=False) if name in names and p.requires_grad]
    return chosen


def prior_optimizer(prior: nn.Module, cg) -> torch.optim.AdamW:
    """AdamW over the prior in two groups, decayed and not (the rate is set at every step by the schedule)."""
    decayed = {id(p) for p in decayed_parameters(prior, cg.weight_decay_scope)}
    params = [p for p in prior.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) in decayed], "weight_decay": cg.weight_decay_prior},
              {"params": [p for p in params if id(p) not in decayed], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=0.0, betas=tuple(cg.betas_prior))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
