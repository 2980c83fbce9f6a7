"""Synthesis speed: text encoding + generator, latency at batch 1 and throughput at the largest batch that fits.

Takes callables, not models/ internals: ``encode_text(tokens) -> sentence embeddings`` and
``generator(noise, sent_emb) -> images``. Timing follows the usual GPU-benchmark rules: warm-up iterations,
CUDA events with a synchronisation on GPU (``time.perf_counter`` on CPU), the median of the repeats.
"""
from __future__ import annotations

import statistics
import time

import torch


def time_once(fn, device: torch.device) -> float:
    """Seconds for one call of ``fn``; CUDA events around it on GPU."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1000.0
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


@torch.no_grad()
def measure_speed(encode_text, generator, tokens: torch.Tensor, noise_dim: int, device="cpu",
                  batch_sizes=(1, 8, 32, 64, 128, 256), repeats: int = 10, warmup: int = 3, seed: int = 0,
                  report=None) -> dict:
    """Latency (batch 1) and throughput (images/s at the largest batch in ``batch_sizes`` that fits in memory).

    ``tokens``: [N, L] token ids; rows are tiled to each batch size. Returns a dict with ``latency_ms`` (median
    seconds per batch-1 call x 1000), ``throughput_img_s``, ``throughput_batch``, and per batch size
    ``{batch: {"median_s", "img_s"}}`` under ``per_batch``.
    """
    device = torch.device(device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    per_batch = {}
    for bs in sorted(set(int(b) for b in batch_sizes)):
        toks = tokens[torch.arange(bs) % len(tokens)].to(device)
        noise = torch.randn(bs, noise_dim, generator=gen).to(device)

        def step():
            generator(noise, encode_text(toks))
        try:
            for _ in range(warmup):
                step()
            times = [time_once(step, device) for _ in range(repeats)]
        except (RuntimeError, torch.OutOfMemoryError) as err:
            if not _is_oom(err) or not per_batch:
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            break  # larger batches will not fit either
        median = statistics.median(times)
        per_batch[bs] = {"median_s": median, "img_s": bs / median}
        if report is not None:
            report(bs, per_batch[bs])
    largest = max(per_batch)
    smallest = min(per_batch)
    return {
        "device": str(device),
        "latency_ms": per_batch[smallest]["median_s"] * 1000.0,
        "latency_batch": smallest,
        "throughput_img_s": per_batch[largest]["img_s"],
        "throughput_batch": largest,
        "repeats": repeats,
        "warmup": warmup,
        "per_batch": per_batch,
    }
