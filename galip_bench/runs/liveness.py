"""Is a run that says pending or running still alive? Its SLURM job's state (one `sacct` call) or, on this host,
its process."""
import os
import shutil
import subprocess


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
        # --array: an array task not started yet is listed as itself (ARRAYID_TASK), not in a grouped 123_[0-7] line
        out = subprocess.run(["sacct", "-n", "-X", "--array", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)],
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
    here = status.get("host") == os.uname().nodename
    if state == "running" and here and not _alive(status.get("pid")):
        return "failed", error or f"process {status.get('pid')} died at step {status.get('step', 0)}; resumable"
    if state == "pending" and here and status.get("executor") in ("local", "debug"):
        # waiting for a local job (its controller's pid) or, before submission, for the launcher (pid)
        waiting_on = status.get("job_id") if status.get("executor") == "local" and status.get("job_id") else \
            status.get("pid")
        if not _alive(waiting_on):
            return "failed", error or f"never started: its launcher (or local job {waiting_on}) is gone; the next " \
                                      "`run` starts it"
    return state, error
