"""Checks made before a grid writes anything or submits a job: every run's data, CLIP weights and metric weights
are where the config says. A mistake then costs one clear line, not a failed job array. (Per-image problems,
such as a missing caption file, still surface in the job: `galip-bench data check` finds those up front.)"""
from galip_bench.checkpoints.clip import check_clip_weights
from galip_bench.config.schema import DataConfig
from galip_bench.data import require_root, shard_pattern
from galip_bench.data.layouts import CAPTION_FOLDER, coco_folder, cub_folders, require_dir, require_manifest, split_file
from galip_bench.errors import UserError
from galip_bench.evaluation.planning import preview
from galip_bench.evaluation.protocols import protocol_class
from galip_bench.metrics.weights import resolve_weights


def check_data(cfg: DataConfig, split: str) -> None:
    """The folders and file lists of a split exist (the layouts' own checks, without reading every entry)."""
    if cfg.kind == "webdataset":
        from galip_bench.data.shards import expand_shards
        expand_shards(shard_pattern(cfg, split))
        return
    if cfg.kind not in ("cub", "coco", "captions"):
        return  # synthetic needs nothing; build_dataset names the valid kinds
    require_root(cfg)
    if cfg.kind == "captions":
        if cfg.manifest:
            require_manifest(cfg.manifest)
        else:
            require_dir(cfg.root, CAPTION_FOLDER)
        return
    root = cub_folders(cfg.root)[0] if cfg.kind == "cub" else coco_folder(cfg.root)
    split_file(root, split)


def check_run(cfg, site, allow_download: bool = False) -> None:
    """Raise a UserError naming the first missing input of one run (a RunConfig), or an evaluation plan that cannot
    run (too few samples for FID, required statistics missing)."""
    check_data(cfg.data, "train")
    if cfg.eval.protocols:
        check_data(cfg.eval.data or cfg.data, "test")
    check_clip_weights(cfg.model.clip)
    if cfg.system == "clipgen" and cfg.clipgen.stage == "vqgan" and cfg.clipgen.perceptual == "lpips":
        resolve_weights("vgg16", site.paths.weights, "clipgen.perceptual=lpips", allow_download)
    if cfg.eval.extractor != "tiny" and not allow_download:
        for name in cfg.eval.protocols:
            for weights in protocol_class(name).weights_needed():
                resolve_weights(weights, site.paths.weights, name)
    if cfg.eval.protocols:
        preview(cfg.eval, cfg.eval.data or cfg.data)


def check_grid(grid, site, allow_download: bool = False) -> None:
    for run in grid.runs:
        try:
            check_run(run.config, site, allow_download)
        except UserError as err:
            raise UserError(f"{grid.path}: run '{run.name}' (seed {run.seed}): {err}") from None
