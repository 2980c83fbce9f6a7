"""`galip-bench status GRID`: state, step, last metrics and log path of every run of a grid."""
from pathlib import Path

from galip_bench import results
from galip_bench.errors import UserError
from galip_bench.grid import load_grid
from galip_bench.site import load_site


def add_arguments(p):
    p.add_argument("grid", help="grid name or its YAML file")
    p.add_argument("--bench", help="site config (default: $GALIP_BENCH_CONFIG or ./bench.yaml)")


def grid_root(grid_arg: str, bench=None) -> Path:
    site = load_site(bench)
    name = load_grid(grid_arg).name if grid_arg.endswith((".yaml", ".yml")) else grid_arg
    root = Path(site.paths.runs) / name
    if not root.exists():
        raise UserError(f"no runs for grid '{name}' under {root}: run `galip-bench run` first")
    return root


def run(args) -> int:
    root = grid_root(args.grid, args.bench)
    table = results.collect(root)
    results.write_index(root)
    if table.empty:
        print(f"{root}: no runs yet")
        return 0
    print(table.to_string(index=False))
    return 0
