"""Training one CLIP-GEN run (`system: clipgen`), one stage per run, with `train_run`'s contract: resume from the
newest valid checkpoint, then the shared step loop (`train.hooks`: log, samples, evaluation, checkpoint; `stop_at`
as a kill, SIGTERM/SIGINT at a step boundary after a checkpoint). Every step reseeds from (seed, rank, step) after its
batch is read, so a resumed run replays the dropout and codebook re-seeding of an uninterrupted one.

Stage "vqgan" trains the VQGAN and its PatchGAN on images. Stage "prior" starts from the newest checkpoint of the
finished stage-1 run named by `after` (a sibling run folder), freezes the VQGAN and trains the prior on the images'
VQGAN tokens and CLIP image embeddings. Neither stage reads a caption. Both train data-parallel over
`train.processes` processes as the GALIP trainer does (`train.loop`: each reads its share of the data, gradients are
averaged before each update, rank 0 writes checkpoints, status and sample sheets, every rank evaluates), in fp32 or
bf16 (`train.precision`), with the HFAiLab reference's rates and schedules (`train.clipgen_optim`)."""
import json
from dataclasses import asdict
from types import SimpleNamespace

import torch
from tqdm import tqdm

from galip_bench.checkpoints.clip import build_clip
from galip_bench.checkpoints.format import load_nets, save_clipgen_checkpoint, system_of
from galip_bench.checkpoints.loader import CLIPGEN_CLIP_TAPS
from galip_bench.config.recipe import global_batch_of
from galip_bench.data import build_dataset
from galip_bench.devices import resolve_device
from galip_bench.errors import UserError
from galip_bench.metrics.weights import resolve_weights
from galip_bench.progress import progress_options
from galip_bench.runs.rundir import RunDir
from galip_bench import distributed
from galip_bench.train.amp import AMP
from galip_bench.train.batches import Batches, seed_step
from galip_bench.train.clipgen_optim import adversarial_start, prior_optimizer, prior_schedule, scaled_rate
from galip_bench.train.clipgen_steps import prior_step, vqgan_step
from galip_bench.train.global_batchnorm import global_batchnorm
from galip_bench.train.length import steps_per_epoch, total_steps
from galip_bench.train.hooks import Hooks, step_loop
from galip_bench.train.loader import StepLoader
from galip_bench.train.perceptual import build_lpips
from galip_bench.train.resume import check_layout, latest_valid_checkpoint, loader_workers
from galip_bench.train.samples import ReconstructionSheet, SampleSheet
from models.clipgen import ClipGen


def _processes(cfg, timeout) -> tuple:
    """(device, rank, world size): join the run's process group (NCCL on GPUs, gloo on the CPU); a GPU run's
    process uses the GPU of its local rank."""
    tc = cfg.train
    device = resolve_device(tc.device)
    rank, local_rank, world_size = distributed.init(device, timeout=timeout)
    if world_size != tc.processes:
        raise UserError(f"this run's recipe has train.processes={tc.processes} (global batch {tc.global_batch} = "
                        f"{tc.batch_size} x {tc.processes}) but it was started on {world_size} process(es): "
                        "launch it with `galip-bench run`, which starts them")
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device, rank, world_size


def _stage_optimizers(cfg, model, global_batch: int, per_epoch, steps: int) -> tuple:
    """(optimisers, lr_at(step), adversarial start step) of the run's stage."""
    cg = cfg.clipgen
    if cg.stage == "vqgan":
        lr = scaled_rate(cg.lr_vqgan, cg, global_batch)
        opts = {name: torch.optim.Adam(getattr(model, net).parameters(), lr=lr, betas=tuple(cg.betas_vqgan))
                for name, net in (("opt_vqgan", "vqgan"), ("opt_disc", "disc"))}
        return opts, (lambda step: lr), adversarial_start(cg, per_epoch)
    model.vqgan.requires_grad_(False)
    model.disc.requires_grad_(False)
    return {"opt_prior": prior_optimizer(model.prior, cg)}, prior_schedule(cg, global_batch, per_epoch, steps), None


def _initialize(cfg, weights_dir, timeout=None) -> SimpleNamespace:
    """Processes, device, model (with the frozen CLIP), the stage's optimisers and schedule (and stage 1's LPIPS)
    and this process's share of the caption-free training batches."""
    tc, cg = cfg.train, cfg.clipgen
    if tc.threads:
        torch.set_num_threads(tc.threads)
    device, rank, world_size = _processes(cfg, timeout)
    seed = tc.seed + cfg.seed
    torch.manual_seed(seed)  # identical initial weights on every rank
    clip = build_clip(cfg.model.clip, taps=CLIPGEN_CLIP_TAPS, device=device, seed=seed)
    try:
        model = ClipGen(cg.model, clip=clip).to(device)
    except ValueError as err:
        raise UserError(f"clipgen.model: {err}") from None
    model.disc = global_batchnorm(model.disc, device).to(device)  # before its optimiser: it may replace layers
    perceptual = None
    if cg.stage == "vqgan" and cg.perceptual == "lpips":
        vgg16 = resolve_weights("vgg16", weights_dir, "clipgen.perceptual=lpips")
        perceptual = build_lpips(vgg16, device)
    batches = Batches(build_dataset(cfg.data, "train", train=True, rank=rank, world_size=world_size,
                                    captions=False), tc.batch_size, seed, rank, world_size)
    steps = total_steps(tc, batches.num_images, world_size)
    per_epoch = None if batches.streamed else steps_per_epoch(batches.num_images, tc.batch_size, world_size)
    opts, lr_at, adv_start = _stage_optimizers(cfg, model, global_batch_of(tc), per_epoch, steps)
    return SimpleNamespace(cfg=cfg, device=device, rank=rank, world_size=world_size, main=rank == 0, seed=seed,
                           model=model, stage=cg.stage, opts=opts, lr_at=lr_at, adversarial_start=adv_start,
                           amp=AMP.create(tc.precision, device.type), perceptual=perceptual, batches=batches,
                           workers=loader_workers(cfg.data, world_size), steps=steps)


def _check_stage(ckpt: dict, stage: str, source) -> None:
    if system_of(ckpt) != "clipgen" or ckpt.get("stage") != stage:
        found = f"CLIP-GEN {ckpt.get('stage')}-stage" if system_of(ckpt) == "clipgen" else "GALIP"
        raise UserError(f"{source} is a {found} checkpoint, not a CLIP-GEN {stage}-stage one")


def _resume(run, run_dir: RunDir) -> tuple:
    """(step, checkpoint path or None, its `started_from`) from the newest readable checkpoint, which must be of
    this run's stage and layout (processes and global batch)."""
    path, ckpt = latest_valid_checkpoint(run_dir, remove_partial=run.main)
    if ckpt is None:
        return 0, None, None
    _check_stage(ckpt, run.stage, path)
    check_layout(run, ckpt, path)
    load_nets(run.model, ckpt, str(path))
    try:
        for name, opt in run.opts.items():
            opt.load_state_dict(ckpt["optimizers"][name])
    except (KeyError, ValueError) as err:  # e.g. a prior run from before the weight-decay groups
        raise UserError(f"{path}: its optimiser state does not fit this run's ({err}): it was written by an earlier "
                        f"version of CLIP-GEN's training; move {path.parent.parent} aside to start this run afresh") \
            from None
    return ckpt["step"], path, ckpt["extra"].get("started_from")


def _start_from_stage_one(cfg, run_dir: RunDir, model) -> dict:
    """Load the VQGAN of the finished stage-1 run `cfg.after` (its newest checkpoint)."""
    stage_one = RunDir(run_dir.path.parent / cfg.after)
    if not stage_one.finished:
        raise UserError(f"the CLIP-GEN prior stage starts from VQGAN run {cfg.after} ({stage_one.path}), which has "
                        "not finished: run the grid's vqgan variant first")
    path, ckpt = latest_valid_checkpoint(stage_one, remove_partial=False)
    if ckpt is None:
        raise UserError(f"VQGAN run {cfg.after} is finished but has no readable checkpoint in {stage_one.ckpt_dir}")
    _check_stage(ckpt, "vqgan", path)
    if json.dumps(ckpt["model_config"]["vqgan"]) != json.dumps(asdict(cfg.clipgen.model.vqgan)):
        raise UserError(f"{path}: its clipgen.model.vqgan differs from this run's; the prior needs the VQGAN it "
                        "was configured with")
    load_nets(model, ckpt, str(path), nets=("vqgan",))
    return {"run": cfg.after, "checkpoint": path.name, "step": ckpt["step"]}


def _one_step(cfg, run, step: int, batch: dict) -> dict:
    seed_step(run.seed, run.rank, step)  # after the batch is read: the draws below do not depend on who read it
    step_fn = vqgan_step if run.stage == "vqgan" else prior_step
    return {k: v.detach() for k, v in step_fn(cfg, run, step, batch["image"]).items()}


def train_clipgen_run(cfg, run_dir: RunDir, make_evaluator=None, progress: bool = True, stop_at: int = None,
                      cache_dir=".cache/galip_bench", weights_dir=None, timeout=None) -> dict:
    """`train_run` for a CLIP-GEN run (`cache_dir` is unused: no caption embedding is cached). Only the prior stage
    is evaluated (on every process, each its share of the plan): stage 1 has no text-to-image model. With
    `clipgen.perceptual: lpips`, stage 1 reads the VQGAN's VGG16 file from `weights_dir` (bench.yaml paths.weights)
    or the standard caches. `timeout`: the process group's, as `train_run`'s."""
    tc = cfg.train
    if run_dir.finished:  # and every record whole: a torn one is redone from a checkpoint before it
        return {"step": run_dir.status().get("step", 0), "interrupted": False, "already_finished": True}

    # Initialize, then resume from this run's checkpoint or start the prior from stage 1's. Records past the
    # restored step are dropped (they are replayed), so none is duplicated; every process reads the files before
    # rank 0 repairs them.
    run = _initialize(cfg, weights_dir, timeout)
    model, steps, prior, main = run.model, run.steps, run.stage == "prior", run.main
    trusted = run_dir.trusted_step()
    with run_dir.trusting(trusted):
        step, resumed_from, started_from = _resume(run, run_dir)
    if prior and resumed_from is None:
        started_from = _start_from_stage_one(cfg, run_dir, model)
    distributed.barrier()
    if main:
        run_dir.truncate_after(step, end=steps, checkpoints=trusted is not None)
        run_dir.set_status("running", step=step, steps=steps, world_size=run.world_size, error=None,
                           stage=run.stage, resumed_from=resumed_from.name if resumed_from is not None else None,
                           **({"started_from": started_from} if prior else {}))
    evaluate = make_evaluator(run.device) if (make_evaluator is not None and prior) else None
    sheet = None
    if main and tc.sample_every:
        sheet = SampleSheet(cfg, model, run.device) if prior else ReconstructionSheet(cfg, model.vqgan, run.device)
    bar = tqdm(total=steps, initial=step, desc=f"{cfg.variant} seed {cfg.seed}", disable=not (main and progress),
               dynamic_ncols=True, **progress_options())

    def checkpoint(at: int):
        if main:
            save_clipgen_checkpoint(run_dir.checkpoint_path(at), model, clip_config=cfg.model.clip, stage=run.stage,
                                    step=at, optimizers=run.opts, clip_seed=run.seed,
                                    extra={"variant": cfg.variant, "world_size": run.world_size,
                                           "processes": tc.processes, "grad_accum": tc.grad_accum,
                                           "global_batch": tc.global_batch, "started_from": started_from})
            run_dir.prune(tc.keep_ckpts)

    hooks = Hooks(one_step=lambda at, batch: _one_step(cfg, run, at, batch), checkpoint=checkpoint, model=model,
                  evaluate=evaluate, evaluates=evaluate is not None, sheet=sheet,
                  shown=("ce", "emb_rec") if prior else ("rec", "d_loss"), main=main)
    stream = StepLoader(run.batches, step, steps, num_workers=run.workers, device=run.device)
    return step_loop(run_dir, tc, stream, step, steps, hooks, bar, stop_at)
