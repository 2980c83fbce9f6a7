"""`galip-bench grids`: the shipped ablation grids, what each compares, and its runs."""
from galip_bench.errors import UserError
from galip_bench.grids.grid import describe_grids, shipped_grids_folder


def add_arguments(p):
    p.add_argument("--folder", help="folder of grid YAML files (default: ./ablations, else the shipped ones)")


def run(args) -> int:
    folder = args.folder or shipped_grids_folder()
    rows = describe_grids(folder)
    if not rows:
        raise UserError(f"no grid YAML files in {folder}")
    for r in rows:
        print(f"{r['name']}  ({r['file']}; {r['runs']} run(s)" + (f"; profile {r['profile']}" if r["profile"] else "")
              + ")")
        if r["description"]:
            print(f"    {r['description']}")
        if r["variants"]:
            print(f"    variants: {', '.join(r['variants'])}")
    print("show what a grid will do: galip-bench run GRID.yaml --dry-run; run one on the CPU: --profile smoke")
    return 0
