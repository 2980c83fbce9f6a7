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
    off, grid = OFFICIAL[grid_name], load_grid(ABLATIONS / f"{grid_name}.yaml")
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
    assert (tc.lr_g, tc.lr_d, (tc.beta1, tc.beta2), tc.sim_w) == (COMMON["lr_g"], COMMON["lr_d"], COMMON["betas"],
                                                                  COMMON["sim_w"])
    assert tc.seed + cfg.seed == COMMON["seed"] and tc.precision == COMMON["precision"]
    amp = AMP.create(tc.precision, "cpu")  # the same GradScaler settings as on a GPU (enabled on the CPU too)
    assert amp.scaler_d.get_growth_interval() == COMMON["growth_interval"] == amp.scaler_g.get_growth_interval()
    assert (SCALER_MIN, RESET_SCALE) == (COMMON["scaler_min"], COMMON["reset_scale"])
    assert (cfg.model.z_dim, cfg.model.cond_dim, cfg.model.ngf) == (COMMON["z_dim"], COMMON["cond_dim"], COMMON["ngf"])
    assert cfg.model.clip.preprocess == COMMON["clip_preprocess"]
    # training length: max_epoch epochs of floor(ceil(N / 8) / 64) steps; checkpoints and tests every interval
    assert tc.steps is None and tc.epochs == off["max_epoch"]
    assert total_steps(tc, off["train_images"], off["gpus"]) == off["max_epoch"] * off["steps_per_epoch"]
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
    root = _fake_coco_root(tmp_path)
    weights = tmp_path / "weights"
    weights.mkdir()
    for name in ("inception_v3_google-0cc3c7bd.pth", "weights-inception-2015-12-05-6726825d.pth", "ViT-B-32.pt"):
        (weights / name).write_bytes(b"x")  # only their presence is checked by a dry run
    (tmp_path / "bench.yaml").write_text("paths: {weights: weights, runs: runs, cache: cache}\n")
    argv = ["run", str(ABLATIONS / "paper_table1_coco.yaml"), "--dry-run", "--executor", "slurm",
            "--set", f"data.root={root}", "--set", "model.clip.pretrained=random"]
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "coco at " in out and "256 px (resize 304, random crop 256, horizontal flip); 82,783 images" in out
    assert "3,005 epochs x 161 steps = 483,805 steps" in out and "batch 64 x 8 process(es)" in out
    assert "fp16 autocast + GradScaler (growth_interval 2000, reset to 16384 under 64)" in out
    for proto in ("fid_galip", "clip_score_galip", "fid", "clip_score"):
        line = next(line for line in out.splitlines() if line.strip().startswith(proto + " "))
        assert "N=40,448" in line and "1 pass(es) over 40,448 of 40,504 test images" in line, line
    assert f"GALIP's statistics {root}/npz/coco_val256_FIDK0.npz" in out
    assert "inputs: all found" in out and not (tmp_path / "runs").exists()
    # the local executor runs one process: the dry run says what that does to the batch and the length
    assert main([a for a in argv if a not in ("--executor", "slurm")]) == 0
    out = capsys.readouterr().out
    assert "3,005 epochs x 1,293 steps" in out and "global batch is 64, not 512" in out
    # without the statistics the paper grid stops before anything runs, and says which file it wants
    (root / "npz" / "coco_val256_FIDK0.npz").unlink()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "coco_val256_FIDK0.npz" in err[0] and "not found" in err[0]
