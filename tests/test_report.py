"""`galip-bench report`: a report built from hand-made run folders (finished, failed and still-running runs), its
table values checked against the records, the paper references, and the CLI."""
import json
import math
import os
import re
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from galip_bench.cli import main
from galip_bench.evaluation import get_protocol
from galip_bench.evaluation.plans import SamplePlan
from galip_bench.report import build_report, tables

HOST = os.uname().nodename


def settings(proto, num_samples=None, npz=None):
    """Settings as the driver records them: a fixed plan of N, or with `npz` the official plan (1 pass over
    COCO's 40,504 test images) against that statistics file."""
    official = npz is not None
    plan = SamplePlan(passes=1) if official else SamplePlan("fixed", num_samples=num_samples) if num_samples else None
    p = get_protocol(proto, plan=plan)
    p.ran = {"num_samples": 40448 if official else num_samples}
    if official and p.kind == "features":
        p.reference = f"npz:{npz}"
    return p.settings_dict()


# the paper grid's recipe as a run's config.yaml records it (resolved: 1 process x 8 micro-batches of 64)
PAPER_TRAIN = {"batch_size": 64, "global_batch": 512, "processes": 1, "grad_accum": 8, "epochs": 1000, "steps": None,
               "precision": "fp16", "noise": "official", "tf32": True, "recipe_change": None}


def make_run(root, run_id, variant, seed, state, values, steps=120, step=None, error=None, pid=None,
             num_samples=128, samples=True, speed=None, npz=None, config=None, dataset="synthetic:test:abc",
             smoke=False):
    """A run folder as the trainer writes it. values: {metric: {step: value}} (metric == protocol name); `smoke`:
    the records of a smoke stand-in extractor (settings.smoke true, as evaluation.spec writes them)."""
    d = Path(root) / run_id
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({
        "grid": Path(root).name, "variant": variant, "seed": seed,
        "eval": {"protocols": sorted(values), "num_samples": num_samples, "batch_size": 64, "seed": 0,
                 "extractor": "default", "data": None}, **(config or {})}))
    done = max((s for v in values.values() for s in v), default=0)
    status = {"state": state, "step": done if step is None else step, "steps": steps, "variant": variant,
              "seed": seed, "error": error, "host": HOST, "pid": pid or os.getpid(), "updated": 0.0,
              "executor": "local"}
    (d / "status.json").write_text(json.dumps(status))
    lines = []
    for metric, series in values.items():
        for s, v in series.items():
            lines.append({"step": s, "protocol": metric, "metric": metric, "value": v, "num_samples": num_samples,
                          "settings": {**settings(metric, num_samples, npz), **({"smoke": True} if smoke else {})},
                          "dataset": dataset, "time": 0.0, "eval_s": 0.1})
    for metric, v in (speed or {}).items():
        lines.append({"step": None, "protocol": "speed", "metric": metric, "value": v,
                      "settings": {**settings("speed"), **({"smoke": True} if smoke else {})}, "time": 0.0})
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (d / "train_log.jsonl").write_text("".join(json.dumps({"step": s, "errD": 1.0, "errG": 0.5}) + "\n"
                                               for s in (20, 40)))
    if samples:
        (d / "samples").mkdir()
        for s in (60, done or 60):
            sheet = Image.fromarray(np.full((34, 130, 3), 40 * seed + s % 200, np.uint8))
            sheet.save(d / "samples" / f"step_{s:08d}.png")
            (d / "samples" / f"step_{s:08d}.txt").write_text("a red circle\na blue square\na small green triangle")
    return d


FULL = {0: ({60: 30.0, 120: 20.0}, {60: 0.20, 120: 0.25}),
        1: ({60: 28.0, 120: 22.0}, {60: 0.21, 120: 0.24}),
        2: ({60: 26.0, 120: 27.0}, {60: 0.22, 120: 0.20})}


def dead_pid():
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
            pid += 1
        except ProcessLookupError:
            return pid
        except PermissionError:
            pid += 1


@pytest.fixture
def grid(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "runs" / "synth"
    for seed, (fid, cs) in FULL.items():
        make_run(root, f"full{seed}", "full", seed, "finished", {"fid_galip": fid, "clip_score_galip": cs},
                 speed={"latency_ms": 20.0, "latency_batch": 1, "throughput_img_s": 400.0, "throughput_batch": 64})
    make_run(root, "nopr0", "no_prompts", 0, "finished", {"fid_galip": {60: 40.0, 120: 35.0},
                                                          "clip_score_galip": {60: 0.1, 120: 0.15}})
    make_run(root, "nopr1", "no_prompts", 1, "failed", {"fid_galip": {60: 99.0}, "clip_score_galip": {60: 0.01}},
             error="RuntimeError: CUDA out of memory\ntraceback...")
    # still running (this process is alive): its numbers are not in the finished mean
    make_run(root, "nopr2", "no_prompts", 2, "running", {"fid_galip": {60: 50.0}, "clip_score_galip": {60: 0.05}},
             step=80)
    # running only, marked 'running' but its process is gone: effective state failed; provisional numbers
    make_run(root, "scr0", "scratch_d", 0, "running", {"fid_galip": {60: 70.0}, "clip_score_galip": {60: 0.02}},
             step=70, pid=dead_pid())
    # never started
    make_run(root, "pend0", "pending_variant", 0, "pending", {}, samples=False)
    return root


def test_report_tables_match_records(grid, tmp_path):
    paths = build_report(grid, tmp_path / "reports" / "synth", "synth", references={"references": []})
    for name in ("report.md", "report.html", "table.csv", "table.tex"):
        assert paths[name].is_file() and paths[name].stat().st_size > 0
    t = pd.read_csv(paths["table.csv"])
    row = lambda v, m: t[(t.variant == v) & (t.metric == m)].iloc[0]  # noqa: E731

    # full: 3 finished seeds; final = step 120, best = min (fid) / max (clip score) over steps
    r = row("full", "fid_galip")
    assert r.n_seeds == 3 and float(r.final_step) == 120 and not r.provisional
    assert r.final_mean == pytest.approx((20 + 22 + 27) / 3)
    assert r.final_std == pytest.approx(statistics.stdev([20.0, 22.0, 27.0]))
    assert r.best_mean == pytest.approx((20 + 22 + 26) / 3)
    assert r.best_std == pytest.approx(statistics.stdev([20.0, 22.0, 26.0]))
    r = row("full", "clip_score_galip")
    assert r.final_mean == pytest.approx((0.25 + 0.24 + 0.20) / 3)
    assert r.best_mean == pytest.approx((0.25 + 0.24 + 0.22) / 3)
    assert r.better == "higher"

    # no_prompts: only the finished seed counts; the failed and the running seeds are listed, not averaged
    r = row("no_prompts", "fid_galip")
    assert r.n_seeds == 1 and r.final_mean == 35.0 and math.isnan(r.final_std) and r.best_mean == 35.0
    assert "finished 1" in r.runs and "running 1 (step 80/120)" in r.runs and "failed 1" in r.runs

    # scratch_d: no finished run -> provisional numbers from the dead 'running' run (effective state: failed)
    r = row("scratch_d", "fid_galip")
    assert r.provisional and r.final_mean == 70.0 and "failed 1 (step 70/120)" in r.runs

    # pending variant: present in the runs table, no metric rows (no records)
    md = paths["report.md"].read_text()
    assert "pending_variant" in md and "**pending**" in md
    assert "**failed**" in md and "CUDA out of memory" in md and "**running**" in md
    assert "scratch_d †" in md
    assert re.search(r"^\| full +\|", md, re.M)
    assert "23.000 ± 3.606" in md
    # no paper columns for a grid the paper does not cover
    assert "paper" not in t.columns.str.cat()

    # speed: latency (batch 1) and throughput (batch 64) points, and the plots
    names = {p.name for p in paths["plots"]}
    assert {"curve_fid_galip.png", "curve_clip_score_galip.png", "bar_fid_galip.png", "bar_clip_score_galip.png",
            "speed.png", "samples_full.png", "samples_no_prompts.png", "samples_scratch_d.png"} <= names
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths["plots"])
    html = paths["report.html"].read_text()
    assert html.count("data:image/png;base64,") == len(paths["plots"]) and "<table>" in html
    tex = paths["table.tex"].read_text()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex and "fid\\_galip" in tex
    assert "23.000 $\\pm$ 3.606" in tex


def test_speed_points(grid):
    from galip_bench.report import load_runs, plots
    _, recs, _ = load_runs(grid)
    pts = plots.speed_points(recs)
    full = pts[pts.variant == "full"].groupby("batch")["img_s"].mean()
    assert full[1] == pytest.approx(1 / 0.020) and full[64] == pytest.approx(400.0)


def test_paper_reference_file_has_the_cited_numbers():
    ref = tables.load_references(Path(__file__).resolve().parents[1] / "reports" / "paper_reference.yaml")
    cells = {(r["grid"], r["metric"], r["label"]): r["value"] for r in ref["references"]}
    assert cells[("paper_table1_coco", "fid_galip", "paper")] == 5.85
    assert cells[("paper_table1_coco", "clip_score_galip", "paper")] == 0.3338
    assert cells[("paper_table1_coco", "fid_galip", "released checkpoint")] == 5.01
    assert cells[("paper_table1_coco", "clip_score_galip", "released checkpoint")] == 0.3379
    assert cells[("paper_table1_cub", "fid_galip", "paper")] == 10.08
    assert cells[("paper_table2_zeroshot", "zs_fid_coco", "paper")] == 12.54
    assert cells[("paper_table2_zeroshot", "zs_fid_coco", "released checkpoint")] == 12.54
    galip = [r for r in ref["references"] if r["grid"] != "clip_gen"]
    assert all(r["source"] and r["protocol"] in ("fid_galip", "clip_score_galip", "zs_fid_coco") for r in galip)
    # every published GALIP number states the official test.sh plan it was measured under (COCO 1 pass, CUB 12)
    plans = {(r["grid"], r["protocol"]): r["plan"] for r in galip}
    assert all(s["plan"] == "official" and s["plan_batch"] == 64 and s["plan_ranks"] == 1 for s in plans.values())
    assert plans[("paper_table1_cub", "fid_galip")]["passes"] == 12
    assert plans[("paper_table1_cub", "fid_galip")]["num_samples"] == 34560
    refs = {(r["grid"], r["protocol"]): r["reference"] for r in galip}
    assert refs[("paper_table1_cub", "fid_galip")] == "npz:bird_val256_FIDK0.npz"
    assert refs[("paper_table2_zeroshot", "zs_fid_coco")] == "npz:coco_val256_FIDK0.npz"
    # CLIP-GEN's MS-COCO table (IS, FID-0/1/2, CapS), its own row and the published baselines
    clipgen = {(r["variant"], r["metric"]): r["value"] for r in ref["references"] if r["grid"] == "clip_gen"}
    assert [clipgen[("clip_gen", m)] for m in ("is_dmgan", "fid_dmgan", "fid_dmgan_blur1", "fid_dmgan_blur2",
                                               "caps")] == [21.4, 20.7, 18.5, 17.4, 0.13751]
    assert clipgen[("cogview", "fid_dmgan_blur2")] == 13.9 and ("dall_e", "caps") not in clipgen
    assert len(clipgen) == 29
    assert ref["parameters"]["netG_trainable"] == 51_830_211
    assert ref["parameters"]["netD"] == 28_706_821 and ref["parameters"]["netC"] == 2_099_200


def test_paper_values_only_where_the_protocol_matches(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "runs" / "paper_table1_coco"
    paper = {"train": PAPER_TRAIN, "data": {"kind": "coco"}}
    make_run(root, "a", "galip", 0, "finished", {"fid_galip": {161000: 6.0}, "clip_score_galip": {161000: 0.33}},
             steps=161000, npz="coco_val256_FIDK0.npz", dataset="coco:test:abc", config=paper)
    make_run(root, "b", "galip", 1, "finished", {"fid_galip": {161000: 6.5}, "clip_score_galip": {161000: 0.34}},
             steps=161000, npz="coco_val256_FIDK0.npz", dataset="coco:test:abc", config=paper)
    ref = tables.load_references(Path(__file__).resolve().parents[1] / "reports" / "paper_reference.yaml")
    t = build_report(root, tmp_path / "out", "paper_table1_coco", references=ref)["table"]
    fid = t[t.metric == "fid_galip"].iloc[0]
    assert fid["ref:paper"] == 5.85 and fid["diff:paper"] == pytest.approx(6.25 - 5.85)
    assert fid["ref:released checkpoint"] == 5.01 and fid["diff:released checkpoint"] == pytest.approx(6.25 - 5.01)
    cs = t[t.metric == "clip_score_galip"].iloc[0]
    assert cs["diff:paper"] == pytest.approx(0.335 - 0.3338)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "+0.4000" in md and "5.850" in md and "netG_trainable 51,830,211" in md
    assert "5.010 (length not stated: not checked)" in md  # the released checkpoint's length is unstated

    # the same grid measured on a fixed 30,000-sample plan, or against other statistics: the published cells stay
    # empty and the note says why
    root2 = tmp_path / "runs2" / "paper_table1_coco"
    make_run(root2, "a", "galip", 0, "finished", {"fid_galip": {120: 60.0}}, num_samples=30000,
             dataset="coco:test:abc", config=paper)
    t2 = build_report(root2, tmp_path / "out2", "paper_table1_coco", references=ref)["table"]
    assert math.isnan(t2.iloc[0]["ref:paper"])
    assert "not comparable (num_samples 30,000 ≠ 40,448)" in t2.iloc[0]["notes"]
    root3 = tmp_path / "runs3" / "paper_table1_coco"
    make_run(root3, "a", "galip", 0, "finished", {"fid_galip": {120: 60.0}}, npz="my_stats.npz",
             dataset="coco:test:abc", config=paper)
    t3 = build_report(root3, tmp_path / "out3", "paper_table1_coco", references=ref)["table"]
    assert math.isnan(t3.iloc[0]["ref:paper"]) and "reference 'npz:my_stats.npz'" in t3.iloc[0]["notes"]


def test_cli_report_by_name_writes_under_reports(grid, tmp_path, capsys):
    assert main(["report", "synth"]) == 0
    out = tmp_path / "reports" / "synth"
    assert (out / "report.md").is_file() and (out / "table.csv").is_file() and (out / "report.html").is_file()
    assert main(["report", "synth", "--out", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "table.tex").is_file()
    assert main(["report", "no_such_grid"]) == 2
    assert "no runs for grid 'no_such_grid'" in capsys.readouterr().err


def test_fid_bootstrap_interval_and_its_display(tmp_path, monkeypatch):
    from galip_bench.evaluation.bootstrap import fid_interval, resample_indices
    from galip_bench.metrics.fid import feature_stats, frechet_distance
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(400, 4))
    gen = rng.normal(0.5, 1.0, size=(300, 4))
    mu, sigma = feature_stats(ref)
    ci = fid_interval(gen, mu, sigma, resamples=50, seed=1)
    # reference: the same resamples through numpy statistics and scipy's sqrtm Frechet distance
    values = [frechet_distance(*feature_stats(gen[idx.numpy()]), mu, sigma) for idx in resample_indices(300, 50, 1)]
    lo, hi = np.quantile(values, [0.025, 0.975])
    assert ci["ci_low"] == pytest.approx(lo, rel=1e-9) and ci["ci_high"] == pytest.approx(hi, rel=1e-9)
    assert ci["ci_resamples"] == 50 and ci["ci_std"] == pytest.approx(np.std(values, ddof=1), rel=1e-9)
    fid = frechet_distance(*feature_stats(gen), mu, sigma)
    assert ci["ci_low"] < fid < ci["ci_high"] and fid_interval(gen, mu, sigma, resamples=50, seed=1) == ci  # seeded
    # a record carrying the interval shows it next to a single-seed value
    monkeypatch.chdir(tmp_path)
    d = make_run(tmp_path / "runs" / "g", "a", "v", 0, "finished", {"fid_galip": {10: fid}}, samples=False)
    r = json.loads((d / "metrics.jsonl").read_text().splitlines()[0])
    (d / "metrics.jsonl").write_text(json.dumps({**r, **ci}) + "\n")
    paths = build_report(tmp_path / "runs" / "g", tmp_path / "out", "g", references={"references": []})
    assert f"[{tables.fmt(ci['ci_low'])}, {tables.fmt(ci['ci_high'])}]" in paths["report.md"].read_text()
    assert paths["table"].iloc[0]["final_ci_low"] == pytest.approx(ci["ci_low"])


def test_speed_points_from_a_per_batch_table():
    from galip_bench.report import plots
    recs = pd.DataFrame([{"run_id": "r", "variant": "v", "protocol": "speed", "metric": "latency_ms", "value": 10.0,
                          "result": {"per_batch": {"1": {"median_s": 0.01, "img_s": 100.0},
                                                   "8": {"median_s": 0.02, "img_s": 400.0}}}}])
    pts = plots.speed_points(recs)
    assert dict(zip(pts.batch, pts.img_s)) == {1: 100.0, 8: 400.0}


def test_runs_of_one_variant_under_different_configs_are_separate_labelled_rows(tmp_path):
    """`--set train.steps=...` on an existing grid adds runs of another configuration: never averaged together."""
    root = tmp_path / "runs" / "smoke"
    make_run(root, "a", "full", 0, "finished", {"fid_galip": {120: 0.10}}, config={"train": {"steps": 120}})
    make_run(root, "b", "full", 0, "finished", {"fid_galip": {12: 0.30}}, config={"train": {"steps": 12}})
    make_run(root, "c", "full", 1, "finished", {"fid_galip": {12: 0.50}}, config={"train": {"steps": 12}})
    t = build_report(root, tmp_path / "out", "smoke", references={"references": []})["table"]
    rows = {r.variant: r for r in t[t.metric == "fid_galip"].itertuples()}
    assert set(rows) == {"full [train.steps=120]", "full [train.steps=12]"}
    assert rows["full [train.steps=12]"].n_seeds == 2 and rows["full [train.steps=12]"].final_mean == pytest.approx(0.4)
    assert rows["full [train.steps=120]"].n_seeds == 1 and rows["full [train.steps=120]"].final_mean == 0.10


def test_a_smoke_report_says_its_numbers_compare_only_within_the_profile(tmp_path):
    root = tmp_path / "runs" / "smoke"
    d = make_run(root, "a", "full", 0, "finished", {"fid_galip": {120: 0.1}}, samples=False)
    r = json.loads((d / "metrics.jsonl").read_text().splitlines()[0])
    smoke = get_protocol("fid_galip", smoke=True).settings_dict()
    (d / "metrics.jsonl").write_text(json.dumps({**r, "settings": smoke}) + "\n")
    md = build_report(root, tmp_path / "out", "smoke", references={"references": []})["report.md"].read_text()
    assert "compare only runs of this profile" in md and "paper-comparable" not in md
    assert "add `speed` to the grid's `eval.protocols`" in md  # an empty section says how to fill it


# ---- stand-in (smoke) numbers are labelled wherever they appear ------------------------------------------------------

def plot_titles(monkeypatch) -> dict:
    """{file name: title and y label} of every plot built while the fixture is active (plots._save intercepted)."""
    from galip_bench.report import plots
    seen, save = {}, plots._save

    def spy(fig, path):
        ax = fig.axes[0]
        seen[Path(path).name] = ax.get_title() + " | " + ax.get_ylabel()
        return save(fig, path)
    monkeypatch.setattr(plots, "_save", spy)
    return seen


@pytest.mark.parametrize("smoke", [True, False])  # False: the negative control, labelled nowhere
def test_stand_in_numbers_are_labelled_in_csv_tex_markdown_and_plots(tmp_path, monkeypatch, smoke):
    root = tmp_path / "runs" / "g"
    for seed in (0, 1):
        make_run(root, f"a{seed}", "full", seed, "finished", {"fid_galip": {60: 0.2, 120: 0.1 + seed / 100}},
                 samples=False, smoke=smoke, speed={"latency_ms": 5.0, "latency_batch": 1})
    titles = plot_titles(monkeypatch)
    paths = build_report(root, tmp_path / "out", "g", references={"references": []})
    csv = pd.read_csv(paths["table.csv"])
    fid = csv[csv.metric == "fid_galip"].iloc[0]
    assert bool(fid.smoke_stand_in) is smoke and fid.final_mean == pytest.approx(0.105)
    tex, md = paths["table.tex"].read_text(), paths["report.md"].read_text()
    header = next(line for line in md.splitlines() if line.startswith("| variant"))
    if smoke:
        assert "fid\\_galip $\\downarrow$ final [smoke stand-in]" in tex and "(smoke stand-in numbers:" in tex
        assert "fid_galip ↓ final [smoke stand-in]" in header
        assert "smoke stand-in numbers" in titles["curve_fid_galip.png"]
        assert "[smoke stand-in]" in titles["bar_fid_galip.png"] and "smoke stand-in" in titles["speed.png"]
    else:
        assert "stand-in" not in tex and "stand-in" not in header and "fid_galip ↓ final" in header
        assert titles and not any("stand-in" in t for t in titles.values())


def test_mixed_stand_in_and_real_numbers_are_labelled_per_cell(tmp_path):
    root = tmp_path / "runs" / "g"
    make_run(root, "a", "real", 0, "finished", {"fid_galip": {120: 30.0}}, samples=False)
    make_run(root, "b", "toy", 0, "finished", {"fid_galip": {120: 0.25}}, samples=False, smoke=True)
    paths = build_report(root, tmp_path / "out", "g", references={"references": []})
    frame = tables.protocol_frame(paths["table"], "fid_galip").set_index("variant")
    assert frame.loc["toy", "fid_galip ↓ final"] == "0.2500 [smoke stand-in]"
    assert frame.loc["real", "fid_galip ↓ final"] == "30.000"  # the real number stays unlabelled


def test_run_prints_this_invocations_runs_with_stand_ins_labelled(tmp_path, capsys):
    """`run`'s closing table: only the runs of this invocation (a note counts the earlier ones), and each stand-in
    number labelled (a column of stand-ins renamed; in a mixed column, the cell)."""
    from types import SimpleNamespace

    from galip_bench.commands.run import print_results
    root = tmp_path / "runs" / "g"
    make_run(root, "now0", "full", 0, "finished", {"fid_galip": {120: 0.125}, "clip_score": {120: 0.5}},
             samples=False, smoke=True)
    make_run(root, "now1", "lite", 0, "finished", {"fid_galip": {120: 0.375}, "clip_score": {120: 0.25}},
             samples=False, smoke=True)
    make_run(root, "old0", "full", 0, "finished", {"fid_galip": {12: 0.875}}, samples=False, smoke=True)
    site = SimpleNamespace(paths=SimpleNamespace(runs=str(tmp_path / "runs")))
    grid = SimpleNamespace(name="g", runs=[SimpleNamespace(run_id="now1"), SimpleNamespace(run_id="now0")])
    print_results(grid, site)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "fid_galip [smoke stand-in]" in lines[0] and "clip_score [smoke stand-in]" in lines[0]
    assert lines[1].split()[0] == "now1" and lines[2].split()[0] == "now0" and "0.375" in lines[1]  # grid order
    assert "old0" not in out and "0.875" not in out
    assert "1 run(s) of earlier invocations" in out and "[smoke stand-in]: measured with" in out
    # the same folder with the runs' records real: nothing labelled (negative control)
    for run in ("now0", "now1", "old0"):
        path = root / run / "metrics.jsonl"
        path.write_text("".join(json.dumps({**json.loads(line), "settings": {"smoke": False}}) + "\n"
                                for line in path.read_text().splitlines()))
    print_results(grid, site)
    assert "stand-in" not in capsys.readouterr().out
    # mixed: one run's fid_galip real, the other's a stand-in -> the stand-in cell is labelled
    path = root / "now0" / "metrics.jsonl"
    path.write_text("".join(json.dumps({**json.loads(line), "settings": {"smoke": True}}) + "\n"
                            for line in path.read_text().splitlines()))
    print_results(grid, site)
    out = capsys.readouterr().out
    assert "fid_galip [smoke stand-in]" not in out and "0.125000 [smoke stand-in]" in out
    assert "0.375" in out and "0.375000 [smoke stand-in]" not in out


# ---- LaTeX and HTML --------------------------------------------------------------------------------------------------

TEX_DOCUMENT = "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n%s\n\\end{document}\n"


def pdflatex(tmp_path, body: str, name: str = "t"):
    """(exit code, log tail) of pdflatex on `body` inside a minimal document with booktabs."""
    import subprocess
    (tmp_path / f"{name}.tex").write_text(TEX_DOCUMENT % body)
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", f"{name}.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout[-1500:]


def test_table_tex_compiles_with_pdflatex(tmp_path):
    import shutil
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed (apt-get install texlive-latex-base texlive-latex-recommended; "
                    ".ci/run installs it)")
    root = tmp_path / "runs" / "paper_table1_coco"
    paper = {"train": PAPER_TRAIN, "data": {"kind": "coco"}}
    make_run(root, "a", "galip", 0, "finished", {"fid_galip": {120: 6.0}, "clip_score_galip": {120: 0.3}},
             samples=False, num_samples=30000, dataset="coco:test:abc", config=paper)  # a why-cell with ≠
    make_run(root, "c", "v_1 & 50% #2 $x ~y^z {a} \\b → µ ≈ [c] *d | <e>", 0, "finished",
             {"fid_galip": {120: 6.5}}, samples=False, num_samples=30000, dataset="coco:test:abc", config=paper)
    make_run(root, "b", "[leading bracket", 0, "finished", {"fid_galip": {120: 0.5}}, samples=False, smoke=True)
    ref = tables.load_references(Path(__file__).resolve().parents[1] / "reports" / "paper_reference.yaml")
    tex = build_report(root, tmp_path / "out", "paper_table1_coco", references=ref)["table.tex"].read_text()
    assert "≠" not in tex and "not comparable" in tex  # a why-cell with its symbol, escaped
    code, log = pdflatex(tmp_path, tex)
    assert code == 0, log
    # negative control: the same run fails on what the escaping removes (a raw `_` in a caption)
    code, _ = pdflatex(tmp_path, "\\begin{table}\\caption{paper_table1_coco: fid_galip}\\end{table}", "raw")
    assert code != 0


def test_html_report_shows_settings_as_code_not_emphasis(grid, tmp_path):
    import markdown
    paths = build_report(grid, tmp_path / "out", "synth", references={"references": []})
    html, md = paths["report.html"].read_text(), paths["report.md"].read_text()
    # clip_score_galip's official preprocessing, `x*0.5+0.5, nearest 224, (x+1)*0.5`, as code
    assert '<code>resize="x*0.5+0.5, nearest 224, (x+1)*0.5, CLIP mean/std (official, double map)"</code>' \
        in html
    assert "<em>" not in html
    # negative control: the same settings line unescaped turns into italics
    raw = next(line for line in md.splitlines() if "x*0.5+0.5" in line).replace("`", "").strip()
    assert "<em>" in markdown.markdown(raw)
