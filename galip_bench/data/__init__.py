"""Datasets: every sample is {'image': [3,S,S] in [-1,1], 'caption': str, 'tokens': [77] long, 'key': str}."""
from typing import Iterator, Optional

import torch

from galip_bench.data.config import DataConfig
from galip_bench.data.tokens import tokenize
from galip_bench.errors import UserError

__all__ = ["DataConfig", "build_dataset", "reference_images", "legacy_stats_path", "tokenize"]


def build_dataset(cfg: DataConfig, split: str, train: bool):
    if cfg.kind == "synthetic":
        from galip_bench.data.synthetic import SyntheticShapes
        return SyntheticShapes(cfg.size, cfg.num_train if split == "train" else cfg.num_test, split, cfg.seed)
    raise UserError(f"data.kind '{cfg.kind}' is not available in this build (available: synthetic)")


def reference_images(cfg: DataConfig, batch_size: int = 64) -> Iterator[torch.Tensor]:
    """The test split's images in [-1,1] at cfg.size (the FID reference set), in batches."""
    dataset = build_dataset(cfg, "test", train=False)
    for start in range(0, len(dataset), batch_size):
        yield torch.stack([dataset[i]["image"] for i in range(start, min(start + batch_size, len(dataset)))])


def legacy_stats_path(cfg: DataConfig) -> Optional[str]:
    return None
