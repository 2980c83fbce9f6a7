"""Sample plans: which captions an evaluation generates from, how many, in which order. A plan is resolved against
the test split's caption table (keys and captions only: no image is decoded) into the exact list of (image, caption)
pairs that is generated, so N and the captions are known, checked and recorded before any generation.

Kinds:
- ``official``: the official GALIP test loop (code/lib/perpare.py ``prepare_dataloaders``, code/lib/modules.py
  ``calculate_FID_CLIP_sim``): ``passes`` passes (the cfg's ``sample_times``: COCO 1, CUB 12, code/cfg/coco.yml,
  birds.yml) over the test split as its loader yields it. That loader is ``DistributedSampler(valid_dataset)``
  (shuffle=True, seed=0, ``set_epoch`` never called for it, so every pass sees the same epoch-0 permutation) under
  ``DataLoader(batch_size=64, drop_last=True)``, with ``ranks`` sampler processes: 1 for scripts/test.sh (one process
  launched by torch.distributed.launch), 8 for the test inside train.py on 8 GPUs. Rank r takes the permutation
  padded by wrapping to a multiple of R, positions r::R, and keeps the first floor(len / 64) * 64 of them, so
  N = R * floor(ceil(N_test / R) / 64) * 64 * passes: the permutation's first N / passes positions (test.sh: COCO
  40,448, CUB 34,560; in training on 8 GPUs: COCO the same 40,448 images in another order, CUB 30,720, the first
  2,560 of test.sh's 2,880 per pass). Samples are laid out pass by pass, rank by rank, so every 64 consecutive
  samples are one official batch (the CLIP score averages per batch).
- ``fixed``: N samples cycling over the test images in order, one random caption per image per cycle.
- ``distinct``: N (image, caption) pairs drawn without replacement from all pairs (the 30k-caption zero-shot
  convention of other papers).
- ``all``: every (image, caption) pair once, in order.
"""
from __future__ import annotations

import hashlib
import random
import zlib
from dataclasses import dataclass, replace
from typing import List, Optional, Tuple

import numpy as np
import torch

from galip_bench.errors import UserError

KINDS = ("official", "fixed", "distinct", "all")
OFFICIAL_BATCH = 64
OFFICIAL_SAMPLE_TIMES = {"coco": 1, "cub": 12}  # code/cfg/coco.yml, birds.yml: sample_times
OFFICIAL_SAMPLER_SEED = 0  # DistributedSampler's default seed; the official test sampler's epoch stays 0
OFFICIAL_SUBSET = f"DistributedSampler(shuffle=True, seed={OFFICIAL_SAMPLER_SEED}) epoch-0 permutation"
SPLIT_ORDER = "split order"


def official_rank_indices(num_images: int, ranks: int, rank: int, batch: int = OFFICIAL_BATCH) -> List[int]:
    """The test-split indices rank `rank` of `ranks` evaluates in one pass of the official test loop, in order:
    the epoch-0 permutation of ``DistributedSampler(shuffle=True, seed=0)`` (``torch.randperm`` with a generator
    seeded 0), padded by wrapping to a multiple of `ranks`, positions rank::ranks, cut to whole ``drop_last``
    batches of `batch`."""
    gen = torch.Generator().manual_seed(OFFICIAL_SAMPLER_SEED)
    perm = torch.randperm(num_images, generator=gen).tolist()
    per_rank = -(-num_images // ranks)
    total = per_rank * ranks
    padded = (perm * -(-total // num_images))[:total]  # wrap around (repeatedly, if the split is tiny)
    mine = padded[rank:total:ranks]
    return mine[: (len(mine) // batch) * batch]


def caption_choice(captions: list, seed: int, cycle: int, key: str) -> str:
    """One random caption of an image for one pass, seeded by (seed, pass, key): any subset or order of the
    samples draws the same caption."""
    rng = random.Random(zlib.crc32(f"{seed}/{cycle}/{key}".encode()))
    return captions[rng.randrange(len(captions))]


def select_captions(captions_per_image: list, num: int, seed: int = 0) -> List[Tuple[int, int]]:
    """``distinct``: all (image, caption) index pairs in order, ``num`` of them drawn without replacement by
    ``numpy.random.default_rng(seed).choice``."""
    pairs = [(i, j) for i, caps in enumerate(captions_per_image) for j in range(len(caps))]
    if num > len(pairs):
        raise UserError(f"the plan asks for {num} distinct captions but the test split has {len(pairs)}")
    idx = np.random.default_rng(seed).choice(len(pairs), size=num, replace=False)
    return [pairs[k] for k in idx]


@dataclass(frozen=True)
class Resolved:
    """The pairs a plan generates from, and what the record says about them."""
    images: List[int]          # image index in the test split, per sample
    captions: List[str]        # caption, per sample
    description: str

    @property
    def n(self) -> int:
        return len(self.captions)

    def digest(self) -> str:
        """sha256 of the captions in generation order: the record's proof of what was consumed."""
        return hashlib.sha256("\n".join(self.captions).encode()).hexdigest()

    def summary(self) -> dict:
        return {"num_samples": self.n, "distinct_captions": len(set(self.captions)),
                "distinct_images": len(set(self.images)), "captions_sha256": self.digest(),
                "plan_description": self.description}


@dataclass(frozen=True)
class SamplePlan:
    kind: str = "official"
    passes: Optional[int] = None       # official: None -> the dataset's official sample_times (COCO 1, CUB 12)
    num_samples: Optional[int] = None  # fixed / distinct
    batch: int = OFFICIAL_BATCH        # the official loop's drop_last batch, and the CLIP score's averaging batch
    seed: int = 0
    ranks: int = 1                     # official: the sampler processes of the official loop (1: test.sh; 8: the
                                       # test inside train.py on 8 GPUs); the other kinds keep 1

    def __post_init__(self):
        if self.kind not in KINDS:
            raise UserError(f"unknown sample plan '{self.kind}' (choose from {', '.join(KINDS)})")
        for name in ("passes", "num_samples", "batch", "ranks"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"sample plan: {name} must be at least 1, got {value}")
        if self.kind in ("fixed", "distinct") and self.num_samples is None:
            raise UserError(f"sample plan '{self.kind}' needs a number of samples (eval.num_samples)")
        if self.kind != "official" and self.ranks != 1:
            raise UserError(f"sample plan '{self.kind}': ranks (the official loop's sampler processes) apply to "
                            "the official plan only")

    def with_overrides(self, num_samples=None, passes=None, seed=None, ranks=None) -> "SamplePlan":
        """eval.num_samples turns an official plan into a fixed one (a distinct plan keeps its kind);
        eval.passes sets the official (and fixed) plans' passes; eval.official_ranks the official plan's sampler
        processes. A distinct plan (zs_fid_coco_30k's 30,000 pairs) keeps its draw: passes and ranks are not its."""
        if num_samples is not None and passes is not None:
            raise UserError("eval.num_samples and eval.passes are exclusive: a plan has N samples (fixed) or "
                            "passes over the test split (official)")
        if ranks is not None and ranks < 1:
            raise UserError(f"eval.official_ranks must be at least 1, got {ranks}")
        plan = self if seed is None else replace(self, seed=seed)
        if num_samples is not None:
            kind = plan.kind if plan.kind == "distinct" else "fixed"
            return replace(plan, kind=kind, num_samples=num_samples, passes=None, ranks=1)
        if passes is not None and plan.kind != "distinct":
            plan = replace(plan, kind="official", passes=passes, num_samples=None)
        if ranks is not None and plan.kind == "official":
            plan = replace(plan, ranks=ranks)
        return plan

    def for_dataset(self, data_kind: str) -> "SamplePlan":
        """The plan with its dataset-dependent defaults filled in (the official passes)."""
        if self.kind == "official" and self.passes is None:
            return replace(self, passes=OFFICIAL_SAMPLE_TIMES.get(data_kind, 1))
        return self

    def official_per_pass(self, num_images: int) -> int:
        """Images one pass of the official loop evaluates: R * floor(ceil(N_test / R) / batch) * batch."""
        return self.ranks * ((-(-num_images // self.ranks)) // self.batch) * self.batch

    def count(self, num_images: int, num_pairs: Optional[int] = None) -> Optional[int]:
        """N for a test split of `num_images` images (and `num_pairs` captions in all, needed by `all`)."""
        if self.kind == "official":
            return self.official_per_pass(num_images) * self.passes
        if self.kind == "all":
            return num_pairs
        return self.num_samples

    def describe(self, num_images: Optional[int] = None) -> str:
        if self.kind == "official":
            used = f"{self.official_per_pass(num_images):,} of {num_images:,}" if num_images else "the"
            name = ("official test loop (test.sh, 1 process)" if self.ranks == 1 else
                    f"official in-training test (train.py, {self.ranks} processes)")
            return (f"{name}: {self.passes} pass(es) over {used} test images ({OFFICIAL_SUBSET}, drop_last "
                    f"batches of {self.batch} per process), one random caption per image per pass (seed {self.seed})")
        if self.kind == "fixed":
            return (f"{self.num_samples:,} samples cycling over the test images in order, one random caption per "
                    f"image per cycle (seed {self.seed})")
        if self.kind == "distinct":
            return (f"{self.num_samples:,} (image, caption) pairs drawn without replacement from all pairs of the "
                    f"test split (numpy default_rng({self.seed}).choice)")
        return "every (image, caption) pair of the test split once, in order"

    def settings(self) -> dict:
        return {"plan": self.kind, "passes": self.passes, "plan_num_samples": self.num_samples,
                "plan_batch": self.batch, "plan_ranks": self.ranks,
                "plan_subset": OFFICIAL_SUBSET if self.kind == "official" else SPLIT_ORDER, "seed": self.seed}

    def resolve(self, table: list) -> Resolved:
        """`table`: [(key, [captions])] of the test split, in split order."""
        if not table:
            raise UserError("the evaluation split is empty")
        n_img = len(table)
        images, captions = [], []
        if self.kind == "official":
            if self.official_per_pass(n_img) == 0:
                per = "" if self.ranks == 1 else f" per process ({self.ranks} processes)"
                raise UserError(f"the official test loop needs at least one batch of {self.batch} test images"
                                f"{per}; the split has {n_img} (set eval.num_samples for a fixed plan)")
            order = [i for r in range(self.ranks) for i in official_rank_indices(n_img, self.ranks, r, self.batch)]
            for p in range(self.passes):  # the epoch is never set: every pass sees the same permutation
                for i in order:
                    images.append(i)
                    captions.append(caption_choice(table[i][1], self.seed, p, table[i][0]))
        elif self.kind == "fixed":
            for s in range(self.num_samples):
                cycle, i = divmod(s, n_img)
                images.append(i)
                captions.append(caption_choice(table[i][1], self.seed, cycle, table[i][0]))
        elif self.kind == "distinct":
            for i, j in select_captions([caps for _, caps in table], self.num_samples, self.seed):
                images.append(i)
                captions.append(table[i][1][j])
        else:
            for i, (_, caps) in enumerate(table):
                images += [i] * len(caps)
                captions += list(caps)
        return Resolved(images, captions, self.describe(n_img))
