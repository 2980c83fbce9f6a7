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
    `world_size`-th index from the rank on, cut into full batches. With `accum` micro-batches per step, each
    micro-batch plays one process of a `world_size x accum`-process run (virtual rank rank*accum + k), so one
    process with 8 micro-batches reads exactly the batches 8 processes would. The position is a function of the
    step, so restoring the step restores the data position (`train.loader` reads them, with workers or not).
    Streamed (webdataset) data is read in order; a resume skips the samples already consumed."""

    def __init__(self, dataset, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, accum: int = 1):
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.rank, self.world_size, self.accum = rank, world_size, accum
        self.streamed = isinstance(dataset, IterableDataset)
        self.num_images = None if self.streamed else len(dataset)
        self.per_epoch = 0 if self.streamed else steps_per_epoch(len(dataset), batch_size, world_size * accum)
        if not self.streamed and self.per_epoch < 1:
            raise UserError(f"the training split has {len(dataset)} images: fewer than one batch of {batch_size} "
                            f"per process ({world_size} process(es) x {accum} micro-batch(es))")
        self.stream, self.next_step = None, None

    @property
    def virtual_ranks(self) -> range:
        """The ranks of a world_size x accum run whose batches this process reads, one per micro-batch."""
        return range(self.rank * self.accum, (self.rank + 1) * self.accum)

    def indices(self, step: int) -> list:
        """The dataset indices of `step`: the micro-batches of this process's virtual ranks, in order."""
        epoch, pos = divmod(step, self.per_epoch)
        order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.seed * 100003 + epoch))
        world = self.world_size * self.accum
        per_rank = -(-len(order) // world)
        padded = torch.cat([order, order[: per_rank * world - len(order)]])
        return [int(i) for v in self.virtual_ranks
                for i in padded[v::world][pos * self.batch_size: (pos + 1) * self.batch_size]]

    def sample_keys(self, step: int) -> list:
        """(virtual rank, position in its micro-batch) of each sample of `step`: what seeds its augmentation."""
        return [(v, j) for v in self.virtual_ranks for j in range(self.batch_size)]

    def streamed_samples(self, step: int) -> list:
        """The samples of `step` from a stream, read in order (a jump re-reads the stream up to that point)."""
        per_step = self.batch_size * self.accum
        if self.stream is None or self.next_step != step:
            self.stream = iter(self.dataset)
            for _ in range(step * per_step):
                self._next()
        self.next_step = step + 1
        return [self._next() for _ in range(per_step)]

    def _next(self):
        try:
            return next(self.stream)
        except StopIteration:  # end of the shards: start another pass
            self.stream = iter(self.dataset)
            return next(self.stream)
