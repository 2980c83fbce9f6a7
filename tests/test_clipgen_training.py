"""CLIP-GEN training (galip_bench.train.clipgen) on the smoke profile of ablations/clip_gen.yaml: stage 1 (VQGAN) and
stage 2 (prior, from stage 1's last checkpoint) train, resume exactly after a kill, and the prior's checkpoint loads
and evaluates as a text-to-image model."""
import copy
import math
import random
import shutil
import signal
from pathlib import Path

import pytest
import torch

from galip_bench.checkpoints import load_model, read_checkpoint
from galip_bench.checkpoints.clip import build_clip
from galip_bench.cli import main
from galip_bench.config.schema import EvalConfig, PathsConfig, SiteConfig
from galip_bench.errors import UserError
from galip_bench.evaluation.driver import Evaluator
from galip_bench.evaluation.evaluate import evaluate_checkpoint
from galip_bench.grids.grid import load_grid
from galip_bench.runs.rundir import RunDir, read_jsonl
from galip_bench.train import clipgen
from galip_bench.train.loop import train_run
from models.clipgen import ClipGen

GRID = Path(__file__).resolve().parent.parent / "ablations" / "clip_gen.yaml"
STEPS, CKPT_EVERY = 6, 2
SMALL = [f"train.steps={STEPS}", "train.batch_size=4", f"train.ckpt_every={CKPT_EVERY}", "train.log_every=1",
         "train.sample_every=6", "train.eval_every=0", "data.num_train=32", "data.num_test=16", "data.num_workers=0",
         "eval.protocols=[fid,is,clip_score]", "eval.num_samples=72", "eval.bootstrap=0"]
LOSSES = {"clip_gen_vqgan": ("g_loss", "rec", "commit", "g_adv", "d_loss", "d_real", "d_fake", "codes_used"),
          "clip_gen": ("loss", "ce", "emb_rec")}


@pytest.fixture(scope="module")
def runs():
    grid = load_grid(GRID, profile="smoke", overrides=SMALL)
    return {r.name: r for r in grid.runs}


def run_dir(root, run) -> RunDir:
    return RunDir(root / run.run_id)  # as the launcher lays them out: the prior finds stage 1 beside it


def losses_by_step(rd: RunDir, name: str) -> dict:
    return {r["step"]: tuple(r[k] for k in LOSSES[name]) for r in read_jsonl(rd.train_log)}


def final_nets(rd: RunDir) -> dict:
    return read_checkpoint(rd.checkpoints()[-1])[1]["nets"]


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def evaluator(cfg, tmp_path):
    site = SiteConfig(paths=PathsConfig(cache=str(tmp_path / "cache"), weights=str(tmp_path / "weights")))
    return Evaluator(cfg.eval, cfg.eval.data or cfg.data, site, "cpu", progress=False)


def kill_and_resume(cfg, rd: RunDir, name: str) -> int:
    """Killed at a random step after the first checkpoint, then resumed; read by a loader worker, so that only the
    per-step reseeding, not the data reading in this process, can make the resumed draws replay."""
    cfg = copy.deepcopy(cfg)
    cfg.data.num_workers = 1
    kill_at = random.Random().randint(CKPT_EVERY + 1, STEPS - 1)
    out = train_run(cfg, rd, progress=False, stop_at=kill_at)
    assert out["interrupted"] and rd.status()["state"] == "running"
    assert rd.checkpoints()[-1].name == f"step_{kill_at // CKPT_EVERY * CKPT_EVERY:08d}.pt"
    assert sorted(losses_by_step(rd, name)) == list(range(1, kill_at + 1))
    assert train_run(cfg, rd, progress=False) == {"step": STEPS, "interrupted": False}
    return kill_at


@pytest.fixture(scope="module")
def trained(runs, tmp_path_factory):
    """Stage 1, then stage 2 evaluated at its end, trained straight through in one grid folder."""
    root = tmp_path_factory.mktemp("runs")
    vq, prior = runs["clip_gen_vqgan"], runs["clip_gen"]
    done = {"step": STEPS, "interrupted": False}
    assert train_run(vq.config, run_dir(root, vq), progress=False) == done
    assert train_run(prior.config, run_dir(root, prior), progress=False,
                     make_evaluator=lambda device: evaluator(prior.config, root)) == done
    return root


def test_stage_one_trains_every_step_and_resumes_a_kill_with_identical_losses(runs, trained, tmp_path):
    vq = runs["clip_gen_vqgan"]
    straight = run_dir(trained, vq)
    reference = losses_by_step(straight, vq.name)
    assert sorted(reference) == list(range(1, STEPS + 1))
    assert all(math.isfinite(v) for values in reference.values() for v in values)
    assert straight.status()["state"] == "finished" and straight.status()["stage"] == "vqgan"
    assert [p.name for p in straight.checkpoints()] == ["step_00000004.pt", "step_00000006.pt"]  # keep_ckpts=2
    ckpt = read_checkpoint(straight.checkpoints()[-1])[1]
    assert (ckpt["system"], ckpt["stage"], ckpt["step"], sorted(ckpt["nets"])) == ("clipgen", "vqgan", 6,
                                                                                   ["disc", "vqgan"])
    assert (straight.samples_dir / "step_00000006.png").exists()
    assert read_jsonl(straight.metrics) == []  # stage 1 has no text-to-image model to evaluate

    resumed = run_dir(tmp_path, vq)
    kill_at = kill_and_resume(vq.config, resumed, vq.name)
    assert losses_by_step(resumed, vq.name) == reference, f"killed at {kill_at}: the resume must replay the losses"
    assert resumed.status()["state"] == "finished"
    assert same_state(final_nets(resumed)["vqgan"], final_nets(straight)["vqgan"])  # EMA codebook included


def test_sigterm_stops_stage_one_after_a_checkpoint_and_the_resume_replays_it(runs, trained, tmp_path, monkeypatch):
    vq = runs["clip_gen_vqgan"]
    real_step = clipgen._one_step

    def signalled(cfg, run, step, batch):
        if step == 2:  # during the third step: the loop stops after it, with a checkpoint
            signal.raise_signal(signal.SIGTERM)
        return real_step(cfg, run, step, batch)
    monkeypatch.setattr(clipgen, "_one_step", signalled)
    rd = run_dir(tmp_path, vq)
    assert train_run(vq.config, rd, progress=False)["step"] == 3
    assert rd.status()["state"] == "failed" and "SIGTERM at step 3; resumable" in rd.status()["error"]
    assert rd.checkpoints()[-1].name == "step_00000003.pt"
    monkeypatch.setattr(clipgen, "_one_step", real_step)
    train_run(vq.config, rd, progress=False)
    assert rd.status()["state"] == "finished"
    assert losses_by_step(rd, vq.name) == losses_by_step(run_dir(trained, vq), vq.name)


def test_prior_refuses_to_start_before_its_vqgan_run_has_finished(runs, tmp_path):
    vq, prior = runs["clip_gen_vqgan"], runs["clip_gen"]
    assert prior.config.after == vq.run_id
    with pytest.raises(UserError, match=f"VQGAN run {vq.run_id} .*run the grid's vqgan variant first"):
        train_run(prior.config, run_dir(tmp_path, prior), progress=False)
    train_run(vq.config, run_dir(tmp_path, vq), progress=False, stop_at=3)  # killed: still "running"
    with pytest.raises(UserError, match=f"VQGAN run {vq.run_id} .*not finished"):
        train_run(prior.config, run_dir(tmp_path, prior), progress=False)
    assert not run_dir(tmp_path, prior).checkpoints()


def test_prior_trains_from_stage_one_with_the_vqgan_frozen_and_resumes_identically(runs, trained, tmp_path):
    vq, prior = runs["clip_gen_vqgan"], runs["clip_gen"]
    stage_one, straight = run_dir(trained, vq), run_dir(trained, prior)
    status = straight.status()
    assert status["state"] == "finished" and status["stage"] == "prior"
    assert status["started_from"] == {"run": vq.run_id, "checkpoint": "step_00000006.pt", "step": 6}
    one, two = final_nets(stage_one), final_nets(straight)
    assert same_state(two["vqgan"], one["vqgan"]) and sorted(two) == ["prior", "vqgan"]  # frozen, codebook too
    first = read_checkpoint(straight.checkpoints()[0])[1]["nets"]["prior"]  # step 4 (keep_ckpts=2)
    changed = [k for k in first if not torch.equal(first[k], two["prior"][k])]
    assert len(changed) > len(first) // 2, "stage 2 trains the prior"
    reference = losses_by_step(straight, prior.name)
    assert sorted(reference) == list(range(1, STEPS + 1))
    assert (straight.samples_dir / "step_00000006.png").exists()
    assert len((straight.samples_dir / "step_00000006.txt").read_text().splitlines()) == 8  # smoke: 8 captions

    shutil.copytree(stage_one.path, tmp_path / vq.run_id)
    resumed = run_dir(tmp_path, prior)
    kill_at = kill_and_resume(prior.config, resumed, prior.name)
    assert losses_by_step(resumed, prior.name) == reference, f"killed at {kill_at}: the resume must replay the losses"
    assert same_state(final_nets(resumed)["prior"], two["prior"])
    assert resumed.status()["started_from"] == status["started_from"]  # kept through the resume


def test_the_prior_checkpoint_evaluates_as_it_did_in_training_and_deterministically(runs, trained, tmp_path):
    prior = runs["clip_gen"]
    cfg = prior.config
    loaded = load_model(run_dir(trained, prior).checkpoints()[-1])
    assert isinstance(loaded.galip, ClipGen) and loaded.step == STEPS and not loaded.galip.training
    assert (loaded.system, loaded.img_size) == ("clipgen", 32)
    trained_clip = build_clip(cfg.model.clip, seed=cfg.train.seed + cfg.seed)  # the random tiny CLIP of training
    assert same_state(loaded.galip.clip.state_dict(), trained_clip.state_dict())

    evaluate = evaluator(cfg, tmp_path)
    first = {r["metric"]: r["value"] for r in evaluate(loaded.galip, loaded.step)}
    assert set(first) == {"fid", "is", "is_std", "clip_score"} and all(math.isfinite(v) for v in first.values())
    assert first == {r["metric"]: r["value"] for r in evaluate(loaded.galip, loaded.step)}  # the eval seed fixes it
    during = {r["metric"]: r["value"] for r in read_jsonl(run_dir(trained, prior).metrics)}
    assert all(r["step"] == STEPS for r in read_jsonl(run_dir(trained, prior).metrics))
    assert during == first, "the final evaluation in training used the same weights, CLIP and noise"


def test_stage_one_checkpoints_are_refused_by_load_eval_and_convert(runs, trained, tmp_path, capsys):
    ckpt = run_dir(trained, runs["clip_gen_vqgan"]).checkpoints()[-1]
    why = "stage-1 \\(vqgan\\) checkpoint: it has no text-to-image model"
    with pytest.raises(UserError, match=why):
        load_model(ckpt)
    site = SiteConfig(paths=PathsConfig(cache=str(tmp_path / "cache")))
    with pytest.raises(UserError, match=why):
        evaluate_checkpoint(ckpt, None, EvalConfig(protocols=["speed"]), site, device="cpu")
    prior_ckpt = run_dir(trained, runs["clip_gen"]).checkpoints()[-1]
    assert main(["convert", str(prior_ckpt), str(tmp_path / "out.pth"), "--to-official"]) == 2
    assert "is a CLIP-GEN checkpoint: convert handles GALIP checkpoints only" in capsys.readouterr().err


def test_stage_one_adds_lpips_from_the_vgg16_file_in_the_weights_folder(runs, tmp_path, monkeypatch):
    import torchvision
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no VGG16 from this machine's caches
    cfg = copy.deepcopy(runs["clip_gen_vqgan"].config)
    cfg.clipgen.perceptual, cfg.train.steps = "lpips", 2
    weights = tmp_path / "weights"
    with pytest.raises(UserError, match="missing weight file vgg16-397923af.pth"):
        train_run(cfg, RunDir(tmp_path / "missing"), progress=False, weights_dir=weights)
    weights.mkdir()
    torch.manual_seed(0)
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])  # vgg16().features
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, weights / "vgg16-397923af.pth")
    rd = RunDir(tmp_path / "lpips")
    train_run(cfg, rd, progress=False, weights_dir=weights)
    records = read_jsonl(rd.train_log)
    assert [r["step"] for r in records] == [1, 2]
    for r in records:  # perceptual_weight 1: the G loss is rec + perceptual + commit + weighted adversarial term
        assert r["perceptual"] > 0
        assert r["g_loss"] == pytest.approx(r["rec"] + r["perceptual"] + r["commit"] + r["adv_weight"] * r["g_adv"],
                                            rel=1e-5)


def test_clip_gen_runs_refuse_several_processes(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="CLIP-GEN runs train on one process for now"):
        train_run(runs["clip_gen_vqgan"].config, run_dir(tmp_path, runs["clip_gen_vqgan"]), progress=False)
