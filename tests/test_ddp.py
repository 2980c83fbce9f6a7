"""DDP over 2 CPU processes (gloo): all-reduced gradients equal one process's on the same samples for the
per-sample loss terms, and a 2-process run trains, checkpoints and resumes."""
import os
import socket

import torch
import torch.multiprocessing as mp
from helpers import tiny_galip

from galip_bench.grids.grid import load_grid
from galip_bench.runs.rundir import RunDir, read_jsonl
from galip_bench.train import distributed
from galip_bench.train.loop import train_run
from models.losses import hinge, ma_gp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_env(rank, world_size, port):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def per_sample_d_loss(galip, real, fake, sent):
    """The D terms that are per-sample: real hinge, fake hinge and MA-GP (the mismatched pairing is per rank)."""
    real_in = galip.d_input(real)[0].detach().requires_grad_()
    fake_in = galip.d_input(fake)[0].detach()
    sent = sent.detach().requires_grad_()
    pred_real = galip.netC(galip.netD(real_in), sent)
    pred_fake = galip.netC(galip.netD(fake_in), sent)
    return hinge(pred_real, True) + hinge(pred_fake, False) / 2 + ma_gp(pred_real, real_in, sent)


def batch(n=4):
    gen = torch.Generator().manual_seed(7)
    return (torch.rand(n, 3, 32, 32, generator=gen) * 2 - 1, torch.rand(n, 3, 32, 32, generator=gen) * 2 - 1,
            torch.randn(n, 64, generator=gen))


def grads_worker(rank, world_size, port, out_path):
    set_env(rank, world_size, port)
    torch.set_num_threads(1)
    distributed.init(torch.device("cpu"))
    galip = tiny_galip(seed=3)
    real, fake, sent = (t.chunk(world_size)[rank] for t in batch())
    per_sample_d_loss(galip, real, fake, sent).backward()
    params = list(galip.netD.parameters()) + list(galip.netC.parameters())
    distributed.sync_grads(params)
    if rank == 0:
        torch.save([p.grad.clone() if p.grad is not None else None for p in params], out_path)
    distributed.shutdown()


def test_all_reduced_gradients_equal_single_process(tmp_path):
    out = tmp_path / "grads.pt"
    mp.spawn(grads_worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    galip = tiny_galip(seed=3)
    per_sample_d_loss(galip, *batch()).backward()
    single = [p.grad for p in list(galip.netD.parameters()) + list(galip.netC.parameters())]
    reduced = torch.load(out)
    compared = 0
    for a, b in zip(single, reduced):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
            compared += 1
    assert compared > 10


GRID = "name: ddp\nprofile: smoke\neval: {protocols: []}\n"
SMALL = ["train.steps=6", "train.batch_size=4", "train.ckpt_every=2", "train.log_every=1", "train.sample_every=0",
         "train.eval_every=0", "data.num_train=32", "data.num_test=8"]


def train_worker(rank, world_size, port, grid_path, run_path, stop_at):
    set_env(rank, world_size, port)
    torch.set_num_threads(1)
    run = load_grid(grid_path, overrides=SMALL).runs[0]
    train_run(run.config, RunDir(run_path), progress=False, stop_at=stop_at)
    distributed.shutdown()


def test_two_process_run_trains_checkpoints_and_resumes(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(GRID)
    run_path = tmp_path / "run"
    mp.spawn(train_worker, args=(2, free_port(), str(grid), str(run_path), 3), nprocs=2, join=True)
    run_dir = RunDir(run_path)
    assert run_dir.checkpoints()[-1].name == "step_00000002.pt"
    mp.spawn(train_worker, args=(2, free_port(), str(grid), str(run_path), None), nprocs=2, join=True)
    assert run_dir.status()["state"] == "finished" and run_dir.status()["world_size"] == 2
    assert [r["step"] for r in read_jsonl(run_dir.train_log)] == [1, 2, 3, 4, 5, 6]
