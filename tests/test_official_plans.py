"""The official plan is the official test loop's subset: the images torch's own DistributedSampler(shuffle=True,
seed=0) + DataLoader(batch_size=64, drop_last=True) yield, for test.sh (1 process) and the test inside train.py
(8 processes), pass after pass with the epoch never set; N and the records' settings follow."""
import pytest
from torch.utils.data import DataLoader, DistributedSampler

from galip_bench.config.schema import EvalConfig
from galip_bench.errors import UserError
from galip_bench.evaluation.planning import build_protocols
from galip_bench.evaluation.plans import SamplePlan
from galip_bench.evaluation.spec import PLAN_KEYS, SETTING_DEFAULTS


def official_loader(n: int, ranks: int, passes: int = 1) -> list:
    """Independent reference: what the official prepare_dataloaders + calculate_FID_CLIP_sim iterate, every pass of
    every rank's loader (set_epoch is never called for the test sampler), batches of each rank in order."""
    out = []
    for _ in range(passes):
        for rank in range(ranks):
            sampler = DistributedSampler(range(n), num_replicas=ranks, rank=rank, shuffle=True, seed=0)
            loader = DataLoader(range(n), batch_size=64, drop_last=True, sampler=sampler)
            out += [int(i) for batch in loader for i in batch]
    return out


def table(n: int) -> list:
    return [(f"key{i}", [f"image {i} caption {j}" for j in range(3)]) for i in range(n)]


# COCO's 40,504 and CUB's 2,933 test images; 1,031: odd, several batches per rank; 505 on 8 ranks: ceil(505 / 8) is
# exactly one batch, so the wrap-around padding (7 repeated images) lands inside the kept batches
@pytest.mark.parametrize("n, ranks", [(40504, 1), (40504, 8), (2933, 1), (2933, 8), (1031, 1), (1031, 8), (505, 8)])
def test_resolved_images_are_what_the_official_loader_yields(n, ranks):
    passes = 2 if n < 3000 else 1
    resolved = SamplePlan(passes=passes, ranks=ranks).resolve(table(n))
    expected = official_loader(n, ranks, passes)
    assert resolved.images == expected
    assert resolved.n == len(expected) == SamplePlan(passes=passes, ranks=ranks).count(n)
    # every 64 consecutive samples are one official batch (the CLIP score averages per batch)
    per_rank = len(expected) // (ranks * passes)
    assert per_rank % 64 == 0
    # one caption of the image's own per sample, redrawn per pass
    assert all(c.startswith(f"image {i} caption") for i, c in zip(resolved.images, resolved.captions))
    if passes > 1:
        half = resolved.n // 2
        assert resolved.captions[:half] != resolved.captions[half:]


def test_official_sample_counts():
    """test.sh: COCO 40,448, CUB 12 x 2,880 = 34,560; the test inside train.py on 8 GPUs: CUB 5 batches x 64 x 8
    ranks x 12 passes = 30,720, COCO 40,448. COCO's 40,504 images split evenly over 8 ranks (5,063 each, no
    padding) and each keeps its first 5,056 positions, r::8 of the permutation's first 40,448: the same images as
    test.sh's, in another order (other batches of 64, whose equal sizes leave the mean of batch means unchanged)."""
    for kind, n, ranks, expected in [("coco", 40504, 1, 40448), ("cub", 2933, 1, 34560), ("cub", 2933, 8, 30720),
                                     ("coco", 40504, 8, 40448)]:
        plan = SamplePlan(ranks=ranks).for_dataset(kind)
        assert plan.count(n) == expected == len(official_loader(n, ranks, plan.passes)), (kind, ranks)
    assert SamplePlan(passes=12, ranks=8).resolve(table(2933)).n == 30720
    coco1, coco8 = (SamplePlan(passes=1, ranks=r).resolve(table(40504)).images for r in (1, 8))
    assert set(coco1) == set(coco8) and len(set(coco1)) == 40448 and coco1 != coco8
    cub1, cub8 = (set(SamplePlan(passes=1, ranks=r).resolve(table(2933)).images) for r in (1, 8))
    # every rank keeps its first K positions r::R, together the permutation's first R * K: CUB's 8 ranks evaluate
    # the first 2,560 of the 2,880 images test.sh evaluates
    assert len(cub1) == 2880 and len(cub8) == 2560 and cub8 < cub1


def test_the_coco_subset_differs_from_the_split_order_one():
    """The old plan kept the first 40,448 images in split order; the official loader keeps a seed-0 permutation's
    first 40,448: they differ in as many images as the sampler leaves out of the split-order subset."""
    official = official_loader(40504, 1)
    split_order = set(range(40448))
    differ = len(split_order - set(official))
    assert differ == len(set(official) - split_order) == 56  # the count, recomputed from torch's sampler
    resolved = SamplePlan(passes=1).resolve(table(40504))
    assert len(split_order - set(resolved.images)) == differ
    # negative control: the split-order subset would fail the comparison above
    assert list(range(40448)) != official


def test_settings_name_the_subset_and_the_ranks():
    test_sh, in_training = SamplePlan(passes=12), SamplePlan(passes=12, ranks=8)
    assert test_sh.settings()["plan_ranks"] == 1 and in_training.settings()["plan_ranks"] == 8
    assert test_sh.settings()["plan_subset"] == "DistributedSampler(shuffle=True, seed=0) epoch-0 permutation"
    for plan in (SamplePlan("fixed", num_samples=100), SamplePlan("distinct", num_samples=100), SamplePlan("all")):
        assert plan.settings()["plan_subset"] == "split order" and plan.settings()["plan_ranks"] == 1
    assert {"plan_ranks", "plan_subset"} <= set(PLAN_KEYS)
    # records written before these settings ran one process over the split order: they default to that, and so
    # no longer compare with an official record
    assert SETTING_DEFAULTS["plan_ranks"] == 1 and SETTING_DEFAULTS["plan_subset"] == "split order"
    assert SETTING_DEFAULTS["plan_subset"] != test_sh.settings()["plan_subset"]
    assert test_sh.describe(2933).startswith("official test loop (test.sh, 1 process): 12 pass(es) over 2,880 of "
                                             "2,933 test images")
    assert in_training.describe(2933).startswith("official in-training test (train.py, 8 processes): 12 pass(es) "
                                                 "over 2,560 of 2,933 test images")


def test_eval_config_official_ranks_reach_the_official_plans_only():
    cfg = EvalConfig(protocols=["fid_galip", "clip_score_galip", "zs_fid_coco_30k"], official_ranks=8)
    protos = {p.name: p for p in build_protocols(cfg, "coco")}
    assert protos["fid_galip"].plan == SamplePlan("official", passes=1, ranks=8)
    assert protos["clip_score_galip"].plan.ranks == 8
    assert protos["zs_fid_coco_30k"].plan.ranks == 1  # a distinct plan has no sampler processes
    assert protos["fid_galip"].settings_dict()["plan_ranks"] == 8
    fixed = build_protocols(EvalConfig(protocols=["fid_galip"], num_samples=500, official_ranks=8), "coco")[0]
    assert fixed.plan.kind == "fixed" and fixed.plan.ranks == 1
    with pytest.raises(UserError, match="official_ranks must be at least 1"):
        build_protocols(EvalConfig(protocols=["fid_galip"], official_ranks=0), "coco")
    with pytest.raises(UserError, match="per process \\(8 processes\\)"):
        SamplePlan(passes=1, ranks=8).resolve(table(504))  # ceil(504 / 8) = 63: no whole batch on any rank
