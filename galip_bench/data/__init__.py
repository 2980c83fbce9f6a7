"""Datasets: every sample is {'image': [3,S,S] in [-1,1], 'caption': str, 'tokens': [77] long, 'key': str}.

kinds: synthetic (procedural, nothing on disk), cub and coco (the GALIP/DF-GAN data layouts), captions (a JSONL/CSV
manifest or a folder of image + .txt pairs), webdataset (img2dataset tar shards, streamed)."""
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Iterator, Optional

import torch
from torch.utils.data import IterableDataset

from galip_bench.config.schema import DataConfig
from galip_bench.data.tokens import tokenize
from galip_bench.errors import UserError

__all__ = ["build_dataset", "shard_pattern", "require_root", "reference_images", "legacy_stats_path",
           "official_stats_path", "split_size", "tokenize", "dataset_id", "auto_workers"]
KINDS = ("synthetic", "cub", "coco", "captions", "webdataset")
SPLITS = ("train", "test")
# GALIP's released FID statistics of the test splits (code/cfg/coco.yml, birds.yml: `npz_path`)
OFFICIAL_NPZ = {"coco": "npz/coco_val256_FIDK0.npz", "cub": "npz/bird_val256_FIDK0.npz"}


def build_dataset(cfg: DataConfig, split: str, train: bool, rank: int = 0, world_size: int = 1,
                  captions: bool = True):
    """A map-style dataset (an IterableDataset for webdataset) of the split; train=True applies GALIP's
    augmentation and draws one random caption per access. captions=False (language-free training) reads no
    caption at all: samples are {'image', 'key'}, and caption files or fields may be absent."""
    if split not in SPLITS:
        raise UserError(f"split must be one of {SPLITS}, got {split!r}")
    if cfg.size is None:
        raise ValueError("data.size is unresolved: resolve the run config first (schema.resolve_run_config)")
    if cfg.kind == "synthetic":
        from galip_bench.data.synthetic import SyntheticShapes
        return SyntheticShapes(cfg.size, cfg.num_train if split == "train" else cfg.num_test, split, cfg.seed)
    if cfg.kind == "webdataset":
        from galip_bench.data.shards import ShardStream
        return ShardStream(shard_pattern(cfg, split), cfg.size, train, rank, world_size, captions=captions)
    from galip_bench.data import layouts
    from galip_bench.data.captioned import CaptionedImages
    require_root(cfg)
    if cfg.kind == "cub":
        entries = layouts.cub_entries(cfg.root, split, captions)
    elif cfg.kind == "coco":
        entries = layouts.coco_entries(cfg.root, split, captions)
    elif cfg.kind == "captions":
        entries = (layouts.manifest_entries(cfg.manifest, cfg.root, split, captions) if cfg.manifest
                   else layouts.folder_entries(cfg.root, split, captions))
    else:
        raise UserError(f"unknown data.kind '{cfg.kind}' (choose from {', '.join(KINDS)})")
    if not entries:
        raise UserError(f"data.kind={cfg.kind} at {cfg.root or cfg.manifest}: the {split} split is empty")
    return CaptionedImages(entries, cfg.size, train, cfg.skip_corrupt, cfg.seed, decode=cfg.decode if train else "pil",
                           captions=captions)


def auto_workers(local_processes: int = 1) -> int:
    """Workers per training process when data.num_workers is unset: the process's share of the CPUs it may use,
    less one for the training process itself, at most 8."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cpus // max(1, local_processes) - 1))


def shard_pattern(cfg: DataConfig, split: str) -> str:
    """The webdataset shard pattern of a split (test_shards for the test split when set)."""
    pattern = cfg.test_shards if (split == "test" and cfg.test_shards) else cfg.shards
    if not pattern:
        raise UserError("data.kind=webdataset needs data.shards, e.g. 'cc12m/{00000..01242}.tar'")
    return pattern


def require_root(cfg: DataConfig) -> None:
    if cfg.kind in ("cub", "coco", "captions") and not cfg.root and not cfg.manifest:
        raise UserError(f"data.kind={cfg.kind} needs data.root (the dataset folder)")


def reference_images(cfg: DataConfig, batch_size: int = 64, limit: Optional[int] = None,
                     num_workers: int = 0, captions: bool = True) -> Iterator[torch.Tensor]:
    """The FID reference set: the test split's images in [-1,1], resized to int(size*76/64) and centre-cropped
    to size (synthetic: rendered at size), one image per image file, in batches; decoded by `num_workers` loader
    processes (the test transform draws nothing, so the images do not depend on them)."""
    dataset = build_dataset(cfg, "test", train=False, captions=captions)
    if not isinstance(dataset, IterableDataset):
        count = len(dataset) if limit is None else min(limit, len(dataset))
        subset = torch.utils.data.Subset(dataset, range(count))
        loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, num_workers=num_workers,
                                             collate_fn=_stack_images)
        yield from loader
        return
    batch = []
    for i, sample in enumerate(dataset):
        if limit is not None and i >= limit:
            break
        batch.append(sample["image"])
        if len(batch) == batch_size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)


def _stack_images(samples: list) -> torch.Tensor:
    return torch.stack([s["image"] for s in samples])


def official_stats_path(cfg: DataConfig) -> Optional[str]:
    """Where GALIP's released statistics of a cub/coco root live (ROOT/npz/<official name>), present or not."""
    if cfg.kind not in OFFICIAL_NPZ or not cfg.root:
        return None
    return str(Path(cfg.root) / OFFICIAL_NPZ[cfg.kind])


def legacy_stats_path(cfg: DataConfig) -> Optional[str]:
    """GALIP's precomputed FID statistics (mu, sigma) for cub/coco, if present: the official file name first, else
    ROOT/npz/*.npz with val or test in its name, else any ROOT/npz/*.npz."""
    official = official_stats_path(cfg)
    if official is None:
        return None
    if Path(official).is_file():
        return official
    files = sorted(Path(cfg.root, "npz").glob("*.npz"))
    preferred = [f for f in files if "val" in f.name or "test" in f.name]
    return str((preferred or files)[0]) if files else None


def split_size(cfg: DataConfig, split: str) -> Optional[int]:
    """Images in a split without decoding any (None for streamed shards): the split file's length for cub/coco."""
    if cfg.kind == "synthetic":
        return cfg.num_train if split == "train" else cfg.num_test
    if cfg.kind == "webdataset":
        return None
    from galip_bench.data import layouts
    require_root(cfg)
    if cfg.kind == "cub":
        return len(layouts.read_split(layouts.cub_folders(cfg.root)[0], split))
    if cfg.kind == "coco":
        return len(layouts.read_split(layouts.coco_folder(cfg.root), split))
    return len(build_dataset(cfg, split, train=False))


def dataset_id(cfg: DataConfig, split: str = "test") -> str:
    """Identity of a dataset split for cache keys: kind + a hash of every data setting."""
    blob = json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=str)
    return f"{cfg.kind}:{split}:{hashlib.sha256(blob.encode()).hexdigest()[:12]}"
