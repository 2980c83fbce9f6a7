"""Training one run: the official step in a loop, with checkpoints (atomic, keep last K), exact resume (nets,
optimisers, scaler, step, data position, RNG), JSONL logs, sample grids, periodic evaluation and DDP."""
import random
import signal
import sys
import time
import zlib

import numpy as np
import torch
from torch.utils.data import IterableDataset
from tqdm import tqdm

from galip_bench.checkpoint import capture_rng, load_nets, read_checkpoint, save_checkpoint
from galip_bench.clip_weights import build_clip
from galip_bench.data import build_dataset
from galip_bench.errors import UserError
from galip_bench.rundir import RunDir
from galip_bench.train import distributed
from galip_bench.train.amp import AMP
from galip_bench.train.samples import SampleSheet
from galip_bench.train.step import make_optimizers, train_step
from models import GALIP


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_step(seed: int, rank: int, step: int) -> None:
    """Every step draws from RNGs seeded by (seed, rank, step): a resumed run replays exactly the same draws."""
    s = zlib.crc32(f"{seed}/{rank}/{step}".encode())
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


class Batches:
    """Deterministic batches: a per-epoch permutation seeded by (seed, epoch), sharded by rank, started at any
    step. The position is a function of the step, so restoring the step restores the data position. Streamed
    (webdataset) data is read in order; a resume skips the samples already consumed."""

    def __init__(self, dataset, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.streamed = isinstance(dataset, IterableDataset)
        self.per_epoch = 0 if self.streamed else max(len(dataset) // (batch_size * world_size), 1)
        self.stream, self.next_step = None, None

    def indices(self, step: int) -> list:
        epoch, pos = divmod(step, self.per_epoch)
        order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.seed * 100003 + epoch))
        start = (pos * self.world_size + self.rank) * self.batch_size
        return [int(i) for i in order[start: start + self.batch_size]]

    def _streamed(self, step: int) -> list:
        if self.stream is None or self.next_step != step:
            self.stream = iter(self.dataset)
            for _ in range(step * self.batch_size):
                self._next()
        self.next_step = step + 1
        return [self._next() for _ in range(self.batch_size)]

    def _next(self):
        try:
            return next(self.stream)
        except StopIteration:  # end of the shards: start another pass
            self.stream = iter(self.dataset)
            return next(self.stream)

    def get(self, step: int) -> dict:
        samples = self._streamed(step) if self.streamed else [self.dataset[i] for i in self.indices(step)]
        return {"image": torch.stack([s["image"] for s in samples]),
                "tokens": torch.stack([s["tokens"] for s in samples]),
                "caption": [s["caption"] for s in samples]}


def latest_valid_checkpoint(run_dir: RunDir, remove_partial: bool = True) -> tuple:
    """(path, checkpoint) of the newest readable checkpoint, or (None, None). Writes are atomic, so an unreadable
    one means damage after the fact: it is skipped with a warning. Temp files of killed writes are removed."""
    if remove_partial:
        for partial in run_dir.ckpt_dir.glob(".step_*.tmp"):
            partial.unlink(missing_ok=True)
    for path in reversed(run_dir.checkpoints()):
        try:
            return path, read_checkpoint(path)[1]
        except UserError as err:
            print(f"warning: skipping checkpoint {path.name}: {err}", file=sys.stderr)
    return None, None


class _StopFlag:
    """SIGTERM / SIGINT end the loop at the next step boundary, after a checkpoint."""

    def __init__(self):
        self.raised = None
        self.previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self.previous[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handler(self, signum, frame):
        self.raised = signal.Signals(signum).name


def train_run(cfg, run_dir: RunDir, make_evaluator=None, progress: bool = True, stop_at: int = None,
              cache_dir=".cache/galip_bench") -> dict:
    """Train `cfg` (a RunConfig) in `run_dir`, resuming from its last checkpoint. `make_evaluator(device)` gives
    the callable `evaluate(galip, step) -> records` run on rank 0. `stop_at` ends the loop at that step without a
    checkpoint, as a kill would (tests use it). SIGTERM/SIGINT end it at the next step boundary after a checkpoint."""
    tc = cfg.train
    status = run_dir.status()
    if status.get("state") == "finished" and status.get("step", 0) >= tc.steps:
        return {"step": status["step"], "interrupted": False, "already_finished": True}
    if tc.threads:
        torch.set_num_threads(tc.threads)
    device = resolve_device(tc.device)
    rank, local_rank, world_size = distributed.init(device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    main = rank == 0
    seed = tc.seed + cfg.seed
    torch.manual_seed(seed)  # identical initial weights on every rank
    clip = build_clip(cfg.model.clip, taps=cfg.model.d_taps, device=device, seed=seed)
    galip = GALIP(cfg.model, clip=clip).to(device)
    opt_d, opt_g = make_optimizers(galip, tc.lr_g, tc.lr_d, (tc.beta1, tc.beta2))
    amp = AMP.create(tc.precision, device.type)
    step = 0
    path, ckpt = latest_valid_checkpoint(run_dir, remove_partial=main)
    if ckpt is not None:
        load_nets(galip, ckpt, str(path))
        opt_d.load_state_dict(ckpt["optimizers"]["opt_d"])
        opt_g.load_state_dict(ckpt["optimizers"]["opt_g"])
        if amp is not None and ckpt.get("scaler"):
            amp.load_state_dict(ckpt["scaler"])
        step = ckpt["step"]
    if main:
        run_dir.truncate_after(step)
        run_dir.set_status("running", step=step, steps=tc.steps, world_size=world_size, error=None,
                           resumed_from=str(path.name) if path is not None else None)
    evaluate = make_evaluator(device) if (make_evaluator is not None and main) else None
    sync = distributed.sync_grads if world_size > 1 else None
    batches = Batches(build_dataset(cfg.data, "train", train=True, rank=rank, world_size=world_size),
                      tc.batch_size, seed, rank, world_size)
    sheet = SampleSheet(cfg, galip, device) if main and tc.sample_every else None
    cache = None
    if cfg.data.embedding_cache and hasattr(batches.dataset, "all_captions"):
        from galip_bench.data import dataset_id
        from galip_bench.data.embedding_cache import EmbeddingCache, weights_hash
        cache = EmbeddingCache(cache_dir, dataset_id(cfg.data, "train"), "train", weights_hash(galip.clip))
        cache.build(batches.dataset.all_captions(), lambda t: galip.clip.encode_text(t.to(device))[0])
    bar = tqdm(total=tc.steps, initial=step, desc=f"{cfg.variant} seed {cfg.seed}", disable=not (main and progress),
               dynamic_ncols=True)
    t0 = time.time()

    def checkpoint():
        if main:
            save_checkpoint(run_dir.checkpoint_path(step), galip, step=step, rng=capture_rng(),
                            optimizers={"opt_d": opt_d, "opt_g": opt_g},
                            scaler=amp, extra={"variant": cfg.variant, "world_size": world_size})
            run_dir.prune(tc.keep_ckpts)

    with _StopFlag() as stop:
        while step < tc.steps:
            seed_step(seed, rank, step)
            batch = batches.get(step)
            images, tokens = batch["image"].to(device), batch["tokens"].to(device)
            noise = torch.randn(images.shape[0], cfg.model.z_dim, device=device)
            sent = cache.lookup(batch["caption"]).to(device) if cache is not None else None
            galip.train()
            losses = train_step(galip, opt_d, opt_g, images, tokens, noise, sim_w=tc.sim_w, amp=amp,
                                accum=tc.grad_accum, grad_sync=sync, sent=sent)
            step += 1
            bar.update(1)
            bar.set_postfix(errD=f"{losses['errD']:.3f}", errG=f"{losses['errG']:.3f}")
            if main and (step % tc.log_every == 0 or step == tc.steps):
                run_dir.append(run_dir.train_log, {"step": step, "time": time.time() - t0, **losses})
                run_dir.set_status("running", step=step, steps=tc.steps)
            # samples and metrics of a step come before its checkpoint: a kill in between resumes from an earlier
            # checkpoint, which drops this step's records and writes them again, never half of them
            if sheet is not None and (step % tc.sample_every == 0 or step == tc.steps):
                sheet.save(run_dir.samples_dir / f"step_{step:08d}.png")
            if make_evaluator is not None and ((tc.eval_every and step % tc.eval_every == 0) or step == tc.steps):
                if main:
                    for record in evaluate(galip, step):
                        run_dir.append(run_dir.metrics, record)
                distributed.barrier()
            if step % tc.ckpt_every == 0 or step == tc.steps:
                checkpoint()
            if stop_at is not None and step >= stop_at:  # behaves like a kill: no checkpoint, status left running
                bar.close()
                return {"step": step, "interrupted": True, "losses": losses}
            if stop.raised:
                checkpoint()
                bar.close()
                if main:
                    run_dir.set_status("failed", step=step, error=f"interrupted by {stop.raised} at step {step}; resumable")
                return {"step": step, "interrupted": True, "losses": losses}
        bar.close()
        if main:
            run_dir.set_status("finished", step=step, error=None, wall_s=time.time() - t0)
        distributed.barrier()
        return {"step": step, "interrupted": False}
