"""Fault tests without SLURM: a training process SIGKILLed at random points, some of them in the middle of a
checkpoint write, always resumes from a valid checkpoint, replays exactly, never loses a finished run's results
and never duplicates a record; the lock a killed process leaves is taken over. Kill points are random; the seed is
printed so a failure can be replayed. Then the faults around a run folder's ownership: two launchers of one grid,
an owned run, an interrupted `run --force`, torn records, a read-only runs folder."""
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
from fault_worker import GRID, MARKER, overrides

from galip_bench.checkpoints import read_checkpoint
from galip_bench.cli import main
from galip_bench.errors import UserError
from galip_bench.files import atomic_write_text
from galip_bench.runs import lock, replace, results
from galip_bench.runs.rundir import RunDir, read_jsonl

WORKER = Path(__file__).with_name("fault_worker.py")
ROOT = Path(__file__).resolve().parent.parent
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
    stale_from = None  # the pid of a killed worker whose lock stayed behind
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
        owner = lock.read_owner(run.path)
        if stale_from is not None and (proc.returncode == 0 or kind != "finished_run"):  # it got to train
            assert f"took over the lock of pid {stale_from} " in stderr, f"{label}: {stderr[-2000:]}"
        if kind != "finished_run" and proc.returncode != 0:  # killed while it owned the run
            assert owner and owner["pid"] == proc.pid, f"{label}: the killed worker's lock should stay: {owner}"
        if proc.returncode == 0:
            assert owner is None, f"{label}: a worker that ended normally left its lock {owner}"
        stale_from = owner["pid"] if owner else None
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


# ---- a run folder's owner, --force, torn records, a read-only runs folder ------------------------------------
STEPS = 8
SETS = [a for o in overrides(STEPS) for a in ("--set", o)]
# two runs of 4 steps, one light evaluation half-way and at the end
TWO_RUNS = ("name: fault2\nprofile: smoke\nvariants: [{name: full}, {name: plain, overrides: {model.prompts: false}}]"
            "\neval: {protocols: [clip_score_galip]}\n")
TWO_SETS = [a for o in overrides(4) + ["train.sample_every=0", "eval.num_samples=16", "eval.batch_size=16"]
            for a in ("--set", o)]
HOST = socket.gethostname()


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A working folder with one finished 8-step run of the fault grid (two evaluations, checkpoints 4 and 8),
    trained once by `train`; tests work on copies."""
    folder = tmp_path_factory.mktemp("finished")
    (folder / "g.yaml").write_text(GRID)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        assert main(["train", "g.yaml"] + SETS) == 0
    return folder


def copy_of(finished: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    shutil.copytree(finished, folder)
    return folder


def folder_hash(folder: Path) -> dict:
    """{relative path: sha256} of every file (hidden ones included) and every folder (None) below `folder`."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
            for p in sorted(folder.rglob("*"))}


def launcher(folder: Path, *extra, sets=SETS) -> subprocess.Popen:
    """`galip-bench run g.yaml` (the smoke profile's local executor) in its own process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "galip_bench", "run", "g.yaml", *sets, *extra], cwd=folder,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def check_records(run: RunDir, label: str, steps: int = STEPS) -> None:
    """Every step logged exactly once, one metric record per (step, protocol, metric), both evaluations."""
    assert [r["step"] for r in read_jsonl(run.train_log)] == list(range(1, steps + 1)), label
    keys = Counter((r["step"], r["protocol"], r["metric"]) for r in read_jsonl(run.metrics))
    assert all(n == 1 for n in keys.values()), f"{label}: duplicated metric records {keys}"
    assert {k[0] for k in keys} == {steps // 2, steps} and len(keys) == 2 * len({k[1:] for k in keys}), label


def test_two_launchers_on_one_grid_give_one_owner_per_run(tmp_path):
    """Two `run` processes of one grid started together: each run is submitted by one of them and trained once;
    the other says who owns it (or that it has finished)."""
    (tmp_path / "g.yaml").write_text(TWO_RUNS)
    procs = [launcher(tmp_path, sets=TWO_SETS)]
    # the second starts once the first owns a run: they overlap for certain, not only when scheduling lets them
    deadline = time.monotonic() + 120
    while not list((tmp_path / "runs" / "fault2").glob(f"*/{lock.LOCK}")) and time.monotonic() < deadline:
        time.sleep(0.02)
    procs.append(launcher(tmp_path, sets=TWO_SETS))
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and "Traceback" not in err, err[-3000:]
    root = tmp_path / "runs" / "fault2"
    runs = [RunDir(p.parent) for p in sorted(root.glob("*/config.yaml"))]
    assert len(runs) == 2
    for run in runs:
        assert run.finished, run.status()
        check_records(run, run.path.name, steps=4)
        assert not (run.path / lock.LOCK).exists(), "released at the end"
    assert len(list((root / "_submitit").glob("*_submitted.pkl"))) == 2, "each run submitted once, by one launcher"
    skips = 0
    for p, (out, _) in zip(procs, outs):
        owned = re.findall(rf"^skipped (\w+) (\w+): owned by pid (\d+) on host {re.escape(HOST)}"
                           r"(?: \(local job \d+\))? since \d\d:\d\d$", out, re.M)
        assert all(int(pid) != p.pid for _, _, pid in owned), "a launcher never meets its own lock"
        finished_skips = re.search(r"^skipped (\d+) finished run", out, re.M)
        skips += len(owned) + (int(finished_skips.group(1)) if finished_skips else 0)
    assert skips == 2, "each run skipped by the launcher that did not train it\n" + "\n".join(o for o, _ in outs)
    assert "owned by pid" in outs[1][0], "the second launcher met the first one's lock\n" + outs[1][0]


def test_a_run_owned_by_a_live_process_is_left_alone(finished, tmp_path, capsys, monkeypatch):
    """`run --force` skips it with one line naming the owner; `train` refuses with one error line and exit 2;
    nothing in the folder changes. Once the owner is killed, its lock is taken over."""
    folder = copy_of(finished, tmp_path)
    monkeypatch.chdir(folder)
    run = the_run(folder)
    holder = subprocess.Popen([sys.executable, str(WORKER), "--hold-lock", str(run.path)], stdout=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = folder_hash(run.path)
        capsys.readouterr()
        assert main(["run", "g.yaml", "--force", "--executor", "debug"] + SETS) == 0
        out = capsys.readouterr().out
        assert re.search(rf"^skipped {run.path.name} full: owned by pid {holder.pid} on host {re.escape(HOST)} "
                         r"since \d\d:\d\d$", out, re.M), out
        assert main(["train", "g.yaml"] + SETS) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: run folder {run.path.absolute()} is owned by pid "
                                                   f"{holder.pid}"), err
        assert folder_hash(run.path) == before
    finally:
        holder.kill()
        holder.wait()
    assert main(["train", "g.yaml"] + SETS) == 0  # the owner is gone: its lock is taken over
    assert f"took over the lock of pid {holder.pid} " in capsys.readouterr().err
    assert not (run.path / lock.LOCK).exists()


def test_an_interrupted_force_keeps_the_finished_results(finished, tmp_path, monkeypatch):
    """SIGINT to `run --force` once it has moved the old results aside, before the new run trains: the folder is
    byte for byte what it was. Control: a --force left to finish replaces them."""
    folder = copy_of(finished, tmp_path)
    run = the_run(folder)
    before, values = folder_hash(run.path), metric_values(run)
    proc = launcher(folder, "--force")
    try:
        assert wait_until(lambda: (run.path / replace.REPLACED).exists(), proc), proc.communicate()[1][-3000:]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGINT and "Traceback" not in err, err[-3000:]
    assert folder_hash(run.path) == before, "an interrupted --force must not lose or change the finished run"
    assert run.finished

    monkeypatch.chdir(folder)
    assert main(["run", "g.yaml", "--force", "--executor", "debug"] + SETS) == 0
    assert run.finished and not (run.path / replace.REPLACED).exists()
    assert folder_hash(run.path) != before and metric_values(run) == values  # rerun: new files, the same numbers
    check_records(run, "forced")


def cut_last_line(path: Path) -> None:
    """The file as a crash mid-write leaves it: its last line cut in the middle, no newline."""
    data = path.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(data[:last + (len(data) - last) // 2])


def test_torn_records_are_reported_and_repaired_by_the_next_run(finished, tmp_path, monkeypatch, capsys):
    folder = copy_of(finished, tmp_path)
    monkeypatch.chdir(folder)
    run = the_run(folder)
    values, log = metric_values(run), read_jsonl(run.train_log)
    final = {k: v for k, v in values.items() if k[0] == STEPS}
    cut_last_line(run.metrics)  # the last record of the final evaluation
    cut_last_line(run.train_log)  # step 8's losses
    assert not run.finished
    capsys.readouterr()
    assert main(["status", "g.yaml"]) == 0
    out, err = capsys.readouterr()
    warnings = err.strip().splitlines()
    assert len(warnings) == 2 and all(w.startswith("warning: ") for w in warnings), err
    assert {Path(w.split(": ")[1]).name for w in warnings} == {"metrics.jsonl", "train_log.jsonl"}
    row = next(line for line in out.splitlines() if line.startswith(run.path.name))
    assert " failed " in row and "torn record in metrics.jsonl, train_log.jsonl" in row, out

    assert main(["run", "g.yaml", "--executor", "debug"] + SETS) == 0
    err = capsys.readouterr().err
    # train_log's last whole record is step 7, so step 7 may be incomplete elsewhere: resumed at 6 or before (4)
    assert f"repairing {run.path.name} full: torn record in metrics.jsonl, train_log.jsonl; resumed from its " \
           "last checkpoint at or before step 6" in err, err
    assert run.finished and run.status()["resumed_from"] == "step_00000004.pt"
    assert metric_values(run) == values and {k: v for k, v in values.items() if k[0] == STEPS} == final
    assert [(r["step"], r["errD"], r["errG"]) for r in read_jsonl(run.train_log)] == \
           [(r["step"], r["errD"], r["errG"]) for r in log]
    check_records(run, "repaired")
    assert main(["status", "g.yaml"]) == 0 and "warning" not in capsys.readouterr().err


def test_a_torn_status_is_reported_and_rebuilt_by_the_next_run(finished, tmp_path, monkeypatch, capsys):
    folder = copy_of(finished, tmp_path)
    monkeypatch.chdir(folder)
    run = the_run(folder)
    logs = (run.metrics.read_bytes(), run.train_log.read_bytes())
    text = run.status_file.read_bytes()
    run.status_file.write_bytes(text[:len(text) // 2])  # cut in the middle
    capsys.readouterr()
    assert main(["status", "g.yaml"]) == 0
    out, err = capsys.readouterr()
    warning = err.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("warning: ") and warning[0].endswith(
        ": torn (a write cut short): the run is shown as failed, and the next `galip-bench run` (or `train`) "
        "rebuilds it"), err
    assert Path(warning[0].split(": ")[1]).resolve() == run.status_file.resolve()
    row = next(line for line in out.splitlines() if line.startswith(run.path.name)).split()
    assert row[1:6] == ["full", "0", "failed", "0", str(STEPS)], out  # variant, seed and length from config.yaml
    assert main(["run", "g.yaml", "--executor", "debug"] + SETS) == 0
    status = run.status()
    assert status["state"] == "finished" and status["step"] == STEPS and status["variant"] == "full"
    assert (run.metrics.read_bytes(), run.train_log.read_bytes()) == logs, "nothing else needed redoing"


_READ_ONLY = []  # folders the audit hook below makes read-only, while a test runs
_READ_ONLY_HOOKED = []


def _read_only_hook(event, args):
    """An audit hook (PEP 578) that fails every write under a _READ_ONLY folder with EACCES, as a read-only mount
    does: opening for writing or creating, renaming, deleting, making folders, links, chmod."""
    if not _READ_ONLY:
        return
    if event == "open":
        path, mode, flags = args
        writes = (any(c in (mode or "") for c in "wax+") or
                  bool((flags or 0) & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND)))
        paths = [path] if writes else []
    elif event in ("os.rename", "os.link", "os.symlink"):
        paths = list(args[:2])
    elif event in ("os.remove", "os.rmdir", "os.mkdir", "os.truncate", "os.chmod", "os.chown", "os.utime",
                   "shutil.rmtree"):
        paths = [args[0]]
    else:
        return
    for path in paths:
        if isinstance(path, (str, bytes, os.PathLike)):
            full = os.path.abspath(os.fsdecode(path))
            if any(full == root or full.startswith(root + os.sep) for root in _READ_ONLY):
                raise PermissionError(13, "Permission denied (read-only folder)", full)


@contextmanager
def read_only(folder: Path):
    """Tests run as root, where chmod -w stops no write: the audit hook above refuses them instead (installed at
    the first use; a hook cannot be removed, so it does nothing while no folder is listed)."""
    if not _READ_ONLY_HOOKED:
        sys.addaudithook(_read_only_hook)
        _READ_ONLY_HOOKED.append(True)
    _READ_ONLY.append(os.path.abspath(folder))
    try:
        yield
    finally:
        _READ_ONLY.remove(os.path.abspath(folder))


def test_status_of_a_read_only_runs_folder(finished, tmp_path, monkeypatch, capsys):
    folder = copy_of(finished, tmp_path)
    monkeypatch.chdir(folder)
    run = the_run(folder)
    root = run.path.parent
    capsys.readouterr()
    with read_only(folder / "runs"):
        # the simulation holds: creating, replacing or appending a file there fails as on a read-only mount
        for write in (lambda: atomic_write_text(root / "probe.txt", "x"), lambda: open(run.metrics, "a"),
                      lambda: os.replace(run.status_file, root / "moved"), lambda: (root / "new").mkdir()):
            with pytest.raises((PermissionError, UserError)):  # atomic writes name the file: a UserError
                write()
        assert main(["status", "g.yaml"]) == 0
        out, err = capsys.readouterr()
        results.write_index(root)  # what `run` does at its end: skipped, with one note
        note = capsys.readouterr().err.strip().splitlines()
    assert run.path.name in out and " finished " in out and err == "", err  # nothing tried, nothing refused
    assert len(note) == 1 and note[0].startswith(f"note: {root / 'index.csv'} not written (") and \
        "permission denied" in note[0].lower(), note
    assert not (root / "index.csv").exists() and not (root / "probe.txt").exists()
