"""`galip-bench status GRID`: state, step, last metrics and log path of every run of a grid. Read-only: it writes
nothing (runs/<grid>/index.csv is `run`'s), so it works on a read-only runs folder."""
from galip_bench.config.site import load_site
from galip_bench.grids.grid import grid_folder
from galip_bench.runs import results
from galip_bench.runs.standin import label_run_table


def add_arguments(p):
    p.add_argument("grid", help="grid name or its YAML file")
    p.add_argument("--bench", help="site config (default: $GALIP_BENCH_CONFIG or ./bench.yaml)")


def run(args) -> int:
    root = grid_folder(args.grid, load_site(args.bench))
    table = results.collect(root)
    if table.empty:
        print(f"{root}: no runs yet")
        return 0
    table, notes = label_run_table(table, results.metric_records(root))  # stand-in numbers say so
    print(table.to_string(index=False))
    for line in notes:
        print(line)
    return 0
