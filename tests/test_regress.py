"""`galip-bench regress`: verdicts and exit codes on hand-made records, tolerance parsing, settings refusal, and one
end-to-end baseline -> gate round trip with a tiny checkpoint on synthetic data."""
import json

import pytest

from galip_bench.cli import main
from galip_bench.errors import UserError
from galip_bench.evaluation import get_protocol, regress
from galip_bench.evaluation.plans import SamplePlan


def rec(proto, value, metric=None, num_samples=30000):
    """A record as the driver writes it: settings serialised from the protocol that ran a fixed plan of N."""
    p = get_protocol(proto, plan=SamplePlan("fixed", num_samples=num_samples))
    p.ran = {"num_samples": num_samples}
    return {"step": 100, "protocol": proto, "metric": metric or proto, "value": value, "num_samples": num_samples,
            "settings": p.settings_dict(), "dataset": "coco:test:abc"}


OLD = [rec("fid_galip", 5.00), rec("clip_score_galip", 0.3380), rec("kid", 0.0100), rec("kid", 0.0010, "kid_std")]
TOL = regress.parse_tolerances("fid_galip=+0.3,clip_score_galip=-0.002")


def verdicts(rows):
    return {r["metric"]: r["verdict"] for r in rows}


def test_within_tolerance_passes():
    new = [rec("fid_galip", 5.29), rec("clip_score_galip", 0.3361), rec("kid", 0.0100), rec("kid", 0.5, "kid_std")]
    rows, code = regress.compare(OLD, new, TOL)
    assert code == 0
    assert verdicts(rows) == {"fid_galip": "ok", "clip_score_galip": "ok", "kid": "ok", "kid_std": "info"}
    fid = next(r for r in rows if r["metric"] == "fid_galip")
    assert fid["old"] == 5.0 and fid["new"] == 5.29 and fid["delta"] == pytest.approx(0.29)


def test_beyond_tolerance_regresses_in_the_metrics_worse_direction():
    # FID up by 0.31 (> 0.3) is worse; CLIP score up is better; KID with default tolerance 0 regresses on any rise
    new = [rec("fid_galip", 5.31), rec("clip_score_galip", 0.40), rec("kid", 0.0101), rec("kid", 0.0, "kid_std")]
    rows, code = regress.compare(OLD, new, TOL)
    assert code == 1
    assert verdicts(rows) == {"fid_galip": "regressed", "clip_score_galip": "improved", "kid": "regressed",
                              "kid_std": "info"}
    # CLIP score down by 0.0021 (> 0.002) regresses; FID down improves
    rows, code = regress.compare(OLD, [rec("fid_galip", 4.0), rec("clip_score_galip", 0.3359), rec("kid", 0.01)], TOL)
    assert code == 1 and verdicts(rows)["clip_score_galip"] == "regressed" and verdicts(rows)["fid_galip"] == "improved"


def test_missing_or_nan_metric_counts_as_regression():
    rows, code = regress.compare(OLD, [rec("fid_galip", 5.0), rec("clip_score_galip", float("nan"))], TOL)
    assert code == 1 and verdicts(rows)["clip_score_galip"] == "missing" and verdicts(rows)["kid"] == "missing"
    # restricted to the protocols that were measured, the same records pass
    rows, code = regress.compare(OLD, [rec("fid_galip", 5.0)], TOL, protocols=["fid_galip"])
    assert code == 0 and [r["metric"] for r in rows] == ["fid_galip"]


def test_speed_is_relative_and_higher_throughput_is_better():
    old = [rec("speed", 20.0, "latency_ms"), rec("speed", 400.0, "throughput_img_s"), rec("speed", 1, "latency_batch")]
    new = [rec("speed", 21.9, "latency_ms"), rec("speed", 361.0, "throughput_img_s"), rec("speed", 1, "latency_batch")]
    rows, code = regress.compare(old, new)  # default speed tolerance: 10 % worse
    assert code == 0 and verdicts(rows) == {"latency_ms": "ok", "throughput_img_s": "ok", "latency_batch": "info"}
    rows, code = regress.compare(old, new, regress.parse_tolerances("latency_ms=+5%"))
    assert code == 1 and verdicts(rows)["latency_ms"] == "regressed"  # 9.5 % slower > 5 %


def test_tolerance_parsing_and_usage_errors():
    assert regress.parse_tolerances("fid_galip=+0.3, clip_score_galip=-0.002,latency_ms=+10%") == {
        "fid_galip": (0.3, False), "clip_score_galip": (0.002, False), "latency_ms": (10.0, True)}
    assert regress.parse_tolerances("fid_galip=0.5") == {"fid_galip": (0.5, False)}
    for bad in ("fid_galip", "fid_galip=abc", "fid_galip=-0.3", "clip_score_galip=+0.01"):
        with pytest.raises(UserError):
            regress.parse_tolerances(bad)
    with pytest.raises(UserError, match="no such metric"):
        regress.compare(OLD, OLD, regress.parse_tolerances("fid=+1"))
    with pytest.raises(UserError, match="not in the baseline"):
        regress.compare(OLD, OLD, protocols=["fid_clean"])


def test_different_settings_are_refused():
    regress.check_settings(OLD, [rec("fid_galip", 9.0)])  # same settings: fine
    with pytest.raises(UserError, match="num_samples: baseline 30000 vs new 5000"):
        regress.check_settings(OLD, [rec("fid_galip", 5.0, num_samples=5000)])
    other = dict(rec("clip_score_galip", 0.3), dataset="coco:test:zzz")
    with pytest.raises(UserError, match="dataset"):
        regress.check_settings(OLD, [other])


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return str(path)


def test_cli_exit_codes_on_records(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    base = _write(tmp_path / "base.json", OLD)   # a plain `eval --out` list works as a baseline
    good = _write(tmp_path / "good.json", [rec("fid_galip", 5.1), rec("clip_score_galip", 0.3379), rec("kid", 0.01),
                                           rec("kid", 0.1, "kid_std")])
    bad = _write(tmp_path / "bad.json", [rec("fid_galip", 5.5), rec("clip_score_galip", 0.3379), rec("kid", 0.01)])
    tol = "fid_galip=+0.3,clip_score_galip=-0.002"
    assert main(["regress", "--records", good, "--baseline", base, "--tolerance", tol]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "fid_galip" in out and "+0.1" in out
    result = json.loads((tmp_path / "regress.json").read_text())
    assert result["exit_code"] == 0 and result["verdict"] == "pass"
    assert main(["regress", "--records", bad, "--baseline", base, "--tolerance", tol, "--out", "r.json"]) == 1
    out = capsys.readouterr().out
    assert "REGRESSED" in out
    rows = {r["metric"]: r for r in json.loads((tmp_path / "r.json").read_text())["rows"]}
    assert rows["fid_galip"]["verdict"] == "regressed" and rows["fid_galip"]["delta"] == pytest.approx(0.5)
    # usage errors: exit 2 with one line
    assert main(["regress", "--records", good]) == 2
    assert main(["regress", "--records", good, "--baseline", str(tmp_path / "nope.json")]) == 2
    assert main(["regress", "--records", good, "--baseline", base, "--tolerance", "fid_galip=-1"]) == 2
    assert main(["regress", "--records", good, "--baseline", base, "--protocols", "fid"]) == 2
    other = _write(tmp_path / "other.json", [rec("fid_galip", 5.0, num_samples=10)])
    assert main(["regress", "--records", other, "--baseline", base, "--protocols", "fid_galip"]) == 2
    err = capsys.readouterr().err
    assert "different settings" in err and "nope.json not found" in err


def test_write_baseline_then_gate_a_checkpoint(tmp_path, monkeypatch, capsys):
    from helpers import tiny_galip

    from galip_bench.checkpoints import save_checkpoint
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.yaml").write_text("data: {kind: synthetic, size: 32, num_test: 8}\n")  # 80 > 64-d features
    a = save_checkpoint(tmp_path / "a.pt", tiny_galip(seed=1), step=3)
    b = save_checkpoint(tmp_path / "b.pt", tiny_galip(seed=2), step=3)
    assert main(["regress", "--checkpoint", str(a), "--data", "data.yaml", "--write-baseline", "base.json",
                 "--protocols", "fid_galip,clip_score_galip", "--num", "80", "--batch", "16",
                 "--extractor", "tiny"]) == 0, capsys.readouterr().err
    base = json.loads((tmp_path / "base.json").read_text())
    assert base["baseline"] and base["data"]["num_test"] == 8
    assert base["eval"] == {"protocols": ["fid_galip", "clip_score_galip"], "num_samples": 80, "passes": None,
                            "batch_size": 16, "seed": 0, "extractor": "tiny", "reference": "auto", "bootstrap": 100,
                            "synthesis": "faithful", "official_ranks": 1}
    # the same checkpoint, re-evaluated with the baseline's own settings, reproduces it exactly: exit 0; plan
    # options equal to the baseline's are accepted (the negative control of the refusals below)
    assert main(["regress", "--checkpoint", str(a), "--baseline", "base.json", "--num", "80",
                 "--extractor", "tiny", "--batch", "16"]) == 0, capsys.readouterr().err
    rows = json.loads((tmp_path / "regress.json").read_text())["rows"]
    assert all(r["delta"] == 0 for r in rows) and {r["verdict"] for r in rows} == {"ok"}
    # a plan option that differs from the baseline's would be ignored (the gate evaluates with the baseline's
    # settings): refused with one line naming the option, its value and the baseline's, before any evaluation
    capsys.readouterr()
    verdict = (tmp_path / "regress.json").read_bytes()
    for argv, said in ((["--num", "5000"], "--num 5000 differs from the baseline's num_samples 80"),
                       (["--extractor", "default"], "--extractor default differs from the baseline's extractor tiny"),
                       (["--synthesis", "fast"], "--synthesis fast differs from the baseline's synthesis faithful")):
        assert main(["regress", "--checkpoint", str(b), "--baseline", "base.json", *argv]) == 2, argv
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and said in lines[0], captured.err
        assert "Traceback" not in captured.err and captured.out == ""
    assert (tmp_path / "regress.json").read_bytes() == verdict
    # against records too (nothing is evaluated there, and the option would be just as ignored)
    assert main(["regress", "--records", "base.json", "--baseline", "base.json", "--num", "81"]) == 2
    assert "--num 81 differs from the baseline's num_samples 80" in capsys.readouterr().err
    assert main(["regress", "--records", "base.json", "--baseline", "base.json", "--seed", "3"]) == 2
    assert "--seed 3 differs from the baseline's seed 0" in capsys.readouterr().err
    # --seed re-draws the baseline's plan (other captions and noise): evaluated, tested unpaired
    assert main(["regress", "--checkpoint", str(a), "--baseline", "base.json", "--seed", "3"]) in (0, 1)
    out = capsys.readouterr().out
    assert "re-drawn: the baseline's plan with --seed 3" in out and "unpaired [" in out
    # another checkpoint differs; whichever way, the verdicts follow the metric directions
    code = main(["regress", "--checkpoint", str(b), "--baseline", "base.json"])
    rows = {r["metric"]: r for r in json.loads((tmp_path / "regress.json").read_text())["rows"]}
    worse = rows["fid_galip"]["delta"] > 0 or rows["clip_score_galip"]["delta"] < 0
    assert code == (1 if worse else 0)
    assert all(r["old"] == o["value"] for r, o in zip(sorted(rows.values(), key=lambda r: r["metric"]),
                                                       sorted(base["records"], key=lambda r: r["metric"])))
    # the baseline carries its data: a --data on top is a usage error
    assert main(["regress", "--checkpoint", str(b), "--baseline", "base.json", "--data", "data.yaml"]) == 2
