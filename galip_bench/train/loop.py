"""Training one run, in the flat, sectioned style of the edm / stylegan3 training loops: initialize, resume, then
the step loop with its hooks (log, samples, evaluation, checkpoint). Checkpoints are atomic (keep the last K);
resume restores nets, optimisers, scaler and step, and the data position and every random draw follow from
(seed, rank, step) (`train.batches`), so a checkpoint needs no RNG state."""
from types import SimpleNamespace

import torch
from tqdm import tqdm

from galip_bench.checkpoints import load_nets, save_checkpoint
from galip_bench.checkpoints.clip import build_clip
from galip_bench.data import build_dataset, dataset_id
from galip_bench.devices import resolve_device
from galip_bench.errors import UserError
from galip_bench.progress import progress_options
from galip_bench.runs.lock import owning
from galip_bench.runs.rundir import RunDir
from galip_bench import distributed
from galip_bench.train.amp import AMP
from galip_bench.train.batches import Batches, seed_step
from galip_bench.train.length import total_steps
from galip_bench.train.hooks import Hooks, step_loop
from galip_bench.train.loader import StepLoader
from galip_bench.train.resume import check_layout, latest_valid_checkpoint, loader_workers
from galip_bench.train.samples import SampleSheet
from galip_bench.train.step import make_optimizers, train_step
from models import GALIP


def _set_tf32(on: bool, device: torch.device) -> None:
    """train.tf32: TF32 matmuls and convolutions for the whole training process on a GPU, as PyTorch 1.9-1.11 (the
    official environment) had by default; off leaves today's defaults (cuDNN TF32 on, matmul TF32 off)."""
    if on and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True


def _initialize(cfg, cache_dir, timeout=None) -> SimpleNamespace:
    """Device and processes, model, optimisers, precision, data and the optional caption-embedding cache."""
    tc = cfg.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    device = resolve_device(tc.device)
    rank, local_rank, world_size = distributed.init(device, timeout=timeout)
    if world_size != tc.processes:
        raise UserError(f"this run's recipe has train.processes={tc.processes} (global batch {tc.global_batch} = "
                        f"{tc.batch_size} x {tc.processes} x {tc.grad_accum} micro-batches) but it was started on "
                        f"{world_size} process(es): launch it with `galip-bench run`, which starts them")
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    _set_tf32(tc.tf32, device)
    seed = tc.seed + cfg.seed
    torch.manual_seed(seed)  # identical initial weights on every rank
    galip = GALIP(cfg.model, clip=build_clip(cfg.model.clip, taps=cfg.model.d_taps, device=device, seed=seed,
                                             cache_dir=cache_dir))
    galip = galip.to(device)
    if tc.channels_last:
        for net in (galip.netG, galip.netD, galip.netC):
            net.to(memory_format=torch.channels_last)
    opt_d, opt_g = make_optimizers(galip, tc.lr_g, tc.lr_d, (tc.beta1, tc.beta2), fused=device.type == "cuda")
    captions = cfg.model.condition == "text"
    batches = Batches(build_dataset(cfg.data, "train", train=True, rank=rank, world_size=world_size,
                                    captions=captions), tc.batch_size, seed, rank, world_size, accum=tc.grad_accum)
    cache = None
    if captions and cfg.data.embedding_cache and hasattr(batches.dataset, "all_captions"):
        from galip_bench.data.embedding_cache import EmbeddingCache, weights_hash
        cache = EmbeddingCache(cache_dir, dataset_id(cfg.data, "train"), "train", weights_hash(galip.clip))
        cache.build(batches.dataset.all_captions(), lambda t: galip.clip.encode_text(t.to(device))[0])
    workers = loader_workers(cfg.data, world_size)
    return SimpleNamespace(cfg=cfg, device=device, rank=rank, world_size=world_size, main=rank == 0, seed=seed,
                           galip=galip,
                           opt_d=opt_d, opt_g=opt_g, amp=AMP.create(tc.precision, device.type), batches=batches,
                           workers=workers, cache=cache,
                           steps=total_steps(tc, batches.num_images, world_size * tc.grad_accum))


def _resume(run, run_dir: RunDir) -> tuple:
    """(step, checkpoint path or None): the newest readable checkpoint's nets, optimisers, scaler and step."""
    path, ckpt = latest_valid_checkpoint(run_dir, remove_partial=run.main)
    if ckpt is None:
        return 0, None
    check_layout(run, ckpt, path)
    load_nets(run.galip, ckpt, str(path))
    run.opt_d.load_state_dict(ckpt["optimizers"]["opt_d"])
    run.opt_g.load_state_dict(ckpt["optimizers"]["opt_g"])
    if run.amp is not None and ckpt.get("scaler"):
        run.amp.load_state_dict(ckpt["scaler"])
    return ckpt["step"], path


SHARED_NOISE = -1  # the seed key of train.noise=official's draw, shared by every (virtual) rank


def _step_inputs(cfg, run, step: int, images) -> tuple:
    """(noise, condition or None) of a step, one micro-batch at a time: micro-batch k plays virtual rank v (the
    process of a processes x grad_accum run it stands for) and draws from RNGs seeded by (seed, v, step). With
    train.noise=official every virtual rank gets rank 0's noise, as every official rank draws the same noise (all
    ranks are seeded alike, code/src/train.py); per_rank: its own. Language-free runs draw their condition noise
    per virtual rank."""
    noises, conditions, shared = [], [], None
    micro = images.chunk(cfg.train.grad_accum) if cfg.train.grad_accum > 1 else (images,)
    if cfg.train.noise == "official":  # its own seed key: the draws below never repeat it
        seed_step(run.seed, SHARED_NOISE, step)
        shared = torch.randn(micro[0].shape[0], cfg.model.z_dim, device=run.device)
    for v, part in zip(run.batches.virtual_ranks, micro):
        seed_step(run.seed, v, step)
        noises.append(shared if shared is not None else torch.randn(part.shape[0], cfg.model.z_dim, device=run.device))
        if cfg.model.condition == "clip_image":  # language-free: no caption is read
            with torch.no_grad():
                conditions.append(run.galip.image_condition(part))
    return torch.cat(noises), (torch.cat(conditions) if conditions else None)


def _one_step(cfg, run, step: int, batch: dict) -> dict:
    """One optimiser step on `batch` (already on the device; train.grad_accum micro-batches of train.batch_size);
    the loss terms come back as 0-d tensors, so the host waits for the GPU only where a value is logged."""
    images, tokens = batch["image"], batch.get("tokens")
    if cfg.train.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    # after the batch is read: the draws below do not depend on who read it
    noise, sent = _step_inputs(cfg, run, step, images)
    if sent is None and run.cache is not None:
        sent = run.galip.condition(run.cache.lookup(batch["caption"]).to(run.device))
    run.galip.train()
    return train_step(run.galip, run.opt_d, run.opt_g, images, tokens, noise, sim_w=cfg.train.sim_w, amp=run.amp,
                      accum=cfg.train.grad_accum, grad_sync=distributed.sync_grads if run.world_size > 1 else None,
                      sent=sent)


def train_run(cfg, run_dir: RunDir, make_evaluator=None, progress: bool = True, stop_at: int = None,
              cache_dir=".cache/galip_bench", weights_dir=None, timeout=None, owner: str = None) -> dict:
    """Train `cfg` (a RunConfig) in `run_dir`, resuming from its last checkpoint. `make_evaluator(device)` gives
    the callable `evaluate(galip, step) -> records`, called on every rank (each generates its share of the
    plan; rank 0 returns the records). `stop_at` ends the loop at that step without a
    checkpoint, as a kill would (tests use it). SIGTERM/SIGINT end it at the next step boundary after a checkpoint.
    CLIP-GEN runs (`system: clipgen`) train in `train.clipgen`; `weights_dir` (bench.yaml paths.weights) is where
    their VQGAN's LPIPS finds its VGG16 file. `timeout`: the process group's (a multi-process run waits longest in
    an evaluation: `evaluation.planning.evaluation_timeout`). The run folder's lock (`runs.lock`) is held
    throughout, by rank 0: `owner` is the token of the launcher's job calling it, None takes a lock of its own
    (RunOwned when another process owns the run). A run whose records are torn is not finished: it resumes from a
    checkpoint before the damage and replays (and re-evaluates) the rest."""
    with owning(run_dir.path, owner, role="train"):
        if cfg.system == "clipgen":
            from galip_bench.train.clipgen import train_clipgen_run
            return train_clipgen_run(cfg, run_dir, make_evaluator, progress=progress, stop_at=stop_at,
                                     cache_dir=cache_dir, weights_dir=weights_dir, timeout=timeout)
        return _train_galip(cfg, run_dir, make_evaluator, progress, stop_at, cache_dir, timeout)


def _train_galip(cfg, run_dir: RunDir, make_evaluator, progress: bool, stop_at, cache_dir, timeout) -> dict:
    tc = cfg.train
    if run_dir.finished:
        return {"step": run_dir.status().get("step", 0), "interrupted": False, "already_finished": True}

    # Initialize.
    run = _initialize(cfg, cache_dir, timeout)
    steps, main = run.steps, run.main

    # Resume: records past the restored step are dropped (they are replayed), so none is duplicated. A torn record
    # limits the checkpoints resume may use to those before it (every process reads the files before rank 0
    # repairs them).
    trusted = run_dir.trusted_step()
    with run_dir.trusting(trusted):
        step, resumed_from = _resume(run, run_dir)
    distributed.barrier()
    if main:
        run_dir.truncate_after(step, end=steps, checkpoints=trusted is not None)
        clip_info = getattr(run.galip.clip, "weights_info", None)  # the shapes CLIP: which one (recipe, checksum)
        run_dir.set_status("running", step=step, steps=steps, world_size=run.world_size, error=None,
                           resumed_from=resumed_from.name if resumed_from is not None else None,
                           **({"clip_weights": {k: v for k, v in clip_info.items() if k != "path"}}
                              if clip_info else {}))
    # every process evaluates its share of the plan (evaluation.driver); the main one gets the records
    evaluate = make_evaluator(run.device) if make_evaluator is not None else None
    sheet = SampleSheet(cfg, run.galip, run.device) if main and tc.sample_every else None
    bar = tqdm(total=steps, initial=step, desc=f"{cfg.variant} seed {cfg.seed}", disable=not (main and progress),
               dynamic_ncols=True, **progress_options())

    def checkpoint(at: int):
        if main:
            save_checkpoint(run_dir.checkpoint_path(at), run.galip, step=at, scaler=run.amp, clip_seed=run.seed,
                            optimizers={"opt_d": run.opt_d, "opt_g": run.opt_g},
                            extra={"variant": cfg.variant, "world_size": run.world_size, "processes": tc.processes,
                                   "grad_accum": tc.grad_accum, "global_batch": tc.global_batch})
            directions = getattr(evaluate, "directions", {})  # metric -> lower/higher is better
            run_dir.prune(tc.keep_ckpts, protect=run_dir.best_steps({m: directions.get(m) for m in tc.keep_best}))

    hooks = Hooks(one_step=lambda at, batch: _one_step(cfg, run, at, batch), checkpoint=checkpoint, model=run.galip,
                  evaluate=evaluate, evaluates=make_evaluator is not None, sheet=sheet, shown=("errD", "errG"),
                  main=main)
    stream = StepLoader(run.batches, step, steps, num_workers=run.workers, device=run.device)
    return step_loop(run_dir, tc, stream, step, steps, hooks, bar, stop_at)
