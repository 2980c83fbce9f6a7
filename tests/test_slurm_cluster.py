"""A real SLURM cluster runs jobs, accounts for them and reports their states to submitit.

Needs a reachable cluster (`scripts/slurm-local.sh up DIR` and its SLURM_CONF); skipped otherwise.
"""
import subprocess
import time
from pathlib import Path

import pytest
import submitit

pytestmark = pytest.mark.slurm  # skipped by conftest.py without a reachable cluster

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL"}


def sh(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout.strip()


def sbatch(tmp_path, *args: str) -> str:
    out = sh("sbatch", "--parsable", "-p", "debug", "-o", str(tmp_path / "%j.out"), *args)
    return out.split(";")[0]


def sacct_state(job_id: str, timeout: float = 120) -> str:
    """The job's final state in accounting (its first word: 'CANCELLED by 0' -> 'CANCELLED')."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        lines = sh("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State").splitlines()
        state = lines[0].split()[0] if lines else ""
        if state in FINAL:
            return state
        time.sleep(1)
    raise AssertionError(f"job {job_id} not final after {timeout}s (sacct state {state!r})")


def test_sbatch_wrap_completes(tmp_path):
    job_id = sbatch(tmp_path, "--wrap", "echo hi")
    assert sacct_state(job_id) == "COMPLETED"
    assert (tmp_path / f"{job_id}.out").read_text().strip() == "hi"


def test_scancel_shows_cancelled(tmp_path):
    job_id = sbatch(tmp_path, "--wrap", "sleep 300")
    deadline = time.monotonic() + 60
    while sh("squeue", "-h", "-j", job_id, "-o", "%T") not in ("RUNNING", "") and time.monotonic() < deadline:
        time.sleep(0.5)
    sh("scancel", job_id)
    assert sacct_state(job_id) == "CANCELLED"


def _square_plus(x: int) -> int:
    return x * x + 1


def test_submitit_job_result_and_state(tmp_path):
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    executor.update_parameters(timeout_min=5, slurm_partition="debug", cpus_per_task=1, nodes=1, tasks_per_node=1,
                               # the job unpickles _square_plus by reference: this test module must be importable
                               slurm_setup=[f"export PYTHONPATH={Path(__file__).parent}:${{PYTHONPATH:-}}"])
    job = executor.submit(_square_plus, 6)
    assert job.result() == 37
    deadline = time.monotonic() + 60
    while job.state != "COMPLETED" and time.monotonic() < deadline:
        time.sleep(1)  # submitit reads sacct; accounting may lag the result by a moment
    assert job.state == "COMPLETED"
