"""A `run` launcher stopped by SIGTERM (a scheduler, a wrapper, `kill PID`) stops its local training jobs at a
checkpoint, leaves no process behind and no run pending; a launcher that died leaves no run pending either."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from galip_bench.runs.liveness import effective_state
from galip_bench.runs.rundir import RunDir

GRID = "name: intr\nprofile: smoke\nvariants: [{name: a}, {name: b, overrides: {model.prompts: false}}, " \
       "{name: c, overrides: {model.bridge: false}}]\neval: {protocols: []}\n"
ROOT = Path(__file__).resolve().parent.parent


def children(pid: int) -> set:
    """Every descendant process of `pid` (from /proc)."""
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        try:
            kids = {int(c) for t in os.listdir(f"/proc/{p}/task")
                    for c in open(f"/proc/{p}/task/{t}/children").read().split()}
        except (FileNotFoundError, ProcessLookupError):
            kids = set()
        out |= kids
        todo += list(kids)
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_sigterm_to_the_launcher_alone_stops_its_jobs_and_leaves_nothing_pending(tmp_path):
    (tmp_path / "g.yaml").write_text(GRID)
    (tmp_path / "bench.yaml").write_text("paths: {runs: runs, cache: cache}\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    launcher = subprocess.Popen([sys.executable, "-m", "galip_bench", "run", "g.yaml", "--set", "train.steps=2000",
                                 "--set", "train.ckpt_every=5"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        running = []
        while time.time() < deadline and not running:  # two runs train at once (smoke: max_local_parallel 2)
            time.sleep(1)
            running = [d for d in (tmp_path / "runs" / "intr").glob("*/status.json")
                       if RunDir(d.parent).status().get("step", 0) >= 6]
        assert running, "no run started training"
        jobs = children(launcher.pid)
        assert jobs, "the local executor runs the jobs as child processes"
        launcher.send_signal(signal.SIGTERM)  # the launcher alone, not its process group
        out, err = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 128 + signal.SIGTERM, err
    time.sleep(1)
    assert not [p for p in jobs if alive(p)], "a training job outlived its launcher"
    lines = err.strip().splitlines()
    assert "interrupted by SIGTERM" in lines and sum("resumable" in line for line in lines) >= 1, err
    assert not any("Traceback" in line for line in lines), err
    states = {d.parent.name: effective_state(RunDir(d.parent).status())
              for d in (tmp_path / "runs" / "intr").glob("*/status.json")}
    assert len(states) == 3 and all(s == "failed" for s, _ in states.values()), states
    assert sum("resumable" in e for _, e in states.values()) >= 1
    assert sum("not started" in e for _, e in states.values()) == 1  # the third run never got a slot


def test_runs_pending_behind_a_dead_launcher_are_failed():
    dead = 4_000_000
    while alive(dead):
        dead += 1
    host = os.uname().nodename
    before_submission = {"state": "pending", "executor": "local", "host": host, "pid": dead}
    assert effective_state(before_submission)[0] == "failed"
    submitted = {**before_submission, "pid": os.getpid(), "job_id": str(dead)}  # launcher alive, job gone
    state, error = effective_state(submitted)
    assert state == "failed" and "never started" in error
    waiting = {**before_submission, "pid": dead, "job_id": str(os.getpid())}  # the local job is still there
    assert effective_state(waiting)[0] == "pending"
    assert effective_state({**before_submission, "executor": "slurm"})[0] == "pending"  # sacct decides those
