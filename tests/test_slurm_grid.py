"""Grids on a real SLURM cluster: one job array with the local executor's results, scancel, scontrol requeue and
a job that raises. Needs `scripts/slurm-local.sh up DIR` and its SLURM_CONF (`.ci/run` does both); skipped
otherwise."""
import io
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from galip_bench.checkpoints import read_checkpoint
from galip_bench.cli import main
from galip_bench.runs.rundir import RunDir, read_jsonl

pytestmark = pytest.mark.slurm  # skipped by conftest.py without a reachable cluster

SMOKE = Path(__file__).parent.parent / "ablations" / "smoke.yaml"
SLURM = "{partition: debug, gpus_per_node: 0, cpus_per_task: 1, mem_gb: 2, time_min: 30}"
SMALL = ["train.steps=12", "data.num_train=64", "data.num_test=32", "eval.num_samples=72", "eval.batch_size=36"]
# one run long enough to be interrupted: a checkpoint every 10 steps, an evaluation every 40
LONG_GRID = "name: long\nprofile: smoke\nvariants: [{name: full}]\neval: {protocols: [clip_score_galip]}\n"
LONG = ["train.steps=120", "train.ckpt_every=10", "train.log_every=5", "train.eval_every=40",
        "train.sample_every=0", "data.num_train=64", "data.num_test=32", "eval.num_samples=16", "eval.batch_size=16"]


def sets(overrides) -> list:
    return [a for o in overrides for a in ("--set", o)]


def bench(folder: Path, executor: str) -> list:
    """--bench and --executor arguments (a profile's site default, local for smoke, would win over bench.yaml's)."""
    path = folder / f"bench_{executor}.yaml"
    path.write_text(f"paths: {{runs: {folder}/runs_{executor}, cache: {folder}/cache, weights: {folder}/w}}\n"
                    f"executor: {executor}\nslurm: {SLURM}\n")
    return ["--bench", str(path), "--executor", executor]


def runs_of(folder: Path, executor: str, grid: str) -> dict:
    return {p.parent.name: RunDir(p.parent) for p in (folder / f"runs_{executor}" / grid).glob("*/config.yaml")}


def sacct_state(job_id: str) -> str:
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"], capture_output=True, text=True,
                         timeout=30).stdout.split()
    return out[0] if out else ""


def in_queue(job_id: str) -> bool:
    """Still listed by squeue (running, or completing while its processes get SIGTERM, then SIGKILL)."""
    return bool(subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True, timeout=30).stdout.strip())


def wait_for(predicate, what: str, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def content(run: RunDir) -> dict:
    """What a run produced, without times, hosts and job ids."""
    metrics = [{k: r[k] for k in ("step", "protocol", "metric", "value", "settings", "num_samples", "dataset")}
               for r in read_jsonl(run.metrics)]
    losses = [{k: v for k, v in r.items() if k != "time"} for r in read_jsonl(run.train_log)]
    ckpt = read_checkpoint(run.checkpoints()[-1])[1]
    nets = {f"{n}.{k}": v.tolist() for n, sd in ckpt["nets"].items() for k, v in sd.items()}
    return {"metrics": metrics, "losses": losses, "nets": nets, "step": ckpt["step"]}


def test_smoke_grid_runs_as_one_job_array_with_the_local_results(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(SMOKE), *bench(tmp_path, "slurm")] + sets(SMALL)) == 0
    slurm_runs = runs_of(tmp_path, "slurm", "smoke")
    assert len(slurm_runs) == 3
    job_ids = {run.status()["job_id"] for run in slurm_runs.values()}
    arrays = {j.split("_")[0] for j in job_ids}
    assert len(arrays) == 1 and sorted(j.split("_")[1] for j in job_ids) == ["0", "1", "2"], job_ids
    # the result file is written just before the job step ends: accounting follows a moment later
    wait_for(lambda: {sacct_state(j) for j in job_ids} == {"COMPLETED"}, "sacct to show the array completed", 60)

    assert main(["run", str(SMOKE), *bench(tmp_path, "local")] + sets(SMALL)) == 0
    local_runs = runs_of(tmp_path, "local", "smoke")
    assert sorted(local_runs) == sorted(slurm_runs), "the same configs, hence the same run ids"
    for run_id, run in slurm_runs.items():
        assert run.status()["state"] == local_runs[run_id].status()["state"] == "finished"
        ours, theirs = content(run), content(local_runs[run_id])
        assert ours["metrics"] and ours["step"] == 12
        assert ours == theirs, f"run {run_id}: SLURM and local results differ"


def start_long(tmp_path, monkeypatch) -> RunDir:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "long.yaml").write_text(LONG_GRID)
    assert main(["run", "long.yaml", "--no-wait", *bench(tmp_path, "slurm")] + sets(LONG)) == 0
    (run,) = runs_of(tmp_path, "slurm", "long").values()
    wait_for(lambda: run.status().get("state") == "running" and run.status().get("step", 0) >= 50,
             "the job to train past step 50")
    return run


def test_scancel_reports_failed_and_the_next_run_resumes(tmp_path, monkeypatch, capsys):
    run = start_long(tmp_path, monkeypatch)
    job_id = run.status()["job_id"]
    subprocess.run(["scancel", job_id], check=True, timeout=30)
    wait_for(lambda: sacct_state(job_id) == "CANCELLED" and not in_queue(job_id), "the cancelled job to end")
    capsys.readouterr()
    assert main(["status", "long.yaml", *bench(tmp_path, "slurm")[:2]]) == 0
    out = capsys.readouterr().out
    assert "failed" in out and "resumable" in out, out
    last_ckpt = run.checkpoints()[-1].name
    assert read_checkpoint(run.checkpoints()[-1])[1]["step"] >= 50

    assert main(["run", "long.yaml", *bench(tmp_path, "slurm")] + sets(LONG)) == 0
    status = run.status()
    assert status["state"] == "finished" and status["step"] == 120
    assert status["resumed_from"] == last_ckpt, "the new job starts from the cancelled job's last checkpoint"
    assert status["job_id"] != job_id
    assert [r["step"] for r in read_jsonl(run.train_log)] == list(range(5, 121, 5))
    assert [r["step"] for r in read_jsonl(run.metrics)] == [40, 80, 120]


def test_requeued_job_continues_from_its_checkpoint(tmp_path, monkeypatch):
    run = start_long(tmp_path, monkeypatch)
    job_id = run.status()["job_id"]
    subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=30)
    wait_for(lambda: run.status().get("resumed_from"), "the requeued job to resume", 240)
    wait_for(lambda: run.status()["state"] == "finished", "the requeued job to finish", 300)
    status = run.status()
    assert status["step"] == 120 and status["job_id"] == job_id
    assert int(status["resumed_from"].split("_")[1].split(".")[0]) >= 50
    assert [r["step"] for r in read_jsonl(run.train_log)] == list(range(5, 121, 5)), "no duplicated log records"
    records = [(r["step"], r["protocol"], r["metric"]) for r in read_jsonl(run.metrics)]
    assert len(records) == len(set(records)) and [r[0] for r in records] == [40, 80, 120]
    wait_for(lambda: sacct_state(job_id) == "COMPLETED", "sacct to show the requeued job completed", 60)


def test_a_job_that_raises_is_reported_with_its_error_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    images = tmp_path / "uncaptioned"
    images.mkdir()
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "JPEG")
    cut = buffer.getvalue()[: len(buffer.getvalue()) * 3 // 5]
    for i in range(12):  # JPEGs cut off in their image data: the header reads (preflight passes), decoding fails
        (images / f"img{i:02d}.jpg").write_bytes(cut)
        (images / f"img{i:02d}.txt").write_text(f"a red square number {i}\n")
    (tmp_path / "bad.yaml").write_text(LONG_GRID.replace("name: long", "name: bad"))
    small = [o for o in SMALL if not o.startswith(("data.num_train", "data.num_test"))]  # synthetic data only
    overrides = sets(small + ["data.kind=captions", f"data.root={images}"])
    assert main(["run", "bad.yaml", *bench(tmp_path, "slurm")] + overrides) == 1
    (run,) = runs_of(tmp_path, "slurm", "bad").values()
    status = run.status()
    assert status["state"] == "failed"
    assert status["error"].startswith("CorruptImage: image") and "does not decode" in status["error"], status
    wait_for(lambda: sacct_state(status["job_id"]) == "FAILED", "sacct to show the job failed", 60)
    capsys.readouterr()
    assert main(["status", "bad.yaml", *bench(tmp_path, "slurm")[:2]]) == 0
    assert "does not decode" in capsys.readouterr().out
    assert json.loads((run.path / "status.json").read_text())["error"] == status["error"]


STAGES = """name: stages
profile: smoke
eval: {protocols: [is]}
variants:
  - {name: tok, overrides: {system: clipgen, clipgen.stage: vqgan, clipgen.betas_vqgan: BETAS}}
  - {name: gen, after: tok, overrides: {system: clipgen, clipgen.stage: prior}}
"""
STAGE_SETS = ["train.steps=4", "train.ckpt_every=2", "data.num_train=32", "data.num_test=24", "eval.num_samples=20"]


def test_a_dependent_stage_is_queued_behind_its_first_stage(tmp_path, monkeypatch):
    """CLIP-GEN's prior waits in the queue (afterok) for its VQGAN job; when that job fails, SLURM cancels it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ok.yaml").write_text(STAGES.replace("BETAS", "[0.5, 0.9]"))
    assert main(["run", "ok.yaml", *bench(tmp_path, "slurm")] + sets(STAGE_SETS)) == 0
    runs = {r.status()["variant"]: r for r in runs_of(tmp_path, "slurm", "stages").values()}
    tok, gen = runs["tok"].status(), runs["gen"].status()
    assert tok["state"] == gen["state"] == "finished" and gen["started_from"]["run"] == runs["tok"].path.name
    assert gen["job_id"] != tok["job_id"]

    (tmp_path / "bad.yaml").write_text(STAGES.replace("name: stages", "name: stages_bad").replace("BETAS",
                                                                                                  "[2.0, 0.9]"))
    assert main(["run", "bad.yaml", *bench(tmp_path, "slurm")] + sets(STAGE_SETS)) == 1
    runs = {r.status()["variant"]: r for r in runs_of(tmp_path, "slurm", "stages_bad").values()}
    assert "Invalid beta parameter" in runs["tok"].status()["error"]
    gen = runs["gen"].status()
    assert gen["state"] == "failed" and gen["error"].startswith(f"not started: it starts from run "
                                                                f"{runs['tok'].path.name}")
    wait_for(lambda: sacct_state(gen["job_id"]) == "CANCELLED", "sacct to show the dependent job cancelled", 60)
