"""The configuration schemas, as omegaconf structured dataclasses: one run (model, data, train, eval) and the site
defaults of bench.yaml. What follows from other settings is filled in by `config.resolve`."""
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from models import GALIPConfig
from models.clipgen.config import ClipGenConfig


@dataclass
class DataConfig:
    kind: str = "synthetic"           # synthetic | cub | coco | captions | webdataset
    root: Optional[str] = None        # dataset folder (cub, coco, captions)
    size: Optional[int] = None        # image side fed to the model; None: follows the model (the official canvas:
                                      # 256 for the 224 px generator; config.resolve.canvas_size)
    seed: int = 0                     # synthetic scenes
    num_train: int = 2000             # synthetic split sizes
    num_test: int = 500
    shards: Optional[str] = None      # webdataset brace pattern, e.g. "cc12m/{00000..01242}.tar"
    test_shards: Optional[str] = None # webdataset shards of the test split (default: `shards`)
    manifest: Optional[str] = None    # captions kind: JSONL/CSV manifest (else a folder of image + .txt pairs)
    skip_corrupt: bool = False        # skip (and count) images that do not decode instead of stopping
    embedding_cache: bool = False     # cache sentence embeddings per (dataset, split, CLIP weights)
    num_workers: Optional[int] = None # loader processes per training process (0: read in the training process);
                                      # None: its share of the CPUs less one, at most 8. Results do not depend on it
    decode: str = "pil"               # training JPEGs: pil (in the loader workers, as the official loader) |
                                      # torchvision (decode_jpeg on the training device: nvJPEG on a GPU)


@dataclass
class TrainConfig:
    steps: Optional[int] = 100_000      # optimiser steps (each one D update then one G update) ...
    epochs: Optional[int] = None        # ... or epochs of the training split, as the official cfg's max_epoch (steps
                                        # per epoch as its loader: floor(ceil(N / GPUs) / batch)); exactly one of the
                                        # two is set (a grid in epochs writes `steps: null`)
    batch_size: int = 64                # per process and micro-batch: what one forward pass sees (the paper: 64 per GPU;
                                        # the mismatched captions are rolled within it)
    global_batch: Optional[int] = None  # the recipe's samples per optimiser step, batch_size x processes x grad_accum;
                                        # set: grad_accum follows the processes (8 GPUs x 1, or 1 x 8 micro-batches)
    processes: Optional[int] = None     # data-parallel processes of the run; None: the executor's (SLURM: gpus_per_node
                                        # x nodes; local: this machine's GPUs as global_batch needs them, else 1)
    grad_accum: Optional[int] = None    # micro-batches of batch_size per process and step; None: global_batch /
                                        # (batch_size x processes), or 1
    noise: str = "per_rank"             # official: every process draws the same noise each step (the official code
                                        # seeds all ranks alike); per_rank: each (virtual) rank its own
    tf32: bool = False                  # TF32 matmuls/convolutions on Ampere+ GPUs, as PyTorch 1.9-1.11 (the official
                                        # environment) had by default
    recipe_change: Optional[str] = None # set by `run --allow-recipe-change`: how this run departs from its grid's recipe
    lr_g: float = 1e-4
    lr_d: float = 4e-4                  # netD + netC
    beta1: float = 0.0
    beta2: float = 0.9
    sim_w: float = 4.0                  # weight of the CLIP text-image similarity term in the G loss
    precision: str = "fp32"             # fp32 | fp16 (GradScaler, as the official --mixed_precision) | bf16
    seed: int = 100                     # the official seed; each rank adds its rank
    channels_last: bool = False         # netG, netD, netC and the real images in channels_last layout (faster
                                        # convolutions on tensor-core GPUs; the same step up to rounding)
    device: str = "auto"                # auto | cpu | cuda
    threads: int = 0                    # torch CPU threads; 0: the job's CPUs (SLURM_CPUS_PER_TASK) or the machine's.
                                        # CPU results change with it (~1e-6): pin it for bit-identical reruns
    ckpt_every: int = 1000
    keep_ckpts: int = 3                 # the last K checkpoints are kept (0: all, as the official code)
    keep_best: List[str] = field(default_factory=list)  # and the best checkpoint by each of these metrics (e.g. fid_galip)
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
    bootstrap: int = 100                # resamples of the generated features for each FID's 95% interval (0: off)
    keep_samples: str = "final"         # final: the final evaluation keeps its per-sample data (features, CLIP cosines)
                                        # in the run folder for paired comparisons between runs | none
    synthesis: str = "faithful"         # faithful (the official loop's fp32/TF32 numerics) | fast (bf16, channels_last,
                                        # compiled on a GPU): recorded, and compared only with its own kind
    extractor: str = "default"          # default | tiny (random-init small extractors for the smoke profile)
    official_ranks: int = 1             # the official test loop's sampler processes: 1 = test.sh (the released test
                                        # script), 8 = the test inside train.py on 8 GPUs (CUB: 30,720 vs 34,560 images)
    data: Optional[DataConfig] = None   # evaluation captions/references when they differ from the training data


CLIPGEN_STAGES = ("vqgan", "prior")
CLIPGEN_LR_SCALINGS = ("per_image", "fixed")
CLIPGEN_PRIOR_SCHEDULES = ("cosine", "constant")
CLIPGEN_DECAY_SCOPES = ("linear_weights", "all")
CLIPGEN_PRECISIONS = ("fp32", "bf16")
SYSTEMS = ("galip", "clipgen")


@dataclass
class ClipGenRunConfig:
    """The CLIP-GEN baseline (`system: clipgen`): its model and each stage's optimiser and schedule. It uses
    `model.clip` (the frozen CLIP), `data`, `train` (length, batch, processes, precision, logging, checkpoints) and
    `eval` as GALIP runs do. "HF" below: the HFAiLab clip-gen reimplementation (train_vqgan.py, train_gpt.py,
    utils.py)."""
    stage: str = "vqgan"                # vqgan (stage 1: the image tokenizer) | prior (stage 2: from a vqgan run)
    model: ClipGenConfig = field(default_factory=ClipGenConfig)
    perceptual: str = "lpips"           # lpips: the VQGAN's LPIPS-VGG term (weights `vgg16` read locally) | none
    lr_scaling: str = "per_image"       # per_image: lr_vqgan, lr_prior (and prior_min_lr) are rates per image, times
                                        # train.global_batch (HF: base_lr x total batch) | fixed: used as they are
    lr_vqgan: float = 4.5e-6            # VQGAN and its discriminator, constant (HF and taming: 4.5e-6 per image)
    betas_vqgan: List[float] = field(default_factory=lambda: [0.5, 0.9])   # HF and taming: Adam (0.5, 0.9)
    adversarial_start_epochs: Optional[float] = 1.0  # the adversarial term and the discriminator's updates start after
                                        # this many epochs (HF: disc_start_epochs = 1, no D update in epoch 0);
                                        # None: clipgen.model.vqgan.adversarial_start, in steps
    lr_prior: float = 5e-4 / 256        # = 1.953125e-06 per image (HF train_gpt.py: base_lr = 5e-4 / 256)
    betas_prior: List[float] = field(default_factory=lambda: [0.9, 0.95])  # HF (GPT-style AdamW)
    prior_schedule: str = "cosine"      # cosine: linear warm-up, then a half cosine to prior_min_lr at the run's last
                                        # step (HF: CosineLRWarmUp) | constant: lr_prior throughout
    prior_warmup_epochs: float = 20.0   # HF: warmup_epochs = 20 (of 200 epochs), lr x epoch / 20, epoch fractional
    prior_min_lr: float = 0.0           # the cosine's floor, in lr_prior's units (HF: min_lr = 0)
    weight_decay_prior: float = 0.01    # HF configure_optimizer: 0.01
    weight_decay_scope: str = "linear_weights"  # linear_weights: the weights of Linear and attention modules only
                                        # (HF configure_optimizer: no decay for biases, norms, embeddings, position
                                        # embeddings) | all: every prior parameter (this bench's earlier behaviour)


@dataclass
class RunConfig:
    grid: str = "adhoc"
    variant: str = "default"
    seed: int = 0                       # the grid seed (added to train.seed)
    system: str = "galip"               # galip | clipgen (the CLIP-GEN baseline, configured under `clipgen`)
    after: Optional[str] = None         # run id this run starts from (a grid variant's `after:`; CLIP-GEN's prior
                                        # stage reads its VQGAN from that run's last checkpoint)
    clipgen: ClipGenRunConfig = field(default_factory=ClipGenRunConfig)
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

