"""Data parallelism over the processes of a node (gloo on CPU, NCCL on GPUs). Gradients are averaged by one
flattened all-reduce per optimiser: the same average DDP computes, and it works with MA-GP's double backward
and with the official D_Blocks' unused conv_s. The mismatched-caption pairing stays per process, as in the
official DDP code (each rank rolls its own batch)."""
import os

import torch
import torch.distributed as dist


def world() -> tuple:
    """(rank, local_rank, world_size) from torchrun / submitit environment variables."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)))


def init(device: torch.device) -> tuple:
    rank, local_rank, size = world()
    if size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, local_rank, size


def sync_grads(params) -> None:
    """Average the gradients of `params` across processes (params without a gradient are skipped; they are
    the same on every rank)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset: offset + g.numel()].view_as(g))
        offset += g.numel()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
