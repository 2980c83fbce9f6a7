"""`run --dry-run`: what each run of a grid will do, resolved, before any GPU time is spent: data and its size and
transforms, training length, batch and processes, optimiser and precision, and the evaluation plan of every
protocol (N, passes, caption selection, reference source)."""
from galip_bench.data import split_size
from galip_bench.errors import UserError
from galip_bench.evaluation.planning import preview
from galip_bench.train.amp import RESET_SCALE, SCALER_MIN
from galip_bench.train.length import describe as describe_length


def world_size(site, grid) -> int:
    """Processes per run: one per GPU of a SLURM job (submitit tasks); one with the local and debug executors."""
    if site.executor != "slurm":
        return 1
    slurm = {"gpus_per_node": site.slurm.gpus_per_node, "nodes": site.slurm.nodes, **grid.slurm}
    return max(int(slurm["gpus_per_node"]), 1) * int(slurm["nodes"])


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
    if train:
        how = f"{crop}resize {int(data.size * 76 / 64)}, random crop {data.size}, horizontal flip"
    else:
        how = f"{crop}resize {int(data.size * 76 / 64)}, centre crop {data.size} (reference images)"
    return f"{data.kind} at {where}, {data.size} px ({how}); {count}"


def _clipgen_lines(cfg) -> list:
    cg = cfg.clipgen
    vq, prior = cg.model.vqgan, cg.model.prior
    tokens = f"{vq.latent_size}x{vq.latent_size} tokens of a {vq.codebook_size:,}-code book"
    if cg.stage == "vqgan":
        return [f"CLIP-GEN stage 1 (VQGAN): {vq.img_size} px, {vq.downsample}x down -> {tokens}; Adam lr "
                f"{cg.lr_vqgan:g} betas {tuple(cg.betas_vqgan)}; adversarial weight {vq.adversarial_weight:g} from "
                f"step {vq.adversarial_start:,}"]
    return [f"CLIP-GEN stage 2 (prior): starts after run {cfg.after} (its VQGAN, frozen: {tokens}); "
            f"{prior.depth} layers x {prior.dim} wide, {prior.conditioning} conditioning on the CLIP image embedding; "
            f"AdamW lr {cg.lr_prior:g}; embedding-reconstruction weight {prior.emb_rec_weight:g}"]


def describe_run(run, site, grid) -> list:
    cfg, tc, world = run.config, run.config.train, world_size(site, grid)
    n_train, _ = _safe(split_size, cfg.data, "train")
    precision = {"fp32": "fp32", "bf16": "bf16 autocast",
                 "fp16": f"fp16 autocast + GradScaler (growth_interval 2000, reset to {RESET_SCALE:g} under "
                         f"{SCALER_MIN:g})"}.get(tc.precision, tc.precision)
    if cfg.system == "clipgen":
        lines = [f"data: {_data_line(cfg.data, True)}; no caption read"] + _clipgen_lines(cfg) + [
            f"train: {describe_length(tc, n_train, world)}; batch {tc.batch_size} x {world} process(es); "
            f"{precision}; seed {tc.seed + cfg.seed}"]
    else:
        language_free = "; language-free (CLIP image embeddings, no caption read)" \
            if cfg.model.condition == "clip_image" else ""
        lines = [f"data: {_data_line(cfg.data, True)}{language_free}",
                 f"train: {describe_length(tc, n_train, world)}; batch {tc.batch_size} x {world} process(es); "
                 f"Adam betas ({tc.beta1:g}, {tc.beta2:g}), lr G {tc.lr_g:g} / D+C {tc.lr_d:g}; sim_w {tc.sim_w:g}; "
                 f"{precision}; seed {tc.seed + cfg.seed}"]
    if grid.slurm.get("gpus_per_node") and world != max(int(grid.slurm["gpus_per_node"]), 1):
        lines.append(f"note: the grid asks for {grid.slurm['gpus_per_node']} GPU(s) per run (SLURM); the "
                     f"{site.executor} executor runs {world} process(es), so the global batch is "
                     f"{tc.batch_size * world}, not {tc.batch_size * int(grid.slurm['gpus_per_node'])}")
    if not cfg.eval.protocols:
        return lines + ["eval: none"]
    data = cfg.eval.data or cfg.data
    when = "at the end" + (f" and every {tc.eval_every:,} steps" if tc.eval_every else "")
    lines.append(f"eval ({when}) on {_data_line(data, False)}")
    rows, err = _safe(preview, cfg.eval, data)
    if err:
        return lines + [f"  cannot run: {err}"]
    for r in rows:
        n = f"N={r['n']:,}" if r["n"] is not None else "N=?"
        lines.append(f"  {r['protocol']:<16} {n:<10} {r['plan']}; reference: {r['reference']}")
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
