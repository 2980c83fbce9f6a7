"""What follows from other settings, and what cannot run: the data size follows the model, a run's length is
exactly one of steps or epochs, every numeric field is in range, the device is one torch knows. Applied to every
grid run and evaluation (settings given that the chosen model, data or evaluation does not read are refused by
`grids.applicable`)."""
from galip_bench.config.recipe import NOISE_MODES, inline_placement, resolve_parallelism
from galip_bench.config.schema import (CLIPGEN_DECAY_SCOPES, CLIPGEN_LR_SCALINGS, CLIPGEN_PRECISIONS,
                                       CLIPGEN_PRIOR_SCHEDULES, CLIPGEN_STAGES, SYSTEMS, RunConfig)
from galip_bench.devices import parse_device
from galip_bench.errors import UserError


def canvas_size(img_size: int) -> int:
    """The training canvas for a generator output size: the power of two at or above it, as the official code
    trains its 224 px generator on 256 px crops (cfg imsize 256)."""
    return 1 << max(int(img_size) - 1, 1).bit_length()


def _check_range(section: str, obj, minimum: dict) -> None:
    for name, low in minimum.items():
        value = getattr(obj, name)
        if value is not None and value < low:
            raise UserError(f"{section}.{name} must be at least {low}, got {value}")


def resolve_run_config(cfg: RunConfig, source: str = "config", placement=None,
                       allow_recipe_change: bool = False) -> RunConfig:
    """Fill what follows from other settings (data sizes follow the model; processes, micro-batches and the global
    batch follow the executor, `placement`) and refuse what cannot run: ranges, a training length that is not
    exactly one of steps/epochs, a global batch the processes cannot make, and data smaller than the generator's
    output."""
    tc = cfg.train
    if (tc.steps is None) == (tc.epochs is None):
        both = f"train.steps={tc.steps} and train.epochs={tc.epochs}"
        raise UserError(f"{source}: set exactly one of train.steps and train.epochs (got {both}; "
                        "set the other to null)")
    try:
        _check_range("train", tc, {"steps": 1, "epochs": 1, "batch_size": 1, "grad_accum": 1, "ckpt_every": 1,
                                   "keep_ckpts": 0, "log_every": 1, "sample_every": 0, "eval_every": 0,
                                   "num_sample_images": 1, "threads": 0, "global_batch": 1, "processes": 1})
        _check_range("eval", cfg.eval, {"num_samples": 2, "passes": 1, "batch_size": 1, "bootstrap": 0,
                                        "official_ranks": 1})
        for name in ("lr_g", "lr_d"):
            if getattr(tc, name) <= 0:
                raise UserError(f"train.{name} must be positive, got {getattr(tc, name)}")
        parse_device(tc.device, "train.device")  # the machine's GPUs are checked where the run will execute
        if tc.noise not in NOISE_MODES:
            raise UserError(f"train.noise must be one of {', '.join(NOISE_MODES)}, got {tc.noise!r}")
        change = resolve_parallelism(tc, placement or inline_placement(), allow_recipe_change)
        if change:
            tc.recipe_change = "; ".join(c for c in (tc.recipe_change, change) if c)
        if cfg.eval.num_samples is not None and cfg.eval.passes is not None:
            raise UserError("eval.num_samples and eval.passes are exclusive (a fixed N, or passes of the official "
                            "test loop)")
        out_size = resolve_system(cfg)
        for section, data in (("data", cfg.data), ("eval.data", cfg.eval.data)):
            if data is not None:
                _check_range(section, data, {"size": 8, "num_train": 1, "num_test": 1, "num_workers": 0})
                check_decode(data, section)
                resolve_data_size(data, out_size, section, canvas=cfg.system == "galip")
    except UserError as err:
        raise UserError(f"{source}: {err}") from None
    return cfg


DECODERS = ("pil", "torchvision")


def check_decode(data, section: str = "data") -> None:
    if data.decode not in DECODERS:
        raise UserError(f"{section}.decode must be one of {', '.join(DECODERS)}, got {data.decode!r}")
    if data.decode == "torchvision" and data.kind not in ("cub", "coco", "captions"):
        raise UserError(f"{section}.decode=torchvision decodes image files (cub, coco, captions); "
                        f"data.kind={data.kind} has none: use decode=pil")


def resolve_system(cfg: RunConfig) -> int:
    """Check the system's own settings; the generator's output size. CLIP-GEN's stage-1 runs have no text-to-image
    model yet: their eval.protocols are cleared (the prior stage evaluates)."""
    if cfg.system not in SYSTEMS:
        raise UserError(f"system must be one of {SYSTEMS}, got {cfg.system!r}")
    if cfg.system == "galip":
        return cfg.model.img_size
    cg = cfg.clipgen
    if cg.stage not in CLIPGEN_STAGES:
        raise UserError(f"clipgen.stage must be one of {CLIPGEN_STAGES}, got {cg.stage!r}")
    try:
        cg.model.validate()
    except ValueError as err:
        raise UserError(f"clipgen.model: {err}") from None
    if cg.stage == "prior" and not cfg.after:
        raise UserError("clipgen.stage=prior starts from a stage-1 (vqgan) run: give its grid variant "
                        "`after: <the vqgan variant>`")
    if cg.perceptual not in ("lpips", "none"):
        raise UserError(f"clipgen.perceptual must be lpips or none, got {cg.perceptual!r}")
    if cg.stage == "vqgan":
        cfg.eval.protocols = []
    _check_clipgen_training(cfg)
    size = cg.model.vqgan.img_size
    if cfg.data.size is not None and cfg.data.size != size:
        raise UserError(f"data.size={cfg.data.size}: the VQGAN takes {size} px images (clipgen.model.vqgan.img_size); "
                        f"set data.size={size} or leave it unset")
    return size


def _check_clipgen_training(cfg: RunConfig) -> None:
    """CLIP-GEN's optimiser, schedule and precision settings. Epoch-based settings on streamed data (no split size)
    are refused where the run starts (`train.clipgen_optim`)."""
    cg, tc = cfg.clipgen, cfg.train
    choices = (("lr_scaling", CLIPGEN_LR_SCALINGS), ("prior_schedule", CLIPGEN_PRIOR_SCHEDULES),
               ("weight_decay_scope", CLIPGEN_DECAY_SCOPES))
    for name, allowed in choices:
        if getattr(cg, name) not in allowed:
            raise UserError(f"clipgen.{name} must be one of {', '.join(allowed)}, got {getattr(cg, name)!r}")
    for name in ("lr_vqgan", "lr_prior"):
        if getattr(cg, name) <= 0:
            raise UserError(f"clipgen.{name} must be positive, got {getattr(cg, name)}")
    for name in ("prior_warmup_epochs", "prior_min_lr", "weight_decay_prior", "adversarial_start_epochs"):
        if getattr(cg, name) is not None and getattr(cg, name) < 0:
            raise UserError(f"clipgen.{name} must be at least 0, got {getattr(cg, name)}")
    if cg.prior_min_lr > cg.lr_prior:
        raise UserError(f"clipgen.prior_min_lr={cg.prior_min_lr} is above clipgen.lr_prior={cg.lr_prior}: the cosine "
                        "decays from lr_prior to prior_min_lr (both in the same units)")
    if tc.precision not in CLIPGEN_PRECISIONS:
        why = ": fp16 needs loss scaling, which the CLIP-GEN trainer does not do; use bf16" if tc.precision == "fp16" \
            else ""
        raise UserError(f"CLIP-GEN runs train in {' or '.join(CLIPGEN_PRECISIONS)}, not train.precision="
                        f"{tc.precision}{why}")
    if tc.grad_accum != 1:
        raise UserError(f"CLIP-GEN runs take no gradient accumulation (train.grad_accum={tc.grad_accum}): the "
                        "discriminator's BatchNorm normalises over the processes' batches, not micro-batches; make "
                        "the global batch with processes (train.processes, or the SLURM gpus_per_node x nodes)")


def resolve_data_size(data, img_size: int, section: str = "data", canvas: bool = True):
    """data.size None -> the canvas of the generator (GALIP) or its output size (CLIP-GEN: the VQGAN's input); a size
    under the generator's output is refused."""
    if data.size is None:
        data.size = canvas_size(img_size) if canvas else img_size
    if data.size < img_size:
        setting = "model.img_size" if canvas else "clipgen.model.vqgan.img_size"
        raise UserError(f"{section}.size={data.size} is smaller than the generator's output {setting}="
                        f"{img_size}: real images would be upsampled for D and for the reference statistics; "
                        f"use at least {img_size} (the official canvas for it is {canvas_size(img_size)})")
    return data


def check_site(site, source: str):
    """Ranges of bench.yaml's numbers."""
    try:
        _check_range("slurm", site.slurm, {"gpus_per_node": 0, "cpus_per_task": 1, "mem_gb": 1, "time_min": 1,
                                           "array_parallelism": 1, "nodes": 1})
        _check_range("site", site, {"max_local_parallel": 1, "local_timeout_min": 1})
    except UserError as err:
        raise UserError(f"{source}: {err}") from None
    return site


# ---- settings that do not apply ------------------------------------------------------------------------------------
