"""BatchNorm over the global batch of a multi-process run, for CLIP-GEN's PatchGAN discriminator: one process on the
whole batch and N processes on its shares then normalise with the same statistics (DDP alone would normalise each
share by its own)."""
import torch
import torch.distributed as dist
from torch import nn

from galip_bench import distributed


class _SumOverProcesses(torch.autograd.Function):
    """The element-wise sum over the processes, differentiable: the gradient of each process's input is the sum of
    the processes' output gradients (every process's loss depends on every input). The same as
    torch.distributed.nn.functional.all_reduce, which torch 2.14 deprecates."""

    @staticmethod
    def forward(ctx, tensor):
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad):
        return _SumOverProcesses.apply(grad)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d whose training-mode statistics are those of every process's batch together.

    torch.nn.SyncBatchNorm does this on CUDA only (it refuses CPU tensors), so the gloo runs on CPUs use this one: the
    per-channel sums and sample counts, then the squared deviations from the global mean, are summed over the processes
    with a differentiable all-reduce (its backward all-reduces the gradient, as torch.distributed.nn.functional's), so
    each process's gradient holds the other processes' share through the statistics, as SyncBatchNorm's does.
    The running statistics move by `momentum` towards the global batch's mean and unbiased variance, as
    nn.BatchNorm2d's do towards its batch's. The statistics are computed in fp32 (two passes, for accuracy). In eval
    mode, or with one process, it is nn.BatchNorm2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or distributed.rank_size()[1] == 1:
            return super().forward(x)
        dims = (0, 2, 3)
        xf = x.float()
        local = torch.cat([xf.sum(dims), xf.new_tensor([x.numel() // x.shape[1]])])
        summed = _SumOverProcesses.apply(local)
        count = summed[-1]
        mean = summed[:-1] / count
        centred = xf - mean[None, :, None, None]
        var = _SumOverProcesses.apply(centred.pow(2).sum(dims)) / count
        out = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach() * count / (count - 1))
        return out.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), factor)


def _to_global(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, GlobalBatchNorm2d):
        replaced = GlobalBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                                     module.track_running_stats, device=module.running_mean.device,
                                     dtype=module.running_mean.dtype)
        replaced.load_state_dict(module.state_dict())
        replaced.train(module.training)
        return replaced
    for name, child in module.named_children():
        setattr(module, name, _to_global(child))
    return module


def global_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """`module` with its BatchNorm layers normalising over the global batch: torch's SyncBatchNorm on CUDA (NCCL),
    GlobalBatchNorm2d on the CPU (gloo); unchanged with one process. The state_dict keys stay those of
    nn.BatchNorm2d, so checkpoints do not depend on the process count. Convert before building the optimiser."""
    if distributed.rank_size()[1] == 1:
        return module
    if torch.device(device).type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _to_global(module)
