"""The paper grids resolve to the official code's training and test procedure (code/cfg/coco.yml, birds.yml,
scripts/train.sh, test.sh, lib/perpare.py; the table in ../shared/DESIGN.md), and `run --dry-run` shows it."""
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler
from torchvision import transforms

from galip_bench.cli import main
from galip_bench.config.recipe import Placement
from galip_bench.data import official_stats_path
from galip_bench.data.images import image_transform
from galip_bench.evaluation.planning import build_protocols, reference_of
from galip_bench.evaluation.plans import SamplePlan
from galip_bench.grids.grid import load_grid
from galip_bench.train.amp import AMP, RESET_SCALE, SCALER_MIN
from galip_bench.train.batches import Batches
from galip_bench.train.length import total_steps

ABLATIONS = Path(__file__).resolve().parent.parent / "ablations"
# The official values, written out from the official cfg files and scripts (not from our code).
OFFICIAL = {
    "paper_table1_coco": dict(kind="coco", imsize=256, resize=304, batch=64, gpus=8, max_epoch=3005,
                              train_images=82783, steps_per_epoch=161, sample_times=1, test_images=40504,
                              n_eval=40448, npz="npz/coco_val256_FIDK0.npz", test_interval=5, save_interval=5),
    "paper_table1_cub": dict(kind="cub", imsize=256, resize=304, batch=64, gpus=8, max_epoch=1502,
                             train_images=8855, steps_per_epoch=17, sample_times=12, test_images=2933,
                             n_eval=34560, npz="npz/bird_val256_FIDK0.npz", test_interval=20, save_interval=20),
}
COMMON = dict(lr_g=1e-4, lr_d=4e-4, betas=(0.0, 0.9), sim_w=4.0, seed=100, precision="fp16", growth_interval=2000,
              scaler_min=64.0, reset_scale=16384.0, z_dim=100, cond_dim=512, ngf=64, clip_preprocess="official")


@pytest.mark.parametrize("grid_name", sorted(OFFICIAL))
def test_paper_grid_resolves_to_the_official_procedure(grid_name, tmp_path):
    off = OFFICIAL[grid_name]
    grid = load_grid(ABLATIONS / f"{grid_name}.yaml", schedule="cfg", placement=Placement("slurm", off["gpus"]))
    (run,) = grid.runs
    cfg, tc = run.config, run.config.train
    # data: the 256 px canvas for the 224 px generator, resize int(256*76/64) = 304, random crop, flip
    assert cfg.data.kind == off["kind"] and cfg.data.size == off["imsize"] and cfg.model.img_size == 224
    steps = image_transform(cfg.data.size, train=True).transforms
    assert isinstance(steps[0], transforms.Resize) and steps[0].size == off["resize"]
    assert isinstance(steps[1], transforms.RandomCrop) and steps[1].size == (off["imsize"], off["imsize"])
    assert isinstance(steps[2], transforms.RandomHorizontalFlip)
    # batch and GPUs, optimiser, loss weight, seed, precision and the scaler rule
    assert tc.batch_size == off["batch"] and grid.slurm["gpus_per_node"] == off["gpus"]
    assert (tc.processes, tc.grad_accum, tc.global_batch) == (off["gpus"], 1, off["gpus"] * off["batch"])
    assert tc.noise == "official" and tc.tf32 and tc.keep_ckpts == 0  # every test-interval checkpoint kept
    assert (tc.lr_g, tc.lr_d, (tc.beta1, tc.beta2), tc.sim_w) == (COMMON["lr_g"], COMMON["lr_d"], COMMON["betas"],
                                                                  COMMON["sim_w"])
    assert tc.seed + cfg.seed == COMMON["seed"] and tc.precision == COMMON["precision"]
    amp = AMP.create(tc.precision, "cpu")  # the same GradScaler settings as on a GPU (enabled on the CPU too)
    assert amp.scaler_d.get_growth_interval() == COMMON["growth_interval"] == amp.scaler_g.get_growth_interval()
    assert (SCALER_MIN, RESET_SCALE) == (COMMON["scaler_min"], COMMON["reset_scale"])
    assert (cfg.model.z_dim, cfg.model.cond_dim, cfg.model.ngf) == (COMMON["z_dim"], COMMON["cond_dim"], COMMON["ngf"])
    assert cfg.model.clip.preprocess == COMMON["clip_preprocess"]
    # training length: range(1, max_epoch) epochs of floor(ceil(N / 8) / 64) steps; checkpoints and tests every
    # interval
    assert tc.steps is None and tc.epochs == len(range(1, off["max_epoch"]))  # code/src/train.py's epoch loop
    assert total_steps(tc, off["train_images"], off["gpus"]) == (off["max_epoch"] - 1) * off["steps_per_epoch"]
    assert tc.ckpt_every == off["save_interval"] * off["steps_per_epoch"]
    assert tc.eval_every == off["test_interval"] * off["steps_per_epoch"]
    # evaluation: the official test loop and GALIP's released statistics, required
    protos = build_protocols(cfg.eval, cfg.data.kind)
    assert {p.name for p in protos} >= {"fid_galip", "clip_score_galip"}
    for p in protos:
        assert p.plan == SamplePlan("official", passes=off["sample_times"], batch=64, seed=0), p.name
        assert p.plan.count(off["test_images"]) == off["n_eval"]
    assert cfg.eval.reference == "npz" and official_stats_path(cfg.data).endswith(off["npz"])
    npz = tmp_path / off["npz"]
    npz.parent.mkdir(parents=True)
    np.savez(npz, mu=np.zeros(2), sigma=np.eye(2))
    cfg.data.root = str(tmp_path)
    fid = next(p for p in protos if p.name == "fid_galip")
    assert reference_of(fid, cfg.data, cfg.eval.reference) == ("npz", str(npz))


def test_zero_shot_grid_evaluates_with_the_official_coco_loop():
    (run,) = load_grid(ABLATIONS / "paper_table2_zeroshot.yaml").runs
    data = run.config.eval.data
    assert data.kind == "coco" and data.size == 256 and run.config.data.size == 256
    (zs,) = build_protocols(run.config.eval, data.kind)
    assert zs.name == "zs_fid_coco" and zs.plan == SamplePlan("official", passes=1, batch=64)
    assert zs.plan.count(40504) == 40448 and run.config.eval.reference == "npz"


def test_batches_follow_the_official_distributed_loader():
    """Each epoch: the seeded permutation laid out as DistributedSampler(shuffle=False) lays out range(N) (padded by
    wrapping), then DataLoader(drop_last=True) batches; torch's sampler is the reference."""
    n, world, batch = 23, 4, 2
    dataset = list(range(n))
    per_epoch = Batches(dataset, batch, seed=7, rank=0, world_size=world).per_epoch
    assert per_epoch == (-(-n // world)) // batch == 3
    for rank in range(world):
        ours = Batches(dataset, batch, seed=7, rank=rank, world_size=world)
        for epoch in range(2):
            layout = list(DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False))
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(7 * 100003 + epoch))
            expected = [int(perm[i]) for i in layout]
            got = [i for step in range(per_epoch) for i in ours.indices(epoch * per_epoch + step)]
            assert got == expected[: per_epoch * batch], (rank, epoch)


def _fake_coco_root(tmp_path, train=82783, test=40504):
    root = tmp_path / "coco"
    for split, count in (("train", train), ("test", test)):
        (root / split).mkdir(parents=True)
        keys = [f"COCO_{'train' if split == 'train' else 'val'}2014_{i:012d}" for i in range(count)]
        (root / split / "filenames.pickle").write_bytes(pickle.dumps(keys))
    (root / "images").mkdir()
    (root / "npz").mkdir()
    np.savez(root / "npz" / "coco_val256_FIDK0.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    return root


def test_dry_run_prints_the_resolved_plan(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)  # a machine without GPUs, whatever runs the test
    import shutil
    from collections import namedtuple
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 9 * 10**11, 100 * 10**9))  # 100 GB free
    root = _fake_coco_root(tmp_path)
    # the fake root lists the 82,783 + 40,504 keys without their files: the file checks are tests/test_bad_input.py's
    monkeypatch.setattr("galip_bench.grids.preflight.check_files", lambda cfg, split, captions: None)
    weights = tmp_path / "weights"
    weights.mkdir()
    for name in ("inception_v3_google-0cc3c7bd.pth", "weights-inception-2015-12-05-6726825d.pth", "ViT-B-32.pt"):
        (weights / name).write_bytes(b"x")  # only their presence is checked by a dry run
    (tmp_path / "bench.yaml").write_text("paths: {weights: weights, runs: runs, cache: cache}\n")
    argv = ["run", str(ABLATIONS / "paper_table1_coco.yaml"), "--dry-run", "--executor", "slurm", "--schedule", "cfg",
            "--set", f"data.root={root}", "--set", "model.clip.pretrained=random"]
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "coco at " in out and "256 px (resize 304, random crop 256, horizontal flip); 82,783 images" in out
    assert "3,004 epochs x 161 steps = 483,644 steps" in out
    assert "batch 64 x 8 process(es) = global batch 512; noise official; TF32 on" in out
    assert "fp16 autocast + GradScaler (growth_interval 2000, reset to 16384 under 64)" in out
    assert "schedule paper: 1,000 epochs x 161 steps = 161,000 steps" in out and "issues/16" in out
    assert "budget: 100.0% of the official COCO run's training samples" in out
    # every test-interval checkpoint kept, and what that costs: 601 checkpoints of netG/D/C + Adam moments in fp32
    assert "checkpoints: every 805 steps, 601 written, all kept (as the official code): up to 601 x 0.99 GB" in out
    assert "has 100.0 GB free, less than these checkpoints take" in out
    for proto in ("fid_galip", "clip_score_galip", "fid", "clip_score"):
        line = next(line for line in out.splitlines() if line.strip().startswith(proto + " "))
        assert "N=40,448" in line and "1 pass(es) over 40,448 of 40,504 test images" in line, line
    assert f"GALIP's statistics {root}/npz/coco_val256_FIDK0.npz" in out
    assert "inputs: all found" in out and not (tmp_path / "runs").exists()
    assert "no step time measured yet" in out
    # once a run of the grid has logged steps, each schedule's cost in GPU-hours at that step time
    run_id = out.splitlines()[1].split()[0]
    log = tmp_path / "runs" / "paper_table1_coco" / run_id / "train_log.jsonl"
    log.parent.mkdir(parents=True)
    (log.parent / "config.yaml").write_text("train: {processes: 8, global_batch: 512}\n")
    log.write_text("".join(f'{{"step": {k * 50}, "time": {k * 25.0}}}\n' for k in range(1, 5)))  # 0.5 s per step
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"~ {483644 * 0.5 * 8 / 3600:,.0f} GPU-hours at 0.500 s/step (measured in run {run_id})" in out
    assert f"~ {161000 * 0.5 * 8 / 3600:,.0f} GPU-hours" in out
    # the local executor on a machine without 8 GPUs keeps the global batch with micro-batches (and the length)
    local = [a for a in argv if a not in ("--executor", "slurm")]
    assert main(local) == 0
    out = capsys.readouterr().out
    assert "3,004 epochs x 161 steps = 483,644 steps" in out
    assert "batch 64 x 1 process(es) x 8 micro-batches = global batch 512" in out
    # a global batch the hardware does not give is refused in one line, or run and labelled when the user says so
    assert main(local + ["--set", "train.grad_accum=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "make 64" in err[0] and "--allow-recipe-change" in err[0], err
    assert main(local + ["--set", "train.epochs=10"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.epochs 10 (recipe: 3004)" in err[0], err
    assert main(local + ["--set", "train.grad_accum=1", "--allow-recipe-change"]) == 0
    out = capsys.readouterr().out
    assert "recipe CHANGED (--allow-recipe-change): global batch 64 (recipe: 512)" in out
    assert "3,004 epochs x 1,293 steps" in out
    # without the statistics the paper grid stops before anything runs, and says which file it wants
    (root / "npz" / "coco_val256_FIDK0.npz").unlink()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "coco_val256_FIDK0.npz" in err[0] and "not found" in err[0]


@pytest.mark.parametrize("grid_name", sorted(OFFICIAL))
@pytest.mark.parametrize("placement, layout", [(Placement("slurm", 8), (8, 1)), (Placement("local", 1, 0), (1, 8)),
                                               (Placement("local", 1, 4), (4, 2)), (Placement("local", 1, 3), (2, 4))])
def test_official_length_on_8_processes_or_fewer_with_micro_batches(grid_name, placement, layout):
    """(max_epoch - 1) x floor(ceil(N / 8) / 64) steps whatever the hardware: 8 processes, or fewer processes whose
    micro-batches play the missing ones (their data is what those processes would read)."""
    off = OFFICIAL[grid_name]
    (run,) = load_grid(ABLATIONS / f"{grid_name}.yaml", schedule="cfg", placement=placement).runs
    tc = run.config.train
    assert (tc.processes, tc.grad_accum, tc.global_batch) == (*layout, 512)
    dataset = list(range(off["train_images"]))
    per_process = [Batches(dataset, tc.batch_size, 100, rank, tc.processes, tc.grad_accum)
                   for rank in range(tc.processes)]
    assert per_process[0].per_epoch == off["steps_per_epoch"]
    assert total_steps(tc, off["train_images"], tc.processes * tc.grad_accum) == \
        (off["max_epoch"] - 1) * off["steps_per_epoch"]
    # the samples of a step, process by process and micro-batch by micro-batch, are the 8 official ranks' batches
    official = [Batches(dataset, 64, 100, rank, 8) for rank in range(8)]
    for step in (0, off["steps_per_epoch"] + 3):
        ours = [i for b in per_process for i in b.indices(step)]
        assert ours == [i for b in official for i in b.indices(step)]


def _step_noise(noise, rank, world, accum):
    from types import SimpleNamespace

    from galip_bench.train.loop import _step_inputs
    cfg = SimpleNamespace(train=SimpleNamespace(grad_accum=accum, noise=noise),
                          model=SimpleNamespace(z_dim=100, condition="text"))
    batches = Batches(list(range(64)), 4, 100, rank, world, accum)
    run = SimpleNamespace(seed=100, batches=batches, device=torch.device("cpu"))
    return _step_inputs(cfg, run, 7, torch.zeros(4 * accum, 3, 8, 8))[0]


def test_official_noise_is_the_same_on_every_rank():
    """train.noise=official: every rank draws rank 0's noise each step, as the official code (all ranks seeded
    alike, `torch.randn` on the CPU in lockstep); per_rank: each its own; micro-batches play ranks either way."""
    rank0, rank1 = _step_noise("official", 0, 2, 1), _step_noise("official", 1, 2, 1)
    assert rank0.shape == (4, 100) and torch.equal(rank0, rank1)
    per0, per1 = _step_noise("per_rank", 0, 2, 1), _step_noise("per_rank", 1, 2, 1)
    assert not torch.equal(per0, per1) and not torch.equal(per0, rank0)
    assert torch.equal(_step_noise("official", 0, 1, 2), torch.cat([rank0, rank0]))
    assert torch.equal(_step_noise("per_rank", 0, 1, 2), torch.cat([per0, per1]))


@pytest.mark.parametrize("grid_name", sorted(OFFICIAL))
def test_paper_grid_evaluates_the_official_subset(grid_name):
    """The paper grids' plan keeps, each pass, the first floor(N/64)*64 indices of test.sh's sampler:
    DistributedSampler(shuffle=True, seed=0) with its epoch never set (torch's sampler is the reference)."""
    off = OFFICIAL[grid_name]
    (run,) = load_grid(ABLATIONS / f"{grid_name}.yaml", placement=Placement("slurm", 8)).runs
    fid = next(p for p in build_protocols(run.config.eval, off["kind"]) if p.name == "fid_galip")
    table = [(f"k{i}", [f"caption {i}"]) for i in range(off["test_images"])]
    resolved = fid.plan.resolve(table)
    sampler = list(DistributedSampler(range(off["test_images"]), num_replicas=1, rank=0, shuffle=True, seed=0))
    kept = sampler[: off["test_images"] // 64 * 64]
    assert resolved.n == off["n_eval"] and resolved.images == kept * off["sample_times"]
    assert sorted(kept) != list(range(len(kept)))  # not the split order
