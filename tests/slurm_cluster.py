"""Is a SLURM cluster reachable from here? Used to skip the `slurm`-marked tests with a clear reason.

Bring a private single-node one up with `scripts/slurm-local.sh up DIR` and export the SLURM_CONF it prints.
"""
import os
import shutil
import subprocess
from functools import lru_cache

READY_STATES = {"idle", "mixed", "allocated", "completing"}


def _run(cmd: list[str], timeout: float = 15) -> tuple[int, str]:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return 1, str(e)
    return p.returncode, (p.stdout + p.stderr).strip()


@lru_cache(maxsize=1)
def cluster_available() -> tuple[bool, str]:
    """(True, description) when sinfo answers with a usable node and sacct works; else (False, why)."""
    conf = os.environ.get("SLURM_CONF")
    if conf and not os.path.isfile(conf):
        return False, f"SLURM_CONF={conf} does not exist (scripts/slurm-local.sh up DIR, then export SLURM_CONF)"
    for tool in ("sinfo", "sbatch", "sacct", "scancel"):
        if shutil.which(tool) is None:
            return False, f"no `{tool}` on PATH: no SLURM cluster (scripts/slurm-local.sh up DIR brings one up)"
    rc, out = _run(["sinfo", "-h", "-o", "%T"])
    if rc != 0:
        where = f"SLURM_CONF={conf}" if conf else "the default slurm.conf (SLURM_CONF unset)"
        return False, f"sinfo fails with {where}: {out.splitlines()[-1] if out else rc}"
    states = {s.strip().rstrip("*~#$@^-!%") for s in out.split()}
    if not states & READY_STATES:
        return False, f"no SLURM node is ready (states: {sorted(states) or 'none'})"
    rc, out = _run(["sacct", "-n", "-X", "-o", "JobID", "-S", "now-1minutes"])
    if rc != 0:
        return False, f"sacct fails (no accounting through slurmdbd, submitit cannot see job states): {out}"
    return True, f"SLURM reachable via {conf or 'default slurm.conf'}"
