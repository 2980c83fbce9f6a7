"""`galip-bench run GRID.yaml`: train and evaluate every run of an ablation grid, locally or on SLURM."""
import signal
import sys
from pathlib import Path

from galip_bench.config.site import load_site
from galip_bench.grids import launch
from galip_bench.grids.dryrun import describe_grid
from galip_bench.config.recipe import placement_of
from galip_bench.grids.grid import grid_info, load_grid
from galip_bench.grids.preflight import check_grid
from galip_bench.runs import results


def add_arguments(p):
    p.add_argument("grid", help="ablation grid YAML, e.g. ablations/mate_g.yaml")
    p.add_argument("--profile", help="rewrite the grid for a setting, e.g. `smoke` (synthetic data, tiny CLIP, CPU)")
    p.add_argument("--executor", choices=["local", "slurm", "debug"], help="override bench.yaml's executor")
    p.add_argument("--bench", help="site config (default: $GALIP_BENCH_CONFIG or ./bench.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override for every run, e.g. --set train.steps=500 (repeatable)")
    p.add_argument("--force", action="store_true", help="rerun finished runs from scratch")
    p.add_argument("--no-wait", action="store_true", help="submit and return (SLURM)")
    p.add_argument("--dry-run", action="store_true", help="print each run's resolved data, training and evaluation "
                                                          "plan, check the inputs, and exit")
    p.add_argument("--allow-download", action="store_true", help="let metric weights download when missing")
    p.add_argument("--schedule", help="one of the grid's named training lengths (`schedules:`, e.g. cfg or paper "
                                      "in the paper grids); the dry run lists them with their cost")
    p.add_argument("--allow-recipe-change", action="store_true",
                   help="run what departs from the grid's recipe (global batch, length, precision, ...) instead of "
                        "refusing it; such runs are labelled in every table and get no published number")


def load_for_site(args, executor=None):
    """(grid, site): the site first (the grid's profile and executor choose its defaults), then the grid with the
    runs placed where that executor runs them (their processes and micro-batches)."""
    info = grid_info(args.grid)
    site = load_site(args.bench, args.profile or info.get("profile"), executor or info.get("executor"))
    grid = load_grid(args.grid, args.profile, args.overrides, placement=placement_of(site, info.get("slurm")),
                     schedule=getattr(args, "schedule", None),
                     allow_recipe_change=getattr(args, "allow_recipe_change", False))
    return grid, site


def run(args) -> int:
    grid, site = load_for_site(args, args.executor)
    if args.dry_run:  # the resolved plan first, then the input checks (which may fail: exit 2)
        print("\n".join(describe_grid(grid, site)))
        check_grid(grid, site, args.allow_download)
        print("inputs: all found (data, CLIP weights, metric weights, evaluation plans)")
        return 0
    check_grid(grid, site, args.allow_download)  # before anything is written under runs/ or submitted
    print("\n".join(describe_grid(grid, site, details=False)))
    summary = launch.launch(grid, site, force=args.force, allow_download=args.allow_download,
                            wait=not args.no_wait)
    if summary["interrupted"]:
        print("\n".join(launch.interrupted_lines(grid, site, summary)), file=sys.stderr)
        return 128 + int(getattr(signal, summary["interrupted"]))
    if summary["skipped"]:
        print(f"skipped {len(summary['skipped'])} finished run(s) (--force reruns them)")
    table = results.collect(Path(site.paths.runs) / grid.name)
    if not table.empty:
        print(table.drop(columns=["log"]).to_string(index=False))
    if summary["failed"]:
        print(f"{len(summary['failed'])} run(s) failed: see `galip-bench status {args.grid}`")
        return 1
    return 0
