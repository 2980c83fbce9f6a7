"""Launching a grid through submitit: one Checkpointable job per run (a SLURM job array, local subprocesses, or
in-process with the debug executor). Finished runs are skipped, unfinished ones resume, --force reruns.

A run folder has one owner at a time (`runs.lock`): the launcher takes each run's lock before it writes there and
hands it to the run's job, which takes it over when it starts; a run another launcher, job or `train` owns is
skipped with one line naming its owner. `--force` moves a run's old results aside and puts them back unless the
new run reaches its first checkpoint (`runs.replace`)."""
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import submitit
from omegaconf import OmegaConf
from tqdm import tqdm

from galip_bench.config.io import merge_onto, to_object
from galip_bench.config.recipe import placement_of
from galip_bench.config.schema import RunConfig, SiteConfig
from galip_bench.errors import UserError
from galip_bench.grids.grid import legacy_run_id_of
from galip_bench.progress import progress_options
from galip_bench.runs import lock, replace, results
from galip_bench.runs.rundir import RunDir
from galip_bench.signals import Interrupt, children_ignore_sigint


class RunJob(submitit.helpers.Checkpointable):
    """What a job executes: train (and evaluate) one run. On preemption or timeout, submitit calls checkpoint(),
    which requeues the same job; it resumes from the run's last checkpoint."""

    def __init__(self, conf_yaml: str, run_path: str, site_yaml: str, allow_download: bool = False,
                 progress: bool = False, threads: int = None, owner: str = None):
        self.conf_yaml, self.run_path, self.site_yaml = conf_yaml, run_path, site_yaml
        self.allow_download, self.progress, self.threads = allow_download, progress, threads
        self.owner = owner  # the launcher's lock token: this job takes the run's lock over from it

    def __call__(self) -> dict:
        import torch

        from galip_bench.train.loop import train_run

        # torch starts one thread per core of the machine; jobs sharing it (a SLURM node without CPU binding,
        # parallel local runs) then oversubscribe the cores and each one crawls. train.threads, when set, wins.
        threads = self.threads or int(os.environ.get("SLURM_CPUS_PER_TASK", 0))
        if threads:
            torch.set_num_threads(threads)
        tasks = os.environ.get("SLURM_NTASKS") or os.environ.get("SUBMITIT_LOCAL_NTASKS") or "1"
        if int(tasks) > 1:  # a multi-process run: SLURM tasks, or the local executor's tasks_per_node
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        cfg = to_object(merge_onto(RunConfig, OmegaConf.create(self.conf_yaml), source=self.run_path))
        site = to_object(merge_onto(SiteConfig, OmegaConf.create(self.site_yaml), source="site"))
        run_dir = RunDir(self.run_path)
        make_evaluator = evaluator_factory(cfg, site, self.allow_download, self.progress, keep_dir=self.run_path)
        self.requeued = False  # set by checkpoint(): submitit requeues this job (timeout, preemption) and exits
        with lock.owning(self.run_path, self.owner) as own:  # rank 0 holds it; refused: RunOwned, nothing written
            try:
                out = train_run(cfg, run_dir, make_evaluator, progress=self.progress, cache_dir=site.paths.cache,
                                weights_dir=site.paths.weights, timeout=process_group_timeout(cfg), owner=own.token)
            except BaseException as err:
                if isinstance(err, SystemExit) and self.requeued:
                    own.keep = True  # the requeued job takes the lock over (same token)
                if not isinstance(err, (KeyboardInterrupt, SystemExit)) and int(os.environ.get("RANK", 0)) == 0:
                    line = (str(err).splitlines() or [""])[0]
                    run_dir.set_status("failed", error=f"{type(err).__name__}: {line}")
                raise
            if out["interrupted"] and os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
                # stopped by SIGTERM (scancel, scontrol requeue) after a checkpoint: leave without a result, so that
                # submitit sees the scheduler's state (cancelled, or requeued and running again), not a success; the
                # lock stays for the requeued job (the scheduler says when a cancelled one is gone)
                own.keep = True
                raise SystemExit(143)
        return out

    def checkpoint(self, *args, **kwargs):
        """submitit calls this on timeout or preemption, requeues the job and exits: the run's lock stays for it."""
        self.requeued = True
        return submitit.helpers.DelayedSubmission(self)


def evaluator_factory(cfg, site, allow_download: bool = False, progress: bool = True, keep_dir=None):
    """`make_evaluator(device)` for train_run (None without protocols): the run's evaluation, built on every rank
    (each evaluates its share of the plan; rank 0 gets the records, and keeps the final evaluation's per-sample
    data in the run folder `keep_dir` under `eval.keep_samples: final`)."""
    if not cfg.eval.protocols:
        return None
    from galip_bench.evaluation.driver import Evaluator
    return lambda device: Evaluator(cfg.eval, cfg.eval.data or cfg.data, site, device, allow_download, progress,
                                    keep_dir=keep_dir)


def process_group_timeout(cfg):
    """The process-group timeout of a multi-process run, sized to its evaluation (where ranks wait longest: every
    rank generates its share, then rank 0 computes references and metrics); None (torch's default) otherwise."""
    if cfg.train.processes == 1 or not cfg.eval.protocols:
        return None
    from galip_bench.evaluation.planning import evaluation_timeout
    return evaluation_timeout(cfg.eval, cfg.eval.data or cfg.data)


def train_in_process(run, grid_name: str, site: SiteConfig, allow_download: bool = False) -> dict:
    """Train one run of a grid in this process (no executor), in the same run folder `launch` uses, as its owner
    (RunOwned, a UserError, when another process owns it)."""
    from galip_bench.train.loop import train_run
    adopt_legacy_folder(Path(site.paths.runs) / grid_name, run)
    run_dir = RunDir(Path(site.paths.runs) / grid_name / run.run_id)
    with lock.owning(run_dir.path, role="train") as own:
        _note_repair(run, run_dir)
        run_dir.write_config(run.conf)
        if "status.json" in run_dir.torn():  # rebuilt with what `run` would have written
            run_dir.set_status("pending", variant=run.name, seed=run.seed, steps=run.config.train.steps,
                               epochs=run.config.train.epochs, executor=None, job_id=None)
        out = train_run(run.config, run_dir, evaluator_factory(run.config, site, allow_download, keep_dir=run_dir.path),
                        cache_dir=site.paths.cache, weights_dir=site.paths.weights,
                        timeout=process_group_timeout(run.config), owner=own.token)
    return {**out, "folder": run_dir.path}


def _note_repair(run, run_dir: RunDir) -> None:
    """One line for a run whose files hold a torn record: what is redone."""
    torn = run_dir.torn()
    if torn:
        upto = run_dir.trusted_step()
        where = f"its last checkpoint at or before step {upto}" if upto is not None else "its last checkpoint"
        print(f"repairing {run.run_id} {run.name}: torn record in {', '.join(sorted(torn))}; resumed from {where}",
              file=sys.stderr)


def slurm_settings(site: SiteConfig, grid_slurm: dict) -> dict:
    return {**OmegaConf.to_container(OmegaConf.structured(site.slurm)), **grid_slurm}


def make_executor(site: SiteConfig, folder: Path, grid_slurm: dict, gpus: int):
    kind = site.executor
    if kind == "debug":
        return submitit.DebugExecutor(folder=folder)
    if kind == "local":
        executor = submitit.LocalExecutor(folder=folder)
        # submitit's local default is a 2-minute limit, after which it signals the job to requeue
        executor.update_parameters(timeout_min=site.local_timeout_min)
        return executor
    slurm = slurm_settings(site, grid_slurm)
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    gpus_per_node = slurm["gpus_per_node"]
    params = dict(
        nodes=slurm["nodes"], gpus_per_node=gpus_per_node, tasks_per_node=max(gpus_per_node, 1),
        cpus_per_task=slurm["cpus_per_task"], mem_gb=slurm["mem_gb"], timeout_min=slurm["time_min"],
        slurm_array_parallelism=slurm["array_parallelism"], slurm_additional_parameters=dict(slurm["additional"]),
        slurm_setup=list(slurm["setup"]), name="galip-bench",
        # a task that fails ends its job's other tasks, instead of leaving them in a collective until its timeout
        slurm_srun_args=["--kill-on-bad-exit=1"],
    )
    if slurm.get("partition"):
        params["slurm_partition"] = slurm["partition"]
    if slurm.get("account"):
        params["slurm_account"] = slurm["account"]
    if slurm.get("constraint"):
        params["slurm_constraint"] = slurm["constraint"]
    if gpus_per_node == 0:
        params.pop("gpus_per_node")
    executor.update_parameters(**params)
    return executor


def _local_threads(run, parallel_runs: int):
    """torch threads per process of a local run: the machine's cores shared by the runs and their processes."""
    share = parallel_runs * run.config.train.processes
    return max((os.cpu_count() or 1) // share, 1) if share > 1 else None


def uses_gpus(run, gpus: int) -> bool:
    return gpus > 0 and run.config.train.device != "cpu"


def local_parallel(runs, site: SiteConfig, gpus: int) -> int:
    """How many local runs train at once: max_local_parallel, and no more GPU runs than the GPUs hold side by side."""
    chunk = max(site.max_local_parallel, 1)
    need = max([r.config.train.processes for r in runs if uses_gpus(r, gpus)], default=0)
    return max(1, min(chunk, gpus // need)) if need else chunk


def local_job_parameters(run, first_gpu: int, gpus: int) -> dict:
    """The local executor's tasks and GPUs for a run: one task per process; a GPU run gets `processes` GPUs of its
    own from `first_gpu` on, a CPU run none (submitit then hides the GPUs from it)."""
    processes = run.config.train.processes
    if not uses_gpus(run, gpus):
        return {"tasks_per_node": processes, "gpus_per_node": 0, "visible_gpus": ()}
    return {"tasks_per_node": processes, "gpus_per_node": processes,
            "visible_gpus": tuple(range(first_gpu, first_gpu + processes))}


def adopt_legacy_folder(root: Path, run) -> None:
    """A folder an earlier galip-bench made for this run under its id of then moves to the run's id, so the run
    resumes (or stays finished) instead of starting over."""
    legacy = legacy_run_id_of(run.conf)
    if legacy is None or legacy == run.run_id:
        return
    old, new = root / legacy, root / run.run_id
    if old.is_dir() and not new.exists():
        os.replace(old, new)
        print(f"note: {old} (this run's folder under an earlier version's id) is now {new}", file=sys.stderr)


def prepare(grid, site: SiteConfig, force: bool = False, token: str = None, owned: list = None,
            forced: dict = None) -> tuple:
    """(runs to launch, runs skipped as finished). Takes each run's lock under `token` (the caller releases them:
    `launch` does) and writes its resolved config; a run another process owns is left alone, with one line (and
    its (run id, owner) in `owned`). With `force`, a run's old files move aside until the new run is under way
    (and `forced` gets {run id: when})."""
    root = Path(site.paths.runs) / grid.name
    token = token or lock.new_token()
    todo, done = [], []
    for run in grid.runs:
        adopt_legacy_folder(root, run)
        run_dir = RunDir(root / run.run_id)
        if run_dir.finished and not force:
            done.append(run)
            continue
        try:
            lock.acquire(run_dir.path, token, role="launcher", executor=site.executor)
        except lock.RunOwned as err:
            print(f"skipped {run.run_id} {run.name}: owned by {err.owner}")
            if owned is not None:
                owned.append((run.run_id, err.owner))
            continue
        if run_dir.finished and not force:  # finished meanwhile, or restored from an unfinished --force
            lock.release(run_dir.path, token)
            done.append(run)
            continue
        if force:
            if replace.move_aside(run_dir.path, token) and forced is not None:
                forced[run.run_id] = time.time()
        else:
            _note_repair(run, run_dir)
        run_dir.write_config(run.conf)
        run_dir.set_status("pending", variant=run.name, seed=run.seed, steps=run.config.train.steps,
                           epochs=run.config.train.epochs, executor=site.executor, job_id=None)
        todo.append(run)
    return todo, done


def launch(grid, site: SiteConfig, force: bool = False, allow_download: bool = False, wait: bool = True,
           progress: bool = True) -> dict:
    """Submit every unfinished run this launcher could take the lock of, and (with `wait`) wait for them. A
    SIGINT/SIGTERM meanwhile stops the local jobs (they checkpoint and are marked resumable) or leaves SLURM jobs
    running, and marks runs that never started; the summary then names the signal under `interrupted`. Runs
    another process owns are listed under `owned` (run id, owner)."""
    root = Path(site.paths.runs) / grid.name
    token = lock.new_token()
    owned, forced = [], {}
    submitted = {}  # run id -> job
    try:
        todo, done = prepare(grid, site, force, token, owned, forced)
        summary = {"skipped": [r.run_id for r in done], "owned": owned, "launched": [], "failed": [],
                   "interrupted": None}
        if todo:
            _launch(grid, site, root, todo, token, submitted, summary, allow_download, wait, progress, forced)
    finally:
        _release(grid.runs, root, token, submitted, not wait)
    results.write_index(root)
    return summary


def _launch(grid, site, root: Path, todo: list, token: str, submitted: dict, summary: dict, allow_download: bool,
            wait: bool, progress: bool, forced: dict) -> None:
    site_yaml = OmegaConf.to_yaml(OmegaConf.structured(site))
    in_process = site.executor == "debug"
    chunk = (len(todo) if site.executor == "slurm" else local_parallel(todo, site, placement_of(site).gpus)
             if site.executor == "local" else max(site.max_local_parallel, 1))
    jobs_of = {r.run_id: RunJob(OmegaConf.to_yaml(r.conf, resolve=True), str(root / r.run_id), site_yaml,
                                allow_download, progress=in_process and progress,
                                threads=_local_threads(r, chunk) if site.executor == "local" else None, owner=token)
               for r in todo}
    executor = make_executor(site, root / "_submitit", grid.slurm, site.slurm.gpus_per_node)
    bar = tqdm(total=len(todo), desc=f"{grid.name}: runs finished", disable=not (progress and wait),
               **progress_options())
    bar.ended = Counter()  # runs that ended without finishing (failed, interrupted, owned elsewhere): not counted
    slurm = site.executor == "slurm"
    with Interrupt() as stop:
        for wave in dependency_waves(todo):
            wave = [r for r in wave if _can_start(r, root, submitted, slurm, summary)]
            for i in range(0, len(wave), chunk):
                if stop.signal:
                    break
                runs = wave[i:i + chunk]
                jobs = _submit(executor, runs, jobs_of, submitted, site, grid.slurm)
                for run, job in zip(runs, jobs):
                    lock.hand_over(root / run.run_id, token, site.executor, job.job_id)
                    RunDir(root / run.run_id).set_status("pending", job_id=str(job.job_id))
                submitted.update({r.run_id: job for r, job in zip(runs, jobs)})
                summary["launched"] += [r.run_id for r in runs]
                if wait and not slurm:
                    summary["failed"] += _wait(runs, jobs, root, bar, stop, site.executor, token, forced)
        if wait and slurm:  # dependent jobs were queued behind theirs (afterok): wait for all at once
            runs = [r for r in todo if r.run_id in submitted]
            summary["failed"] += _wait(runs, [submitted[r.run_id] for r in runs], root, bar, stop, "slurm", token,
                                       forced)
    bar.close()
    if stop.signal:
        summary["interrupted"] = stop.signal
        _mark_unstarted(todo, root, stop.signal, slurm)


def _release(runs: list, root: Path, token: str, submitted: dict, jobs_keep: bool) -> None:
    """The launcher's locks, on every way out of `launch`: a run never submitted (or whose job has ended, on any
    executor) is released, after its old results return if a --force replacement never got under way; a submitted
    job that outlives the launcher (--no-wait, or one still queued or running: a requeued SLURM job too) keeps its
    lock: it takes it over when it starts, and the scheduler (or its pid) says when it is gone. A job that took
    the lock over is never released from here while it lives (`lock.release` asks its state)."""
    for run in runs:
        job = submitted.get(run.run_id)
        running = job is not None and (jobs_keep or not _job_done(job))
        lock.release(root / run.run_id, token, keep=running)


def _job_done(job) -> bool:
    try:
        return job.done()
    except Exception:
        return True


def dependency_waves(runs: list) -> list:
    """The runs in waves: those that start from nothing or from a run outside `runs` (finished already) first, then
    those that start from a run of an earlier wave (a grid variant's `after:`)."""
    ids = {r.run_id for r in runs}
    waves, placed, left = [], set(), list(runs)
    while left:
        wave = [r for r in left if r.config.after is None or r.config.after not in ids or r.config.after in placed]
        if not wave:  # grids only refer to variants listed earlier, so this cannot happen
            raise UserError("the runs' `after` dependencies form a cycle")
        waves.append(wave)
        placed |= {r.run_id for r in wave}
        left = [r for r in left if r.run_id not in placed]
    return waves


def _can_start(run, root: Path, submitted: dict, slurm: bool, summary: dict) -> bool:
    """A run that starts from another needs that one finished, or (SLURM) queued in this launch: it then waits in
    the queue behind it. Otherwise it is marked failed-not-started (the next `run` starts it) and left out."""
    after = run.config.after
    if after is None or RunDir(root / after).finished or (slurm and after in submitted):
        return True
    RunDir(root / run.run_id).set_status(
        "failed", error=f"not started: it starts from run {after}, which has not finished; the next `run` starts it "
                        "once that one has")
    summary["failed"].append(run.run_id)
    return False


def _submit(executor, runs: list, jobs_of: dict, submitted: dict, site: SiteConfig, grid_slurm: dict) -> list:
    """Submit runs as one batch (a SLURM job array); on SLURM a run that starts from a run queued in this launch is
    its own job with `--dependency=afterok:<that job>` (cancelled by SLURM if that job fails)."""
    waiting = [r for r in runs if r.config.after in submitted] if site.executor == "slurm" else []
    free = [r for r in runs if r not in waiting]
    jobs = {}
    if free and site.executor == "local":  # one job each: each has its own processes (tasks) and GPUs
        gpus, first_gpu = placement_of(site).gpus, 0  # launch() starts no more GPU runs at once than fit
        with children_ignore_sigint(True):
            for run in free:
                executor.update_parameters(**local_job_parameters(run, first_gpu, gpus))
                first_gpu += run.config.train.processes if uses_gpus(run, gpus) else 0
                jobs[run.run_id] = executor.submit(jobs_of[run.run_id])
    elif free:
        with executor.batch():
            jobs.update({r.run_id: executor.submit(jobs_of[r.run_id]) for r in free})
    extra = dict(slurm_settings(site, grid_slurm)["additional"])
    for run in waiting:
        executor.update_parameters(slurm_additional_parameters={
            **extra, "dependency": f"afterok:{submitted[run.config.after].job_id}", "kill_on_invalid_dep": "yes"})
        jobs[run.run_id] = executor.submit(jobs_of[run.run_id])
    if waiting:
        executor.update_parameters(slurm_additional_parameters=extra)
    return [jobs[r.run_id] for r in runs]


def interrupted_lines(grid, site: SiteConfig, summary: dict) -> list:
    """One line per run after an interrupted launch: where each stands and what happens next."""
    root = Path(site.paths.runs) / grid.name
    table = results.collect(root)
    lines = [f"interrupted by {summary['interrupted']}"]
    for row in table.itertuples():
        if row.run_id in summary["skipped"]:
            continue
        lines.append(f"  {row.run_id} {row.variant}: {row.state} at step {row.step}"
                     + (f" ({row.error})" if row.error else ""))
    if site.executor == "slurm":
        lines.append("the SLURM jobs continue on the cluster: `galip-bench status` follows them, `scancel` stops them")
    else:
        lines.append("every run stopped at a checkpoint: the next `run` resumes them (a --force rerun stopped before "
                     "its first checkpoint has its earlier results back instead)")
    return lines


def _mark_unstarted(todo, root: Path, signal_name: str, slurm: bool = False) -> None:
    """Runs never submitted are marked failed-not-started; on SLURM a submitted one waits in the queue (a dependent
    stage, or an array task) and stays pending: `status` follows it."""
    for run in todo:
        run_dir = RunDir(root / run.run_id)
        status = run_dir.status()
        if status.get("state") == "pending" and not (slurm and status.get("job_id")):
            run_dir.set_status("failed", error=f"not started: `run` was interrupted by {signal_name}; the next "
                                               "`run` starts it")


def _wait(runs, jobs, root: Path, bar, stop, executor_kind: str, token: str = None, forced: dict = None) -> list:
    """Wait for the jobs of `runs`; the run ids that did not finish. `forced`: {run id: time its old results were
    moved aside} of this launch's --force reruns (a finished status older than that is the old one, put back)."""
    forced = forced or {}
    failed = []
    pending = dict(zip([r.run_id for r in runs], jobs))
    names = {r.run_id: r.name for r in runs}
    after_of = {r.run_id: r.config.after for r in runs}
    forwarded = False
    while pending:
        if stop.signal and executor_kind == "slurm":
            return failed  # cluster jobs outlive their launcher; `status` follows them through sacct
        if stop.signal and not forwarded:  # stop local jobs as a scheduler would: SIGTERM, then they checkpoint
            for job in pending.values():
                process = getattr(job, "_process", None)
                if process is not None and process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            forwarded = True
        for rid, job in list(pending.items()):
            raised = None
            try:
                if not job.done():  # the debug executor runs the job here, and raises its error
                    continue
                job.result()
            except Exception as err:  # the job recorded its error in status.json, unless it died before it could
                raised = err
            run_dir = RunDir(root / rid)
            status = run_dir.status()
            owner = lock.read_owner(run_dir.path)
            if token and owner and owner.get("token") != token and lock.owner_state(owner)[0] is not False:
                # our lock was taken over (the job refused to start): the folder is its new owner's
                print(f"skipped {rid} {names[rid]}: owned by {lock.describe(owner)}")
                del pending[rid]
                bar.ended["owned elsewhere"] += 1
                continue
            if rid in forced and status.get("state") == "finished" and status.get("updated", 0) < forced[rid]:
                # a --force rerun that stopped before its first checkpoint: the earlier results were put back
                why = (str(raised).splitlines() or [""])[0][:200] if raised is not None else _job_error(job)
                print(f"{rid} {names[rid]}: the --force rerun stopped before its first checkpoint ({why}); its "
                      "earlier results were put back")
                failed.append(rid)
            elif status.get("state") != "finished":  # raised, cancelled, or stopped by a signal after a checkpoint
                failed.append(rid)
                after = after_of.get(rid)
                if status.get("state") != "failed" and after and not RunDir(root / after).finished:
                    run_dir.set_status("failed", error=f"not started: it starts from run {after}, which did not "
                                                       f"finish (SLURM cancelled job {job.job_id})")
                elif status.get("state") != "failed":
                    run_dir.set_status("failed", error=_job_error(job))
                elif str(status.get("error", "")).startswith("interrupted by") and not stop.signal:
                    stop.signal = status["error"].split()[2]  # an in-process (debug) run took the signal itself
            del pending[rid]
            if rid in failed:
                interrupted = stop.signal or str(run_dir.status().get("error", "")).startswith("interrupted")
                bar.ended["interrupted" if interrupted else "failed"] += 1
            else:
                bar.update(1)
        ended = [f"{kind} {n}" for kind, n in getattr(bar, "ended", {}).items()]
        steps = {names[rid]: RunDir(root / rid).status().get("step", 0) for rid in pending}
        bar.set_postfix_str(", ".join(ended + [f"{n}@{s}" for n, s in steps.items()])[:80], refresh=False)
        if pending:
            time.sleep(1.0)
    return failed


def _job_error(job) -> str:
    """The last line of a job's stderr, or its scheduler state, for a run that died without recording why."""
    try:
        tail = (job.stderr() or "").strip().splitlines()
    except Exception:
        tail = []
    return (tail[-1][:300] if tail else f"job {job.job_id} ended in state {job.state} without a result")
