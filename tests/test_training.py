"""Training runs: exact resume after a kill, the debug executor path end to end, and idempotent `run`."""
import random

from galip_bench.cli import main
from galip_bench.grids.grid import load_grid
from galip_bench.runs.rundir import RunDir, read_jsonl
from galip_bench.train.loop import train_run

GRID = "name: t\nprofile: smoke\nvariants: [{name: full}]\neval: {protocols: []}\n"
# the smoke profile overrides a grid's base; command-line overrides come last
SMALL = ["train.steps=12", "train.batch_size=4", "train.ckpt_every=3", "train.log_every=1", "train.sample_every=6",
         "train.eval_every=0", "data.num_train=48", "data.num_test=16"]


def smoke_run(tmp_path, text=GRID):
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return load_grid(path, overrides=SMALL).runs[0]


def losses_by_step(run_dir):
    return {r["step"]: (r["errD"], r["errG"]) for r in read_jsonl(run_dir.train_log)}


def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path):
    run = smoke_run(tmp_path)
    straight = RunDir(tmp_path / "straight")
    train_run(run.config, straight, progress=False)
    reference = losses_by_step(straight)
    assert sorted(reference) == list(range(1, 13))

    kill_at = random.Random().randint(4, 11)  # anywhere after the first checkpoint
    resumed = RunDir(tmp_path / "resumed")
    out = train_run(run.config, resumed, progress=False, stop_at=kill_at)
    assert out["interrupted"] and resumed.status()["state"] == "running"
    last_ckpt = (kill_at // 3) * 3
    assert resumed.checkpoints()[-1].name == f"step_{last_ckpt:08d}.pt"
    train_run(run.config, resumed, progress=False)
    after = losses_by_step(resumed)
    assert sorted(after) == list(range(1, 13)), "no duplicated or missing log records"
    assert after == reference, f"killed at {kill_at}: the resumed run must replay identical losses"
    assert resumed.status()["state"] == "finished"
    assert len(resumed.checkpoints()) == run.config.train.keep_ckpts


def test_debug_executor_runs_a_grid_and_a_second_run_skips_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    grid = tmp_path / "g.yaml"
    grid.write_text(GRID.replace("eval: {protocols: []}", "eval: {protocols: [clip_score_galip, fid_galip, speed]}"))
    cli = ["run", str(grid), "--executor", "debug"] + [a for o in SMALL + ["eval.num_samples=72", "eval.batch_size=24"]
                                                        for a in ("--set", o)]
    assert main(cli) == 0
    runs = list((tmp_path / "runs" / "t").glob("*/status.json"))
    assert len(runs) == 1
    run_dir = RunDir(runs[0].parent)
    assert run_dir.status()["state"] == "finished"
    records = read_jsonl(run_dir.metrics)
    assert {r["protocol"] for r in records} == {"clip_score_galip", "fid_galip", "speed"}
    quality = [r for r in records if r["protocol"] != "speed"]
    assert all(r["step"] == 12 and r["settings"]["num_samples"] == 72 for r in quality)
    speed = {r["metric"]: r["value"] for r in records if r["protocol"] == "speed"}  # timed once, at the end
    assert speed["latency_ms"] > 0 and speed["throughput_img_s"] > 0 and speed["params_netG_trainable"] > 0
    assert (run_dir.samples_dir / "step_00000012.png").exists()
    capsys.readouterr()
    assert main(cli) == 0
    assert "skipped 1 finished run" in capsys.readouterr().out
    assert main(["status", str(grid)]) == 0
    assert "finished" in capsys.readouterr().out


def test_local_executor_is_not_cut_after_submitit_default_two_minutes(tmp_path):
    from galip_bench.config.schema import SiteConfig
    from galip_bench.grids.launch import make_executor
    site = SiteConfig(executor="local")
    executor = make_executor(site, tmp_path, {}, 0)
    assert executor.parameters["timeout_min"] == site.local_timeout_min >= 60 * 24


def test_training_length_in_epochs_as_the_official_loader_counts_them(tmp_path):
    """48 images, batch 4, one process: floor(ceil(48 / 1) / 4) = 12 steps per epoch, so 2 epochs are 24 steps."""
    path = tmp_path / "grid.yaml"
    path.write_text(GRID)
    run = load_grid(path, overrides=SMALL + ["train.steps=null", "train.epochs=2", "train.sample_every=0"]).runs[0]
    assert run.config.train.steps is None and run.config.train.epochs == 2
    run_dir = RunDir(tmp_path / "epochs")
    assert train_run(run.config, run_dir, progress=False)["step"] == 24
    assert run_dir.status()["state"] == "finished" and run_dir.status()["steps"] == 24


def test_a_checkpoint_resumes_only_the_layout_that_wrote_it(tmp_path):
    """A folder whose checkpoints were written by another process layout (an 8-task SLURM run of the version
    before processes were recorded, say) is refused with one line, not continued with other data and noise."""
    import pytest
    import torch

    from galip_bench.errors import UserError
    run = smoke_run(tmp_path)
    run_dir = RunDir(tmp_path / "run")
    train_run(run.config, run_dir, progress=False, stop_at=4)
    ckpt_path = run_dir.checkpoints()[-1]
    ckpt = torch.load(ckpt_path, weights_only=False)
    assert (ckpt["extra"]["processes"], ckpt["extra"]["grad_accum"], ckpt["extra"]["global_batch"]) == (1, 1, 4)
    for key in ("processes", "grad_accum", "global_batch"):
        del ckpt["extra"][key]
    torch.save(ckpt, ckpt_path)  # what the previous version wrote: its world size only
    train_run(run.config, run_dir, progress=False, stop_at=5)  # world size 1: the same layout, it resumes
    ckpt["extra"]["world_size"] = 8
    torch.save(ckpt, run_dir.checkpoints()[-1])
    with pytest.raises(UserError, match=r"written by a run of 8 process\(es\) x 1 micro-batch\(es\); this run is 1 x 1"):
        train_run(run.config, run_dir, progress=False)


def test_epochs_count_micro_batches_as_processes(tmp_path):
    """train.epochs with micro-batches: floor(ceil(N / (processes x grad_accum)) / batch) steps per epoch, as the
    official loader of that many processes counts them (20 images, 4 micro-batches of 2: 2 steps, not 10)."""
    run = smoke_run(tmp_path)
    overrides = SMALL + ["train.steps=null", "train.epochs=1", "train.batch_size=2", "train.grad_accum=4",
                         "data.num_train=20", "train.ckpt_every=1", "train.sample_every=0"]
    run = load_grid(tmp_path / "grid.yaml", overrides=overrides).runs[0]
    run_dir = RunDir(tmp_path / "run")
    assert train_run(run.config, run_dir, progress=False)["step"] == 2
    assert run_dir.status()["steps"] == 2 and [r["step"] for r in read_jsonl(run_dir.train_log)] == [1, 2]
