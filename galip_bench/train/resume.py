"""What every training loop (GALIP's, CLIP-GEN's) starts from: the newest valid checkpoint of a run folder, and
the loader's worker count, and the check that a checkpoint continues this run's layout."""
import os
import sys
from pathlib import Path

from galip_bench.checkpoints import read_checkpoint
from galip_bench.data import auto_workers
from galip_bench.errors import UserError
from galip_bench.runs.rundir import RunDir


def latest_valid_checkpoint(run_dir: RunDir, remove_partial: bool = True) -> tuple:
    """(path, checkpoint) of the newest readable checkpoint, or (None, None). Writes are atomic, so an unreadable
    one means damage after the fact: it is skipped with a warning. Temp files of killed writes are removed."""
    if remove_partial:
        for partial in run_dir.ckpt_dir.glob(".step_*.tmp"):
            partial.unlink(missing_ok=True)
    for path in reversed(run_dir.checkpoints()):
        try:
            return path, read_checkpoint(path)[1]
        except UserError as err:
            print(f"warning: skipping checkpoint {path.name}: {err}", file=sys.stderr)
    return None, None


def loader_workers(data_cfg, world_size: int) -> int:
    """data.num_workers, or this process's share of the node's CPUs."""
    if data_cfg.num_workers is not None:
        return data_cfg.num_workers
    return auto_workers(int(os.environ.get("LOCAL_WORLD_SIZE", world_size)))


def check_layout(run, ckpt: dict, path) -> None:
    """A checkpoint resumes only the layout that wrote it: processes x micro-batches (the ranks its data and noise
    followed) and the global batch. Checkpoints written before these were recorded name their world size only, and
    ran without micro-batches (grad_accum then split the batch)."""
    extra, tc = ckpt.get("extra") or {}, run.cfg.train
    written = (extra.get("processes", extra.get("world_size", 1)), extra.get("grad_accum", 1),
               extra.get("global_batch"))
    wanted = (tc.processes, tc.grad_accum, tc.global_batch)
    if written[:2] != wanted[:2] or written[2] not in (None, wanted[2]):
        raise UserError(f"{path} was written by a run of {written[0]} process(es) x {written[1]} micro-batch(es)"
                        f"{f' (global batch {written[2]})' if written[2] else ''}; this run is {wanted[0]} x "
                        f"{wanted[1]} (global batch {wanted[2]}): its data, noise and steps would not continue that "
                        f"run. Move {Path(path).parent.parent} aside to start this one afresh")
