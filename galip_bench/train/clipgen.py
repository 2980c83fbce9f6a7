"""Training one CLIP-GEN run (`system: clipgen`), one stage per run, with `train_run`'s contract: resume from the
newest valid checkpoint, then the shared step loop (`train.hooks`: log, samples, evaluation, checkpoint; `stop_at`
as a kill, SIGTERM/SIGINT at a step boundary after a checkpoint). Every step reseeds from (seed, step) after its
batch is read, so a resumed run replays the Gumbel noise, dropout and codebook re-seeding of an uninterrupted one.

Stage "vqgan" trains the VQGAN and its PatchGAN on images. Stage "prior" starts from the newest checkpoint of the
finished stage-1 run named by `after` (a sibling run folder), freezes the VQGAN and trains the prior on the images'
VQGAN tokens and CLIP image embeddings. Neither stage reads a caption. One process only, fp32."""
import json
from dataclasses import asdict
from types import SimpleNamespace

import torch
from tqdm import tqdm

from galip_bench.checkpoints.clip import build_clip
from galip_bench.checkpoints.format import load_nets, save_clipgen_checkpoint, system_of
from galip_bench.checkpoints.loader import CLIPGEN_CLIP_TAPS
from galip_bench.data import build_dataset
from galip_bench.devices import resolve_device
from galip_bench.errors import UserError
from galip_bench.metrics.weights import resolve_weights
from galip_bench.progress import progress_options
from galip_bench.runs.rundir import RunDir
from galip_bench import distributed
from galip_bench.train.batches import Batches, seed_step
from galip_bench.train.length import total_steps
from galip_bench.train.hooks import Hooks, step_loop
from galip_bench.train.loader import StepLoader
from galip_bench.train.perceptual import build_lpips
from galip_bench.train.resume import latest_valid_checkpoint, loader_workers
from galip_bench.train.samples import ReconstructionSheet, SampleSheet
from models.clipgen import ClipGen, prior_loss, vqgan_d_loss, vqgan_g_loss


def _check_supported(cfg) -> None:
    """What `config.resolve` cannot see: the process count (the config checks are there)."""
    if distributed.world()[2] > 1:
        raise UserError("CLIP-GEN runs train on one process for now")


def _initialize(cfg, weights_dir) -> SimpleNamespace:
    """Device, model (with the frozen CLIP), the stage's optimisers (and stage 1's LPIPS) and the caption-free
    training batches."""
    _check_supported(cfg)
    tc, cg = cfg.train, cfg.clipgen
    if tc.threads:
        torch.set_num_threads(tc.threads)
    device = resolve_device(tc.device)
    seed = tc.seed + cfg.seed
    torch.manual_seed(seed)
    clip = build_clip(cfg.model.clip, taps=CLIPGEN_CLIP_TAPS, device=device, seed=seed)
    try:
        model = ClipGen(cg.model, clip=clip).to(device)
    except ValueError as err:
        raise UserError(f"clipgen.model: {err}") from None
    perceptual = None
    if cg.stage == "vqgan":
        if cg.perceptual == "lpips":
            vgg16 = resolve_weights("vgg16", weights_dir, "clipgen.perceptual=lpips")
            perceptual = build_lpips(vgg16, device)
        opts = {name: torch.optim.Adam(getattr(model, net).parameters(), lr=cg.lr_vqgan, betas=tuple(cg.betas_vqgan))
                for name, net in (("opt_vqgan", "vqgan"), ("opt_disc", "disc"))}
    else:
        model.vqgan.requires_grad_(False)
        model.disc.requires_grad_(False)
        opts = {"opt_prior": torch.optim.AdamW(model.prior.parameters(), lr=cg.lr_prior, betas=tuple(cg.betas_prior),
                                               weight_decay=cg.weight_decay_prior)}
    batches = Batches(build_dataset(cfg.data, "train", train=True, captions=False), tc.batch_size, seed)
    return SimpleNamespace(device=device, seed=seed, model=model, stage=cg.stage, opts=opts, perceptual=perceptual,
                           batches=batches, workers=loader_workers(cfg.data, 1),
                           steps=total_steps(tc, batches.num_images))


def _check_stage(ckpt: dict, stage: str, source) -> None:
    if system_of(ckpt) != "clipgen" or ckpt.get("stage") != stage:
        found = f"CLIP-GEN {ckpt.get('stage')}-stage" if system_of(ckpt) == "clipgen" else "GALIP"
        raise UserError(f"{source} is a {found} checkpoint, not a CLIP-GEN {stage}-stage one")


def _resume(run, run_dir: RunDir) -> tuple:
    """(step, checkpoint path or None, its `started_from`) from the newest readable checkpoint."""
    path, ckpt = latest_valid_checkpoint(run_dir)
    if ckpt is None:
        return 0, None, None
    _check_stage(ckpt, run.stage, path)
    load_nets(run.model, ckpt, str(path))
    for name, opt in run.opts.items():
        opt.load_state_dict(ckpt["optimizers"][name])
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


def _update(opt, loss: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _vqgan_step(cfg, run, step: int, images: torch.Tensor) -> dict:
    """One generator-side then one discriminator-side update; the loss terms and the distinct codes of the batch."""
    vq_cfg, m = cfg.clipgen.model.vqgan, run.model
    m.vqgan.train()
    m.disc.train()
    recon, indices, commit = m.vqgan(images)
    g = vqgan_g_loss(m.vqgan, m.disc, images, recon, commit, step, vq_cfg, perceptual=run.perceptual)
    _update(run.opts["opt_vqgan"], g["loss"])
    d = vqgan_d_loss(m.disc, images, recon.detach(), step, vq_cfg)
    _update(run.opts["opt_disc"], d["loss"])  # also clears the discriminator gradients of the generator side
    used = torch.zeros(vq_cfg.codebook_size, device=images.device).index_fill_(0, indices.flatten(), 1.0).sum()
    return {"g_loss": g.pop("loss"), **g, "d_loss": d.pop("loss"), **d, "codes_used": used}


def _prior_step(cfg, run, step: int, images: torch.Tensor) -> dict:
    m = run.model
    m.eval()  # the VQGAN in eval mode: encoding must not move its EMA codebook
    m.prior.train()
    with torch.no_grad():
        tokens = m.vqgan.encode(images)[0]
        emb = m.image_condition(images)
    terms = prior_loss(m.prior, m.vqgan, tokens, emb, cfg.clipgen.model.prior, encode_image=m.image_condition)
    _update(run.opts["opt_prior"], terms["loss"])
    return terms


def _one_step(cfg, run, step: int, batch: dict) -> dict:
    seed_step(run.seed, 0, step)  # after the batch is read: the draws below do not depend on who read it
    step_fn = _vqgan_step if run.stage == "vqgan" else _prior_step
    return {k: v.detach() for k, v in step_fn(cfg, run, step, batch["image"]).items()}


def train_clipgen_run(cfg, run_dir: RunDir, make_evaluator=None, progress: bool = True, stop_at: int = None,
                      cache_dir=".cache/galip_bench", weights_dir=None) -> dict:
    """`train_run` for a CLIP-GEN run (`cache_dir` is unused: no caption embedding is cached). Only the prior stage
    is evaluated: stage 1 has no text-to-image model. With `clipgen.perceptual: lpips`, stage 1 reads the VQGAN's
    VGG16 file from `weights_dir` (bench.yaml paths.weights) or the standard caches."""
    tc = cfg.train
    if run_dir.finished:  # and every record whole: a torn one is redone from a checkpoint before it
        return {"step": run_dir.status().get("step", 0), "interrupted": False, "already_finished": True}

    # Initialize, then resume from this run's checkpoint or start the prior from stage 1's. Records past the
    # restored step are dropped (they are replayed), so none is duplicated.
    run = _initialize(cfg, weights_dir)
    model, steps, prior = run.model, run.steps, run.stage == "prior"
    trusted = run_dir.trusted_step()
    with run_dir.trusting(trusted):
        step, resumed_from, started_from = _resume(run, run_dir)
    if prior and resumed_from is None:
        started_from = _start_from_stage_one(cfg, run_dir, model)
    run_dir.truncate_after(step, end=steps, checkpoints=trusted is not None)
    run_dir.set_status("running", step=step, steps=steps, world_size=1, error=None, stage=run.stage,
                       resumed_from=resumed_from.name if resumed_from is not None else None,
                       **({"started_from": started_from} if prior else {}))
    evaluate = make_evaluator(run.device) if (make_evaluator is not None and prior) else None
    sheet = None
    if tc.sample_every:
        sheet = SampleSheet(cfg, model, run.device) if prior else ReconstructionSheet(cfg, model.vqgan, run.device)
    bar = tqdm(total=steps, initial=step, desc=f"{cfg.variant} seed {cfg.seed}", disable=not progress,
               dynamic_ncols=True, **progress_options())

    def checkpoint(at: int):
        save_clipgen_checkpoint(run_dir.checkpoint_path(at), model, clip_config=cfg.model.clip, stage=run.stage,
                                step=at, optimizers=run.opts, clip_seed=run.seed,
                                extra={"variant": cfg.variant, "world_size": 1, "started_from": started_from})
        run_dir.prune(tc.keep_ckpts)

    hooks = Hooks(one_step=lambda at, batch: _one_step(cfg, run, at, batch), checkpoint=checkpoint, model=model,
                  evaluate=evaluate, evaluates=evaluate is not None, sheet=sheet,
                  shown=("ce", "emb_rec") if prior else ("rec", "d_loss"))
    stream = StepLoader(run.batches, step, steps, num_workers=run.workers, device=run.device)
    return step_loop(run_dir, tc, stream, step, steps, hooks, bar, stop_at)
