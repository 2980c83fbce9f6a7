"""The step loop every training run shares (GALIP's, CLIP-GEN's): one optimiser step, then its hooks in this order:
log, samples, evaluation, checkpoint. Samples and metrics come before the checkpoint: a kill in between resumes from
an earlier checkpoint, which drops this step's records and writes them again, never half of them. `stop_at` ends
the loop as a kill would (no checkpoint, status left running); SIGTERM/SIGINT end it at the next step boundary
after a checkpoint. The first regular checkpoint commits a `run --force` replacement (the old results go); a run that
stops before it gets them back (`runs.replace`)."""
import time
from contextlib import closing
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from galip_bench.signals import Interrupt
from galip_bench import distributed


@dataclass
class Hooks:
    one_step: Callable            # (step, batch) -> the loss terms, 0-d tensors
    checkpoint: Callable          # (step) -> None; called on every process (it writes on the main one)
    model: object                 # what `evaluate` evaluates
    evaluate: Optional[Callable] = None   # (model, step, final) -> records: called on every process (each evaluates
                                          # its share of the plan), the main one returns the records
    evaluates: bool = False       # evaluation steps exist (every process meets at a barrier after them)
    sheet: Optional[object] = None        # .save(path) of a sample sheet
    shown: tuple = ()             # loss terms on the progress bar
    main: bool = True


def _global_mean(losses: dict) -> dict:
    """The loss terms averaged over the processes (every process calls it at a logged step): the logged values of
    a step are its global batch's, whatever the processes and micro-batches that made it."""
    values = torch.stack([torch.as_tensor(v).detach().reshape(()).double() for v in losses.values()])
    values = distributed.all_reduce(values) / distributed.rank_size()[1]
    return {k: float(v) for k, v in zip(losses, values.cpu())}


def step_loop(run_dir, tc, stream, step: int, steps: int, hooks: Hooks, bar, stop_at: int = None) -> dict:
    """Steps [step, steps) from `stream` (a StepLoader, closed on every way out), with the hooks every `tc`
    (TrainConfig) says."""
    t0 = time.time()

    def due(every: int) -> bool:
        return step == steps or bool(every and step % every == 0)

    def interrupted(losses) -> dict:
        bar.close()
        return {"step": step, "interrupted": True, "losses": {k: float(v) for k, v in losses.items()}}

    loader = iter(stream)
    with Interrupt() as stop, closing(stream):
        while step < steps:
            losses = hooks.one_step(step, next(loader))
            step += 1
            bar.update(1)
            if due(tc.log_every):
                losses = _global_mean(losses)
            if hooks.main and due(tc.log_every):
                bar.set_postfix({k: f"{losses[k]:.3f}" for k in hooks.shown}, refresh=False)
                run_dir.append(run_dir.train_log, {"step": step, "time": time.time() - t0, **losses})
                run_dir.set_status("running", step=step, steps=steps)
            if hooks.sheet is not None and due(tc.sample_every):
                hooks.sheet.save(run_dir.samples_dir / f"step_{step:08d}.png")
            if hooks.evaluates and due(tc.eval_every):
                if hooks.evaluate is not None:
                    for record in hooks.evaluate(hooks.model, step, final=step == steps):
                        if hooks.main:
                            run_dir.append(run_dir.metrics, record)
                distributed.barrier()
            if due(tc.ckpt_every):
                hooks.checkpoint(step)
                if hooks.main:  # under way: results this run replaces (`run --force`) go
                    run_dir.commit_replacement()
            if stop_at is not None and step >= stop_at:
                return interrupted(losses)
            if distributed.any_process(stop.signal is not None):  # every process stops at the same step
                hooks.checkpoint(step)
                if hooks.main:
                    why = stop.signal or "a signal to another process of the run"
                    run_dir.set_status("failed", step=step, error=f"interrupted by {why} at step {step}; resumable")
                return interrupted(losses)
    bar.close()
    if hooks.main:
        run_dir.set_status("finished", step=step, error=None, wall_s=time.time() - t0)
    distributed.barrier()
    return {"step": step, "interrupted": False}
