"""A run folder's owner (`runs.lock`), `run --force`'s replacement of old results (`runs.replace`) and torn records
(`runs.rundir`), function by function. tests/test_faults.py has the same faults end to end: two launchers on one
grid, an interrupted `run --force`, torn files repaired by `run`, a read-only runs folder."""
import hashlib
import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from galip_bench.grids.grid import load_grid
from galip_bench.runs import lock, replace
from galip_bench.runs.rundir import RunDir, read_jsonl
from galip_bench.train.loop import train_run

WORKER = Path(__file__).with_name("fault_worker.py")
ROOT = Path(__file__).resolve().parent.parent
HOST = socket.gethostname()
TRUE = shutil.which("true")
GRID = "name: own\nprofile: smoke\nvariants: [{name: full}]\neval: {protocols: []}\n"
SMALL = ["train.steps=6", "train.batch_size=4", "train.ckpt_every=3", "train.keep_ckpts=0", "train.log_every=1",
         "train.sample_every=0", "train.eval_every=0", "data.num_train=32", "data.num_test=16"]


def start_holder(folder: Path, token: str = None) -> subprocess.Popen:
    """A live owner in another process (tests/fault_worker.py --hold-lock), once it holds the lock."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(WORKER), "--hold-lock", str(folder)] + ([token] if token else []),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip() == "held", proc.stderr.read()
    return proc


def dead_pid() -> int:
    proc = subprocess.Popen([TRUE])
    proc.wait()
    return proc.pid


def write_record(folder: Path, **fields) -> dict:
    record = {"token": "someone", "role": "job", "host": HOST, "pid": dead_pid(), "start": None, "boot": None,
              "executor": None, "job_id": None, "since": time.time(), **fields}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / lock.LOCK).write_text(json.dumps(record))
    return record


def folder_hash(folder: Path) -> dict:
    """{relative path: sha256} of every file (hidden ones included) and every folder (None) below `folder`."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    return out


def test_one_owner_at_a_time_released_on_every_way_out(tmp_path):
    run = tmp_path / "r"
    with lock.owning(run) as own:
        record = lock.read_owner(run)
        assert record["pid"] == os.getpid() and record["host"] == HOST and record["token"] == own.token
        with pytest.raises(lock.RunOwned, match=rf"owned by pid {os.getpid()} on host {HOST} since \d\d:\d\d"):
            lock.acquire(run, lock.new_token())  # another owner, even one in this process, is refused
        with lock.owning(run, own.token):  # the same owner again (a launcher running its job in-process)
            pass
        assert lock.read_owner(run)["token"] == own.token, "the inner hold's exit must not release the lock"
    assert not (run / lock.LOCK).exists()
    for error in (ValueError("boom"), SystemExit(143), KeyboardInterrupt()):
        with pytest.raises(type(error)):
            with lock.owning(run):
                raise error
        assert not (run / lock.LOCK).exists(), f"not released after {type(error).__name__}"
    with lock.owning(run) as own:
        own.keep = True  # a SLURM job leaving to be requeued keeps it for its next start
    assert lock.read_owner(run)["token"] == own.token


def test_live_owner_refused_its_own_job_admitted_dead_owners_taken_over(tmp_path, capsys):
    run = tmp_path / "r"
    holder = start_holder(run, token="launcher-token")
    try:
        with pytest.raises(lock.RunOwned, match=f"owned by pid {holder.pid} on host {HOST}"):
            lock.acquire(run, lock.new_token())
        # the job its launcher submitted carries the launcher's token: it takes the record over
        lock.acquire(run, "launcher-token", role="job")
        assert lock.read_owner(run)["pid"] == os.getpid()
        lock.release(run, "launcher-token")
        assert not (run / lock.LOCK).exists()
    finally:
        holder.kill()
        holder.wait()
    capsys.readouterr()

    live = os.getppid()
    live_start = lock._proc_stat(live)[1]
    stale = {"dead pid": {}, "pid reused by another process": {"pid": live, "start": live_start + 1},
             "host rebooted": {"pid": live, "start": live_start, "boot": "another-boot"}}
    for why, fields in stale.items():
        old = write_record(run, **fields)
        token = lock.new_token()
        lock.acquire(run, token)
        assert lock.read_owner(run)["pid"] == os.getpid(), why
        err = capsys.readouterr().err
        assert f"took over the lock of pid {old['pid']} on host {HOST}" in err and err.count("\n") == 1, (why, err)
        lock.release(run, token)
    # controls: the same live pid with its own start time, and an owner on a host this process cannot look at
    write_record(run, pid=live, start=live_start)
    with pytest.raises(lock.RunOwned, match=f"owned by pid {live} on host {HOST}"):
        lock.acquire(run, lock.new_token())
    write_record(run, host="elsewhere", pid=1)
    with pytest.raises(lock.RunOwned, match=f"if that process is gone, delete {run / lock.LOCK}"):
        lock.acquire(run, lock.new_token())


def test_a_slurm_owner_is_checked_through_the_scheduler(tmp_path, monkeypatch):
    """A fake `sacct` on PATH answers for job 77_1 as the real one would (`-P -o JobID,State`)."""
    bin_dir, answer = tmp_path / "bin", tmp_path / "sacct.out"
    bin_dir.mkdir()
    (bin_dir / "sacct").write_text(f"#!/bin/sh\ncat {answer}\n")
    (bin_dir / "sacct").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    run = tmp_path / "r"
    for state, owned in (("RUNNING", True), ("PENDING", True), ("REQUEUED", True), ("CANCELLED by 0", False),
                         ("TIMEOUT", False), ("COMPLETED", False)):
        answer.write_text(f"77_1|{state}\n")
        write_record(run, host="node7", pid=12, executor="slurm", job_id="77_1")
        token = lock.new_token()
        if owned:
            with pytest.raises(lock.RunOwned, match=r"owned by pid 12 on host node7 \(SLURM job 77_1\)"):
                lock.acquire(run, token)
        else:
            lock.acquire(run, token)
            lock.release(run, token)
            assert not (run / lock.LOCK).exists(), state
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no scheduler to ask: an owner elsewhere stands,
    write_record(run, host="node7", pid=12, executor="slurm", job_id="77_1")
    with pytest.raises(lock.RunOwned, match="if that process is gone, delete"):
        lock.acquire(run, lock.new_token())
    # and so does a job queued by a launcher of this host that has left (--no-wait): its pid says nothing
    write_record(run, role="launcher", executor="slurm", job_id="77_1")
    with pytest.raises(lock.RunOwned, match=r"\(SLURM job 77_1\)"):
        lock.acquire(run, lock.new_token())


def test_only_rank_zero_of_a_run_takes_the_lock(tmp_path, monkeypatch):
    run = tmp_path / "r"
    lock.acquire(run, "rank-0-of-another-launch")
    monkeypatch.setenv("RANK", "1")
    with lock.owning(run):  # another process of the owning job: not refused, and the lock is not touched
        pass
    assert lock.read_owner(run)["token"] == "rank-0-of-another-launch"
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(lock.RunOwned):
        with lock.owning(run):
            pass
    lock.release(run, "rank-0-of-another-launch")


def _race(run: str, barrier, wins) -> None:
    check = lock.owner_state

    def slow_check(*args):  # as slow as asking a busy scheduler: every racer judges the stale lock before any acts
        time.sleep(0.3)
        return check(*args)

    lock.owner_state = slow_check  # in this forked racer only
    barrier.wait()
    try:
        lock.acquire(run, lock.new_token())
    except lock.RunOwned:
        return
    with wins.get_lock():
        wins.value += 1
    time.sleep(1.0)  # hold it while the others try


def test_processes_racing_for_a_stale_lock_leave_exactly_one_owner(tmp_path):
    ctx = multiprocessing.get_context("fork")
    run = tmp_path / "r"
    for round_ in range(2):
        write_record(run)  # a dead owner's lock: every racer may take it over, one must win
        barrier, wins = ctx.Barrier(6), ctx.Value("i", 0)
        procs = [ctx.Process(target=_race, args=(str(run), barrier, wins)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        assert wins.value == 1, f"round {round_}: {wins.value} owners"


def small_run(tmp_path):
    (tmp_path / "g.yaml").write_text(GRID)
    return load_grid(tmp_path / "g.yaml", overrides=SMALL).runs[0]


def test_force_replacement_is_undone_unless_the_new_run_reaches_a_checkpoint(tmp_path, capsys):
    run = small_run(tmp_path)
    rd = RunDir(tmp_path / "runs" / run.run_id)
    train_run(run.config, rd, progress=False)
    old = folder_hash(rd.path)
    old_losses = read_jsonl(rd.train_log)

    # the new run stops (as a kill would) before its first checkpoint: the old files return when it lets go
    token = lock.new_token()
    lock.acquire(rd.path, token, role="launcher")
    assert replace.move_aside(rd.path, token) and not rd.finished
    rd.write_config(run.conf)
    rd.set_status("pending", variant=run.name)
    train_run(run.config, rd, progress=False, stop_at=2, owner=token)
    assert (rd.path / replace.REPLACED).exists(), "kept while the new run has no checkpoint"
    lock.release(rd.path, token)
    assert folder_hash(rd.path) == old

    # the launcher killed after moving the files aside: whoever owns the folder next puts them back
    token = lock.new_token()
    lock.acquire(rd.path, token, role="launcher")
    replace.move_aside(rd.path, token)
    rd.set_status("pending")
    lock._HELD.pop(str(rd.path.absolute()))
    write_record(rd.path, token=token)  # its record now names a dead pid
    stranger = lock.new_token()
    lock.acquire(rd.path, stranger)
    lock.release(rd.path, stranger)
    assert folder_hash(rd.path) == old

    # killed half-way through moving aside, or through putting back: finished by the next owner
    for state in (replace.REPLACING, replace.RESTORING):
        (rd.path / state).mkdir()
        (rd.path / state / replace.MARK).write_text(json.dumps({"token": "dead"}))
        if state == replace.REPLACING:  # half of the old files moved, the rest still in place
            for entry in replace.content(rd.path)[::2]:
                os.rename(entry, rd.path / state / entry.name)
        else:  # all old files aside, some new ones written, the removal of the new ones begun
            for entry in replace.content(rd.path):
                os.rename(entry, rd.path / state / entry.name)
            (rd.path / "status.json").write_text("{}")
        token = lock.new_token()
        lock.acquire(rd.path, token)
        lock.release(rd.path, token)
        assert folder_hash(rd.path) == old, state

    # control: a new run that reaches its first checkpoint replaces the old files for good
    token = lock.new_token()
    lock.acquire(rd.path, token, role="launcher")
    replace.move_aside(rd.path, token)
    rd.write_config(run.conf)
    rd.set_status("pending", variant=run.name)
    train_run(run.config, rd, progress=False, owner=token)
    lock.release(rd.path, token)
    assert not (rd.path / replace.REPLACED).exists() and rd.finished
    assert folder_hash(rd.path) != old and read_jsonl(rd.train_log) != old_losses  # new records (their times)
    assert [(r["step"], r["errD"]) for r in read_jsonl(rd.train_log)] == [(r["step"], r["errD"]) for r in old_losses]


def test_torn_records_are_found_warned_once_and_bound_the_resume_step(tmp_path, capsys):
    rd = RunDir(tmp_path / "r")
    rd.path.mkdir()
    lines = [json.dumps({"step": s, "metric": m, "value": 0.5}) for s in (4, 8) for m in ("fid", "cs")]
    rd.metrics.write_text("\n".join(lines) + "\n")
    rd.train_log.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, 9)))
    rd.set_status("finished", step=8)
    assert rd.trusted_step() is None and rd.finished and rd.torn() == {}  # control: nothing torn
    assert capsys.readouterr().err == ""
    for cut_line, trusted in ((4, 7), (3, 3), (1, 0)):  # the records of the step before the cut are all whole
        text = "\n".join(lines[:cut_line - 1] + [lines[cut_line - 1][:17]])  # the line cut mid-record
        rd.metrics.write_text(text)
        assert rd.trusted_step() == trusted and not rd.finished and rd.torn() == {"metrics.jsonl": cut_line}
        assert len(read_jsonl(rd.metrics)) == cut_line - 1
        read_jsonl(rd.metrics)
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"warning: {rd.metrics}: line {cut_line} is a torn record"), err
    rd.metrics.write_text("\n".join(lines) + "\n")
    rd.train_log.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, 8)) + '{"step": 8, "er')
    assert rd.trusted_step() == 6 and rd.torn() == {"train_log.jsonl": 8}
    rd.truncate_after(6)
    assert [r["step"] for r in read_jsonl(rd.train_log)] == list(range(1, 7)) and rd.torn() == {}
    assert [r["step"] for r in read_jsonl(rd.metrics)] == [4, 4]
    capsys.readouterr()

    rd.status_file.write_text('{"state": "finished", "step": 8, "vari')
    status = rd.status()
    assert status["state"] == "failed" and status["torn"] and not rd.finished and "status.json" in rd.torn()
    assert capsys.readouterr().err.startswith(f"warning: {rd.status_file}: torn")
    rd.set_status("running", step=6)  # rebuilt from what is given now, nothing of the torn text kept
    assert rd.status()["state"] == "running" and "torn" not in rd.status() and rd.torn() == {}


def test_a_job_submitit_requeues_keeps_the_lock_for_its_next_start(tmp_path, monkeypatch):
    """On timeout or preemption submitit calls the job's checkpoint(), requeues it and exits (SystemExit) from the
    middle of training: the lock stays, and the requeued job (the launcher's token) takes it over. Control: a job
    that exits without being requeued releases it."""
    import submitit
    from omegaconf import OmegaConf

    from galip_bench.config.schema import SiteConfig
    from galip_bench.grids import launch
    run = small_run(tmp_path)
    folder = tmp_path / "runs" / run.run_id
    site_yaml = OmegaConf.to_yaml(OmegaConf.structured(SiteConfig()))

    def job(token):
        return launch.RunJob(OmegaConf.to_yaml(run.conf), str(folder), site_yaml, owner=token)

    for requeued in (True, False):
        token = lock.new_token()
        lock.acquire(folder, token, role="launcher")  # the launcher's hold, handed to the job it submits
        lock.release(folder, token, keep=True)
        the_job = job(token)

        def timed_out(*args, **kwargs):
            if requeued:
                assert isinstance(the_job.checkpoint(), submitit.helpers.DelayedSubmission)
            raise SystemExit(-1)  # what submitit's signal handler does after requeueing

        monkeypatch.setattr("galip_bench.train.loop.train_run", timed_out)
        with pytest.raises(SystemExit):
            the_job()
        record = lock.read_owner(folder)
        if requeued:
            assert record is not None and record["token"] == token and record["role"] == "job"
            monkeypatch.setattr("galip_bench.train.loop.train_run", lambda *a, **k: {"interrupted": False})
            assert job(token)() == {"interrupted": False}  # the requeued job: admitted, and it releases at the end
        assert lock.read_owner(folder) is None


def test_the_job_a_lock_names_is_submitits_not_an_enclosing_allocations(monkeypatch):
    """A local job or `train` inside an salloc allocation inherits SLURM_JOB_ID: its lock is judged by its pid,
    not by the allocation (which outlives it)."""
    for key in ("SUBMITIT_EXECUTOR", "SUBMITIT_LOCAL_JOB_ID", "SUBMITIT_DEBUG_JOB_ID", "SLURM_ARRAY_JOB_ID",
                "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    assert lock.current_job() == (None, None)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "4242")
    assert lock.current_job() == ("local", "4242")
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    assert lock.current_job() == ("slurm", "77")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "70")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert lock.current_job() == ("slurm", "70_3")


def test_a_repair_drops_later_checkpoints_and_end_of_run_records(tmp_path):
    """A tear in the final evaluation's speed records (they have no step) limits the resume to the last step that
    has records, not to 0; the repair drops the checkpoints after the resume step (a later stop must not jump to
    them) and the stepless records while the end is still to come (they are measured again, not duplicated)."""
    rd = RunDir(tmp_path / "r")
    rd.ckpt_dir.mkdir(parents=True)
    records = [{"step": s, "metric": "fid", "value": 1.0} for s in (40, 80, 120)]
    records += [{"step": None, "metric": m, "value": 2.0} for m in ("latency_ms", "throughput_img_s")]
    rd.metrics.write_text("".join(json.dumps(r) + "\n" for r in records[:-1]) + json.dumps(records[-1])[:12])
    rd.train_log.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, 121)))
    assert rd.trusted_step() == 119  # the step before 120, whose records were the last with a step
    for step in (40, 80, 120):
        rd.checkpoint_path(step).write_bytes(b"x")
    rd.truncate_after(80, end=120, checkpoints=True)  # resumed from step 80 (as if 120's were unusable)
    assert [p.name for p in rd.checkpoints()] == ["step_00000040.pt", "step_00000080.pt"]
    assert [(r["step"], r["metric"]) for r in read_jsonl(rd.metrics)] == [(40, "fid"), (80, "fid")]
    rd.metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    rd.checkpoint_path(120).write_bytes(b"x")
    rd.truncate_after(120, end=120)  # at the end: the measured speed records stay, the checkpoints too
    assert len(read_jsonl(rd.metrics)) == 5 and len(rd.checkpoints()) == 3
    rd.truncate_after(80, end=120)  # an ordinary resume keeps the checkpoints (only a repair drops them)
    assert len(rd.checkpoints()) == 3 and [r["step"] for r in read_jsonl(rd.metrics)] == [40, 80]
