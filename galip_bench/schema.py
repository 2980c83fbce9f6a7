"""The resolved configuration of one run, and the site defaults of bench.yaml, as omegaconf structured dataclasses."""
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from galip_bench.data.config import DataConfig
from galip_bench.errors import UserError
from models import GALIPConfig


@dataclass
class TrainConfig:
    steps: Optional[int] = 100_000      # optimiser steps (each one D update then one G update) ...
    epochs: Optional[int] = None        # ... or epochs of the training split, as the official cfg's max_epoch (steps
                                        # per epoch as its loader: floor(ceil(N / GPUs) / batch)); exactly one of the
                                        # two is set (a grid in epochs writes `steps: null`)
    batch_size: int = 64                # per process (the paper: 8 GPUs x 64)
    grad_accum: int = 1                 # micro-batches per optimiser step
    lr_g: float = 1e-4
    lr_d: float = 4e-4                  # netD + netC
    beta1: float = 0.0
    beta2: float = 0.9
    sim_w: float = 4.0                  # weight of the CLIP text-image similarity term in the G loss
    precision: str = "fp32"             # fp32 | fp16 (GradScaler, as the official --mixed_precision) | bf16
    seed: int = 100                     # the official seed; each rank adds its rank
    device: str = "auto"                # auto | cpu | cuda
    threads: int = 0                    # torch CPU threads; 0: the job's CPUs (SLURM_CPUS_PER_TASK) or the machine's.
                                        # CPU results change with it (~1e-6): pin it for bit-identical reruns
    ckpt_every: int = 1000
    keep_ckpts: int = 3
    log_every: int = 50
    sample_every: int = 5000
    eval_every: int = 0                 # 0: evaluate at the end only
    num_sample_images: int = 16


@dataclass
class EvalConfig:
    protocols: List[str] = field(default_factory=lambda: ["fid_galip", "clip_score_galip"])
    # the sample plan (galip_bench.evaluation.plans): by default each protocol's own, for most the official test
    # loop (passes over the test split in drop_last batches of 64; passes = the official sample_times: COCO 1, CUB 12)
    num_samples: Optional[int] = None   # N samples cycling over the test images instead (a fixed plan)
    passes: Optional[int] = None        # passes of the official loop instead of the dataset's sample_times
    batch_size: int = 64                # generation batch (the CLIP score's averaging batch is the plan's, 64)
    seed: int = 0                       # noise stream and caption choices
    reference: str = "auto"             # GALIP-protocol statistics: auto (GALIP's released npz when the dataset has
                                        # it, else the test split), npz (required), split
    extractor: str = "default"          # default | tiny (random-init small extractors for the smoke profile)
    data: Optional[DataConfig] = None   # evaluation captions/references when they differ from the training data


@dataclass
class RunConfig:
    grid: str = "adhoc"
    variant: str = "default"
    seed: int = 0                       # the grid seed (added to train.seed)
    model: GALIPConfig = field(default_factory=GALIPConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class PathsConfig:
    data: str = "data"
    weights: str = "weights"
    runs: str = "runs"
    cache: str = ".cache/galip_bench"


@dataclass
class SlurmConfig:
    partition: Optional[str] = None
    account: Optional[str] = None
    gpus_per_node: int = 1
    cpus_per_task: int = 8
    mem_gb: int = 64
    time_min: int = 60 * 24
    constraint: Optional[str] = None
    array_parallelism: int = 16
    nodes: int = 1
    additional: Dict[str, str] = field(default_factory=dict)   # extra #SBATCH --key=value lines
    setup: List[str] = field(default_factory=list)             # shell lines run before the job (module load ...)


@dataclass
class SiteConfig:
    paths: PathsConfig = field(default_factory=PathsConfig)
    executor: str = "local"             # local | slurm | debug
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    max_local_parallel: int = 1         # local executor: runs trained at once
    local_timeout_min: int = 60 * 24 * 7  # local executor: wall-clock limit of one run


def canvas_size(img_size: int) -> int:
    """The training canvas for a generator output size: the power of two at or above it, as the official code
    trains its 224 px generator on 256 px crops (cfg imsize 256)."""
    return 1 << max(int(img_size) - 1, 1).bit_length()


def _check_range(section: str, obj, minimum: dict) -> None:
    for name, low in minimum.items():
        value = getattr(obj, name)
        if value is not None and value < low:
            raise UserError(f"{section}.{name} must be at least {low}, got {value}")


def resolve_run_config(cfg: RunConfig, source: str = "config") -> RunConfig:
    """Fill what follows from other settings (data sizes follow the model) and refuse what cannot run: ranges,
    a training length that is not exactly one of steps/epochs, and data smaller than the generator's output."""
    tc = cfg.train
    if (tc.steps is None) == (tc.epochs is None):
        both = f"train.steps={tc.steps} and train.epochs={tc.epochs}"
        raise UserError(f"{source}: set exactly one of train.steps and train.epochs (got {both}; "
                        "set the other to null)")
    try:
        _check_range("train", tc, {"steps": 1, "epochs": 1, "batch_size": 1, "grad_accum": 1, "ckpt_every": 1,
                                   "keep_ckpts": 1, "log_every": 1, "sample_every": 0, "eval_every": 0,
                                   "num_sample_images": 1, "threads": 0})
        _check_range("eval", cfg.eval, {"num_samples": 2, "passes": 1, "batch_size": 1})
        for name in ("lr_g", "lr_d"):
            if getattr(tc, name) <= 0:
                raise UserError(f"train.{name} must be positive, got {getattr(tc, name)}")
        if tc.batch_size % tc.grad_accum:
            raise UserError(f"train.batch_size={tc.batch_size} is not divisible by train.grad_accum={tc.grad_accum}")
        if cfg.eval.num_samples is not None and cfg.eval.passes is not None:
            raise UserError("eval.num_samples and eval.passes are exclusive (a fixed N, or passes of the official "
                            "test loop)")
        for section, data in (("data", cfg.data), ("eval.data", cfg.eval.data)):
            if data is not None:
                resolve_data_size(data, cfg.model.img_size, section)
    except UserError as err:
        raise UserError(f"{source}: {err}") from None
    return cfg


def resolve_data_size(data, img_size: int, section: str = "data"):
    """data.size None -> the canvas of the generator; a size under the generator's output is refused."""
    if data.size is None:
        data.size = canvas_size(img_size)
    if data.size < img_size:
        raise UserError(f"{section}.size={data.size} is smaller than the generator's output model.img_size="
                        f"{img_size}: real images would be upsampled for D and for the reference statistics; "
                        f"use at least {img_size} (the official canvas for it is {canvas_size(img_size)})")
    return data
