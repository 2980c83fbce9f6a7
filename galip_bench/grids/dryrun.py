"""`run --dry-run`: what each run of a grid will do, resolved, before any GPU time is spent: data and its size and
transforms, training length, batch and processes, optimiser and precision, and the evaluation plan of every
protocol (N, passes, caption selection, reference source)."""
import shutil
import statistics
from dataclasses import replace
from pathlib import Path

from galip_bench.checkpoints.params import checkpoint_bytes
from galip_bench.config.recipe import describe_budget
from galip_bench.data import split_size
from galip_bench.errors import UserError
from galip_bench.evaluation.paired import kept_line
from galip_bench.evaluation.planning import preview
from galip_bench.runs.rundir import RunDir, read_jsonl
from galip_bench.train.amp import RESET_SCALE, SCALER_MIN
from galip_bench.train.clipgen_optim import adversarial_start
from galip_bench.train.length import describe as describe_length
from galip_bench.train.length import steps_per_epoch, total_steps


def _safe(fn, *args):
    try:
        return fn(*args), None
    except UserError as err:
        return None, str(err)


def _data_line(data, train: bool) -> str:
    where = data.root or data.manifest or data.shards or "built in"
    n, err = _safe(split_size, data, "train" if train else "test")
    count = f"{n:,} images" if n is not None else ("streamed" if err is None else f"size unknown: {err}")
    crop = "bounding-box crop (0.75*max(w,h) around the box), then " if data.kind == "cub" else ""
    if data.kind == "synthetic":
        how = "rendered at that size, no crop or flip"
    elif train:
        how = f"{crop}resize {int(data.size * 76 / 64)}, random crop {data.size}, horizontal flip"
    else:
        how = f"{crop}resize {int(data.size * 76 / 64)}, centre crop {data.size} (reference images)"
    return f"{data.kind} at {where}, {data.size} px ({how}); {count}"


def _clipgen_lr(cg, rate: float, tc) -> str:
    if cg.lr_scaling == "per_image":
        return f"lr {rate:g} x global batch {tc.global_batch} = {rate * tc.global_batch:g}"
    return f"lr {rate:g}"


def _clipgen_lines(cfg, n_train, world) -> list:
    """What a CLIP-GEN stage trains: the model, its optimiser and schedule, and (the prior) how it samples."""
    cg, tc = cfg.clipgen, cfg.train
    vq, prior, sampling = cg.model.vqgan, cg.model.prior, cg.model.sampling
    tokens = f"{vq.latent_size}x{vq.latent_size} tokens of a {vq.codebook_size:,}-code book ({vq.codebook} codebook)"
    per_epoch = steps_per_epoch(n_train, tc.batch_size, world) if n_train else None
    if cg.stage == "vqgan":
        if cg.adversarial_start_epochs is not None:
            at = f"{adversarial_start(cg, per_epoch):,}" if per_epoch else "?"
            start = f"epoch {cg.adversarial_start_epochs:g} (step {at})"
        else:
            start = f"step {vq.adversarial_start:,}"
        attn = ", ".join(str(r) for r in vq.attn_resolutions) or "none"
        return [f"CLIP-GEN stage 1 (VQGAN): {vq.img_size} px, {vq.downsample}x down -> {tokens}; attention at "
                f"{attn} px{' + quant convs' if vq.quant_convs else ''}; Adam {_clipgen_lr(cg, cg.lr_vqgan, tc)}, "
                f"betas {tuple(cg.betas_vqgan)}, constant; discriminator and adversarial weight "
                f"{vq.adversarial_weight:g} from {start}"]
    warm = cg.prior_warmup_epochs
    schedule = (f"linear warm-up {warm:g} epochs then cosine to {cg.prior_min_lr:g}" if cg.prior_schedule == "cosine"
                else "constant")
    k = sampling.top_k if sampling.top_k is not None else "off"
    p = sampling.top_p if sampling.top_p is not None else "off"
    rerank = (f"{sampling.candidates} candidates per caption reranked by the generator's own CLIP"
              if sampling.candidates > 1 else "1 candidate per caption (no reranking)")
    return [f"CLIP-GEN stage 2 (prior): starts after run {cfg.after} (its VQGAN, frozen: {tokens}); "
            f"{prior.depth} layers x {prior.dim} wide, {prior.conditioning} conditioning on the CLIP image embedding; "
            f"AdamW {_clipgen_lr(cg, cg.lr_prior, tc)}, {schedule}, weight decay {cg.weight_decay_prior:g} "
            f"({cg.weight_decay_scope}); embedding-reconstruction {prior.emb_rec_form} weight "
            f"{prior.emb_rec_weight:g}",
            f"sampling: temperature {sampling.temperature:g}, top-k {k}, top-p {p}, {rerank}"]


def _batch_line(tc) -> str:
    accum = f" x {tc.grad_accum} micro-batches" if tc.grad_accum > 1 else ""
    return (f"batch {tc.batch_size} x {tc.processes} process(es){accum} = global batch {tc.global_batch}; "
            f"noise {tc.noise}{'; TF32 on' if tc.tf32 else ''}")


def describe_run(run, site, grid) -> list:
    cfg, tc = run.config, run.config.train
    n_train, _ = _safe(split_size, cfg.data, "train")
    world = tc.processes * tc.grad_accum  # the processes the data is laid out for (micro-batches play processes)
    precision = {"fp32": "fp32", "bf16": "bf16 autocast",
                 "fp16": f"fp16 autocast + GradScaler (growth_interval 2000, reset to {RESET_SCALE:g} under "
                         f"{SCALER_MIN:g})"}.get(tc.precision, tc.precision)
    if cfg.system == "clipgen":
        lines = [f"data: {_data_line(cfg.data, True)}; no caption read"] + _clipgen_lines(cfg, n_train, world) + [
            f"train: {describe_length(tc, n_train, world)}; {_batch_line(tc)}; {precision}; seed {tc.seed + cfg.seed}"]
    else:
        language_free = "; language-free (CLIP image embeddings, no caption read)" \
            if cfg.model.condition == "clip_image" else ""
        lines = [f"data: {_data_line(cfg.data, True)}{language_free}",
                 f"train: {describe_length(tc, n_train, world)}; {_batch_line(tc)}; Adam betas ({tc.beta1:g}, "
                 f"{tc.beta2:g}), lr G {tc.lr_g:g} / D+C {tc.lr_d:g}; sim_w {tc.sim_w:g}; {precision}; "
                 f"seed {tc.seed + cfg.seed}"]
    lines += recipe_lines(run, grid, site, n_train, world)
    lines += checkpoint_lines(cfg, n_train, world, Path(site.paths.runs))
    if not cfg.eval.protocols:
        return lines + ["eval: none"]
    data = cfg.eval.data or cfg.data
    when = "at the end" + (f" and every {tc.eval_every:,} steps" if tc.eval_every else "")
    lines.append(f"eval ({when}) on {_data_line(data, False)}")
    rows, err = _safe(preview, cfg.eval, data)
    if err:
        return lines + [f"  cannot run: {err}"]
    width = max([16] + [len(r["protocol"]) for r in rows])
    for r in rows:
        n = f"N={r['n']:,}" if r["n"] is not None else "N=?"
        stand_in = " [smoke stand-in: tiny random extractor]" if cfg.eval.extractor == "tiny" and r["n"] else ""
        lines.append(f"  {r['protocol']:<{width}} {n:<10} {r['plan']}; reference: {r['reference']}{stand_in}")
    kept = _safe(kept_line, cfg.eval, data.kind, {r["protocol"]: r["n"] for r in rows})[0]
    return lines + ([f"  {kept}"] if kept else [])


def recipe_lines(run, grid, site, n_train, world) -> list:
    """The run's recipe against its grid's (and the official run), and the cost of each of the grid's schedules."""
    cfg, tc, lines = run.config, run.config.train, []
    if tc.recipe_change:
        lines.append(f"recipe CHANGED (--allow-recipe-change): {tc.recipe_change}; labelled in every table")
    elif grid.recipe and not grid.profile:
        lines.append("recipe: as the grid declares it (" + ", ".join(f"{k} {v}" for k, v in grid.recipe.items()) + ")")
    steps = _safe(total_steps, tc, n_train, world)[0]
    budget = describe_budget(cfg.data.kind, steps, tc.global_batch) if cfg.system == "galip" else None
    if budget and not grid.profile:
        lines.append(f"budget: {budget}")
    if grid.schedules and not grid.profile:
        step_s, source = measured_step_time(Path(site.paths.runs) / grid.name, run)
        for name, entry in grid.schedules.items():
            length = replace(tc, steps=entry.get("steps"), epochs=entry.get("epochs"))
            n = _safe(total_steps, length, n_train, world)[0]
            cost = (f" ~ {n * step_s * tc.processes / 3600:,.0f} GPU-hours at {step_s:.3f} s/step ({source})"
                    if n and step_s else "")
            mark = "  <- this run" if name == grid.schedule else ""
            lines.append(f"schedule {name}: {describe_length(length, n_train, world)}{cost}; "
                         f"{entry.get('source', '')}{mark}")
        if step_s is None:
            lines.append("  (GPU-hours: no step time measured yet; they appear once a run of this grid has logged "
                         "steps)")
    return lines


def measured_step_time(root: Path, run) -> tuple:
    """(seconds per step, where measured) from the train logs of this run, else of another run of the grid (folder
    `root`) with the same processes and global batch; (None, None) before any has logged."""
    folders = [root / run.run_id] + sorted(p for p in root.glob("*") if p.name != run.run_id)
    for folder in folders:
        conf = RunDir(folder).read_config().get("train", {})
        if folder.name != run.run_id and (conf.get("processes", 1), conf.get("global_batch")) != \
                (run.config.train.processes, run.config.train.global_batch):
            continue
        log = read_jsonl(RunDir(folder).train_log)
        rates = [(b["time"] - a["time"]) / (b["step"] - a["step"]) for a, b in zip(log, log[1:])
                 if b["step"] > a["step"] and b["time"] > a["time"]]
        if rates:
            return statistics.median(rates), f"measured in run {folder.name}"
    return None, None


def checkpoint_lines(cfg, n_train, world, runs_root: Path) -> list:
    """How many checkpoints the run keeps and the disk they take (GALIP: netG/D/C and Adam's moments, fp32), and a
    warning when the runs folder's file system has less free space than that."""
    tc = cfg.train
    steps = _safe(total_steps, tc, n_train, world)[0]
    if cfg.system != "galip" or not steps:
        return []
    written = steps // tc.ckpt_every + (steps % tc.ckpt_every > 0)
    kept = written if tc.keep_ckpts == 0 else min(written, tc.keep_ckpts + len(tc.keep_best))
    size = checkpoint_bytes(cfg.model)
    which = "all kept (as the official code)" if tc.keep_ckpts == 0 else (
        f"the last {tc.keep_ckpts}" + (f" and the best by {', '.join(tc.keep_best)}" if tc.keep_best else "") + " kept")
    lines = [f"checkpoints: every {tc.ckpt_every:,} steps, {written:,} written, {which}: up to {kept:,} x "
             f"{size / 1e9:.2f} GB = {kept * size / 1e9:,.1f} GB of disk"]
    existing = next((p for p in (runs_root, *runs_root.resolve().parents) if p.exists()), None)
    free = shutil.disk_usage(existing).free if existing is not None else None
    if free is not None and free < kept * size:
        lines.append(f"warning: {existing} has {free / 1e9:,.1f} GB free, less than these checkpoints take: point "
                     "bench.yaml's paths.runs elsewhere, or keep fewer (train.keep_ckpts, train.keep_best)")
    return lines


def describe_grid(grid, site, details: bool = True) -> list:
    """The header, one line per run and (with `details`) each run's resolved plan."""
    lines = [f"grid {grid.name}: {len(grid.runs)} run(s), executor {site.executor}"
             + (f", profile {grid.profile}" if grid.profile else "") + f", folder {site.paths.runs}/{grid.name}"]
    for r in grid.runs:
        lines.append(f"  {r.run_id}  {r.name}  seed {r.seed}")
        if details:
            lines += [f"      {line}" for line in describe_run(r, site, grid)]
    return lines
