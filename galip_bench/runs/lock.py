"""One owner per run folder: `owner.lock` in the folder names who trains (or is about to train) the run.

    {"token": "9f2c...", "role": "launcher|job|train", "host": "node12", "pid": 4711, "start": 123456,
     "boot": "<kernel boot id>", "executor": "local|slurm|debug|null", "job_id": "4712|123_4|null", "since": 1.7e9}

Who holds it: the `run` launcher takes it in `prepare()` for every run it will submit, and hands it to the run's job
with the submission (`hand_over` records the job id; the job, which carries the launcher's token, takes the record
over as its own when it starts: `owning`; a job that finds no record refuses to start, as its launcher gave the run
up). `train` (and any direct `train_run`) takes it with a token of its own. Only rank 0 of a multi-process run holds
it. A holder releases it on every way out (end, exception, the SIGTERM/SIGINT stop of the step loop, SystemExit); a
SLURM job leaving to be requeued keeps it for its next start, and so does a launcher for the jobs that outlive it.

Taking it is atomic: the record is written to a temp file and hard-linked to `owner.lock` (`link()` fails if the name
exists, on local filesystems and on NFS alike, and the lock never exists half-written). An existing lock whose owner
is gone is taken over: on this host a dead pid (or a live pid with another start time: a reused pid, or a reboot);
for a SLURM job, the scheduler's state (sacct) of the job it names. An owner on another host without a job the
scheduler can check is never presumed dead: the message says which file to delete. The check-and-replace of a stale
lock runs under an flock on `.owner.guard` (NFS clients map flock to POSIX locks), so two processes cannot both
replace it."""
import errno
import json
import os
import socket
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from galip_bench.errors import UserError
from galip_bench.files import atomic_write_json
from galip_bench.runs import replace
from galip_bench.runs.liveness import SLURM_ENDED, slurm_states

LOCK = "owner.lock"
GUARD = ".owner.guard"
SLURM_LIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED",
              "CONFIGURING", "COMPLETING", "SIGNALING", "STAGE_OUT", "STOPPED", "SPECIAL_EXIT"}
SLURM_GONE = SLURM_ENDED | {"COMPLETED", "PREEMPTED", "REVOKED"}
YOUNG_S = 30.0  # an unreadable lock younger than this may be one being created without link() support

_HELD = {}  # absolute run path -> [token, count, keep]: the holds of this process (reentrant for one token)
_MUTEX = threading.RLock()


class RunOwned(UserError):
    """The run folder belongs to another live (or unverifiable) owner; or (record None) a job's launcher gave the
    run up before the job started."""

    def __init__(self, run_path, record, unverifiable: bool = False):
        self.run_path, self.record = Path(run_path), record
        self.owner = describe(record) if record is not None else "nobody"
        if record is None:
            super().__init__(f"run folder {self.run_path}: the launcher that submitted this job gave the run up "
                             "before the job started (interrupted); the next `run` starts it")
            return
        hint = (f"; if that process is gone, delete {self.run_path / LOCK}" if unverifiable else
                "; wait for it to end, or stop it (the run then resumes from its last checkpoint)")
        super().__init__(f"run folder {self.run_path} is owned by {self.owner}{hint}")


def new_token() -> str:
    return uuid.uuid4().hex


def current_job() -> tuple:
    """(executor, job id) of the submitit job this process runs: a debug job, a local job, a SLURM job (array tasks as
    ARRAYID_TASK, as submitit names them), or (None, None). submitit's own variables decide, not SLURM_JOB_ID alone:
    a local job or a `train` started inside an salloc/sbatch allocation inherits that, and the allocation outlives
    the process (its lock is then judged by its pid)."""
    env = os.environ
    if env.get("SUBMITIT_DEBUG_JOB_ID"):
        return "debug", env["SUBMITIT_DEBUG_JOB_ID"]
    if env.get("SUBMITIT_EXECUTOR") == "local" and env.get("SUBMITIT_LOCAL_JOB_ID"):
        return "local", env["SUBMITIT_LOCAL_JOB_ID"]
    if env.get("SUBMITIT_EXECUTOR") == "slurm" and env.get("SLURM_JOB_ID"):
        array, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
        return "slurm", f"{array}_{task}" if array and task else env["SLURM_JOB_ID"]
    return None, None


def _proc_stat(pid) -> tuple:
    """(state letter, start time in clock ticks since boot) of a process on this host, or None."""
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            text = f.read()
    except (OSError, TypeError, ValueError):
        return None
    rest = text[text.rindex(")") + 2:].split()
    return rest[0], int(rest[19])


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def _record(token: str, role: str, executor=None, job_id=None) -> dict:
    stat = _proc_stat(os.getpid())
    return {"token": token, "role": role, "host": socket.gethostname(), "pid": os.getpid(),
            "start": stat[1] if stat else None, "boot": _boot_id(), "executor": executor,
            "job_id": str(job_id) if job_id is not None else None, "since": time.time()}


def _pid_alive(pid, start=None) -> bool:
    """A process of this host: not a zombie and, when its start time was recorded, the same process."""
    stat = _proc_stat(pid)
    if stat is not None:
        return stat[0] not in ("Z", "X") and (start is None or stat[1] == start)
    try:  # no /proc: signal 0 says whether the pid exists
        os.kill(int(pid), 0)
        return True
    except (OSError, TypeError, ValueError):
        return False


def owner_state(record: dict, lock_path=None) -> tuple:
    """(alive, why): alive is True, False (gone: the lock may be taken over) or None (cannot be checked from here)."""
    if not record or "token" not in record:  # unreadable: maybe being created, else debris
        age = time.time() - lock_path.stat().st_mtime if lock_path is not None and lock_path.exists() else YOUNG_S
        return (None, "unreadable lock file") if age < YOUNG_S else (False, "unreadable lock file")
    job, executor = record.get("job_id"), record.get("executor")
    if job and executor == "slurm":
        state = slurm_states([job]).get(str(job))
        if state in SLURM_LIVE:
            return True, f"SLURM job {job} is {state}"
        if state in SLURM_GONE:
            return False, f"SLURM job {job} is {state}"
        if record.get("role") == "launcher":  # handed to a job that may wait in the queue: only sacct can tell
            return None, f"the scheduler cannot be asked about SLURM job {job} from here"
    if record.get("host") == socket.gethostname():
        if record.get("boot") and _boot_id() and record["boot"] != _boot_id():
            return False, "this host rebooted since"
        if _pid_alive(record.get("pid"), record.get("start")):
            return True, f"pid {record.get('pid')} is running"
        if job and executor == "local" and _pid_alive(job):  # a submitted local job not started yet
            return True, f"local job {job} is running"
        return False, f"pid {record.get('pid')} is gone"
    return None, f"it runs on host {record.get('host')}, where this process cannot look"


def describe(record: dict) -> str:
    """'pid 1234 on host h (local job 1233) since 10:02' (the date too when not today)."""
    if not record or "token" not in record:
        return "an unreadable lock file"
    job = record.get("job_id")
    kind = {"slurm": "SLURM job", "local": "local job", "debug": "debug job"}.get(record.get("executor"), "job")
    since = time.localtime(record.get("since") or 0)
    when = time.strftime("%H:%M" if since[:3] == time.localtime()[:3] else "%Y-%m-%d %H:%M", since)
    return (f"pid {record.get('pid')} on host {record.get('host')}" + (f" ({kind} {job})" if job else "")
            + f" since {when}")


def read_owner(run_path) -> dict:
    """The lock record of a run folder: None when unowned, {} when unreadable."""
    try:
        return json.loads((Path(run_path) / LOCK).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


@contextmanager
def _guard(folder: Path):
    """An exclusive flock on the folder's guard file while a lock is created, replaced or removed."""
    try:
        fd = os.open(folder / GUARD, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:  # cannot even create the guard: the lock's own creation will say why
        yield
        return
    try:
        try:
            import fcntl
            fcntl.flock(fd, fcntl.LOCK_EX)
        except (ImportError, OSError):  # no lock support here: the link() creation still admits one creator
            pass
        yield
    finally:
        os.close(fd)  # closing drops the flock


def _create(lock: Path, record: dict) -> bool:
    """Create `lock` holding `record`, atomically; False if it exists."""
    tmp = lock.with_name(f".{lock.name}.{record['token']}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, sort_keys=True) + "\n")
    try:
        os.link(tmp, lock)
        return True
    except FileExistsError:
        return False
    except OSError as err:
        if tmp.stat().st_nlink == 2:  # NFS: a retried link() can fail although its first try made the link
            return True
        if err.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.EXDEV):
            raise
    finally:
        tmp.unlink(missing_ok=True)
    try:  # a filesystem without hard links: exclusive creation, then the record (readers wait YOUNG_S for it)
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return True


def acquire(run_path, token: str, role: str = "train", executor=None, job_id=None, handed: bool = False) -> None:
    """Make this process the run folder's owner under `token`, or raise RunOwned. Reentrant within a process for
    the same token (a launcher running its debug jobs in-process). A record with the same token is this owner's
    lineage (a job taking over from its launcher, a requeued job): it is rewritten with this process. `handed`: the
    caller is a job handed the run by its launcher, which needs the launcher's record there (without it, the
    launcher gave the run up before the job started). Once held, whatever a killed owner left half done in the
    folder is finished (`replace.recover`)."""
    folder = Path(run_path).absolute()
    with _MUTEX:
        held = _HELD.get(str(folder))
        if held is not None and held[0] == token:
            held[1] += 1
            return
        try:
            _take(folder, token, _record(token, role, executor, job_id), handed)
        except OSError as err:  # a folder this process cannot write (read-only, full): said in one line
            if err.errno not in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT):
                raise
            raise UserError(f"cannot take the lock of run folder {folder}: {err.strerror or err}; the runs "
                            "folder must be writable") from None
        _HELD[str(folder)] = [token, 1, False]
    replace.recover(folder, token)


def _take(folder: Path, token: str, record: dict, handed: bool) -> None:
    """Create the lock, take over our lineage's record or a dead owner's, or raise RunOwned."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK
    for _ in range(10):
        with _guard(folder):
            current = read_owner(folder)
            if current is None and handed:
                raise RunOwned(folder, None)
            if current is None and _create(lock, record):
                break
            if current is None:  # created by one not using the guard meanwhile: look again
                continue
            if current.get("token") == token:
                atomic_write_json(lock, record)
                break
        alive, why = owner_state(current, lock)  # outside the guard: it may ask the scheduler
        if alive is not False:
            raise RunOwned(folder, current, unverifiable=alive is None)
        with _guard(folder):
            if read_owner(folder) == current:  # still that stale record: nobody replaced it meanwhile
                lock.unlink(missing_ok=True)
                print(f"note: {folder}: took over the lock of {describe(current)} ({why})", file=sys.stderr)
    else:
        raise RunOwned(folder, read_owner(folder) or {})


def hand_over(run_path, token: str, executor, job_id) -> None:
    """The launcher names the job its lock now waits for (while the job has not taken the record over)."""
    folder = Path(run_path).absolute()
    with _guard(folder):
        current = read_owner(folder)
        if current and current.get("token") == token and current.get("pid") == os.getpid():
            atomic_write_json(folder / LOCK, {**current, "executor": executor, "job_id": str(job_id)})


def release(run_path, token: str, keep: bool = False) -> None:
    """Drop one hold of `token`. The last hold of this process removes the lock, unless some hold asked to `keep`
    it (a SLURM job leaving to be requeued, a launcher whose submitted job takes over); before that, a replacement
    this owner began (`run --force`) that never reached its first checkpoint is undone."""
    folder = Path(run_path).absolute()
    with _MUTEX:
        held = _HELD.get(str(folder))
        if held is None or held[0] != token:
            return
        held[1] -= 1
        held[2] = held[2] or keep
        if held[1] > 0:
            return
        del _HELD[str(folder)]
        if held[2]:
            return
    with _guard(folder):
        current = read_owner(folder)
        if not current or current.get("token") != token:
            return  # taken over by another owner meanwhile: nothing here is ours any more
        if current.get("pid") != os.getpid():  # our job's record: a live job is the owner now, a dead one's
            if owner_state(current, folder / LOCK)[0] is not False:  # record is ours again while we tidy up
                return
            atomic_write_json(folder / LOCK, {**current, **_record(token, current.get("role", "launcher"))})
    replace.recover(folder, token, own=True)
    with _guard(folder):
        current = read_owner(folder)
        if current and current.get("token") == token:
            (folder / LOCK).unlink(missing_ok=True)


class Ownership:
    """What `owning` yields: its token, and `keep` (set it to leave the lock for a requeued job)."""

    def __init__(self, token):
        self.token, self.keep = token, False


@contextmanager
def owning(run_path, token: str = None, role: str = "job"):
    """Hold the run folder's lock for the block (rank 0 only: the other processes of a multi-process run are the
    same owner). `token`: the launcher's, for a job it submitted; a new one otherwise."""
    if int(os.environ.get("RANK", 0) or 0) != 0:
        yield Ownership(token)
        return
    own = Ownership(token or new_token())
    executor, job_id = current_job()
    acquire(run_path, own.token, role, executor, job_id, handed=token is not None)
    try:
        yield own
    finally:
        release(run_path, own.token, keep=own.keep)
