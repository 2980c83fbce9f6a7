"""Data parallelism over the processes of a node (gloo on CPU, NCCL on GPUs). Gradients are averaged by one
flattened all-reduce per optimiser: the same average DDP computes, and it works with MA-GP's double backward
and with the official D_Blocks' unused conv_s. The mismatched-caption pairing stays per process, as in the
official DDP code (each rank rolls its own batch).

The collective helpers below (`rank_size`, `all_reduce`, `broadcast`, `gather_rows`) serve the sharded evaluation
(`evaluation.driver`): they take and return tensors on any device, move them to where the backend needs them (the
current CUDA device for NCCL, the CPU for gloo), and are no-ops with one process."""
import datetime
import os
from typing import Optional

import torch
import torch.distributed as dist


def world() -> tuple:
    """(rank, local_rank, world_size) from torchrun / submitit environment variables."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)))


def init(device: torch.device, timeout: Optional[datetime.timedelta] = None) -> tuple:
    """Join the process group of the processes the environment names (NCCL on GPUs, gloo on the CPU); `timeout`:
    how long a collective may wait (size it to the longest wait, an evaluation: `planning.evaluation_timeout`);
    None keeps torch's default."""
    rank, local_rank, size = world()
    if size > 1 and not dist.is_initialized():
        kwargs = {} if timeout is None else {"timeout": timeout}
        dist.init_process_group("nccl" if torch.device(device).type == "cuda" else "gloo", **kwargs)
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
    global _CONTROL
    if dist.is_initialized():
        dist.destroy_process_group()
    _CONTROL = None


_CONTROL = None  # a gloo group for control flags: reducing one does not make a GPU run's host wait for its device


def any_process(flag: bool) -> bool:
    """Whether `flag` holds on any process; every process calls it at the same point (a step boundary). A stop
    signal reaches the processes of a job one by one: agreeing on it keeps them in step, so none leaves while the
    others wait for it in a collective."""
    if rank_size()[1] == 1:
        return bool(flag)
    global _CONTROL
    if _CONTROL is None:  # created by every process at its first call, as new_group requires
        _CONTROL = dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
    value = torch.tensor([int(bool(flag))])
    dist.all_reduce(value, op=dist.ReduceOp.MAX, group=_CONTROL)
    return bool(value.item())


# ---- collectives of the sharded evaluation (no-ops with one process) -------------------------------------------

def rank_size() -> tuple:
    """(rank, world size) of the initialised process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _comm_device() -> torch.device:
    return (torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl"
            else torch.device("cpu"))


_OPS = {"sum": "SUM", "max": "MAX", "min": "MIN"}


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """The element-wise sum (or max, min) of `tensor` over the processes, a new tensor on `tensor`'s device and
    in its dtype (pass float64 for sums that must not lose precision)."""
    if rank_size()[1] == 1:
        return tensor
    buf = tensor.detach().to(_comm_device(), copy=True).contiguous()
    dist.all_reduce(buf, op=getattr(dist.ReduceOp, _OPS[op]))
    return buf.to(tensor.device)


def broadcast(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Process `src`'s `tensor` on every process (each passes a tensor of the same shape and dtype)."""
    if rank_size()[1] == 1:
        return tensor
    buf = tensor.detach().to(_comm_device(), copy=True).contiguous()
    dist.broadcast(buf, src)
    return buf.to(tensor.device)


def gather_rows(tensor: torch.Tensor, dst: int = 0) -> Optional[torch.Tensor]:
    """The rows ([n_r, D], any n_r including 0, one dtype on every process) of every process concatenated in rank
    order, on process `dst` (None on the others). Rows are padded to the longest share for torch's gather; a
    process with no rows may pass a [0, 0] tensor."""
    rank, size = rank_size()
    if size == 1:
        return tensor
    dev = _comm_device()
    rows = torch.zeros(size, dtype=torch.float64, device=dev)
    rows[rank] = tensor.shape[0]
    rows = all_reduce(rows).long().tolist()
    cols = int(all_reduce(torch.tensor([float(tensor.shape[1]) if tensor.shape[0] else 0.0],
                                       dtype=torch.float64, device=dev), "max").item())
    if max(rows) == 0:  # nothing to gather (every process knows it: no collective is skipped by one alone)
        return tensor.new_zeros(0, cols) if rank == dst else None
    padded = torch.zeros(max(rows), cols, dtype=tensor.dtype, device=dev)
    if tensor.shape[0]:
        padded[: tensor.shape[0]] = tensor.detach().to(dev)
    chunks = [torch.empty_like(padded) for _ in range(size)] if rank == dst else None
    dist.gather(padded, chunks, dst=dst)
    if rank != dst:
        return None
    return torch.cat([chunk[:n] for chunk, n in zip(chunks, rows)]).to(tensor.device)


def mean_over_processes(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of `tensor` over the processes (no gradient flows through it): what CLIP-GEN's VQGAN
    reduces each last-layer gradient of its adaptive weight with, so that every process weighs the global batch's
    gradients, as one process on the whole batch does. `tensor` itself with one process."""
    size = rank_size()[1]
    return tensor if size == 1 else all_reduce(tensor) / size
