"""What every training loop (GALIP's, CLIP-GEN's) starts from: the newest valid checkpoint of a run folder, and
the loader's worker count."""
import os
import sys

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
