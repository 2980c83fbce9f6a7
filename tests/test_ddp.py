"""DDP over 2 CPU processes (gloo): all-reduced gradients equal one process's on the same samples for the
per-sample loss terms, and a 2-process run trains, checkpoints and resumes."""
import os
import shutil

import torch
from helpers import run_processes, tiny_galip

from galip_bench.grids.grid import load_grid
from galip_bench.runs.rundir import RunDir, read_jsonl
from galip_bench import distributed
from galip_bench.train.loop import train_run
from models.losses import hinge, ma_gp


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
    run_processes(grads_worker, str(out))
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


def train_worker(rank, world_size, port, grid_path, run_path, stop_at, forget_optimizers=False):
    set_env(rank, world_size, port)
    torch.set_num_threads(1)
    if forget_optimizers:  # the negative control: a resume that no longer restores the optimisers' state
        torch.optim.Optimizer.load_state_dict = lambda self, state: None
    run = load_grid(grid_path, overrides=SMALL).runs[0]
    train_run(run.config, RunDir(run_path), progress=False, stop_at=stop_at)
    distributed.shutdown()


def _losses(run_path) -> list:
    return [{k: v for k, v in r.items() if k != "time"} for r in read_jsonl(RunDir(run_path).train_log)]


def _state(run_path, step) -> dict:
    """Every float tensor of a checkpoint: the nets' parameters and the optimisers' moments."""
    ckpt = torch.load(RunDir(run_path).checkpoint_path(step), weights_only=False)
    out = {f"nets.{net}.{k}": v for net, sd in ckpt["nets"].items() for k, v in sd.items() if v.is_floating_point()}
    for name, opt in ckpt["optimizers"].items():
        for index, state in opt["state"].items():
            out.update({f"{name}.{index}.{k}": v for k, v in state.items()
                        if torch.is_tensor(v) and v.is_floating_point() and v.dim() > 0})
    return out


def _worst(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_two_process_run_trains_checkpoints_and_resumes(tmp_path):
    """A 2-process run interrupted at step 3 and resumed (from its step-2 checkpoint) equals the same run trained
    without interruption, step by step (every logged loss) and at the end (parameters and optimiser moments).
    Negative control: the same resume with the optimisers' state not restored differs from it."""
    grid = tmp_path / "g.yaml"
    grid.write_text(GRID)
    run_path, forgot = tmp_path / "run", tmp_path / "forgot"
    run_processes(train_worker, str(grid), str(run_path), 3)
    run_dir = RunDir(run_path)
    assert run_dir.checkpoints()[-1].name == "step_00000002.pt"
    shutil.copytree(run_path, forgot)
    run_processes(train_worker, str(grid), str(run_path), None)
    assert run_dir.status()["state"] == "finished" and run_dir.status()["world_size"] == 2
    assert run_dir.status()["resumed_from"] == "step_00000002.pt"
    assert [r["step"] for r in read_jsonl(run_dir.train_log)] == [1, 2, 3, 4, 5, 6]
    straight = tmp_path / "straight"
    run_processes(train_worker, str(grid), str(straight), None)
    assert _losses(run_path) == _losses(straight)  # every loss of every step, bit for bit
    assert _worst(_state(run_path, 6), _state(straight, 6)) == 0.0
    run_processes(train_worker, str(grid), str(forgot), None, True)
    assert RunDir(forgot).status()["state"] == "finished"
    assert _losses(forgot)[:2] == _losses(straight)[:2] and _losses(forgot)[2:] != _losses(straight)[2:]
    assert _worst(_state(forgot, 6), _state(straight, 6)) > 1e-4


def accum_worker(rank, world_size, port, grid_path, run_path, overrides):
    set_env(rank, world_size, port)
    torch.set_num_threads(1)
    run = load_grid(grid_path, overrides=overrides).runs[0]
    train_run(run.config, RunDir(run_path), progress=False)
    distributed.shutdown()


def _nets(run_path, step):
    ckpt = torch.load(RunDir(run_path).checkpoint_path(step), weights_only=False)
    return {f"{net}.{k}": v for net, sd in ckpt["nets"].items() for k, v in sd.items() if v.is_floating_point()}


def test_two_processes_equal_one_process_with_two_micro_batches(tmp_path):
    """The official step of P processes x batch B (gradients all-reduced) is one process's step over P micro-batches
    of B, each playing one process (its data, noise and mismatched-caption roll): the same parameters after each
    step, to float rounding. One process on the whole 2B batch (one roll over 2B) is not that step."""
    grid = tmp_path / "g.yaml"
    grid.write_text(GRID)
    steps = ["train.steps=2", "train.ckpt_every=1", "train.keep_ckpts=0", "train.log_every=1"]
    run_processes(accum_worker, str(grid), str(tmp_path / "ddp"), SMALL + steps)
    for name, extra in (("accum", ["train.grad_accum=2"]), ("whole", ["train.batch_size=8"])):
        run = load_grid(grid, overrides=SMALL + steps + extra).runs[0]
        train_run(run.config, RunDir(tmp_path / name), progress=False)
    assert load_grid(grid, overrides=SMALL + ["train.grad_accum=2"]).runs[0].config.train.global_batch == 8
    for step in (1, 2):
        ddp, accum, whole = (_nets(tmp_path / n, step) for n in ("ddp", "accum", "whole"))
        worst = max((ddp[k] - accum[k]).abs().max().item() for k in ddp)
        print(f"step {step}: 2 processes vs 2 micro-batches, worst parameter difference {worst:.2e}")
        assert worst < 1e-6, (step, worst)
        assert max((ddp[k] - whole[k]).abs().max().item() for k in ddp) > 100 * 1e-6
    # the logged losses are the global batch's (averaged over processes), whatever the layout
    logs = [read_jsonl(RunDir(tmp_path / n).train_log) for n in ("ddp", "accum")]
    assert len(logs[0]) == len(logs[1]) == 2
    for a, b in zip(*logs):
        assert abs(a["errD"] - b["errD"]) < 1e-5 and abs(a["errG"] - b["errG"]) < 1e-5


def test_local_executor_starts_a_multi_process_run(tmp_path, monkeypatch):
    """`run --executor local` with train.processes=2 starts both processes (submitit's tasks_per_node) on this
    machine; they train and evaluate as one run: one record per metric and step, each from both processes."""
    from galip_bench.cli import main
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.yaml").write_text("name: lp\nprofile: smoke\nvariants: [{name: a}]\n"
                                     "eval: {protocols: [fid_galip, clip_score_galip]}\n")
    argv = ["run", "g.yaml", "--executor", "local", "--set", "train.processes=2", "--set", "train.steps=8",
            "--set", "train.eval_every=4", "--set", "train.ckpt_every=4", "--set", "train.log_every=2"]
    assert main(argv) == 0
    (folder,) = (tmp_path / "runs" / "lp").glob("*/config.yaml")
    run_dir = RunDir(folder.parent)
    assert run_dir.status()["state"] == "finished" and run_dir.status()["world_size"] == 2
    assert run_dir.read_config()["train"]["processes"] == 2
    records = read_jsonl(run_dir.metrics)
    assert sorted((r["step"], r["metric"]) for r in records) == [(4, "clip_score_galip"), (4, "fid_galip"),
                                                                 (8, "clip_score_galip"), (8, "fid_galip")]
    assert {r["eval_processes"] for r in records} == {2}
    assert [r["step"] for r in read_jsonl(run_dir.train_log)] == [2, 4, 6, 8]
