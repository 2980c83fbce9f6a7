"""Deterministic training batches and per-step seeding: the data position and every random draw of a step are
functions of (seed, rank, step), so a resumed run replays exactly the draws of an uninterrupted one."""
import random
import zlib

import numpy as np
import torch
from torch.utils.data import IterableDataset

from galip_bench.errors import UserError
from galip_bench.train.length import steps_per_epoch


def seed_step(seed: int, rank: int, step: int) -> None:
    """Every step draws from RNGs seeded by (seed, rank, step): a resumed run replays exactly the same draws."""
    s = zlib.crc32(f"{seed}/{rank}/{step}".encode())
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


class Batches:
    """Deterministic batches laid out as the official loader (`DistributedSampler` + `DataLoader(drop_last=True)`):
    each epoch a permutation seeded by (seed, epoch), padded by wrapping to a multiple of the process count, every
    `world_size`-th index from `rank` on, cut into full batches. The position is a function of the step, so
    restoring the step restores the data position (`train.loader` reads them, with workers or not). Streamed (webdataset) data is read in order; a resume skips the
    samples already consumed."""

    def __init__(self, dataset, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.streamed = isinstance(dataset, IterableDataset)
        self.num_images = None if self.streamed else len(dataset)
        self.per_epoch = 0 if self.streamed else steps_per_epoch(len(dataset), batch_size, world_size)
        if not self.streamed and self.per_epoch < 1:
            raise UserError(f"the training split has {len(dataset)} images: fewer than one batch of {batch_size} "
                            f"per process ({world_size} process(es))")
        self.stream, self.next_step = None, None

    def indices(self, step: int) -> list:
        epoch, pos = divmod(step, self.per_epoch)
        order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.seed * 100003 + epoch))
        per_rank = -(-len(order) // self.world_size)
        padded = torch.cat([order, order[: per_rank * self.world_size - len(order)]])
        mine = padded[self.rank::self.world_size]
        return [int(i) for i in mine[pos * self.batch_size: (pos + 1) * self.batch_size]]

    def streamed_samples(self, step: int) -> list:
        """The samples of `step` from a stream, read in order (a jump re-reads the stream up to that point)."""
        if self.stream is None or self.next_step != step:
            self.stream = iter(self.dataset)
            for _ in range(step * self.batch_size):
                self._next()
        self.next_step = step + 1
        return [self._next() for _ in range(self.batch_size)]

    def _next(self):
        try:
            return next(self.stream)
        except StopIteration:  # end of the shards: start another pass
            self.stream = iter(self.dataset)
            return next(self.stream)
