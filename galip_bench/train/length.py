"""Training length in steps, from train.steps or from train.epochs as the official code counts them."""
import math
from typing import Optional

from galip_bench.errors import UserError


def steps_per_epoch(num_images: int, batch_size: int, world_size: int = 1) -> int:
    """Batches per epoch of the official loader: `DistributedSampler` gives each of `world_size` processes
    ceil(N / world_size) indices (padding by wrapping around), and `DataLoader(drop_last=True)` makes
    floor(that / batch_size) batches of them."""
    return math.ceil(num_images / world_size) // batch_size


def total_steps(train_cfg, num_images: Optional[int], world_size: int = 1) -> int:
    """train.steps, or train.epochs x steps_per_epoch of a training split of `num_images` images."""
    if train_cfg.steps is not None:
        return train_cfg.steps
    if num_images is None:
        raise UserError("train.epochs needs a training split of known size; streamed shards have none: set "
                        "train.steps (and train.epochs=null) instead")
    per_epoch = steps_per_epoch(num_images, train_cfg.batch_size, world_size)
    if per_epoch < 1:
        raise UserError(f"train.epochs: {num_images} training images over {world_size} process(es) fill no batch "
                        f"of {train_cfg.batch_size}")
    return train_cfg.epochs * per_epoch


def describe(train_cfg, num_images: Optional[int], world_size: int = 1) -> str:
    if train_cfg.steps is not None:
        return f"{train_cfg.steps:,} steps"
    if num_images is None:
        return f"{train_cfg.epochs:,} epochs (split size unknown)"
    per = steps_per_epoch(num_images, train_cfg.batch_size, world_size)
    return f"{train_cfg.epochs:,} epochs x {per:,} steps = {train_cfg.epochs * per:,} steps ({num_images:,} images)"
