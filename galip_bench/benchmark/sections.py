"""The measurements of `galip-bench bench`, one function per row group. Each returns rows
{"row", "path", "value", "unit", "note", "images", "ms"}: `images` were processed in `ms` milliseconds, the timed
interval the value comes from (an img/s value is images * 1000 / ms, an ms value is ms). The faithful and the fast
path run on the same inputs; where the fast path comes out slower, its row says why (`slower_note`)."""
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from galip_bench.checkpoints.clip import build_clip
from galip_bench.config.resolve import DECODERS, canvas_size, resolve_run_config
from galip_bench.config.schema import DataConfig, EvalConfig, RunConfig, TrainConfig
from galip_bench.data import official_stats_path
from galip_bench.data.fake import write_fake_coco
from galip_bench.data.tokens import tokenize
from galip_bench.evaluation.driver import SPEED_CAPTIONS, Evaluator
from galip_bench.evaluation.protocols import FIDGALIP
from galip_bench.evaluation.synthesis import SYNTHESIS_MODES, Synthesizer, compare
from galip_bench.metrics.speed import time_once, measure_speed
from galip_bench.runs.rundir import RunDir, read_jsonl
from galip_bench.train.amp import AMP
from galip_bench.train.loop import train_run
from galip_bench.train.step import make_optimizers, train_step
from models import GALIP


def row(name, path, value, unit, note="", images=None, ms=None) -> dict:
    return {"row": name, "path": path, "value": float(value), "unit": unit, "note": note, "images": images,
            "ms": None if ms is None else float(ms)}


class _CountCasts(TorchDispatchMode):
    """Counts the operations a call dispatches, and among them the casts to bf16 (what autocast inserts)."""

    def __init__(self):
        super().__init__()
        self.ops = self.casts = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops += 1
        self.casts += func is torch.ops.aten._to_copy.default and kwargs.get("dtype") == torch.bfloat16
        return func(*args, **kwargs)


def bf16_casts(fn, device) -> tuple:
    """(casts to bf16, operations) that one call of `fn` makes under bf16 autocast, eager (uncompiled)."""
    with _CountCasts() as count, torch.autocast(device.type, dtype=torch.bfloat16):
        fn()
    return count.casts, count.ops


def cpu_bf16_support() -> str:
    """Whether this CPU has native bf16 matmul instructions, as oneDNN reports it (avx512_bf16 or AMX)."""
    try:
        native = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):
        return "this CPU's bf16 support: unknown"
    return ("this CPU has native bf16 instructions, as oneDNN reports" if native else
            "this CPU has no native bf16 instructions, as oneDNN reports: bf16 math is emulated in fp32")


def _change(ms, base_ms) -> str:
    return f"{(ms / base_ms - 1) * 100:+.0f}%"


def build_galip(model_cfg, device, seed: int = 0) -> GALIP:
    torch.manual_seed(seed)
    clip = build_clip(model_cfg.clip, taps=model_cfg.d_taps, device=device, seed=seed)
    return GALIP(model_cfg, clip=clip).to(device)


def _peak_gib(device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else float("nan")


def _reset_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _fast_parts(galip, device, tokens, batch: int, sizes) -> dict:
    """Median ms per call at `batch` of the fast path's parts, each on its own and uncompiled: bf16 autocast alone
    (contiguous layout) and channels_last alone (fp32)."""
    toks = tokens[torch.arange(batch) % len(tokens)].to(device)
    noise = torch.randn(batch, galip.cfg.z_dim, generator=torch.Generator().manual_seed(0)).to(device)
    out = {}
    for part, autocast, channels_last in (("bf16 autocast", True, False), ("channels_last", False, True)):
        if channels_last:
            galip.generator.to(memory_format=torch.channels_last)

        def step():
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                galip.generator(noise, galip.text_condition(toks))
        try:
            for _ in range(sizes.warmup):
                step()
            out[part] = statistics.median(time_once(step, device) for _ in range(max(sizes.repeats, 3))) * 1000
        finally:
            galip.generator.to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        out["casts"], out["ops"] = bf16_casts(lambda: galip.generator(noise, galip.text_condition(toks)), device)
    return out


def slower_note(change: str, parts: dict, base_ms: float) -> str:
    """A fast row's note when it came out slower than faithful: by how much, and each part's share measured."""
    measured = ", ".join(f"{k} {_change(v, base_ms)}" for k, v in parts.items() if k not in ("casts", "ops"))
    return f"slower than faithful ({change}); each part alone, uncompiled: {measured}"


def why_fast_is_slower(device, compiled: bool, parts: dict, quick: bool) -> str:
    """The line under the table that says why the fast path came out slower: what it is on this device, each part
    timed alone (_fast_parts) against faithful, the casts autocast adds, and which parts cost (over +10%)."""
    where = "a CPU" if device.type == "cpu" else device.type
    compile_text = ("with torch.compile" if compiled else
                    "without torch.compile (fast mode compiles on a GPU only)")
    changes = {k: parts[k] / parts["faithful"] - 1 for k in ("bf16 autocast", "channels_last")}
    costly = [k for k, c in changes.items() if c > 0.10]
    timed = ", ".join(f"{k} {_change(parts[k], parts['faithful'])}" for k in changes)
    lines = [f"why fast is slower here: on {where} the fast path is bf16 autocast + channels_last {compile_text}; "
             f"each timed alone at batch {parts['batch']} (uncompiled) against faithful: {timed}."]
    if "bf16 autocast" in costly:
        size = "the quick (smoke) model's small layers" if quick else "these layer sizes"
        lines.append(f"bf16 autocast adds {parts['casts']:,} casts to bf16 per call (of {parts['ops']:,} operations)"
                     f"{'' if compiled else ' that nothing fuses'}; at {size} they cost more than bf16 arithmetic "
                     "saves" + (f"; {cpu_bf16_support()}" if device.type == "cpu" else "") + ".")
    if "channels_last" in costly:
        lines.append("channels_last alone is slower too: the contiguous layout's convolution kernels are faster "
                     "here.")
    if not costly:
        lines.append("neither part is slower on its own: the difference is within this machine's timing noise "
                     "(rerun on an idle machine, or without --quick for more repeats).")
    return " ".join(lines)


def synthesis(galip, device, sizes) -> tuple:
    """Latency at batch 1 and throughput at `sizes.throughput_batch` per path, and how far the fast images are from
    the faithful ones on the same noise and captions. Returns (rows, fidelity, why): `why` says, where the fast
    path came out slower than the faithful one, what makes it so (its parts timed alone), else None."""
    rows, images, results, compiled = [], {}, {}, False
    tokens = tokenize(SPEED_CAPTIONS)
    noise = torch.randn(sizes.fidelity_batch, galip.cfg.z_dim, generator=torch.Generator().manual_seed(0))
    fidelity_tokens = tokens[torch.arange(sizes.fidelity_batch) % len(tokens)]
    for mode in SYNTHESIS_MODES:
        with Synthesizer(galip, mode) as synth:
            result = measure_speed(synth.encode, synth.generate, tokens, galip.cfg.z_dim, device,
                                   batch_sizes=(1, sizes.throughput_batch), repeats=sizes.repeats,
                                   warmup=sizes.warmup)
            images[mode] = synth(fidelity_tokens, noise)
            compiled |= mode == "fast" and synth.compile
        results[mode] = result
    why, parts = None, {}
    for mode in SYNTHESIS_MODES:
        result = results[mode]
        largest = result["throughput_batch"]
        for batch, name, unit in ((result["latency_batch"], "synthesis latency, batch 1", "ms"),
                                  (largest, f"synthesis throughput, batch {largest}", "img/s")):
            ms = result["per_batch"][batch]["median_s"] * 1000
            base = results["faithful"]["per_batch"][batch]["median_s"] * 1000
            note = ""
            if mode == "fast" and ms > base:
                if batch not in parts:
                    parts[batch] = _fast_parts(galip, device, tokens, batch, sizes)
                note = slower_note(_change(ms, base), parts[batch], base)
                if why is None:
                    why = why_fast_is_slower(device, compiled, {**parts[batch], "faithful": base, "batch": batch},
                                             getattr(sizes, "quick", False))
            value = ms if unit == "ms" else batch * 1000 / ms
            rows.append(row(name, mode, value, unit, note, images=batch, ms=ms))
    embed = lambda x: galip.clip.encode_image(x)[1]  # noqa: E731  (the model's CLIP image tower)
    gap = compare(images["fast"], images["faithful"], embed)
    return rows, {"images": sizes.fidelity_batch, **gap}, why


def train_step_speed(model_cfg, device, sizes) -> list:
    """One optimiser step (D then G) on random inputs at `sizes.train_batch`, per precision (and, on a GPU, with
    train.channels_last)."""
    rows = []
    variants = ([("fp32", False), ("fp16", False), ("bf16", False), ("fp16", True), ("bf16", True)]
                if device.type == "cuda" else [("fp32", False), ("bf16", False)])
    for precision, channels_last in variants:
        _reset_peak(device)
        galip = build_galip(model_cfg, device)
        if channels_last:
            for net in (galip.netG, galip.netD, galip.netC):
                net.to(memory_format=torch.channels_last)
        opt_d, opt_g = make_optimizers(galip, fused=device.type == "cuda")
        amp = AMP.create(precision, device.type)
        b, size = sizes.train_batch, model_cfg.img_size
        gen = torch.Generator().manual_seed(1)
        images = (torch.rand(b, 3, size, size, generator=gen) * 2 - 1).to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        tokens = tokenize([SPEED_CAPTIONS[i % len(SPEED_CAPTIONS)] for i in range(b)]).to(device)
        noise = torch.randn(b, model_cfg.z_dim, generator=gen).to(device)
        step = lambda: train_step(galip, opt_d, opt_g, images, tokens, noise, amp=amp)  # noqa: E731
        for _ in range(sizes.warmup):
            step()
        ms = statistics.median(time_once(step, device) for _ in range(sizes.repeats)) * 1000
        name = ("fp16 + GradScaler" if precision == "fp16" else precision) + (", channels_last" if channels_last
                                                                              else "")
        peak = _peak_gib(device)
        note = f"peak {peak:.1f} GiB" if device.type == "cuda" else ""
        if precision == "fp32" and not channels_last:
            fp32_ms = ms
        elif precision == "bf16" and ms > fp32_ms:  # meant to be faster: say what it costs
            casts, ops = bf16_casts(step, device)
            note = "; ".join(t for t in (note, f"slower than fp32 ({_change(ms, fp32_ms)}): bf16 autocast adds "
                                               f"{casts:,} casts to bf16 per step (of {ops:,} operations), uncompiled"
                                         + (f"; {cpu_bf16_support()}" if device.type == "cpu" else "")) if t)
        rows.append(row(f"training step, batch {b}", name, ms, "ms", note, images=b, ms=ms))
        rows.append(row(f"training step, batch {b}", name, b * 1000 / ms, "img/s", note, images=b, ms=ms))
        del galip, opt_d, opt_g
    return rows


def train_end_to_end(model_cfg, device, sizes, work: Path) -> list:
    """A real run (data loading with workers, steps, logs, a checkpoint) on a generated COCO-layout tree of
    full-size JPEGs, once per JPEG decoder (PIL in the loader workers; torchvision on the training device, nvJPEG on
    a GPU); images/s over the steps after the first third (start-up and worker spin-up excluded)."""
    root = _fake_coco(work, sizes)
    rows = []
    for decode in DECODERS:
        _reset_peak(device)
        train = TrainConfig(steps=sizes.e2e_steps, epochs=None, batch_size=sizes.train_batch, device=device.type,
                            log_every=1, ckpt_every=sizes.e2e_steps, sample_every=0, eval_every=0)
        data = DataConfig(kind="coco", root=str(root), num_workers=sizes.workers, decode=decode)
        cfg = resolve_run_config(RunConfig(grid="bench", variant=f"e2e-{decode}", model=model_cfg, data=data,
                                           train=train, eval=EvalConfig(protocols=[])))
        run_dir = RunDir(work / f"e2e-{decode}")
        t0 = time.perf_counter()
        train_run(cfg, run_dir, progress=False, cache_dir=str(work / "cache"))
        wall = time.perf_counter() - t0
        log = read_jsonl(run_dir.train_log)
        first = log[len(log) // 3]
        images = (log[-1]["step"] - first["step"]) * sizes.train_batch  # trained after the first logged third
        ms = (log[-1]["time"] - first["time"]) * 1000
        workers = sizes.workers if sizes.workers is not None else "auto"
        note = (f"{cfg.data.size} px crops of {sizes.e2e_images:,} JPEGs, {workers} workers, {len(log)} steps in "
                f"{wall:.0f} s incl. start-up" + (f", peak {_peak_gib(device):.1f} GiB" if device.type == "cuda"
                                                   else ""))
        rows.append(row(f"training end to end, batch {sizes.train_batch}", f"{cfg.train.precision}, decode {decode}",
                        images * 1000 / ms, "img/s", note, images=images, ms=ms))
    return rows


def evaluation(galip, device, sizes, site, work: Path) -> tuple:
    """fid_galip + clip_score_galip on `sizes.eval_n` samples of the fake COCO tree's test captions, per path, with
    the reference statistics read from an npz (as GALIP's released ones are), so no reference pass is timed.
    Start-up (captions, extractors, the fast path's compilation) is timed apart from the steady evaluation."""
    root = _fake_coco(work, sizes)
    if sizes.extractor != "tiny":  # the smoke stand-ins compare against the split, computed at start-up
        _write_reference(root)
    data = DataConfig(kind="coco", root=str(root), size=canvas_size(galip.cfg.img_size), num_workers=sizes.workers)
    rows, values = [], {}
    for mode in SYNTHESIS_MODES:
        cfg = EvalConfig(protocols=["fid_galip", "clip_score_galip"], num_samples=sizes.eval_n,
                         batch_size=sizes.eval_batch, bootstrap=0, extractor=sizes.extractor, synthesis=mode)
        t0 = time.perf_counter()
        evaluator = Evaluator(cfg, data, site, device, progress=False)
        evaluator.prepare(galip)
        with Synthesizer(galip, mode) as synth:  # compiles the fast path at the evaluation batch shape
            synth(tokenize(SPEED_CAPTIONS[:1] * sizes.eval_batch), torch.zeros(sizes.eval_batch, galip.cfg.z_dim))
        startup = time.perf_counter() - t0
        t1 = time.perf_counter()
        records = evaluator(galip, step=0, final=False)
        steady = time.perf_counter() - t1
        values[mode] = {r["metric"]: r["value"] for r in records}
        rows.append(row(f"evaluation, fid_galip + clip_score_galip, N={sizes.eval_n:,}", mode,
                        sizes.eval_n / steady, "img/s", f"{steady:.1f} s steady + {startup:.1f} s start-up",
                        images=sizes.eval_n, ms=steady * 1000))
    moved = {m: values["fast"][m] - values["faithful"][m] for m in values["faithful"]}
    return rows, {"faithful": values["faithful"], "fast": values["fast"], "fast_minus_faithful": moved}


def _fake_coco(work: Path, sizes) -> Path:
    """The generated COCO tree both the training and the evaluation rows read (written once per bench)."""
    root = work / "fake-coco"
    if not (root / "test" / "filenames.pickle").is_file():
        write_fake_coco(root, sizes.e2e_images, progress=False)
    return root


def _write_reference(root: Path) -> None:
    """Stand-in for GALIP's released statistics (values meaningless, shape right), where fid_galip looks for them,
    so the timed evaluation reads its reference as the official loop does."""
    path = Path(official_stats_path(DataConfig(kind="coco", root=str(root))))
    if path.exists():  # written by an earlier bench in the same --work folder (same seed, same values)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    dim = FIDGALIP.feature_dim
    a = rng.normal(size=(dim, dim)) / dim
    np.savez(path, mu=rng.normal(size=dim), sigma=a @ a.T + np.eye(dim) * 1e-3)
