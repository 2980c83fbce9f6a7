"""`galip-bench bench --quick` on the CPU: every row group for both paths, the fast path's distance from the
faithful one, and a JSON file with the device, versions and settings."""
import json
import math

from galip_bench.cli import main


def test_bench_quick_runs_on_the_cpu_and_writes_every_row(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--device", "cpu", "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["quick"] and result["versions"]["torch"]
    assert result["settings"]["train_batch"] == 4
    groups = {}
    for r in result["rows"]:
        assert math.isfinite(r["value"]) and r["value"] > 0, r
        groups.setdefault(r["row"].split(",")[0], set()).add(r["path"])
    assert groups["synthesis latency"] == groups["synthesis throughput"] == {"faithful", "fast"}
    assert groups["evaluation"] == {"faithful", "fast"}
    assert groups["training step"] == {"fp32", "bf16"}
    assert groups["training end to end"] == {"fp32, decode pil", "fp32, decode torchvision"}
    gap = result["fast_vs_faithful_images"]
    assert 0 < gap["mean_abs"] < 0.05 and gap["cosine_min"] > 0.99
    assert set(result["fast_vs_faithful_metrics"]["fast_minus_faithful"]) == {"fid_galip", "clip_score_galip"}
    printed = capsys.readouterr().out
    assert "synthesis throughput, batch 8" in printed and "fast minus faithful" in printed
