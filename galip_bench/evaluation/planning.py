"""Settling an evaluation before it runs: the protocol instances an EvalConfig asks for (their plans resolved for the
dataset), the test split's caption table, where each reference comes from, the sample-count check, and `preview`:
what will run, from the split sizes alone (for `run --dry-run` and the preflight checks), and the process-group
timeout an evaluation needs (`evaluation_timeout`)."""
import datetime

import torch
from torch.utils.data import IterableDataset

from galip_bench.data import build_dataset, legacy_stats_path, official_stats_path, split_size
from galip_bench.errors import UserError
from galip_bench.evaluation.protocols import protocol_class
from galip_bench.evaluation.synthesis import SYNTHESIS_MODES

REFERENCE_MODES = ("auto", "npz", "split")


def build_protocols(eval_cfg, data_kind: str, options=None) -> list:
    """The protocol instances an EvalConfig asks for, with their plans resolved for the data kind; `options`:
    {protocol: {option: value}} (e.g. the speed protocol's batch sizes)."""
    if eval_cfg.extractor not in ("default", "tiny"):
        raise UserError(f"eval.extractor must be default or tiny, got {eval_cfg.extractor!r}")
    if eval_cfg.reference not in REFERENCE_MODES:
        raise UserError(f"eval.reference must be one of {', '.join(REFERENCE_MODES)}, got {eval_cfg.reference!r}")
    if not eval_cfg.protocols:
        raise UserError("no metric protocol given (e.g. fid_galip,clip_score_galip)")
    if eval_cfg.batch_size < 1:
        raise UserError(f"the generation batch size must be at least 1, got {eval_cfg.batch_size}")
    if eval_cfg.synthesis not in SYNTHESIS_MODES:
        raise UserError(f"eval.synthesis must be one of {', '.join(SYNTHESIS_MODES)}, got {eval_cfg.synthesis!r}")
    if eval_cfg.bootstrap < 0:
        raise UserError(f"the bootstrap resamples must be at least 0, got {eval_cfg.bootstrap}")
    if getattr(eval_cfg, "keep_samples", "final") not in ("final", "none"):
        raise UserError(f"eval.keep_samples must be final or none, got {eval_cfg.keep_samples!r}")
    if len(set(eval_cfg.protocols)) != len(eval_cfg.protocols):
        raise UserError(f"protocols listed twice: {', '.join(eval_cfg.protocols)}")
    out = []
    for name in eval_cfg.protocols:
        cls = protocol_class(name)
        plan = cls.plan.with_overrides(eval_cfg.num_samples, eval_cfg.passes, eval_cfg.seed,
                                       eval_cfg.official_ranks).for_dataset(data_kind)
        proto = cls(plan=plan, options=(options or {}).get(name), smoke=eval_cfg.extractor == "tiny",
                    synthesis=eval_cfg.synthesis)
        if proto.kind != "speed" and not proto.smoke:  # the smoke profile rewrites any grid onto synthetic data
            proto.check_data(data_kind)
        out.append(proto)
    return out


def check_sample_count(proto, n: int) -> None:
    """FID needs a full-rank covariance: more samples than feature dimensions; a protocol may need a minimum of its
    own (the Inception Score: one sample per split). Checked before any generation."""
    dim = proto.dim()
    if dim is not None and n <= dim:
        raise UserError(f"{proto.name}: {n:,} samples cannot give a full-rank covariance of its {dim}-d features "
                        f"(FID needs more samples than dimensions): evaluate more than {dim} samples "
                        "(eval.num_samples / --num, or the official plan)")
    need = proto.min_samples()
    if need and n < need:
        raise UserError(f"{proto.name}: {n:,} samples are fewer than the {need} it needs ({proto.min_samples_why}): "
                        "evaluate more (eval.num_samples / --num)")


def preview(eval_cfg, data_cfg, options=None) -> list:
    """What an evaluation will do, from the split sizes alone (no caption or image is read): one dict per protocol
    with N, the plan and the reference. Raises the UserErrors the Evaluator would (N too small, statistics
    required but missing, a protocol on the wrong dataset)."""
    protos = build_protocols(eval_cfg, data_cfg.kind, options)
    quality = [p for p in protos if p.kind != "speed"]
    if quality and split_size(data_cfg, "test") is None:
        caption_table(data_cfg)  # raises: streamed shards have no fixed test split
    n_img = split_size(data_cfg, "test") if quality else None
    rows = []
    for p in protos:
        if p.kind == "speed":
            rows.append({"protocol": p.name, "n": None, "plan": f"batch sizes {p.option('batch_sizes')}",
                         "reference": "n/a"})
            continue
        n = p.plan.count(n_img)
        if n is not None:
            check_sample_count(p, n)
        reference = "n/a"
        if p.has_reference:
            source, where = reference_of(p, data_cfg, eval_cfg.reference)
            reference = (f"GALIP's statistics {where}" if source == "npz" else
                         "the test split through the same pipeline (computed once, cached)")
        rows.append({"protocol": p.name, "n": n, "plan": p.plan.describe(n_img), "reference": reference})
    return rows


def caption_table(data_cfg) -> list:
    """[(key, [captions])] of the evaluation split, in split order, without decoding an image."""
    dataset = build_dataset(data_cfg, "test", train=False)
    if isinstance(dataset, IterableDataset):
        raise UserError(f"evaluation needs a dataset with a fixed test split, not streamed {data_cfg.kind} "
                        "shards: set eval.data (e.g. {kind: coco, root: data/coco})")
    return dataset.caption_table()


def reference_of(proto, data_cfg, mode: str):
    """('npz', path) or ('split', 'test'): where a features protocol's reference statistics come from."""
    if proto.reference_source == "galip" and not proto.smoke and mode != "split":
        path = legacy_stats_path(data_cfg)
        if path is not None:
            return "npz", path
        if mode == "npz":
            expected = official_stats_path(data_cfg) or f"{data_cfg.root}/npz/*.npz"
            raise UserError(f"eval.reference=npz: {proto.name} needs GALIP's released statistics {expected} "
                            "(mu, sigma; from the GALIP data release), not found")
    return "split", "test"


# The process-group timeout of an evaluation (`evaluation_timeout`). The longest wait at a collective is an evaluation:
# the ranks wait for the slowest share's generation, and after the merge the others wait (at training's barrier) while
# rank 0 computes the reference statistics (the test split through the extractor, when not cached) and the metrics.
# The budget counts every generated sample of every distinct plan (not the share of one rank: generous whatever the
# number of processes) and the test split once per protocol with a reference (even when cached), at a per-image time
# far above the measured ones: GALIP generates at 0.04 s per image on an RTX 3090 (paper) and a GPU evaluation
# (generation, CLIP, Inception) runs at ~0.01 s per image on an H100, so 0.1 s per image on a GPU (10x); a CPU
# generates a 224 px GALIP image in ~0.5 s, so 2 s per image there. Plus 10 minutes for what does not scale with N
# (loading extractors, torch.compile of fast synthesis, sqrtm, the bootstrap's eigendecompositions, KID's subsets),
# and never under 30 minutes, torch's own default (a hang is then still reported within hours, not days: COCO's
# 40,448 samples + the 40,504-image reference on GPUs give 2 h 25 min).
TIMEOUT_PER_IMAGE_S = {"cuda": 0.1, "cpu": 2.0}
TIMEOUT_FIXED_S = 600
TIMEOUT_FLOOR_S = 1800
ALL_PAIRS_PER_IMAGE = 10  # an `all` plan's N bound without reading the captions: CUB has 10 captions per image, COCO 5


def evaluation_timeout(eval_cfg, data_cfg, device=None) -> datetime.timedelta:
    """The process-group timeout for a multi-process evaluation of `eval_cfg` on the evaluation data `data_cfg` (a
    run's `cfg.eval.data or cfg.data`), from the plans' N and the test split's size (see the budget above); `device`
    (a torch device or its type) picks the per-image budget, by default the GPU's when one is visible."""
    kind = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    per_image = TIMEOUT_PER_IMAGE_S.get(kind, TIMEOUT_PER_IMAGE_S["cpu"])
    images = 0
    protos = [p for p in build_protocols(eval_cfg, data_cfg.kind if data_cfg is not None else "synthetic")
              if p.kind != "speed"]
    if protos:
        n_img = split_size(data_cfg, "test") or 0
        for plan in dict.fromkeys(p.plan for p in protos):  # generated once per distinct plan
            images += plan.count(n_img, n_img * ALL_PAIRS_PER_IMAGE) or 0
        images += n_img * sum(p.has_reference for p in protos)
    seconds = max(TIMEOUT_FLOOR_S, TIMEOUT_FIXED_S + per_image * images)
    return datetime.timedelta(seconds=seconds)
