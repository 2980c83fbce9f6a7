"""The multi-worker input pipeline: the same batches with and without worker processes, an exact resume from any
step, and a training run whose losses do not depend on the worker count."""
import multiprocessing
import os
import signal
import time

import pytest
import torch
from omegaconf import OmegaConf

from galip_bench.config.schema import DataConfig
from galip_bench.data import build_dataset
from galip_bench.data.fake import write_fake_coco
from galip_bench.data.images import CorruptImage
from galip_bench.grids.grid import load_grid, run_id_of
from galip_bench.runs.rundir import RunDir, read_jsonl
from galip_bench.train.batches import Batches
from galip_bench.train.loader import StepLoader
from galip_bench.train.loop import train_run
from test_training import GRID, SMALL


def _coco_batches(tmp_path, seed=3):
    write_fake_coco(tmp_path / "coco", images=36, progress=False)
    dataset = build_dataset(DataConfig(kind="coco", root=str(tmp_path / "coco"), size=32), "train", train=True)
    return Batches(dataset, batch_size=4, seed=seed)  # 24 train images: 6 steps per epoch


def _read(batches, start, stop, workers):
    return list(StepLoader(batches, start, stop, num_workers=workers))


def test_workers_give_the_same_batches_and_resume_at_any_step(tmp_path):
    batches = _coco_batches(tmp_path)
    straight = _read(batches, 0, 9, workers=0)  # crosses an epoch boundary
    with_workers = _read(batches, 0, 9, workers=2)
    resumed = _read(batches, 5, 9, workers=2)
    assert len(straight) == len(with_workers) == 9 and len(resumed) == 4
    for a, b in zip(straight, with_workers):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["tokens"], b["tokens"])
        assert a["caption"] == b["caption"]
    for a, b in zip(straight[5:], resumed):
        assert torch.equal(a["image"], b["image"]) and a["caption"] == b["caption"]
    # the augmentation is live: one image of a step's batch drawn under another seed gets another crop/flip/caption
    other = _read(_coco_batches(tmp_path, seed=4), 0, 1, workers=0)[0]
    assert not torch.equal(other["image"], straight[0]["image"])


def test_training_losses_do_not_depend_on_workers_and_keep_the_run_id(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(GRID)
    runs = {w: load_grid(path, overrides=SMALL + ["train.steps=6", f"data.num_workers={w}"]).runs[0] for w in (0, 2)}
    assert runs[0].run_id == runs[2].run_id
    conf = lambda workers, size: OmegaConf.create({"data": {"num_workers": workers, "size": size}})  # noqa: E731
    assert run_id_of(conf(0, 8)) == run_id_of(conf(3, 8)) != run_id_of(conf(0, 16))
    losses = {}
    for workers, run in runs.items():
        run_dir = RunDir(tmp_path / f"w{workers}")
        if workers:  # killed at step 4 (after the checkpoint at 3), resumed: still equal to the run without workers
            train_run(run.config, run_dir, progress=False, stop_at=4)
        train_run(run.config, run_dir, progress=False)
        losses[workers] = [(r["step"], r["errD"], r["errG"]) for r in read_jsonl(run_dir.train_log)]
    assert [s for s, _, _ in losses[0]] == list(range(1, 7))
    assert losses[0] == losses[2]


def test_device_decode_draws_the_same_crops_and_stays_close_to_pil(tmp_path):
    """data.decode=torchvision (decode_jpeg on the training device; here the CPU) against the PIL path: the same
    captions, crops and flips (the same torchvision draws), pixels within JPEG-decoder and resampling rounding."""
    write_fake_coco(tmp_path / "coco", images=36, progress=False)
    read = {}
    for decode, workers in (("pil", 0), ("torchvision", 0), ("torchvision", 2)):
        cfg = DataConfig(kind="coco", root=str(tmp_path / "coco"), size=64, decode=decode)
        batches = Batches(build_dataset(cfg, "train", train=True), batch_size=4, seed=3)
        read[decode, workers] = _read(batches, 0, 4, workers)
    for pil, dev, dev_workers in zip(read["pil", 0], read["torchvision", 0], read["torchvision", 2]):
        assert pil["caption"] == dev["caption"] and torch.equal(dev["image"], dev_workers["image"])
        diff = (pil["image"] - dev["image"]).abs()
        print(f"torchvision vs PIL decode: mean {diff.mean():.4f}, max {diff.max():.4f} (in [-1,1] units)")
        assert dev["image"].shape == pil["image"].shape == (4, 3, 64, 64)
        assert diff.mean() < 0.005 and diff.max() < 0.05  # seen: 0.0006 and 0.0078 (one grey level)
    # a wrong crop or flip would be far off: the next step's images (other crops of other files) differ by ~0.3
    assert (read["pil", 0][0]["image"] - read["pil", 0][1]["image"]).abs().mean() > 0.1


def test_a_worker_error_reaches_the_training_process_as_it_was_raised(tmp_path):
    write_fake_coco(tmp_path / "coco", images=36, progress=False)
    (tmp_path / "coco" / "images" / "COCO_train2014_000000000002.jpg").write_bytes(b"not an image")
    batches = Batches(build_dataset(DataConfig(kind="coco", root=str(tmp_path / "coco"), size=32), "train",
                                    train=True), batch_size=24, seed=0)  # one step reads every train image
    with pytest.raises(CorruptImage, match=r"^image .*COCO_train2014_000000000002.jpg does not decode"):
        _read(batches, 0, 1, workers=2)


def test_loader_workers_ignore_stop_signals_left_to_the_training_process(tmp_path):
    """A scheduler's SIGTERM reaches the whole process group: a worker must outlive it so that the training process
    can finish its step and write its checkpoint."""
    batches = _coco_batches(tmp_path)
    others = set(multiprocessing.active_children())  # workers earlier tests' loaders may still be ending
    it = iter(StepLoader(batches, 0, 6, num_workers=1))
    next(it)
    workers = [c for c in multiprocessing.active_children() if c not in others]
    assert len(workers) == 1
    for child in workers:
        os.kill(child.pid, signal.SIGTERM)
    time.sleep(0.5)
    assert all(child.is_alive() for child in workers)
    assert len(list(it)) == 5
    stream = StepLoader(batches, 0, 6, num_workers=1)
    live = iter(stream)
    next(live)
    assert len(set(multiprocessing.active_children()) - others) == 1
    stream.close()  # what the training loop does on every way out: no worker is left for interpreter exit
    assert not set(multiprocessing.active_children()) - others
