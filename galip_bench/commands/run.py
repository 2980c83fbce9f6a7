"""`galip-bench run GRID.yaml`: train and evaluate every run of an ablation grid, locally or on SLURM."""
import signal
import sys
from pathlib import Path

from omegaconf import OmegaConf

from galip_bench.config.io import read_yaml
from galip_bench.config.profiles import PROFILES
from galip_bench.shapes.cache import build_for
from galip_bench.config.site import load_site
from galip_bench.grids import launch
from galip_bench.grids.dryrun import describe_grid
from galip_bench.config.recipe import placement_of
from galip_bench.grids.grid import grid_info, load_grid, nest
from galip_bench.grids.preflight import check_grid
from galip_bench.runs.standin import label_run_table
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


def _flat(tree, prefix="") -> dict:
    out = {}
    for key, value in (tree or {}).items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _shown(value) -> str:
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def profile_replacements(grid_path, profile) -> list:
    """Lines saying which of the grid's own settings (its base, eval, recipe, variants' overrides and grid points)
    the profile replaces, one per config section: a profile rewrites them silently otherwise."""
    if not profile or profile not in PROFILES:
        return []
    raw = OmegaConf.to_container(read_yaml(grid_path), resolve=False)
    sources = [raw.get("base") or {}, {"eval": raw.get("eval") or {}}, {"train": raw.get("recipe") or {}}]
    sources += [v.get("overrides") or {} for v in raw.get("variants") or [] if isinstance(v, dict)]
    declared = {}
    for source in sources:
        for key, value in _flat(nest(dict(source))).items():
            declared.setdefault(key, []).append(value)
    for key, values in (raw.get("grid") or {}).items():  # a grid axis: each of its values is a run's
        declared.setdefault(str(key), []).extend(values if isinstance(values, list) else [values])
    replaced = _flat(PROFILES[profile])
    sections = {}
    for key, values in declared.items():
        if key in replaced and any(v != replaced[key] for v in values):
            was = "/".join(dict.fromkeys(_shown(v) for v in values))
            section, _, name = key.partition(".")
            sections.setdefault(section, []).append(f"{name} {was} -> {_shown(replaced[key])}")
    lines = [f"note: profile {profile} replaces the grid's own {section} settings: {', '.join(changes)}"
             for section, changes in sections.items()]
    if raw.get("recipe"):
        recipe = ", ".join(f"{k} {_shown(v)}" for k, v in raw["recipe"].items())
        lines.append(f"note: profile {profile} replaces the grid's recipe ({recipe}): its runs are not checked "
                     "against it and get no published number")
    return lines


def print_results(grid, site) -> None:
    """The results table of this invocation's runs (stand-in numbers labelled), and how many runs of earlier
    invocations share the grid's folder (listed by `status`, not here)."""
    root = Path(site.paths.runs) / grid.name
    table = results.collect(root)
    if table.empty:
        return
    order = {r.run_id: i for i, r in enumerate(grid.runs)}  # the grid's order, as the header lists them
    mine = table[table["run_id"].isin(order)].sort_values("run_id", key=lambda ids: ids.map(order))
    mine, notes = label_run_table(mine.drop(columns=["log"]), results.metric_records(root))
    if not mine.empty:
        print(mine.to_string(index=False))
    for line in notes:
        print(line)
    earlier = len(table) - len(mine)
    if earlier:
        print(f"{earlier} run(s) of earlier invocations (other settings) in {root} are not listed: "
              f"`galip-bench status {grid.name}` lists every run")


def run(args) -> int:
    grid, site = load_for_site(args, args.executor)
    notes = profile_replacements(grid.path, grid.profile)
    if args.dry_run:  # the resolved plan first, then the input checks (which may fail: exit 2)
        print("\n".join(notes + describe_grid(grid, site)))
        check_grid(grid, site, args.allow_download, dry_run=True)
        print("inputs: all found (data, CLIP weights, metric weights, evaluation plans)")
        return 0
    check_grid(grid, site, args.allow_download, dry_run=False)  # before anything is written or submitted
    print("\n".join(notes + describe_grid(grid, site, details=False)))
    for info in build_for([r.config for r in grid.runs], site.paths.cache):  # the shapes evaluators, once, here
        print(f"shapes {Path(info['path']).name.split('-')[0]}: {info['path']} (sha256 {info['sha256'][:12]})")
    summary = launch.launch(grid, site, force=args.force, allow_download=args.allow_download,
                            wait=not args.no_wait)
    if summary["interrupted"]:
        print("\n".join(launch.interrupted_lines(grid, site, summary)), file=sys.stderr)
        return 128 + int(getattr(signal, summary["interrupted"]))
    if summary["skipped"]:
        print(f"skipped {len(summary['skipped'])} finished run(s) (--force reruns them)")
    if summary.get("owned"):
        print(f"skipped {len(summary['owned'])} run(s) another process owns (listed above); `galip-bench status` "
              "follows them")
    print_results(grid, site)
    if summary["failed"]:
        print(f"{len(summary['failed'])} run(s) failed: see `galip-bench status {args.grid}`")
        return 1
    return 0
