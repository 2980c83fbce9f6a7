"""`galip-bench train GRID.yaml --variant NAME`: train one run of a grid in this process (no executor), with a
progress bar; the run folder is the same one `run` uses, so either command resumes the other's work."""
from pathlib import Path

from galip_bench.errors import UserError
from galip_bench.evaluation.driver import Evaluator
from galip_bench.grid import load_grid
from galip_bench.preflight import check_run
from galip_bench.rundir import RunDir
from galip_bench.site import load_site
from galip_bench.train.loop import train_run


def add_arguments(p):
    p.add_argument("grid", help="ablation grid YAML")
    p.add_argument("--variant", help="run name as `run --dry-run` lists it (default: the grid's only run)")
    p.add_argument("--seed", type=int, help="grid seed of the run (default: the first)")
    p.add_argument("--profile", help="e.g. smoke")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--bench", help="site config (default: $GALIP_BENCH_CONFIG or ./bench.yaml)")
    p.add_argument("--allow-download", action="store_true")


def run(args) -> int:
    grid = load_grid(args.grid, args.profile, args.overrides)
    runs = [r for r in grid.runs if (args.variant is None or r.name == args.variant)
            and (args.seed is None or r.seed == args.seed)]
    if args.variant is None and args.seed is None and len(grid.runs) > 1:
        raise UserError(f"{args.grid} has {len(grid.runs)} runs: pick one with --variant "
                        f"({', '.join(sorted({r.name for r in grid.runs}))})")
    if not runs:
        raise UserError(f"{args.grid}: no run named {args.variant!r} (have: {', '.join(r.name for r in grid.runs)})")
    run_spec = runs[0]
    site = load_site(args.bench, grid.profile)
    check_run(run_spec.config, site, args.allow_download)
    run_dir = RunDir(Path(site.paths.runs) / grid.name / run_spec.run_id)
    run_dir.write_config(run_spec.conf)
    cfg = run_spec.config
    make_evaluator = None
    if cfg.eval.protocols:
        make_evaluator = lambda device: Evaluator(cfg.eval, cfg.eval.data or cfg.data, site, device,  # noqa: E731
                                                  args.allow_download)
    out = train_run(cfg, run_dir, make_evaluator, cache_dir=site.paths.cache)
    done = " (already finished: nothing to do)" if out.get("already_finished") else ""
    print(f"{run_spec.name} seed {run_spec.seed}: step {out['step']} in {run_dir.path}{done}")
    return 0
