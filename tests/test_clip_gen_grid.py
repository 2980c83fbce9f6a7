"""The clip_gen comparison grid end to end (a shortened smoke profile): GALIP, language-free GALIP and CLIP-GEN's two
stages, launched in dependency order, evaluated with the CLIP-GEN table's protocols and reported side by side."""
from pathlib import Path

from galip_bench.cli import main
from galip_bench.grids.grid import load_grid
from galip_bench.grids.launch import _can_start
from galip_bench.report import build_report
from galip_bench.runs.rundir import RunDir, read_jsonl

GRID = Path(__file__).resolve().parent.parent / "ablations" / "clip_gen.yaml"
SHORT = ["train.steps=6", "train.batch_size=4", "train.ckpt_every=3", "train.log_every=3", "train.sample_every=6",
         "train.eval_every=0", "data.num_train=32", "data.num_test=24", "eval.num_samples=72", "eval.batch_size=36",
         "eval.protocols=[fid,fid_blur1,is,fid_dmgan,is_dmgan,clip_score]", "eval.bootstrap=0"]


def test_clip_gen_grid_trains_the_stages_in_order_and_reports_every_system(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cli = ["run", str(GRID), "--profile", "smoke", "--executor", "debug"] + [a for o in SHORT for a in ("--set", o)]
    assert main(cli) == 0
    runs = {RunDir(p.parent).status()["variant"]: RunDir(p.parent)
            for p in (tmp_path / "runs" / "clip_gen").glob("*/status.json")}
    assert sorted(runs) == ["clip_gen", "clip_gen_vqgan", "galip", "galip_language_free"]
    assert all(r.status()["state"] == "finished" for r in runs.values())
    started = runs["clip_gen"].status()["started_from"]
    assert started["run"] == runs["clip_gen_vqgan"].path.name and started["step"] == 6
    assert not runs["clip_gen_vqgan"].metrics.exists() or not read_jsonl(runs["clip_gen_vqgan"].metrics)
    for variant in ("clip_gen", "galip", "galip_language_free"):
        got = {r["protocol"] for r in read_jsonl(runs[variant].metrics)}
        assert got == {"fid", "fid_blur1", "is", "fid_dmgan", "is_dmgan", "clip_score"}, variant
    assert (runs["clip_gen_vqgan"].samples_dir / "step_00000006.png").exists()  # reconstructions
    assert (runs["clip_gen"].samples_dir / "step_00000006.png").exists()        # caption samples

    table = build_report(tmp_path / "runs" / "clip_gen", tmp_path / "out", "clip_gen")["table"]
    fid = table[table.metric == "fid_dmgan"].set_index("variant")  # the published FID-0's protocol
    assert {"clip_gen", "galip", "galip_language_free"} <= set(fid.index)
    assert "not comparable" in fid.loc["clip_gen", "notes"]  # smoke numbers never meet the published CLIP-GEN row
    smoke_is = table[table.metric.isin(["is", "is_dmgan"])].set_index(["metric", "variant"])["final_mean"].dropna()
    assert len(smoke_is) == 6 and smoke_is.nunique() == 6  # the smoke Inception Scores tell the systems apart

    capsys.readouterr()
    assert main(cli) == 0  # finished stages are skipped
    assert "skipped 4 finished run" in capsys.readouterr().out


def test_a_run_whose_starting_run_did_not_finish_is_not_started(tmp_path):
    grid = load_grid(GRID, profile="smoke")
    prior = next(r for r in grid.runs if r.name == "clip_gen")
    RunDir(tmp_path / prior.config.after).set_status("failed", error="boom")
    summary = {"failed": []}
    assert not _can_start(prior, tmp_path, {}, slurm=False, summary=summary)
    assert summary["failed"] == [prior.run_id]
    assert "not started: it starts from run" in RunDir(tmp_path / prior.run_id).status()["error"]
    assert _can_start(prior, tmp_path, {prior.config.after: object()}, slurm=True, summary=summary)  # queued behind
    RunDir(tmp_path / prior.config.after).set_status("finished")
    assert _can_start(prior, tmp_path, {}, slurm=False, summary={"failed": []})
