"""CLIP-GEN over 2 CPU processes (gloo): one step of 2 processes x B images equals one process's step on the 2B
images for each stage (the discriminator's BatchNorm over the global batch and the adaptive weight's reduced
gradients included), and a 2-process run of each stage killed mid-run resumes with the losses of an uninterrupted
one."""
import os
import shutil

import torch
from helpers import run_processes

from galip_bench import distributed
from galip_bench.grids.grid import load_grid
from galip_bench.runs.rundir import RunDir, read_jsonl
from galip_bench.train import clipgen
from galip_bench.train.loop import train_run

GRID = """name: cgddp
profile: smoke
eval: {protocols: []}
variants:
  - {name: vq, overrides: {system: clipgen, clipgen.stage: vqgan}}
  - {name: pr, after: vq, overrides: {system: clipgen, clipgen.stage: prior}}
"""
DATA = ["data.num_train=32", "data.num_test=8", "data.num_workers=0", "train.sample_every=0", "train.eval_every=0"]
# one step at a rate that moves every parameter visibly, the adversarial term and the D update on from step 0
ONE_STEP = DATA + ["clipgen.lr_scaling=fixed", "clipgen.lr_vqgan=1e-3", "clipgen.lr_prior=1e-3",
                   "clipgen.prior_schedule=constant", "clipgen.adversarial_start_epochs=null"]
# 6 steps of 2 x 4 (4 steps an epoch): the discriminator starts at step 4, the prior warms up for 2 steps
RUN = DATA + ["train.steps=6", "train.batch_size=4", "train.ckpt_every=2", "train.log_every=1",
              "clipgen.prior_warmup_epochs=0.5"]
PER_PROCESS = 4


def set_env(rank, world_size, port):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def runs_of(grid_path, overrides) -> dict:
    return {r.name: r for r in load_grid(grid_path, overrides=overrides).runs}


def images(n: int) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(11)) * 2 - 1


def stepped_state(cfg, batch: torch.Tensor) -> dict:
    """{name: (tensor, its gradient or None)} for every floating tensor of the stage's nets (parameters with the
    averaged gradient their update used, and the BatchNorm statistics) after one step on `batch`."""
    run = clipgen._initialize(cfg, None)
    terms = clipgen._one_step(cfg, run, 0, {"image": batch})
    assert float(terms.get("d_loss", 1.0)) > 0  # stage 1: the discriminator was updated
    nets = ("vqgan", "disc") if cfg.clipgen.stage == "vqgan" else ("prior",)
    grads = {f"{net}.{k}": p.grad for net in nets for k, p in getattr(run.model, net).named_parameters()}
    return {f"{net}.{k}": (v.detach().clone(), grads.get(f"{net}.{k}")) for net in nets
            for k, v in getattr(run.model, net).state_dict().items() if v.is_floating_point()}


def differences(one: dict, two: dict) -> tuple:
    """(worst gradient difference relative to its tensor's largest gradient, worst difference of the tensors where
    the gradient is above the rounding level, the fraction of entries left out as at it). Adam's first step moves
    each weight by lr x g / (|g| + eps): where g is rounding noise (a quantity that is zero analytically, such as
    the gradient of attention's key bias) the move is noise of up to lr, whichever process count made it."""
    worst_grad = worst_value = 0.0
    left_out = total = 0
    for name, (value, grad) in one.items():
        other, other_grad = two[name]
        keep = torch.ones_like(value, dtype=torch.bool)
        if grad is not None:
            scale = grad.abs().max().clamp_min(1e-30)
            worst_grad = max(worst_grad, ((grad - other_grad).abs().max() / scale).item())
            keep = (grad.abs() > 1e-4 * scale) | ((grad == 0) & (other_grad == 0))  # unused codes and tokens: 0
        left_out += int((~keep).sum())
        total += keep.numel()
        worst_value = max(worst_value, (value - other)[keep].abs().max().item() if keep.any() else 0.0)
    return worst_grad, worst_value, left_out / total


def one_step_worker(rank, world_size, port, grid_path, out_path):
    set_env(rank, world_size, port)
    torch.set_num_threads(1)
    distributed.init(torch.device("cpu"))
    runs = runs_of(grid_path, ONE_STEP + [f"train.batch_size={PER_PROCESS}"])
    share = images(world_size * PER_PROCESS)[rank * PER_PROCESS:(rank + 1) * PER_PROCESS]
    states = {name: stepped_state(runs[name].config, share) for name in ("vq", "pr")}
    if rank == 0:
        torch.save(states, out_path)
    distributed.shutdown()


def test_one_step_of_two_processes_equals_one_process_on_their_images(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(GRID)
    out = tmp_path / "states.pt"
    run_processes(one_step_worker, str(grid), str(out))
    two = torch.load(out)
    runs = runs_of(grid, ONE_STEP + [f"train.batch_size={2 * PER_PROCESS}"])
    assert runs["vq"].config.train.processes == 1
    ones = {}
    for name in ("vq", "pr"):
        ones[name] = one = stepped_state(runs[name].config, images(2 * PER_PROCESS))
        assert one.keys() == two[name].keys() and len(one) > 20, name
        worst_grad, worst_value, left_out = differences(one, two[name])
        print(f"{name}: 2 processes vs 1 over {len(one)} tensors: gradients {worst_grad:.1e} (relative), values "
              f"{worst_value:.1e}, {100 * left_out:.2f}% of entries at the rounding level")
        assert worst_grad < 1e-4 and worst_value < 1e-6 and left_out < 0.01, name
    # the check has teeth: a step on half the images lands far from it
    half = stepped_state(runs["vq"].config, images(2 * PER_PROCESS)[:PER_PROCESS])
    assert differences(ones["vq"], half)[1] > 1e-4


def run_worker(rank, world_size, port, grid_path, root, phase):
    """phase "first": both stages straight in root/straight, stage 1 killed at step 3 in root/killed, and the
    prior (from the straight stage 1) killed at step 3 in root/killed_prior; "resume": both killed runs resumed."""
    set_env(rank, world_size, port)
    torch.set_num_threads(1)
    runs = runs_of(grid_path, RUN)
    vq, pr = runs["vq"], runs["pr"]

    def train(run, folder, stop_at=None):
        train_run(run.config, RunDir(os.path.join(root, folder, run.run_id)), progress=False, stop_at=stop_at)

    if phase == "first":
        train(vq, "straight")
        train(pr, "straight")
        train(vq, "killed", stop_at=3)
        if rank == 0:
            shutil.copytree(os.path.join(root, "straight", vq.run_id), os.path.join(root, "killed_prior", vq.run_id))
        distributed.barrier()
        train(pr, "killed_prior", stop_at=3)
    else:
        train(vq, "killed")
        train(pr, "killed_prior")
    distributed.shutdown()


def _log(path) -> list:
    return [{k: v for k, v in r.items() if k != "time"} for r in read_jsonl(RunDir(path).train_log)]


def _final(path) -> dict:
    run_dir = RunDir(path)
    return torch.load(run_dir.checkpoints()[-1], weights_only=False)


def test_two_process_runs_of_both_stages_resume_a_kill_with_identical_losses(tmp_path, monkeypatch):
    grid = tmp_path / "g.yaml"
    grid.write_text(GRID)
    with monkeypatch.context() as env:
        env.setenv("WORLD_SIZE", "2")  # the run ids of 2-process runs
        runs = runs_of(grid, RUN)
    vq, pr = runs["vq"].run_id, runs["pr"].run_id
    for phase in ("first", "resume"):
        run_processes(run_worker, str(grid), str(tmp_path), phase)
    for folder, run_id in (("killed", vq), ("killed_prior", pr)):
        straight, resumed = tmp_path / "straight" / run_id, tmp_path / folder / run_id
        status = RunDir(resumed).status()
        assert status["state"] == "finished" and status["world_size"] == 2
        assert status["resumed_from"] == "step_00000002.pt"
        reference = _log(straight)
        assert [r["step"] for r in reference] == [1, 2, 3, 4, 5, 6]
        assert _log(resumed) == reference, f"{folder}: the resume must replay every logged loss"
        a, b = _final(straight), _final(resumed)
        assert a["extra"]["processes"] == 2 and a["extra"]["global_batch"] == 8
        for net in a["nets"]:
            assert all(torch.equal(a["nets"][net][k], b["nets"][net][k]) for k in a["nets"][net]), net
    stage_one = _log(tmp_path / "straight" / vq)
    assert [r["d_loss"] > 0 for r in stage_one] == [False] * 4 + [True] * 2  # the discriminator from epoch 1 on
    prior = _log(tmp_path / "straight" / pr)
    assert prior[0]["lr"] == 0.0 and prior[1]["lr"] > 0  # the warm-up, then the cosine down to 0 at step 6
    assert max(r["lr"] for r in prior) == prior[2]["lr"] > prior[-1]["lr"] > 0
