"""`galip-bench train GRID.yaml --variant NAME`: train one run of a grid in this process (no executor), with a
progress bar; the run folder is the same one `run` uses, so either command resumes the other's work."""
from galip_bench.config.site import load_site
from galip_bench.grids.grid import load_grid, select_run
from galip_bench.grids.launch import train_in_process
from galip_bench.grids.preflight import check_run


def add_arguments(p):
    p.add_argument("grid", help="ablation grid YAML")
    p.add_argument("--variant", help="run name as `run --dry-run` lists it (default: the grid's only run)")
    p.add_argument("--seed", type=int, help="grid seed of the run (default: the first)")
    p.add_argument("--profile", help="e.g. smoke")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--bench", help="site config (default: $GALIP_BENCH_CONFIG or ./bench.yaml)")
    p.add_argument("--allow-download", action="store_true")
    p.add_argument("--schedule", help="one of the grid's named training lengths (as `run --schedule`)")
    p.add_argument("--allow-recipe-change", action="store_true", help="as `run --allow-recipe-change`")


def run(args) -> int:
    # this process (under torchrun: its process group) is the run's placement
    grid = load_grid(args.grid, args.profile, args.overrides, schedule=args.schedule,
                     allow_recipe_change=args.allow_recipe_change)
    run_spec = select_run(grid, args.variant, args.seed)
    site = load_site(args.bench, grid.profile)
    check_run(run_spec.config, site, args.allow_download)
    out = train_in_process(run_spec, grid.name, site, args.allow_download)
    done = " (already finished: nothing to do)" if out.get("already_finished") else ""
    print(f"{run_spec.name} seed {run_spec.seed}: step {out['step']} in {out['folder']}{done}")
    return 0
