"""Published numbers carry their settings (reports/paper_reference.yaml) and the report shows one only beside a
record that matches all of them: dataset, protocol settings, plan and N, reference and the run's recipe; otherwise
the cell names the first setting that differs. Reports are built from hand-made run folders."""
import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml

from galip_bench.errors import UserError
from galip_bench.evaluation import get_protocol
from galip_bench.evaluation.plans import SamplePlan
from galip_bench.report import build_report, plots, tables

REFERENCES = Path(__file__).resolve().parents[1] / "reports" / "paper_reference.yaml"
OFFICIAL_SUBSET = "DistributedSampler(shuffle=True, seed=0) epoch-0 permutation"
# the paper grid's recipe as config.yaml records it (1 process x 8 micro-batches of 64 = global batch 512)
PAPER_TRAIN = {"batch_size": 64, "global_batch": 512, "processes": 1, "grad_accum": 8, "epochs": 1000, "steps": None,
               "precision": "fp16", "noise": "official", "tf32": True, "recipe_change": None}


@pytest.fixture(scope="module")
def refs():
    return tables.load_references(REFERENCES)


def record_settings(proto, plan, num_samples, reference=None):
    """A record's settings as the driver writes them (the protocol's settings_dict after the run)."""
    p = get_protocol(proto, plan=plan)
    p.ran = {"num_samples": num_samples}
    if reference is not None and p.kind == "features":
        p.reference = reference
    return p.settings_dict()


def coco_official(proto):
    return record_settings(proto, SamplePlan(passes=1), 40448, "npz:coco_val256_FIDK0.npz")


def write_run(root, run_id, variant, records, train=None, data_kind="coco", steps=161000, dataset=None,
              world_size=None):
    """A finished run folder: config.yaml (data + train), status.json and metrics.jsonl.
    records: [(protocol, value, settings)], all at the last step."""
    d = Path(root) / run_id
    d.mkdir(parents=True)
    config = {"grid": Path(root).name, "variant": variant, "seed": 0, "data": {"kind": data_kind}}
    if train is not None:
        config["train"] = train
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    (d / "status.json").write_text(json.dumps({"state": "finished", "step": steps, "steps": steps, "variant": variant,
                                               "seed": 0, "host": os.uname().nodename, "pid": os.getpid(),
                                               "executor": "local",
                                               **({"world_size": world_size} if world_size else {})}))
    lines = [{"step": steps, "protocol": proto, "metric": proto, "value": value, "settings": settings,
              "num_samples": settings.get("num_samples"), "dataset": dataset or f"{data_kind}:test:0123456789ab",
              "time": 0.0} for proto, value, settings in records]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return d


def report(tmp_path, grid, refs, name="out"):
    root = tmp_path / "runs" / grid
    paths = build_report(root, tmp_path / name, grid, references=refs)
    return paths["table"], paths["report.md"].read_text(), paths


def cell(table, metric, label, variant=None):
    rows = table[table.metric == metric]
    row = rows[rows.variant == variant].iloc[0] if variant else rows.iloc[0]
    return row[f"ref:{label}"], row[f"diff:{label}"], row[f"why:{label}"]


# ---- the reference file ------------------------------------------------------------------------------------------

def test_every_entry_carries_source_dataset_plan_reference_and_recipe(refs):
    entries = refs["references"]
    assert len(entries) == 7 + 29
    for r in entries:
        assert r["url"].startswith("https://") and r["dataset"] in ("coco", "cub"), r
    paper = refs["sources"]["paper"]
    assert "Ming Tao, Bing-Kun Bao, Hao Tang, Changsheng Xu" in paper and "2301.12959" in paper
    assert "Wu" not in paper and "Jing" not in paper  # the authors named before were wrong
    galip = [r for r in entries if r["grid"] != "clip_gen"]
    readme = [r for r in galip if r["label"] == "released checkpoint"]
    assert {(r["grid"], r["metric"], r["value"]) for r in readme} == {
        ("paper_table1_coco", "fid_galip", 5.01), ("paper_table1_coco", "clip_score_galip", 0.3379),
        ("paper_table2_zeroshot", "zs_fid_coco", 12.54)}
    # the official README's section (### Performance under ## Evaluation), linked by its GitHub anchor
    assert all(r["url"] == "https://github.com/tobran/GALIP#performance" and "Performance" in r["source"]
               for r in readme)
    cub = next(r for r in galip if r["grid"] == "paper_table1_cub")
    assert cub["value"] == 10.08 and "Table 1" in cub["source"] and cub["url"] == "https://arxiv.org/abs/2301.12959"
    assert "paperswithcode.com/paper/galip-generative-adversarial-clips-for-text" in cub["source"]
    # plans: test.sh's (one process, the seed-0 permutation), N written out by hand: 40,504 COCO test images ->
    # 632 batches of 64 = 40,448; 2,933 CUB test images -> 45 batches = 2,880 per pass x 12 = 34,560
    for r in galip:
        passes = 12 if r["dataset"] == "cub" else 1
        assert r["plan"] == {"num_samples": 34560 if passes == 12 else 40448, "plan": "official", "passes": passes,
                             "plan_batch": 64, "plan_ranks": 1, "plan_subset": OFFICIAL_SUBSET}, r
        # the record settings the evaluation writes for that plan carry the same values
        live = SamplePlan(passes=passes).settings()
        assert all(live[k] == r["plan"][k] for k in ("plan", "passes", "plan_batch", "plan_ranks", "plan_subset"))
        assert r["recipe"]["global_batch"] == 512 and r["recipe"]["precision"] == "fp16"
    recipes = {(r["grid"], r["label"]): r["recipe"] for r in galip}
    assert recipes[("paper_table1_coco", "paper")]["epochs"] == 1000
    assert recipes[("paper_table1_coco", "paper")]["batch_size"] == 64
    assert recipes[("paper_table1_coco", "released checkpoint")]["epochs"] is None
    assert recipes[("paper_table1_cub", "paper")]["epochs"] == 1501
    assert recipes[("paper_table2_zeroshot", "paper")]["epochs"] is None
    assert "issues/12" in recipes[("paper_table2_zeroshot", "paper")]["length"]
    assert "issues/16" in recipes[("paper_table1_coco", "paper")]["length"]
    clipgen = [r for r in entries if r["grid"] == "clip_gen"]
    assert len(clipgen) == 29 and all(r["plan"] == r["recipe"] == "not stated" and r["dataset"] == "coco"
                                      and "2203.00386" in r["url"] for r in clipgen)


GOOD = {"grid": "g", "variant": "v", "protocol": "fid_galip", "metric": "fid_galip", "value": 1.0, "label": "paper",
        "source": "a table", "url": "https://example.org", "dataset": "coco",
        "plan": {"num_samples": 64, "plan": "official", "passes": 1, "plan_batch": 64, "plan_ranks": 1,
                 "plan_subset": OFFICIAL_SUBSET},
        "reference": "npz:x.npz", "recipe": {"global_batch": 512, "precision": "fp16", "epochs": 10}}


@pytest.mark.parametrize("broken, message", [
    ({"source": None}, "lacks source"), ({"dataset": None}, "lacks dataset"), ({"plan": None}, "lacks plan"),
    ({"protocol": None}, "lacks protocol"), ({"recipe": None}, "lacks recipe"), ({"url": None}, "lacks url"),
    ({"reference": None}, "lacks reference"), ({"dataset": "imagenet"}, "dataset must be one of coco, cub"),
    ({"plan": {"plan": "official"}}, "plan lacks num_samples, passes"),
    ({"recipe": {"global_batch": 512, "precision": "fp16", "epochs": 1, "lr": 1}}, "unknown key"),
    ({"recipe": {"global_batch": 512, "precision": "fp16", "epochs": None}}, "states no length"),
    ({"url": "arxiv 2301.12959"}, "web address")])
def test_loading_is_strict_and_names_the_entry(tmp_path, broken, message):
    entry = {k: v for k, v in {**GOOD, **broken}.items() if v is not None}
    path = tmp_path / "refs.yaml"
    path.write_text(yaml.safe_dump({"references": [GOOD, entry]}))
    with pytest.raises(UserError, match=rf"references\[1\] \(g/v/fid_galip/paper\).*{message}"):
        tables.load_references(path)
    path.write_text(yaml.safe_dump({"references": [GOOD]}))
    assert tables.load_references(path)["references"] == [GOOD]  # the control loads


# ---- the report ---------------------------------------------------------------------------------------------------

def test_matching_record_shows_the_published_number_and_its_difference(tmp_path, refs):
    root = tmp_path / "runs" / "paper_table1_coco"
    write_run(root, "a", "galip", [("fid_galip", 6.0, coco_official("fid_galip")),
                                   ("clip_score_galip", 0.33, coco_official("clip_score_galip"))], PAPER_TRAIN)
    # a config written before train.global_batch and train.processes existed: batch_size was each process's whole
    # step; its status.json says how many processes ran it (an 8-task SLURM job: 64 x 8)
    old = {k: v for k, v in PAPER_TRAIN.items() if k not in ("global_batch", "processes", "recipe_change")}
    old.update(grad_accum=1)
    write_run(root, "b", "galip", [("fid_galip", 7.0, coco_official("fid_galip")),
                                   ("clip_score_galip", 0.34, coco_official("clip_score_galip"))], old, world_size=8)
    write_run(tmp_path / "single" / "runs" / "paper_table1_coco", "c", "galip",
              [("fid_galip", 7.0, coco_official("fid_galip"))], old)  # the same, run on one process: 64
    single, _, _ = report(tmp_path / "single", "paper_table1_coco", refs)
    assert single.iloc[0]["why:paper"] == "not comparable (global batch 64 ≠ 512)"
    table, md, paths = report(tmp_path, "paper_table1_coco", refs)
    fid = table[table.metric == "fid_galip"]  # two rows: the configs differ in how they record the batch
    assert len(fid) == 2 and (fid["ref:paper"] == 5.85).all() and (fid["why:paper"] == "").all()
    assert sorted(fid["diff:paper"]) == pytest.approx([6.0 - 5.85, 7.0 - 5.85])
    assert sorted(table[table.metric == "clip_score_galip"]["diff:paper"]) == pytest.approx([0.33 - 0.3338,
                                                                                             0.34 - 0.3338])
    assert (fid["ref:released checkpoint"] == 5.01).all()
    assert "| 5.850 " in md and "+0.1500" in md and "+1.150" in md and "5.010 (length not stated: not checked)" in md
    csv = pd.read_csv(paths["table.csv"])
    assert (csv[csv.metric == "fid_galip"]["ref:paper"] == 5.85).all()
    # 161,000 steps x 512 against 3,004 epochs x 161 steps x 512 (the official COCO run)
    assert f"{100 * 161000 / (3004 * 161):.1f}% of the official COCO run's training samples" in md


@pytest.mark.parametrize("change, why", [
    ({"global_batch": 64, "grad_accum": 1}, "global batch 64 ≠ 512"),
    ({"epochs": 3004}, "epochs 3,004 ≠ 1,000"),
    ({"epochs": None, "steps": 160000}, "epochs: the run is 160,000 steps, the source 1,000 epochs"),
    ({"precision": "fp32"}, "precision fp32 ≠ fp16"),
    ({"noise": None}, "noise per_rank ≠ official"),  # absent noise: a run from before the setting (per rank)
    ({"batch_size": 128, "grad_accum": 4}, "batch size 128 ≠ 64")])
def test_a_recipe_that_differs_is_named_in_the_cell(tmp_path, refs, change, why):
    train = {k: v for k, v in {**PAPER_TRAIN, **change}.items() if v is not None or k not in change}
    write_run(tmp_path / "runs" / "paper_table1_coco", "a", "galip",
              [("fid_galip", 6.0, coco_official("fid_galip"))], train)
    table, md, _ = report(tmp_path, "paper_table1_coco", refs)
    value, diff, cell_why = cell(table, "fid_galip", "paper")
    assert math.isnan(value) and math.isnan(diff) and cell_why == f"not comparable ({why})"
    assert f"not comparable ({why})" in md and "| 5.850" not in md


def test_cub_and_3000_sample_records_get_no_published_number_and_name_the_setting(tmp_path, refs):
    """The issue's demonstration: a 3,000-sample CUB record once got CLIP-GEN's 'fid paper 20.700, Δ −20.604'."""
    fixed = SamplePlan("fixed", num_samples=3000)
    cub_official = record_settings("fid_galip", SamplePlan(passes=12), 34560, "npz:bird_val256_FIDK0.npz")
    cub_train = {**PAPER_TRAIN, "epochs": 1501}
    # GALIP's COCO grid: a CUB record, a 3,000-sample COCO record
    write_run(tmp_path / "runs" / "paper_table1_coco", "cub", "galip", [("fid_galip", 9.0, cub_official)],
              cub_train, data_kind="cub", steps=25517)
    table, md, _ = report(tmp_path, "paper_table1_coco", refs, "o1")
    for label in ("paper", "released checkpoint"):
        value, diff, why = cell(table, "fid_galip", label)
        assert math.isnan(value) and math.isnan(diff) and why == "not comparable (dataset cub ≠ coco)"
    write_run(tmp_path / "runs2" / "paper_table1_coco", "n", "galip",
              [("fid_galip", 9.0, record_settings("fid_galip", fixed, 3000, "npz:coco_val256_FIDK0.npz"))],
              PAPER_TRAIN)
    t2 = build_report(tmp_path / "runs2" / "paper_table1_coco", tmp_path / "o2", "paper_table1_coco",
                      references=refs)["table"]
    assert cell(t2, "fid_galip", "paper")[2] == "not comparable (num_samples 3,000 ≠ 40,448)"
    # CLIP-GEN's grid: its COCO table states no plan, so neither record gets a number, and the CUB one says why
    # (its FIDs are fid_dmgan's: the DM-GAN / CogView PyTorch evaluation)
    clip_gen_cub = record_settings("fid_dmgan", fixed, 3000, "split:test")
    write_run(tmp_path / "runs" / "clip_gen", "cub", "clip_gen", [("fid_dmgan", 0.096, clip_gen_cub)],
              data_kind="cub")
    write_run(tmp_path / "runs" / "clip_gen", "coco", "dall_e",
              [("fid_dmgan", 30.0, record_settings("fid_dmgan", fixed, 3000))])
    table, md, paths = report(tmp_path, "clip_gen", refs, "o3")
    assert table["ref:paper"].isna().all() and table["diff:paper"].isna().all()
    assert cell(table, "fid_dmgan", "paper", "clip_gen")[2] == "not comparable (dataset cub ≠ coco)"
    assert cell(table, "fid_dmgan", "paper", "dall_e")[2] == (
        "not comparable (the source's sample plan and N are not stated)")
    results = md.split("## Results")[1].split("## Paper references")[0]
    assert "20.700" not in results and "27.500" not in results and "−20" not in results and "-20." not in results
    assert "never stand beside a run" in md  # the references section says why CLIP-GEN's numbers are listed only
    tex = paths["table.tex"].read_text()
    assert "20.700" not in tex and "dataset cub $\\neq$ coco" in tex


def test_an_old_record_without_the_official_subset_is_not_comparable(tmp_path, refs):
    """Records written before plan_ranks/plan_subset existed ran the official plan over the split order."""
    old = {k: v for k, v in coco_official("fid_galip").items() if k not in ("plan_ranks", "plan_subset")}
    write_run(tmp_path / "runs" / "paper_table1_coco", "a", "galip", [("fid_galip", 6.0, old)], PAPER_TRAIN)
    table, md, _ = report(tmp_path, "paper_table1_coco", refs)
    value, _, why = cell(table, "fid_galip", "paper")
    assert math.isnan(value) and why.startswith("not comparable (plan_subset 'split order' ≠ ")
    assert OFFICIAL_SUBSET in why


def test_a_changed_recipe_is_labelled_everywhere_and_never_compared(tmp_path, refs, monkeypatch):
    titles = []
    save = plots._save

    def spy(fig, path):
        titles.append(" ".join(ax.get_title() for ax in fig.axes) + " ".join(t.get_text() for t in fig.texts))
        return save(fig, path)
    monkeypatch.setattr(plots, "_save", spy)
    change = "global batch 64 (recipe: 512)"
    root = tmp_path / "runs" / "paper_table1_coco"
    d = write_run(root, "a", "galip", [("fid_galip", 6.0, coco_official("fid_galip"))],
                  {**PAPER_TRAIN, "global_batch": 64, "grad_accum": 1, "recipe_change": change})
    (d / "samples").mkdir()
    from PIL import Image
    Image.new("RGB", (64, 32)).save(d / "samples" / "step_00161000.png")
    table, md, paths = report(tmp_path, "paper_table1_coco", refs)
    label = f"galip [recipe changed: {change}]"
    assert list(table["variant"].unique()) == [label]
    value, diff, why = cell(table, "fid_galip", "paper")
    assert math.isnan(value) and math.isnan(diff) and why == f"not comparable (recipe changed: {change})"
    assert label in md and "| 5.850" not in md
    csv = pd.read_csv(paths["table.csv"])
    assert set(csv["variant"]) == {label} and csv["ref:paper"].isna().all()
    tex = paths["table.tex"].read_text()
    assert "galip [recipe changed: global batch 64 (recipe: 512)]" in tex and "5.850" not in tex
    assert "recipe changed" in paths["report.html"].read_text()
    assert len(titles) >= 3 and all("recipe changed" in t for t in titles)  # curve, dots, sample sheet


def test_split_reference_note_only_under_tables_with_project_computed_statistics(tmp_path):
    root = tmp_path / "runs" / "mate_g"
    write_run(root, "a", "full", [("fid_galip", 30.0, record_settings("fid_galip", SamplePlan(passes=1), 40448,
                                                                        "split:test")),
                                  ("fid", 40.0, record_settings("fid", SamplePlan(passes=1), 40448,
                                                                "npz:coco_val256_FIDK0.npz"))],
              {**PAPER_TRAIN, "global_batch": 64, "grad_accum": 1, "epochs": None, "steps": 160000}, steps=160000)
    _, md, _ = report(tmp_path, "mate_g", {"references": []})
    fid_galip, fid = md.split("### fid_galip")[1].split("##")[0], md.split("### fid\n")[1].split("##")[0]
    assert "project-computed from the test split (`split:test`), not GALIP's released npz" in fid_galip
    assert "project-computed" not in fid
    csv = pd.read_csv(tmp_path / "out" / "table.csv", keep_default_na=False)  # every table says so, not only the md
    assert set(csv[csv.protocol == "fid_galip"]["reference_note"]) == {
        "project-computed reference (split:test), not GALIP's released npz"}
    assert set(csv[csv.protocol == "fid"]["reference_note"]) == {""}
    tex = (tmp_path / "out" / "table.tex").read_text()
    assert "fid\\_galip (project-computed reference (split:test), not GALIP's released npz)" in tex
    assert f"{100 * 160000 * 64 / (3004 * 161 * 512):.1f}% of the official COCO run's training samples" in md
