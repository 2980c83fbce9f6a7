"""`galip-bench report GRID`: build reports/<grid>/ (report.md, report.html, table.csv, table.tex, PNG plots) from the
grid's run folders."""
from pathlib import Path

from galip_bench.commands.status import grid_root
from galip_bench.report import build_report


def add_arguments(p):
    p.add_argument("grid", help="grid name or its YAML file")
    p.add_argument("--out", help="output folder (default: reports/<grid>)")
    p.add_argument("--references", help="paper reference YAML (default: reports/paper_reference.yaml)")
    p.add_argument("--bench", help="site config (default: $GALIP_BENCH_CONFIG or ./bench.yaml)")


def _grid_info(grid_arg: str) -> dict:
    """Name, description, profile and executor from the grid YAML (given, or ablations/<name>.yaml if present)."""
    from galip_bench.config import read_yaml
    path = Path(grid_arg) if grid_arg.endswith((".yaml", ".yml")) else Path("ablations") / f"{grid_arg}.yaml"
    if not path.is_file():
        return {}
    raw = read_yaml(path)
    return {"path": str(path), "name": str(raw.get("name") or path.stem), "description": raw.get("description"),
            "profile": raw.get("profile"), "executor": raw.get("executor"),
            "variants": [str(v.get("name")) for v in (raw.get("variants") or []) if hasattr(v, "get")]}


def run(args) -> int:
    root = grid_root(args.grid, args.bench)
    info = _grid_info(args.grid)
    name = root.name
    out = Path(args.out) if args.out else Path("reports") / name
    paths = build_report(root, out, name, info, args.references)
    table = paths["table"]
    print(f"{name}: {len(table)} table row(s), {len(paths['plots'])} plot(s)")
    for key in ("report.md", "report.html", "table.csv", "table.tex"):
        print(f"  {paths[key]}")
    return 0
