"""`galip-bench bench --quick` on the CPU: every row group for both paths, each row's value against the interval it
was timed over (and the end-to-end rate against the run's own log), the fast path's distance from the faithful one,
why the fast path is slower where it is, and a JSON file with the device, versions and settings. The speed timer
itself is checked against callables of known duration."""
import json
import math
import time

import pytest
import torch

from galip_bench.cli import main
from galip_bench.metrics.speed import measure_speed, time_once
from galip_bench.runs.rundir import read_jsonl


def test_bench_quick_runs_on_the_cpu_and_writes_every_row(tmp_path, capsys):
    out, work = tmp_path / "bench.json", tmp_path / "work"
    start = time.perf_counter()
    assert main(["bench", "--quick", "--device", "cpu", "--work", str(work), "--out", str(out)]) == 0
    wall_ms = (time.perf_counter() - start) * 1000
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["quick"] and result["versions"]["torch"]
    assert result["settings"]["train_batch"] == 4
    groups = {}
    for r in result["rows"]:
        assert math.isfinite(r["value"]) and r["value"] > 0, r
        # the value against the interval it was timed over: ms is that interval, img/s = images * 1000 / ms
        # (img/s computed as ms per batch, or ms reported in seconds, fails here or on the bounds)
        assert 0.1 < r["ms"] < wall_ms and r["images"] >= 1, r
        expected = r["ms"] if r["unit"] == "ms" else r["images"] * 1000 / r["ms"]
        assert r["unit"] in ("ms", "img/s") and r["value"] == pytest.approx(expected, rel=1e-9), r
        groups.setdefault(r["row"].split(",")[0], set()).add(r["path"])
    assert groups["synthesis latency"] == groups["synthesis throughput"] == {"faithful", "fast"}
    assert groups["evaluation"] == {"faithful", "fast"}
    assert groups["training step"] == {"fp32", "bf16"}
    assert groups["training end to end"] == {"fp32, decode pil", "fp32, decode torchvision"}
    by = {(r["row"], r["path"], r["unit"]): r for r in result["rows"]}
    assert by[("synthesis latency, batch 1", "faithful", "ms")]["images"] == 1
    assert by[("synthesis throughput, batch 8", "fast", "img/s")]["images"] == 8
    for path in ("fp32", "bf16"):  # one timed step gives both rows of a path: img/s = batch * 1000 / ms
        ms, rate = by[("training step, batch 4", path, "ms")], by[("training step, batch 4", path, "img/s")]
        assert rate["value"] == pytest.approx(4 * 1000 / ms["value"], rel=1e-9)
    assert by[("evaluation, fid_galip + clip_score_galip, N=72", "fast", "img/s")]["images"] == 72
    # the end-to-end rate recomputed from the run's own log: images trained after the first third over their time
    for decode in ("pil", "torchvision"):
        log = read_jsonl(work / f"e2e-{decode}" / "train_log.jsonl")
        first, last = log[len(log) // 3], log[-1]
        rate = (last["step"] - first["step"]) * 4 / (last["time"] - first["time"])
        assert by[("training end to end, batch 4", f"fp32, decode {decode}", "img/s")]["value"] == pytest.approx(rate)
    gap = result["fast_vs_faithful_images"]
    assert 0 < gap["mean_abs"] < 0.05 and gap["cosine_min"] > 0.99
    assert set(result["fast_vs_faithful_metrics"]["fast_minus_faithful"]) == {"fid_galip", "clip_score_galip"}
    printed = capsys.readouterr().out
    assert "synthesis throughput, batch 8" in printed and "fast minus faithful" in printed
    slower = [r for r in result["rows"] if r["path"] == "fast" and r["row"].startswith("synthesis")
              and r["note"].startswith("slower than faithful")]
    assert bool(slower) == bool(result["why_fast_is_slower"])  # a slower fast row always says why, under the table
    if slower:
        assert result["why_fast_is_slower"] in printed


def test_a_slower_fast_path_says_why_and_a_faster_one_does_not(monkeypatch):
    """The synthesis rows with measure_speed's timings fixed: fast 3x slower than faithful -> its rows say so and
    the line under the table names each part's measured cost and autocast's casts; fast 2x faster -> neither."""
    from types import SimpleNamespace

    from galip_bench.benchmark import model_config, sections
    torch.manual_seed(0)
    galip = sections.build_galip(model_config(True), torch.device("cpu")).eval()
    sizes = SimpleNamespace(throughput_batch=8, fidelity_batch=2, repeats=2, warmup=1, quick=True)
    for factor, slower in ((3.0, True), (0.5, False)):
        calls = []

        def fixed(encode, generate, tokens, z_dim, device, batch_sizes, repeats, warmup):
            scale = factor if len(calls) else 1.0  # faithful first, then fast
            calls.append(scale)
            per = {b: {"median_s": 0.01 * b * scale, "img_s": 1 / (0.01 * scale)} for b in batch_sizes}
            return {"latency_ms": 10.0 * scale, "latency_batch": 1, "throughput_batch": 8,
                    "throughput_img_s": per[8]["img_s"], "per_batch": per}
        monkeypatch.setattr(sections, "measure_speed", fixed)
        rows, _, why = sections.synthesis(galip, torch.device("cpu"), sizes)
        fast = [r for r in rows if r["path"] == "fast"]
        assert [r["value"] for r in fast] == pytest.approx([10.0 * factor, 8 / (0.08 * factor)])
        if slower:
            assert all(r["note"].startswith("slower than faithful (+200%); each part alone, uncompiled: bf16 "
                                            "autocast ") and "channels_last " in r["note"] for r in fast)
            assert why.startswith("why fast is slower here: on a CPU the fast path is bf16 autocast + channels_last "
                                  "without torch.compile") and "at batch 1 (uncompiled) against faithful" in why
        else:
            assert all(r["note"] == "" for r in rows) and why is None


def test_why_line_names_the_parts_that_cost():
    from galip_bench.benchmark.sections import why_fast_is_slower
    parts = {"faithful": 10.0, "bf16 autocast": 19.0, "channels_last": 9.6, "casts": 480, "ops": 1229, "batch": 1}
    text = why_fast_is_slower(torch.device("cpu"), False, parts, True)
    assert "bf16 autocast +90%, channels_last -4%" in text
    assert "bf16 autocast adds 480 casts to bf16 per call (of 1,229 operations) that nothing fuses" in text
    assert "quick (smoke) model" in text and "channels_last alone is slower" not in text
    text = why_fast_is_slower(torch.device("cpu"), False, {**parts, "bf16 autocast": 10.2}, True)
    assert "casts" not in text and "timing noise" in text


# ---- the timer ------------------------------------------------------------------------------------------------------

def test_time_once_measures_seconds_of_a_known_sleep():
    # sleep never returns early; a loaded machine may wake it late, hence the generous upper bound
    seconds = time_once(lambda: time.sleep(0.05), torch.device("cpu"))
    assert 0.05 <= seconds < 0.05 + 0.25, seconds


def test_measure_speed_reports_ms_and_images_per_second_of_known_durations():
    """A generator that sleeps 10 ms + 2 ms per image: latency (batch 1) 12 ms, batch 8 takes 26 ms (307.7 img/s).
    Milliseconds reported as seconds, or img/s as time per batch, fail these bounds."""
    def generator(noise, sent):
        time.sleep(0.010 + 0.002 * noise.shape[0])

    tokens = torch.zeros(3, 77, dtype=torch.long)
    result = measure_speed(lambda toks: toks.float(), generator, tokens, 4, "cpu", batch_sizes=(1, 8), repeats=3,
                           warmup=1)
    assert result["latency_batch"] == 1 and result["throughput_batch"] == 8
    assert 12.0 <= result["latency_ms"] < 12.0 + 25.0, result
    per8 = result["per_batch"][8]
    assert 0.026 <= per8["median_s"] < 0.026 + 0.025, result
    assert per8["img_s"] == pytest.approx(8 / per8["median_s"]) and result["throughput_img_s"] == per8["img_s"]
    assert 8 / 0.051 < result["throughput_img_s"] <= 8 / 0.026
