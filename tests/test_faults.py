"""Fault tests without SLURM: a training process SIGKILLed at random points, some of them in the middle of a
checkpoint write, always resumes from a valid checkpoint, replays exactly, never loses a finished run's results
and never duplicates a record. Kill points are random; the seed is printed so a failure can be replayed."""
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from fault_worker import GRID, MARKER, overrides

from galip_bench.checkpoints import read_checkpoint
from galip_bench.cli import main
from galip_bench.runs.rundir import RunDir, read_jsonl

WORKER = Path(__file__).with_name("fault_worker.py")
FAULT_SEED = os.environ.get("FAULT_SEED")
# steps; trial -> the checkpoint write of that process it is killed in; kills while training (the per-trial progress
# bound below guarantees them); then kills of workers started on the finished run, at random times
QUICK = dict(steps=16, pause_trials={0: 1, 2: 2}, min_kills=4, after_finish=1)
FULL = dict(steps=40, pause_trials={0: 1, 3: 2, 6: 3}, min_kills=10, after_finish=3)


def start_worker(folder: Path, steps: int, pause_at: int = None) -> subprocess.Popen:
    cmd = [sys.executable, str(WORKER), "g.yaml", "--steps", str(steps)] + (
        ["--pause-in-checkpoint", str(pause_at)] if pause_at else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent),
                                                         os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_until(predicate, proc, timeout=120.0) -> bool:
    """True once predicate() holds; False if the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    raise AssertionError("the worker neither reached the kill point nor ended")


def the_run(folder: Path) -> RunDir:
    dirs = list((folder / "runs" / "fault").glob("*/config.yaml"))
    return RunDir(dirs[0].parent) if dirs else None


def own_status(folder: Path, proc) -> dict:
    run = the_run(folder)
    status = run.status() if run else {}
    return status if status.get("pid") == proc.pid else {}


def check_invariants(run: RunDir, reference: dict, label: str) -> None:
    for path in run.checkpoints():  # nothing half-written under a checkpoint's final name
        _, ckpt = read_checkpoint(path)
        assert f"step_{ckpt['step']:08d}.pt" == path.name, label
    losses = read_jsonl(run.train_log)
    steps = [r["step"] for r in losses]
    assert len(steps) == len(set(steps)), f"{label}: duplicated train-log steps {sorted(Counter(steps).items())}"
    for r in losses:  # an exact replay: every logged step has the uninterrupted run's losses
        assert (r["errD"], r["errG"]) == reference["losses"][r["step"]], f"{label}: step {r['step']} diverged"
    keys = [(r["step"], r["protocol"], r["metric"]) for r in read_jsonl(run.metrics)]
    assert len(keys) == len(set(keys)), f"{label}: duplicated metric records"
    assert set(keys) <= set(reference["metrics"]), f"{label}: unexpected metric records"


def metric_values(run: RunDir) -> dict:
    return {(r["step"], r["protocol"], r["metric"]): r["value"] for r in read_jsonl(run.metrics)}


def train_straight(folder: Path, monkeypatch, steps: int) -> tuple:
    folder.mkdir()
    (folder / "g.yaml").write_text(GRID)
    monkeypatch.chdir(folder)
    assert main(["train", "g.yaml"] + [a for o in overrides(steps) for a in ("--set", o)]) == 0
    run = the_run(folder)
    reference = {"losses": {r["step"]: (r["errD"], r["errG"]) for r in read_jsonl(run.train_log)},
                 "metrics": metric_values(run), "step_s": run.status()["wall_s"] / steps}
    assert sorted(reference["losses"]) == list(range(1, steps + 1)) and reference["metrics"]
    return reference, read_checkpoint(run.checkpoints()[-1])[1]


def test_sigkill_at_random_points_always_resumes(tmp_path, monkeypatch):
    """The default suite's share: fewer steps and kills than the full test below (`pytest -m slow`)."""
    sigkill_at_random_points(tmp_path, monkeypatch, **QUICK)


@pytest.mark.slow
def test_sigkill_at_random_points_always_resumes_full(tmp_path, monkeypatch):
    sigkill_at_random_points(tmp_path, monkeypatch, **FULL)


def sigkill_at_random_points(tmp_path, monkeypatch, steps: int, pause_trials: dict, min_kills: int,
                             after_finish: int) -> None:
    seed = int(FAULT_SEED) if FAULT_SEED else random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"fault test seed {seed} (FAULT_SEED={seed} replays it)")
    reference, final = train_straight(tmp_path / "straight", monkeypatch, steps)

    folder = tmp_path / "killed"
    folder.mkdir()
    (folder / "g.yaml").write_text(GRID)
    kills = Counter()
    finished_snapshot = None
    for trial in range(60):
        run = the_run(folder)
        if run is not None and run.finished and kills["finished_run"] >= after_finish:
            break
        label = f"seed {seed}, trial {trial}"
        (folder / MARKER).unlink(missing_ok=True)
        ckpts = run.checkpoints() if run else []
        resumed_at = int(ckpts[-1].stem.split("_")[1]) if ckpts else 0  # where the next worker starts
        if run is not None and run.finished:  # a worker on the finished run, killed at a random time
            proc = start_worker(folder, steps)
            time.sleep(rng.uniform(0, 5))
            kind = "finished_run"
        elif trial in pause_trials:
            proc = start_worker(folder, steps, pause_trials[trial])
            assert wait_until(lambda: (folder / MARKER).exists(), proc), f"{label}: no checkpoint write reached"
            kind = "in_checkpoint_write"
        else:  # 2-5 steps after the resume (so at most one checkpoint further), at a random moment within a step
            proc = start_worker(folder, steps)
            target = rng.randint(2, 5)
            wait_until(lambda: own_status(folder, proc).get("step", -1) >= resumed_at + target, proc)
            time.sleep(rng.uniform(0, 1.5 * reference["step_s"]))
            kind = "random"
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills[kind] += 1
        proc.wait(timeout=60)
        stderr = proc.stderr.read().decode()
        assert proc.returncode in (0, -signal.SIGKILL), f"{label}: the worker failed:\n{stderr[-2000:]}"
        run = the_run(folder)
        if kind == "in_checkpoint_write":
            assert list(run.ckpt_dir.glob(".step_*.tmp")), f"{label}: the kill should leave a partial temp file"
        check_invariants(run, reference, label)
        if finished_snapshot is not None:  # a finished run's results are never touched again
            assert run.finished and (run.metrics.read_bytes(), run.train_log.read_bytes()) == finished_snapshot, label
        elif run.finished:
            finished_snapshot = (run.metrics.read_bytes(), run.train_log.read_bytes())

    print(f"fault test: kills {dict(kills)}")
    assert kills["in_checkpoint_write"] == len(pause_trials), kills
    assert kills["random"] + kills["in_checkpoint_write"] >= min_kills, kills
    assert finished_snapshot is not None
    run = the_run(folder)
    assert run.status()["state"] == "finished" and run.status()["step"] == steps
    assert not list(run.ckpt_dir.glob(".step_*.tmp")), "temp files of killed writes are removed on resume"
    assert sorted(r["step"] for r in read_jsonl(run.train_log)) == list(range(1, steps + 1))
    assert metric_values(run) == reference["metrics"], "the evaluations equal the uninterrupted run's"
    last = read_checkpoint(run.checkpoints()[-1])[1]
    assert last["step"] == steps
    for net in ("netG", "netD", "netC"):
        for key, value in final["nets"][net].items():
            assert (last["nets"][net][key] == value).all(), f"{net}.{key} differs from the uninterrupted run's"
