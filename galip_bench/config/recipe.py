"""The training recipe: what a number depends on beyond the model (global batch, length, precision, noise), the
official one (tobran/GALIP code/cfg/coco.yml, birds.yml, scripts/train.sh), and a run's budget as a fraction of
it."""
import os
from dataclasses import dataclass
from typing import Optional

from galip_bench.errors import UserError

# The official runs: 8 GPUs x 64 (train.sh), DistributedSampler + drop_last, `for epoch in range(1, max_epoch)`
# (code/src/train.py): max_epoch - 1 epochs are trained.
OFFICIAL = {
    "coco": {"global_batch": 512, "batch_size": 64, "processes": 8, "max_epoch": 3005, "epochs": 3004,
             "train_images": 82783, "steps_per_epoch": 161, "test_interval": 5},
    "cub": {"global_batch": 512, "batch_size": 64, "processes": 8, "max_epoch": 1502, "epochs": 1501,
            "train_images": 8855, "steps_per_epoch": 17, "test_interval": 20},
}


def official_samples(kind: str) -> Optional[int]:
    """Training samples (images drawn) of the official run on a dataset kind; None where there is none."""
    off = OFFICIAL.get(kind)
    return None if off is None else off["epochs"] * off["steps_per_epoch"] * off["global_batch"]


def global_batch_of(train: dict) -> int:
    """Samples per optimiser step of a (resolved) train section, as a dict or a TrainConfig. Run configs written
    before train.global_batch existed recorded no processes (their batch_size was each process's whole step, split
    by the grad_accum of then): pass their global_batch in from the run's world size (report.load_runs does)."""
    get = train.get if isinstance(train, dict) else lambda k, d=None: getattr(train, k, d)
    if get("global_batch"):
        return int(get("global_batch"))
    return int(get("batch_size")) * int(get("processes") or 1) * int(get("grad_accum") or 1)


def budget_fraction(kind: str, steps: Optional[int], global_batch: int) -> Optional[float]:
    """The samples a run of `steps` x `global_batch` trains on, as a fraction of the official run on that dataset."""
    total = official_samples(kind)
    if total is None or not steps:
        return None
    return steps * global_batch / total


def describe_budget(kind: str, steps: Optional[int], global_batch: int) -> Optional[str]:
    """'4.1% of the official COCO run's samples (160,000 x 64 vs 3,004 epochs x 161 x 512)' or None."""
    frac = budget_fraction(kind, steps, global_batch)
    if frac is None:
        return None
    off = OFFICIAL[kind]
    return (f"{100 * frac:.1f}% of the official {kind.upper()} run's training samples ({steps:,} steps x "
            f"{global_batch} vs {off['epochs']:,} epochs x {off['steps_per_epoch']} steps x {off['global_batch']})")


# ---- processes, micro-batches and the global batch -------------------------------------------------------------

NOISE_MODES = ("official", "per_rank")
# what the run's numbers depend on beyond the model: checked against a grid's declared `recipe:` after the
# command line and the executor are applied (the length, steps or epochs, always)
RECIPE_KEYS = ("global_batch", "batch_size", "steps", "epochs", "precision", "noise", "tf32", "lr_g", "lr_d", "beta1",
               "beta2", "sim_w")


@dataclass(frozen=True)
class Placement:
    """Where a grid's runs execute, which decides how many processes a run has unless it says: `slurm`: the job's
    tasks (gpus_per_node x nodes); `local`: processes started on this machine (it has `gpus` GPUs); `debug` and
    `inline` (the `train` command, possibly under torchrun): this process and its WORLD_SIZE."""
    executor: str = "inline"
    tasks: int = 1
    gpus: int = 0


def inline_placement() -> Placement:
    return Placement("inline", int(os.environ.get("WORLD_SIZE", 1)))


def placement_of(site, grid_slurm: Optional[dict] = None) -> Placement:
    """The placement of a grid's runs under bench.yaml's (or --executor's) executor."""
    if site.executor == "slurm":
        slurm = {"gpus_per_node": site.slurm.gpus_per_node, "nodes": site.slurm.nodes, **(grid_slurm or {})}
        return Placement("slurm", max(int(slurm["gpus_per_node"]), 1) * int(slurm["nodes"]))
    if site.executor == "debug":
        return Placement("debug", 1)
    import torch
    return Placement("local", 1, torch.cuda.device_count())


def _largest_divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in range(1, max(min(n, cap), 1) + 1) if n % d == 0)


def resolve_parallelism(tc, placement: Placement, allow_change: bool = False) -> Optional[str]:
    """Fill train.processes, train.grad_accum and train.global_batch (= batch_size x processes x grad_accum).

    A declared global batch is kept on any hardware: the missing processes become micro-batches (GALIP has no batch
    statistics, so 8 processes x 64 and 1 process x 8 micro-batches of 64 are the same step up to float rounding;
    each micro-batch plays one process: its data, noise and mismatched-caption roll). What cannot make it is a
    UserError, unless `allow_change` (run --allow-recipe-change): then the run goes on with what the hardware gives,
    and the change is returned (the run's train.recipe_change records it)."""
    where = {"slurm": "the SLURM job's tasks (gpus_per_node x nodes)", "debug": "the debug executor (this process)",
             "inline": "this process group (WORLD_SIZE)"}.get(placement.executor)
    if where is not None:
        if tc.processes not in (None, placement.tasks):
            hint = ("use --executor local for a multi-process run on this machine" if placement.executor == "debug"
                    else "start it under torchrun --nproc-per-node N" if placement.executor == "inline"
                    else "set the grid's slurm gpus_per_node / nodes instead")
            raise UserError(f"train.processes={tc.processes}, but {where} gives {placement.tasks}: {hint}")
        processes = placement.tasks
    elif tc.processes is not None:
        processes = tc.processes
        if placement.gpus and tc.device != "cpu" and processes > placement.gpus:
            raise UserError(f"train.processes={processes} on this machine's {placement.gpus} GPU(s): the local "
                            "executor starts one process per GPU (use fewer processes, with micro-batches, or "
                            "train.device=cpu)")
    elif tc.global_batch and placement.gpus and tc.device != "cpu" and tc.global_batch % tc.batch_size == 0:
        processes = _largest_divisor_at_most(tc.global_batch // tc.batch_size, placement.gpus)
    else:
        processes = 1
    wanted = tc.global_batch
    if tc.grad_accum is None and tc.global_batch:
        accum, rest = divmod(tc.global_batch, tc.batch_size * processes)
        if (rest or accum < 1) and not allow_change:
            raise UserError(f"train.global_batch={tc.global_batch} cannot be made of {processes} process(es) x "
                            f"batch {tc.batch_size} x whole micro-batches: choose processes (train.processes, or the "
                            "SLURM gpus_per_node) that divide it, or pass --allow-recipe-change to run "
                            f"{processes} x {tc.batch_size} x {max(accum, 1)} anyway (labelled in every table)")
        accum = max(accum, 1)
    else:
        accum = tc.grad_accum or 1
    tc.processes, tc.grad_accum, tc.global_batch = processes, accum, tc.batch_size * processes * accum
    if wanted and wanted != tc.global_batch:
        if not allow_change:
            raise UserError(f"train.global_batch={wanted}, but {processes} process(es) x batch {tc.batch_size} x "
                            f"train.grad_accum={accum} make {tc.global_batch}: leave grad_accum unset (it then "
                            "follows the processes), or pass --allow-recipe-change (labelled in every table)")
        return f"global batch {tc.global_batch} (recipe: {wanted})"
    return None


def recipe_changes(declared: dict, resolved) -> list:
    """'key resolved (declared)' for every RECIPE_KEYS value of `declared` (a grid's train settings before the
    command line) that the resolved TrainConfig does not keep."""
    changes = []
    for key in RECIPE_KEYS:
        if key in declared and declared[key] is not None and getattr(resolved, key) != declared[key]:
            changes.append(f"train.{key} {getattr(resolved, key)} (recipe: {declared[key]})")
    for key in ("steps", "epochs"):  # the length: a run in steps where the recipe is in epochs, or the reverse
        if key in declared and declared[key] is None and getattr(resolved, key) is not None:
            changes.append(f"train.{key} {getattr(resolved, key)} (recipe: in "
                           f"{'epochs' if key == 'steps' else 'steps'})")
    return changes
