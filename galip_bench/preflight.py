"""Checks made before a grid writes anything or submits a job: every run's data, CLIP weights and metric weights
are where the config says. A mistake then costs one clear line, not a failed job array. (Per-image problems,
such as a missing caption file, still surface in the job: `galip-bench data check` finds those up front.)"""
from pathlib import Path

from galip_bench.clip_weights import check_clip_weights
from galip_bench.data.config import DataConfig
from galip_bench.data.layouts import require_dir
from galip_bench.errors import UserError
from galip_bench.metrics.registry import get_protocol
from galip_bench.metrics.weights import resolve_weights


def check_data(cfg: DataConfig, splits=("train", "test")) -> None:
    if cfg.kind == "synthetic":
        return
    if cfg.kind == "webdataset":
        _check_shards(cfg, splits)
        return
    if cfg.kind == "captions" and cfg.manifest:
        if not Path(cfg.manifest).is_file():
            raise UserError(f"data.manifest {cfg.manifest} not found: expected a JSONL or CSV file of (image, caption)")
        return
    if cfg.kind not in ("cub", "coco", "captions"):
        return  # build_dataset names the valid kinds
    if not cfg.root:
        raise UserError(f"data.kind={cfg.kind} needs data.root (the dataset folder)")
    root = require_dir(cfg.root, f"the {cfg.kind} data root (data.root)")
    if cfg.kind == "cub":
        require_dir(root / "CUB_200_2011", "the CUB_200_2011 folder from Caltech")
    if cfg.kind == "coco":
        require_dir(root / "images", "COCO 2014 images under images/")
    if cfg.kind in ("cub", "coco"):
        for split in splits:
            if not (root / split / "filenames.pickle").is_file():
                raise UserError(f"split file {root / split / 'filenames.pickle'} not found: expected a pickled list "
                                "of keys (from the GALIP/DF-GAN birds.zip or coco.zip metadata)")


def _check_shards(cfg: DataConfig, splits) -> None:
    try:
        from galip_bench.data.shards import expand_shards
    except ImportError:
        raise UserError("data.kind=webdataset needs the webdataset package: pip install 'galip-bench[webdataset]'") \
            from None
    for split in splits:
        pattern = cfg.test_shards if (split == "test" and cfg.test_shards) else cfg.shards
        if not pattern:
            raise UserError("data.kind=webdataset needs data.shards, e.g. 'cc12m/{00000..01242}.tar'")
        expand_shards(pattern)


def check_run(cfg, site, allow_download: bool = False) -> None:
    """Raise a UserError naming the first missing input of one run (a RunConfig)."""
    check_data(cfg.data, ("train",))
    if cfg.eval.protocols:
        check_data(cfg.eval.data or cfg.data, ("test",))
    check_clip_weights(cfg.model.clip)
    if cfg.eval.extractor == "tiny" or allow_download:
        return
    for name in cfg.eval.protocols:
        for weights in get_protocol(name).weights_needed():
            resolve_weights(weights, site.paths.weights, name)


def check_grid(grid, site, allow_download: bool = False) -> None:
    for run in grid.runs:
        try:
            check_run(run.config, site, allow_download)
        except UserError as err:
            raise UserError(f"{grid.path}: run '{run.name}' (seed {run.seed}): {err}") from None
