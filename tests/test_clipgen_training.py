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
from galip_bench.config.schema import ClipGenRunConfig, EvalConfig, PathsConfig, SiteConfig
from galip_bench.errors import UserError
from galip_bench.evaluation.driver import Evaluator
from galip_bench.evaluation.evaluate import evaluate_checkpoint
from galip_bench.grids.grid import load_grid
from galip_bench.runs.rundir import RunDir, read_jsonl
from galip_bench.train import clipgen
from galip_bench.train.clipgen_optim import adversarial_start, decayed_parameters, prior_optimizer, prior_schedule
from galip_bench.train.loop import train_run
from models.clipgen import ClipGen, PriorConfig
from models.clipgen.prior import Prior

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
    logs = read_jsonl(straight.train_log)  # the smoke profile's fixed 2.88e-4; 8 steps an epoch: no D update in 6
    assert [r["lr"] for r in logs] == pytest.approx([2.88e-4] * 6) and {r["d_loss"] for r in logs} == {0.0}
    assert ckpt["optimizers"]["opt_disc"]["state"] == {} and ckpt["extra"]["processes"] == 1

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
    # the smoke profile: a fixed 3e-4, warm-up 0.25 epochs of 8 steps = 2 steps, then a half cosine to 0 at step 6
    expected = [3e-4 * s / 2 for s in range(2)] + [3e-4 * 0.5 * (1 + math.cos(math.pi * (s - 2) / 4)) for s in range(2, 6)]
    assert [r["lr"] for r in read_jsonl(straight.train_log)] == pytest.approx(expected)
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


def test_the_sampling_of_a_prior_checkpoint_is_an_evaluation_setting_and_nothing_else_is(runs, trained, tmp_path):
    """`eval --set clipgen.model.sampling.KEY=VALUE` (load_model's overrides) changes how the prior samples, and the
    records say so (reranking with the metric's own CLIP flagged); any other override of a CLIP-GEN checkpoint is
    refused in one line."""
    ckpt = run_dir(trained, runs["clip_gen"]).checkpoints()[-1]
    loaded = load_model(ckpt, overrides=["clipgen.model.sampling.candidates=3", "clipgen.model.sampling.top_k=5"])
    sampling = loaded.galip.cfg.sampling
    assert (sampling.candidates, sampling.top_k, sampling.top_p) == (3, 5, 0.95) and loaded.galip.noise_dim == 3 * 64
    cfg = copy.deepcopy(runs["clip_gen"].config)
    cfg.eval.protocols, cfg.eval.num_samples = ["clip_score"], 16
    record = evaluator(cfg, tmp_path)(loaded.galip, loaded.step)[0]
    assert record["settings"]["sampling"]["candidates"] == 3 and record["settings"]["reranked_by_metric_clip"]
    with pytest.raises(UserError, match="takes only its sampling .*, not model.ngf=3"):
        load_model(ckpt, overrides=["model.ngf=3"])
    with pytest.raises(UserError, match="candidates must be at least 1"):
        load_model(ckpt, overrides=["clipgen.model.sampling.candidates=0"])


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


def test_prior_lr_warms_up_linearly_then_follows_a_half_cosine_to_its_floor():
    cg = ClipGenRunConfig(prior_warmup_epochs=2.5, prior_min_lr=1e-7)
    schedule = prior_schedule(cg, global_batch=64, steps_per_epoch=8, total_steps=100)  # warm-up: 20 steps
    peak, floor = 64 * 5e-4 / 256, 64 * 1e-7  # per image x the global batch
    for step in (0, 7, 19):
        assert schedule(step) == pytest.approx(peak * step / 20)
    for step in (20, 47, 60, 99, 100):
        cosine = 0.5 * (1 + math.cos(math.pi * (step - 20) / 80))
        assert schedule(step) == pytest.approx(floor + (peak - floor) * cosine)
    assert schedule(20) == pytest.approx(peak) and schedule(60) == pytest.approx((peak + floor) / 2)
    assert schedule(100) == pytest.approx(floor)
    fixed = ClipGenRunConfig(lr_scaling="fixed", lr_prior=3e-4, prior_schedule="constant")
    assert {prior_schedule(fixed, 64, 8, 100)(s) for s in (0, 50, 100)} == {3e-4}
    with pytest.raises(UserError, match="clipgen.prior_warmup_epochs=2.5 counts epochs .*streamed shards.*: "
                                        "set clipgen.prior_warmup_epochs=0"):
        prior_schedule(cg, 64, None, 100)
    no_warmup = ClipGenRunConfig(prior_warmup_epochs=0.0)
    assert prior_schedule(no_warmup, 64, None, 100)(0) == pytest.approx(peak)  # no epochs needed


def test_the_adversarial_start_counts_epochs_of_the_run_or_the_model_steps():
    assert adversarial_start(ClipGenRunConfig(), steps_per_epoch=8) == 8  # HF: from epoch 1
    assert adversarial_start(ClipGenRunConfig(adversarial_start_epochs=0.3), 8) == 3  # the first step after 2.4
    in_steps = ClipGenRunConfig(adversarial_start_epochs=None)
    assert adversarial_start(in_steps, None) == in_steps.model.vqgan.adversarial_start
    with pytest.raises(UserError, match="set clipgen.adversarial_start_epochs=null and clipgen.model.vqgan."):
        adversarial_start(ClipGenRunConfig(), None)


def test_prior_weight_decay_reaches_the_weights_of_linear_and_attention_layers_only():
    prior = Prior(PriorConfig.tiny())
    names = {id(p): n for n, p in prior.named_parameters()}
    opt = prior_optimizer(prior, ClipGenRunConfig())
    decayed, kept = ([names[id(p)] for p in group["params"]] for group in opt.param_groups)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    assert sorted(decayed + kept) == sorted(names.values())
    assert all(n.endswith(".weight") for n in decayed)
    assert {"cond.weight", "net.to_logits.weight"} <= set(decayed)
    assert sum(n.rsplit(".", 2)[-2] in ("to_q", "to_k", "to_v", "to_out") for n in decayed) == 8  # 2 layers x 4
    assert {"net.token_emb.emb.weight", "net.pos_emb.emb.weight", "cond.bias"} <= set(kept)
    assert all(n.endswith((".bias", ".gamma", "emb.weight")) for n in kept)  # biases, LayerNorm gains, embeddings
    # the reference's layers (nn.TransformerEncoderLayer): the attention projections and the Linear weights
    layer = torch.nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, norm_first=True)
    chosen = {id(p) for p in decayed_parameters(layer, "linear_weights")}
    assert sorted(n for n, p in layer.named_parameters() if id(p) in chosen) == [
        "linear1.weight", "linear2.weight", "self_attn.in_proj_weight", "self_attn.out_proj.weight"]
    everything = prior_optimizer(prior, ClipGenRunConfig(weight_decay_scope="all")).param_groups
    assert len(everything) == 1 and len(everything[0]["params"]) == len(names)


def test_both_stages_step_in_bf16_on_the_cpu_and_the_discriminator_starts_at_its_epoch(runs, trained, tmp_path):
    cfg = copy.deepcopy(runs["clip_gen_vqgan"].config)
    cfg.train.precision, cfg.train.steps, cfg.train.sample_every = "bf16", 3, 0
    cfg.clipgen.adversarial_start_epochs = 0.25  # 8 steps an epoch: from step 2 (the third)
    rd = RunDir(tmp_path / "vqgan_bf16")
    train_run(cfg, rd, progress=False)
    records = read_jsonl(rd.train_log)
    assert [r["d_loss"] > 0 for r in records] == [False, False, True]
    assert all(math.isfinite(v) for r in records for v in r.values())

    prior = copy.deepcopy(runs["clip_gen"].config)
    prior.train.precision = "bf16"
    run = clipgen._initialize(prior, None)
    assert run.amp.dtype == torch.bfloat16
    before = {k: v.clone() for k, v in run.model.prior.state_dict().items()}
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    terms = clipgen._one_step(prior, run, 1, {"image": images})  # half-way through the smoke profile's warm-up
    assert terms["lr"] == pytest.approx(3e-4 / 2) and math.isfinite(float(terms["ce"]))
    after = run.model.prior.state_dict()
    assert sum(not torch.equal(before[k], after[k]) for k in before) > len(before) // 2


@pytest.mark.parametrize("setting, message", [
    ("train.precision: fp16", "CLIP-GEN runs train in fp32 or bf16, not train.precision=fp16: fp16 needs loss "
                              "scaling, which the CLIP-GEN trainer does not do; use bf16"),
    ("train.grad_accum: 2", "CLIP-GEN runs take no gradient accumulation \\(train.grad_accum=2\\)"),
    ("clipgen.prior_schedule: linear", "clipgen.prior_schedule must be one of cosine, constant"),
])
def test_clip_gen_settings_it_cannot_train_are_refused_in_one_line(tmp_path, setting, message):
    grid = tmp_path / "g.yaml"
    grid.write_text(f"name: x\nvariants: [{{name: a, overrides: {{system: clipgen, {setting}}}}}]\n")
    with pytest.raises(UserError, match=message):
        load_grid(grid)


STAGED = """name: staged
variants:
  - {name: tok, overrides: {system: clipgen, clipgen.stage: vqgan}}
  - {name: gen, after: tok, overrides: {system: clipgen, clipgen.stage: prior}}
"""


def test_schedule_settings_reach_the_run_ids_of_the_stages_that_read_them_and_inert_ones_are_refused(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(STAGED)
    base = {r.name: r.run_id for r in load_grid(grid).runs}
    for override, changed in (("clipgen.prior_warmup_epochs=5", {"gen"}), ("clipgen.weight_decay_scope=all", {"gen"}),
                              ("clipgen.adversarial_start_epochs=2", {"tok", "gen"}),  # gen starts from tok
                              ("clipgen.lr_scaling=fixed", {"tok", "gen"})):
        runs = load_grid(grid, overrides=[override]).runs
        assert {r.name for r in runs if r.run_id != base[r.name]} == changed, override
    for overrides, inert in (
            (["clipgen.model.vqgan.codebook_decay=0.5"], "clipgen.model.vqgan.codebook_decay=0.5 with "
                                                         "clipgen.model.vqgan.codebook=gradient"),
            (["clipgen.model.vqgan.codebook=ema", "clipgen.model.vqgan.codebook_weight=0.5"],
             "clipgen.model.vqgan.codebook_weight=0.5 with clipgen.model.vqgan.codebook=ema"),
            (["clipgen.model.vqgan.adversarial_start=5"],
             "clipgen.model.vqgan.adversarial_start=5 with clipgen.adversarial_start_epochs=1"),
            (["clipgen.prior_schedule=constant", "clipgen.prior_warmup_epochs=5"],
             "clipgen.prior_warmup_epochs=5.0 with clipgen.prior_schedule=constant"),
    ):
        with pytest.raises(UserError, match=inert):
            load_grid(grid, overrides=overrides)
    load_grid(grid, overrides=["clipgen.adversarial_start_epochs=null", "clipgen.model.vqgan.adversarial_start=5"])
