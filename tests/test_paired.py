"""Paired comparisons between runs (evaluation.paired): the paired bootstrap interval of a difference on synthetic
data with a known shift and on identical data, the narrowing that pairing gives on correlated data (and not on
uncorrelated data), seeding, the resampled formulas against direct recomputation, what the evaluation keeps (one
process and two), the report's table from run folders with and without kept samples, and `regress` telling a
planted regression (worse, significant: exit 1) from noise (worse, within noise: exit 0)."""
import datetime
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import run_processes, tiny_galip

from galip_bench import distributed
from galip_bench.checkpoints import save_checkpoint
from galip_bench.cli import main
from galip_bench.config.schema import DataConfig, EvalConfig, PathsConfig, SiteConfig
from galip_bench.errors import UserError
from galip_bench.evaluation import get_protocol, paired, regress
from galip_bench.evaluation.driver import Evaluator
from galip_bench.evaluation.plans import SamplePlan
from galip_bench.metrics.clip_score import clip_score, clip_score_galip
from galip_bench.metrics.fid import feature_stats, frechet_distance
from galip_bench.report import build_report

RNG = np.random.default_rng(7)
DIM = 8
REF = RNG.standard_normal((4000, DIM))
REF_MU, REF_SIGMA = feature_stats(REF)


def features(n=600, shift=0.0, seed=0):
    """Generated features sharing their noise across `shift`s: sample i of every shift is the same draw + shift."""
    return np.random.default_rng(seed).standard_normal((n, DIM)) + shift


def fid_samples(x) -> paired.Samples:
    return paired.Samples("frechet", np.asarray(x), REF_MU, REF_SIGMA)


# ---- the statistic --------------------------------------------------------------------------------------------------

def test_fid_difference_of_a_known_shift_excludes_zero():
    base, shifted = fid_samples(features()), fid_samples(features(shift=0.25))
    result = paired.paired_difference(base, shifted, resamples=200)
    expected = frechet_distance(*feature_stats(shifted.values), REF_MU, REF_SIGMA) - \
        frechet_distance(*feature_stats(base.values), REF_MU, REF_SIGMA)
    assert result["diff"] == pytest.approx(expected, rel=1e-9)  # ~ 8 x 0.25^2 = 0.5
    assert 0 < result["ci_low"] < result["diff"] < result["ci_high"] and result["significant"]
    assert result["resamples"] == 200 and result["n"] == 600
    # the other way round: the same interval, negated
    back = paired.paired_difference(shifted, base, resamples=200)
    assert (back["ci_low"], back["ci_high"]) == pytest.approx((-result["ci_high"], -result["ci_low"]), rel=1e-9)


def mmd_samples(gen, ref, which="mmd_biased", sigma=1.0, scale=1000.0) -> paired.Samples:
    from galip_bench.metrics.cmmd import mmd
    terms = mmd(ref, gen, sigma, scale)
    return paired.Samples(which, np.asarray(gen), cross=terms["y_cross"],
                          params={"sigma": sigma, "scale": scale, "reference_biased": terms["x_biased"],
                                  "reference_unbiased": terms["x_unbiased"], "reference_sha256": "r"})


@pytest.mark.parametrize("which", ["mmd_biased", "mmd_unbiased"])
def test_resampled_cmmd_is_the_cmmd_of_the_resampled_embeddings(which, monkeypatch):
    """Against metrics.cmmd.mmd (itself checked against the official formula and an O(n^2) loop) recomputed on each
    resampled set, duplicates included; kernel rows in blocks of 7 as in blocks of all."""
    from galip_bench.metrics.cmmd import mmd
    ref, gen = RNG.standard_normal((50, 6)) * 0.5, RNG.standard_normal((40, 6)) * 0.5 + 0.2
    samples = mmd_samples(gen, ref, which)
    sets = [paired.resample_indices(40, b) for b in range(5)]
    key = "biased" if which == "mmd_biased" else "unbiased"
    direct = [mmd(ref, gen[idx], 1.0, 1000.0)[key] for idx in sets]
    np.testing.assert_allclose(paired.resampled_values(samples, sets), direct, rtol=1e-9, atol=1e-9)
    monkeypatch.setattr(paired, "MMD_BLOCK_BYTES", 7 * 8 * 40)
    np.testing.assert_allclose(paired.resampled_values(samples, sets), direct, rtol=1e-9, atol=1e-9)
    assert samples.value() == pytest.approx(mmd(ref, gen, 1.0, 1000.0)[key], rel=1e-9)


def test_cmmd_and_inception_score_differences_of_a_known_change():
    """A shifted embedding set is farther from the reference (interval above 0); sharper logits give a higher IS
    (interval above 0); identical sets differ by exactly 0."""
    from galip_bench.metrics.standard import inception_score
    ref, noise = RNG.standard_normal((300, 6)) * 0.5, RNG.standard_normal((300, 6)) * 0.5
    base, shifted = mmd_samples(noise + 0.05, ref), mmd_samples(noise + 0.4, ref)
    result = paired.paired_difference(base, shifted, resamples=100)
    assert 0 < result["ci_low"] < result["diff"] < result["ci_high"]
    assert paired.paired_difference(base, mmd_samples(noise + 0.05, ref), resamples=50)["ci_high"] == 0
    logits = RNG.standard_normal((400, 12))
    params = {"flavour": "torch_fidelity", "splits": 10, "shuffle": True, "rng_seed": 2020}
    blunt = paired.Samples("inception_score", logits, params=params)
    sharp = paired.Samples("inception_score", 3 * logits, params=params)
    assert blunt.value() == pytest.approx(inception_score(logits)[0], rel=1e-12)
    result = paired.paired_difference(blunt, sharp, resamples=50)
    assert result["diff"] > 0 and result["ci_low"] > 0 and result["significant"]
    cogview = paired.Samples("inception_score", logits, params={"flavour": "cogview", "splits": 1})
    assert paired.paired_difference(cogview, cogview, resamples=20)["ci_low"] == 0
    assert paired.samples_problem(blunt, cogview).startswith("the metric's parameters differ")


def test_identical_sets_differ_by_exactly_zero():
    for a, b in ((fid_samples(features()), fid_samples(features())),
                 (paired.Samples("clip_batch_mean", RNG.uniform(-1, 1, 150), batch=64),) * 2):
        result = paired.paired_difference(a, b)
        assert result["diff"] == 0 and result["ci_low"] == 0 == result["ci_high"]
        assert not result["significant"]


def test_resampled_fid_is_the_fid_of_the_resampled_features():
    """The counts-weighted formulation (one covariance and eigendecomposition per resample) against pytorch-fid's
    formula on the resampled rows themselves."""
    x = features(n=300)
    samples = fid_samples(x)
    assert samples.value() == pytest.approx(frechet_distance(*feature_stats(x), REF_MU, REF_SIGMA), rel=1e-9)
    idx = paired.resample_indices(300, 5)
    direct = frechet_distance(*feature_stats(x[idx]), REF_MU, REF_SIGMA)
    assert paired.resampled_values(samples, [idx])[0] == pytest.approx(direct, rel=1e-9)
    # the indices do not depend on B or the chunking
    assert paired.bootstrap_values(samples, 3)[2] == paired.bootstrap_values(samples, 150)[2]


def test_clip_statistics_are_the_protocols_formulas():
    img, txt = torch.randn(150, 16), torch.randn(150, 16)  # 150 = two batches of 64 and a partial one of 22
    cos = paired.cosines(img, txt).numpy()
    galip = paired.Samples("clip_batch_mean", cos, batch=64)
    assert galip.value() == pytest.approx(clip_score_galip(img, txt, 64), rel=1e-12)
    assert paired.Samples("clip_score", cos).value() == pytest.approx(clip_score(img, txt), rel=1e-12)
    idx = paired.resample_indices(150, 0)
    assert paired.resampled_values(galip, [idx])[0] == pytest.approx(
        clip_score_galip(img[idx], txt[idx], 64), rel=1e-12)


def width(result) -> float:
    return result["ci_high"] - result["ci_low"]


def test_pairing_narrows_the_interval_only_where_the_runs_are_correlated():
    n = 2000
    shared = RNG.normal(0.3, 0.05, n)  # the caption and noise: most of a sample's score
    base = paired.Samples("clip_batch_mean", shared + RNG.normal(0, 0.005, n), batch=64)
    better = paired.Samples("clip_batch_mean", shared + 0.002 + RNG.normal(0, 0.005, n), batch=64)
    pair, unpaired = (paired.paired_difference(base, better, paired=p) for p in (True, False))
    assert width(pair) < 0.25 * width(unpaired)
    assert pair["significant"] and pair["ci_low"] > 0 and not unpaired["significant"]
    # negative control: runs that share nothing get no narrower an interval from pairing
    other = paired.Samples("clip_batch_mean", RNG.normal(0.3, 0.05, n) + 0.002, batch=64)
    pair, unpaired = (paired.paired_difference(base, other, paired=p) for p in (True, False))
    assert 0.75 < width(pair) / width(unpaired) < 1.33


def test_the_bootstrap_is_seeded():
    base, shifted = fid_samples(features()), fid_samples(features(shift=0.05))
    first = paired.paired_difference(base, shifted, resamples=50, seed=3)
    assert paired.paired_difference(base, shifted, resamples=50, seed=3) == first
    assert paired.paired_difference(base, shifted, resamples=50, seed=4)["ci_low"] != first["ci_low"]


def test_runs_that_do_not_share_a_plan_are_not_paired():
    assert "N 600 vs 500" in paired.samples_problem(fid_samples(features()), fid_samples(features(n=500)))
    other_ref = paired.Samples("frechet", features(), REF_MU + 1, REF_SIGMA)
    assert paired.samples_problem(fid_samples(features()), other_ref) == "the reference statistics differ"
    with pytest.raises(ValueError, match="cannot pair"):
        paired.paired_difference(fid_samples(features()), other_ref)
    a, b = record("fid_galip", 1.0), record("fid_galip", 2.0)
    assert paired.records_problem(a, b) is None
    assert "captions_sha256" in paired.records_problem(a, {**b, "settings": {**b["settings"],
                                                                             "captions_sha256": "other"}})
    assert "seed 0 vs 1" in paired.records_problem(a, record("fid_galip", 2.0, seed=1))


# ---- the report ---------------------------------------------------------------------------------------------------

def record(proto, value, n=600, seed=0, step=120):
    """A record as the driver writes it: settings of the protocol that ran a fixed plan of N."""
    p = get_protocol(proto, plan=SamplePlan("fixed", num_samples=n, seed=seed))
    p.ran = {"num_samples": n, "captions_sha256": "c" * 64}
    return {"step": step, "protocol": proto, "metric": proto, "value": value, "num_samples": n,
            "settings": p.settings_dict(), "dataset": "synthetic:test:abc", "time": 0.0}


def make_run(root, run_id, variant, seed, kept: dict):
    """A finished run folder whose final (step 120) records come from `kept` {protocol: Samples}; with samples
    written and named in the records unless the protocol's Samples is given as (Samples, False)."""
    d = Path(root) / run_id
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"grid": "g", "variant": variant, "seed": seed}))
    (d / "status.json").write_text(json.dumps({"state": "finished", "step": 120, "steps": 120, "variant": variant,
                                               "seed": seed}))
    lines = []
    for proto, entry in kept.items():
        samples, keep = entry if isinstance(entry, tuple) else (entry, True)
        rec = record(proto, samples.value(), n=samples.n)
        lines.append({**record(proto, samples.value() + 1, n=samples.n), "step": 60})  # an earlier step
        if keep:
            rec["kept_samples"] = paired.kept_field(samples, d, f"eval/step_00000120/{proto}")
        lines.append(rec)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return d


def cosine_samples(shift=0.0, n=600, noise=0.0):
    cos = np.random.default_rng(1).normal(0.3, 0.05, n) + np.random.default_rng(2).normal(0, noise, n) + shift
    return paired.Samples("clip_batch_mean", cos, batch=64)


def test_report_shows_each_difference_with_its_paired_interval(tmp_path):
    root = tmp_path / "runs" / "g"
    for seed in (0, 1):
        make_run(root, f"base{seed}", "base", seed, {"fid_galip": fid_samples(features(seed=seed)),
                                                     "clip_score_galip": cosine_samples()})
        make_run(root, f"shift{seed}", "shifted", seed, {"fid_galip": fid_samples(features(shift=0.25, seed=seed)),
                                                         "clip_score_galip": cosine_samples(-1e-4, noise=0.02)})
    make_run(root, "old0", "old", 0, {"fid_galip": (fid_samples(features(shift=0.1)), False),
                                      "clip_score_galip": (cosine_samples(), False)})
    info = {"variants": ["shifted", "base", "old"], "baseline_variant": "base"}
    paths = build_report(root, tmp_path / "out", "g", info, references={"references": []}, device="cpu")
    md = paths["report.md"].read_text()
    section = md[md.index("## Paired differences"):md.index("## Paper references")]
    assert "Δ = variant − baseline (base), seed by seed" in section and "100 resamples for FID-type" in section
    assert "1,000 for CLIP scores" in section and "final evaluation" in section
    table = paths["paired"]
    fid = table[(table["variant"] == "shifted") & (table["metric"] == "fid_galip")].set_index("seed")
    assert list(fid.index) == [0, 1] and fid["significant"].all() and (fid["ci_low"] > 0).all()
    assert list(fid["baseline_run"]) == ["base0", "base1"] and list(fid["step"]) == [120, 120]
    row = fid.loc[0]
    cell = f"+{row['diff']:.4f} [+{row['ci_low']:.4f}, +{row['ci_high']:.4f}] *"
    assert row["cell"] == cell and cell.replace("*", "\\*") in section
    clip = table[(table["variant"] == "shifted") & (table["metric"] == "clip_score_galip")].iloc[0]
    assert clip["diff"] < 0 and not clip["significant"] and clip["ci_low"] < 0 < clip["ci_high"]
    assert not clip["cell"].endswith("*") and clip["resamples"] == 1000
    old = table[table["variant"] == "old"]
    assert set(old["cell"]) == {"samples not kept (this run)"} and old["ci_low"].isna().all()
    assert "| old " in section and "samples not kept (this run)" in section
    assert "no base run of seed 1" not in section  # every seed of `shifted` has its baseline
    csv = (tmp_path / "out" / "paired.csv").read_text()
    assert "significant" in csv.splitlines()[0] and "True" in csv
    tex = (tmp_path / "out" / "paired.tex").read_text()
    assert "\\toprule" in tex and "100 resamples" in tex and "U+" not in tex
    # a rebuilt report reuses each run's resamples (cached by the samples' sha256) and shows the same numbers
    cache = json.loads((tmp_path / "out" / "paired_cache.json").read_text())
    assert len(cache) == 6  # 4 runs x 2 protocols, by content: the two base runs' cosines are the same file
    again = build_report(root, tmp_path / "out", "g", info, references={"references": []}, device="cpu")["paired"]
    assert list(again["cell"]) == list(table["cell"])
    # a kept file that no longer holds what its record says is not used
    (root / "shift1" / "eval" / "step_00000120" / "fid_galip.npy").write_bytes(b"not the samples")
    again = build_report(root, tmp_path / "out2", "g", info, references={"references": []}, device="cpu")["paired"]
    changed = again[(again["variant"] == "shifted") & (again["seed"] == 1) & (again["metric"] == "fid_galip")]
    assert changed["cell"].iloc[0].startswith("kept samples changed since recorded")


def test_baseline_variant_must_name_a_variant(tmp_path):
    from galip_bench.grids.grid import grid_info, load_grid
    path = tmp_path / "g.yaml"
    path.write_text("name: g\nprofile: smoke\nbaseline_variant: nope\nvariants: [{name: a}, {name: b}]\n")
    with pytest.raises(UserError, match="baseline_variant 'nope' is not one of the variants"):
        load_grid(path)
    path.write_text("name: g\nprofile: smoke\nbaseline_variant: b\nvariants: [{name: a}, {name: b}]\n")
    assert len(load_grid(path).runs) == 2 and grid_info(str(path))["baseline_variant"] == "b"


# ---- what the evaluation keeps ------------------------------------------------------------------------------------

DATA = DataConfig(kind="synthetic", size=32, num_test=130, num_workers=0)
PLAN = dict(protocols=["fid_galip", "clip_score_galip", "clip_score"], num_samples=96, batch_size=32,
            extractor="tiny", bootstrap=0)


def site(cache) -> SiteConfig:
    return SiteConfig(paths=PathsConfig(cache=str(cache)))


def evaluate(tmp, keep_dir=None, **plan):
    evaluator = Evaluator(EvalConfig(**{**PLAN, **plan}), DATA, site(Path(tmp) / "cache"), "cpu", progress=False,
                          keep_dir=keep_dir)
    return evaluator, evaluator(tiny_galip(seed=1), step=3)


def test_the_final_evaluation_keeps_its_samples_in_the_run_folder(tmp_path):
    evaluator, records = evaluate(tmp_path, keep_dir=tmp_path / "run")
    kept = {r["protocol"]: r["kept_samples"] for r in records if "kept_samples" in r}
    assert set(kept) == {"fid_galip", "clip_score_galip", "clip_score"}
    assert [paired.statistic_of(get_protocol(p)) for p in ("kid", "prdc", "is", "cmmd", "fid", "clip_score_galip")] \
        == [None, None, "inception_score", "mmd", "frechet", "clip_batch_mean"]  # KID, PRDC: no paired test
    assert kept["fid_galip"]["file"] == "eval/step_00000003/fid_galip.npy"
    assert kept["fid_galip"]["shape"] == [96, 64] and kept["fid_galip"]["dtype"] == "float16"
    assert kept["clip_score_galip"]["batch"] == 64 and kept["clip_score"]["shape"] == [96]
    for r in records:
        if r["protocol"] in kept:  # the files give the recorded values back
            samples = paired.load_kept(r["kept_samples"], tmp_path / "run")
            paired.check_reproduces(samples, r)
            assert np.array_equal(samples.values, evaluator.kept_samples[r["protocol"]].values)
    # not final, or eval.keep_samples: none: nothing kept
    cheap = dict(protocols=["clip_score_galip"])
    assert not any("kept_samples" in r for r in Evaluator(
        EvalConfig(**{**PLAN, **cheap}), DATA, site(tmp_path / "cache"), "cpu", progress=False,
        keep_dir=tmp_path / "r2")(tiny_galip(seed=1), step=2, final=False))
    evaluator, records = evaluate(tmp_path, keep_dir=tmp_path / "r3", keep_samples="none", **cheap)
    assert not any("kept_samples" in r for r in records) and not (tmp_path / "r3").exists()
    with pytest.raises(UserError, match="eval.keep_samples must be final or none"):
        evaluate(tmp_path, keep_samples="all")


def test_cmmd_and_inception_scores_keep_what_their_resamples_need(tmp_path):
    """CMMD keeps its embeddings and cross terms, the Inception Scores their logits; each record names its own
    statistic, the files give every recorded value back, and KID keeps nothing."""
    evaluator, records = evaluate(tmp_path, keep_dir=tmp_path / "run", protocols=["cmmd", "is", "is_dmgan", "kid"])
    fields = {r["metric"]: r.get("kept_samples") for r in records}
    assert fields["kid"] is None and fields["kid_std"] is None
    assert (fields["cmmd"]["statistic"], fields["cmmd_unbiased"]["statistic"]) == ("mmd_biased", "mmd_unbiased")
    assert fields["cmmd"]["file"] == fields["cmmd_unbiased"]["file"] == "eval/step_00000003/cmmd.npy"
    assert fields["cmmd"]["cross"] == "eval/step_00000003/cmmd.cross.npy" and fields["cmmd"]["dtype"] == "float32"
    assert fields["is"]["params"] == {"flavour": "torch_fidelity", "splits": 10, "shuffle": True, "rng_seed": 2020}
    assert fields["is_dmgan"]["params"] == {"flavour": "cogview", "splits": 1}
    for r in records:
        if r["metric"] in ("cmmd", "cmmd_unbiased", "is", "is_dmgan"):
            samples = paired.load_kept(r["kept_samples"], tmp_path / "run")
            paired.check_reproduces(samples, r)  # the identity resample is the recorded value
            assert samples.value() == pytest.approx(r["value"], rel=1e-9, abs=1e-12)
    # the in-memory samples serve either CMMD metric
    mem = evaluator.kept_samples["cmmd"]
    unbiased = next(r for r in records if r["metric"] == "cmmd_unbiased")
    assert paired.for_metric(mem, "cmmd_unbiased").value() == pytest.approx(unbiased["value"], rel=1e-9)


ONE_BATCH = dict(protocols=["clip_score_galip"], num_samples=40, batch_size=16)


def worker(rank, world, port, tmp):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    distributed.init(torch.device("cpu"), timeout=datetime.timedelta(minutes=5))
    try:
        evaluator, records = evaluate(tmp, keep_dir=Path(tmp) / "sharded")
        small, _ = evaluate(tmp, **ONE_BATCH)  # process 0 generates nothing: an empty share joins the gather
        torch.save({"records": records, "kept": evaluator.kept_samples, "small": small.kept_samples},
                   Path(tmp) / f"rank{rank}.pt")
    finally:
        distributed.shutdown()


def test_two_processes_keep_the_samples_one_process_keeps(tmp_path):
    """Gathered across ranks in plan order: the same files and per-sample data as one process (rank 0 writes)."""
    run_processes(worker, str(tmp_path))
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2))
    assert rank1 == {"records": [], "kept": {}, "small": {}}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single, _ = evaluate(tmp_path, keep_dir=tmp_path / "single")
        small, _ = evaluate(tmp_path, **ONE_BATCH)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_allclose(rank0["small"]["clip_score_galip"].values, small.kept_samples["clip_score_galip"].values,
                               rtol=1e-9)
    assert set(rank0["kept"]) == set(single.kept_samples) == {"fid_galip", "clip_score_galip", "clip_score"}
    for name, samples in single.kept_samples.items():
        np.testing.assert_allclose(rank0["kept"][name].values.astype(np.float64), samples.values.astype(np.float64),
                                   rtol=1e-3 if name == "fid_galip" else 1e-9)
        assert (tmp_path / "sharded" / "eval" / "step_00000003" / f"{name}.npy").is_file()


# ---- regress ------------------------------------------------------------------------------------------------------

def test_regress_tells_a_significant_regression_from_noise(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.yaml").write_text("data: {kind: synthetic, size: 32, num_test: 8}\n")
    galip = tiny_galip(seed=1)
    good = save_checkpoint(tmp_path / "good.pt", galip, step=3)
    with torch.no_grad():  # the planted regression: a generator whose output layer is broken (constant images)
        galip.netG.to_rgb[1].weight.zero_()
    broken = save_checkpoint(tmp_path / "broken.pt", galip, step=3)
    assert main(["regress", "--checkpoint", str(good), "--data", "data.yaml", "--write-baseline", "base.json",
                 "--protocols", "fid_galip,clip_score_galip", "--num", "80", "--batch", "16",
                 "--extractor", "tiny"]) == 0, capsys.readouterr().err
    assert "kept the per-sample data of fid_galip, clip_score_galip in base.json.samples" in capsys.readouterr().out
    base = json.loads((tmp_path / "base.json").read_text())
    assert {r["kept_samples"]["file"] for r in base["records"]} == {"base.json.samples/fid_galip.npy",
                                                                    "base.json.samples/clip_score_galip.npy"}
    assert main(["regress", "--checkpoint", str(broken), "--baseline", "base.json"]) == 1
    out = capsys.readouterr().out
    rows = {r["metric"]: r for r in json.loads((tmp_path / "regress.json").read_text())["rows"]}
    assert rows["fid_galip"]["verdict"] == "worse, significant" and rows["fid_galip"]["ci_low"] > 0
    line = out.strip().splitlines()[-2]  # the verdict line, then "wrote regress.json"
    assert "WORSE, SIGNIFICANT" in out and line.startswith("REGRESSED: ") and "of them significantly (" in line
    assert "fid_galip" in line and "significant" in line
    # `eval --out` keeps the per-sample data beside its records, so `regress --records` pairs them too
    assert main(["eval", "--checkpoint", str(broken), "--data", "data.yaml", "--protocols", "fid_galip,clip_score_galip",
                 "--num", "80", "--batch", "16", "--extractor", "tiny", "--out", "evaluated.json"]) == 0
    assert (tmp_path / "evaluated.json.samples" / "fid_galip.npy").is_file()
    capsys.readouterr()
    assert main(["regress", "--records", "evaluated.json", "--baseline", "base.json"]) == 1
    rows = {r["metric"]: r for r in json.loads((tmp_path / "regress.json").read_text())["rows"]}
    assert rows["fid_galip"]["verdict"] == "worse, significant"
    # the same checkpoint against its own baseline (same plan and seed): differences of exactly 0, exit 0
    assert main(["regress", "--checkpoint", str(good), "--baseline", "base.json"]) == 0
    rows = json.loads((tmp_path / "regress.json").read_text())["rows"]
    assert all(r["delta"] == 0 and r["ci_low"] == 0 == r["ci_high"] and r["verdict"] == "ok" for r in rows)
    # worse than the tolerance but within noise: the baseline's cosines with noise and a shift far inside it
    cos = paired.load_kept(base["records"][1]["kept_samples"], tmp_path).values
    assert base["records"][1]["protocol"] == "clip_score_galip"
    noisy = paired.Samples("clip_batch_mean", cos + np.random.default_rng(0).normal(0, 0.02, cos.shape), batch=64)
    noisy.values -= noisy.value() - base["records"][1]["value"] + 1e-3  # 0.001 worse (the weights sum to 1)
    new = [dict(r) for r in base["records"]]
    new[1].update(value=noisy.value(), kept_samples=paired.kept_field(noisy, tmp_path, "new.json.samples/cs"))
    (tmp_path / "new.json").write_text(json.dumps(new))
    assert new[1]["value"] < base["records"][1]["value"]
    assert main(["regress", "--records", "new.json", "--baseline", "base.json"]) == 0
    out = capsys.readouterr().out
    assert "PASS: 0 of 2" in out and "within noise (clip_score_galip" in out
    row = {r["metric"]: r for r in json.loads((tmp_path / "regress.json").read_text())["rows"]}["clip_score_galip"]
    assert row["verdict"] == "worse, within noise" and row["ci_low"] < 0 < row["ci_high"]
    # without the baseline's samples: today's gate (worse than tolerance regresses)
    (tmp_path / "base.json.samples" / "clip_score_galip.npy").unlink()
    assert main(["regress", "--records", "new.json", "--baseline", "base.json"]) == 1
    row = {r["metric"]: r for r in json.loads((tmp_path / "regress.json").read_text())["rows"]}["clip_score_galip"]
    assert row["verdict"] == "regressed" and row["paired"].startswith("kept samples missing")


def test_compare_uses_the_paired_interval_only_beyond_the_tolerance():
    old, new = [record("fid_galip", 5.0)], [record("fid_galip", 5.4)]
    tol = regress.parse_tolerances("fid_galip=+0.3")
    interval = {"ci_low": 0.1, "ci_high": 0.7, "significant": True, "resamples": 100}
    rows, code = regress.compare(old, new, tol, paired={("fid_galip", "fid_galip"): interval})
    assert code == 1 and rows[0]["verdict"] == "worse, significant" and rows[0]["paired"].endswith("*")
    noise = {**interval, "ci_low": -0.2, "significant": False}
    rows, code = regress.compare(old, new, tol, paired={("fid_galip", "fid_galip"): noise})
    assert code == 0 and rows[0]["verdict"] == "worse, within noise"
    assert "within noise (fid_galip" in regress.verdict_line("pass", rows)
    rows, code = regress.compare(old, [record("fid_galip", 5.2)], tol, paired={("fid_galip", "fid_galip"): interval})
    assert code == 0 and rows[0]["verdict"] == "ok"  # within tolerance: the interval does not make it fail
    rows, code = regress.compare(old, new, tol)
    assert code == 1 and rows[0]["verdict"] == "regressed"  # no samples: today's gate


def test_report_names_metrics_without_a_paired_test_and_self_referential_clips(tmp_path):
    root = tmp_path / "runs" / "g"
    for variant in ("a", "b"):
        d = make_run(root, variant, variant, 0, {"clip_score_galip": cosine_samples()})
        extra = [record("kid", 0.01), {**record("clip_score_heldout", 20.0), "metric": "clip_score_heldout"}]
        with open(d / "metrics.jsonl", "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in extra)
    md = build_report(root, tmp_path / "out", "g", {"variants": ["a", "b"]}, references={"references": []},
                      device="cpu")["report.md"].read_text()
    section = md[md.index("## Paired differences"):md.index("## Paper references")]
    assert "No paired interval for `kid` (kid: KID is itself a mean over random subsets" in section
    assert "clip_score_heldout" not in section.split("No paired interval")[1]  # it has a test (not kept here)
    galip = md[md.index("### clip_score_galip"):md.index("### kid")]
    assert "CLIP: **self-referential** (`self_referential: true`)" in galip
    held = md[md.index("### clip_score_heldout"):]
    assert "CLIP: held out (`self_referential: false`)" in held.split("###")[1]


def test_a_nan_metric_gets_no_interval_and_breaks_nothing(tmp_path):
    """A diverged run (NaN features, NaN FID) shows `metric failed` in its cell; its kept file is refused."""
    root = tmp_path / "runs" / "g"
    good, bad = fid_samples(features()), fid_samples(np.full((600, DIM), np.nan))
    for run_id, samples, value in (("a", good, good.value()), ("b", bad, float("nan"))):
        d = make_run(root, run_id, run_id, 0, {"clip_score_galip": cosine_samples()})
        field = paired.kept_field(samples, d, "eval/step_00000120/fid_galip")
        with open(d / "metrics.jsonl", "a") as f:
            f.write(json.dumps({**record("fid_galip", value), "kept_samples": field}) + "\n")
    table = build_report(root, tmp_path / "out", "g", {"variants": ["a", "b"]}, references={"references": []},
                         device="cpu")["paired"]
    cells = dict(zip(table["metric"], table["cell"]))
    assert cells["fid_galip"] == "metric failed (no finite value)" and cells["clip_score_galip"].startswith("+0")
    with pytest.raises(paired.SamplesUnavailable, match="not finite"):
        paired.load_kept(field, root / "b")
    nan_record = {**record("fid_galip", float("nan")), "kept_samples": field}
    assert "kept_samples" not in paired.name_kept({k: v for k, v in nan_record.items() if k != "kept_samples"}, field)
    with pytest.raises(ValueError, match="no resampled formula"):
        paired.Samples("mmd", np.zeros((3, 2))).value()
