"""Small shared builders for tests: a tiny random-init GALIP that runs in well under a second on a CPU, and
processes for the gloo tests."""
import socket

import torch
import torch.multiprocessing as mp

from models import GALIP, CLIPConfig, GALIPConfig
from models.clip import FrozenCLIP

TINY = dict(cond_dim=64, ngf=8, img_size=32, d_out_ch=32, ndf=8, bridge_ch=16, bridge_mid_ch=8, c_hidden=16)


def tiny_config(preprocess: str = "official", **switches) -> GALIPConfig:
    return GALIPConfig(**TINY, clip=CLIPConfig(model="tiny", preprocess=preprocess), **switches)


def tiny_galip(seed: int = 0, preprocess: str = "official", clip: FrozenCLIP = None, **switches) -> GALIP:
    torch.manual_seed(seed)
    return GALIP(tiny_config(preprocess, **switches), clip=clip)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(worker, *args, nprocs: int = 2) -> None:
    """worker(rank, nprocs, port, *args) in `nprocs` processes, forked rather than spawned: a spawned process spends
    seconds importing torch and galip-bench again (each worker sets one torch thread first)."""
    mp.start_processes(worker, args=(nprocs, free_port(), *args), nprocs=nprocs, join=True, start_method="fork")
