"""Grid-level results, rebuilt from the run folders (never edited in place, so concurrent jobs cannot corrupt it)."""
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd

from galip_bench.atomic import atomic_write_text
from galip_bench.rundir import RunDir, read_jsonl


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except (OSError, TypeError, ValueError):
        return False


SLURM_ENDED = {"CANCELLED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}


def slurm_states(job_ids) -> dict:
    """{job id: SLURM state} from one sacct call; {} when sacct is absent or fails (then only pids are checked)."""
    job_ids = sorted({str(j) for j in job_ids if j})
    if not job_ids or shutil.which("sacct") is None:
        return {}
    try:
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    states = {}
    for line in out.splitlines():
        job_id, _, state = line.partition("|")
        states[job_id.strip()] = state.split()[0] if state.split() else ""
    return states


def effective_state(status: dict, scheduler: dict = None) -> tuple:
    """(state, error): a run marked pending/running whose SLURM job ended, or whose process on this host is
    gone, is reported as failed (it resumes from its last checkpoint on the next `run`)."""
    state, error = status.get("state", "pending"), status.get("error")
    if state not in ("pending", "running"):
        return state, error
    job_state = (scheduler or {}).get(str(status.get("job_id")))
    if job_state in SLURM_ENDED:
        return "failed", error or f"SLURM job {status['job_id']} {job_state} at step {status.get('step', 0)}; resumable"
    if state == "running" and status.get("host") == os.uname().nodename and not _alive(status.get("pid")):
        return "failed", error or f"process {status.get('pid')} died at step {status.get('step', 0)}; resumable"
    return state, error


def run_dirs(grid_root) -> list:
    root = Path(grid_root)
    return sorted(p.parent for p in root.glob("*/config.yaml")) if root.exists() else []


def collect(grid_root) -> pd.DataFrame:
    """One row per run: id, variant, seed, state, step, error, log path and the last value of every metric."""
    rows = []
    statuses = {path: RunDir(path).status() for path in run_dirs(grid_root)}
    scheduler = slurm_states(s.get("job_id") for s in statuses.values()
                             if s.get("executor") == "slurm" and s.get("state") in ("pending", "running"))
    for path, status in statuses.items():
        rd = RunDir(path)
        state, error = effective_state(status, scheduler)
        row = {"run_id": path.name, "variant": status.get("variant"), "seed": status.get("seed"), "state": state,
               "step": status.get("step", 0), "steps": status.get("steps"),
               "error": (error or "").splitlines()[0] if error else "", "log": str(rd.train_log)}
        for record in read_jsonl(rd.metrics):
            row[record["metric"]] = record["value"]
        rows.append(row)
    return pd.DataFrame(rows)


def metric_records(grid_root) -> pd.DataFrame:
    """Every metrics.jsonl record of the grid, with its run id and variant."""
    frames = []
    for path in run_dirs(grid_root):
        status = RunDir(path).status()
        records = read_jsonl(RunDir(path).metrics)
        if records:
            df = pd.DataFrame(records)
            df["run_id"], df["variant"], df["seed"] = path.name, status.get("variant"), status.get("seed")
            frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write_index(grid_root) -> Path:
    path = Path(grid_root) / "index.csv"
    if Path(grid_root).exists():
        atomic_write_text(path, collect(grid_root).to_csv(index=False))
    return path
