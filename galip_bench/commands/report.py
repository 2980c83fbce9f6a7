"""`galip-bench report GRID`: build reports/<grid>/ (report.md, report.html, table.csv, table.tex, paired.csv, paired.tex, PNG plots) from the
grid's run folders."""
from pathlib import Path

from galip_bench.config.site import load_site
from galip_bench.files import check_output_dir, require_file
from galip_bench.grids.grid import grid_folder, grid_info
from galip_bench.report import build_report


def add_arguments(p):
    p.add_argument("grid", help="grid name or its YAML file")
    p.add_argument("--out", help="output folder (default: reports/<grid>)")
    p.add_argument("--references", help="paper reference YAML (default: reports/paper_reference.yaml)")
    p.add_argument("--bench", help="site config (default: $GALIP_BENCH_CONFIG or ./bench.yaml)")


def run(args) -> int:
    root = grid_folder(args.grid, load_site(args.bench))
    info = grid_info(args.grid)
    name = root.name
    out = Path(args.out) if args.out else Path("reports") / name
    check_output_dir(out, "--out" if args.out else "the report folder")  # before reading every run
    if args.references:
        require_file(args.references, "a paper reference YAML (as reports/paper_reference.yaml)")
    paths = build_report(root, out, name, info, args.references)
    table = paths["table"]
    pairs = paths["paired"]
    tested = int(pairs["ci_low"].notna().sum()) if not pairs.empty else 0
    print(f"{name}: {len(table)} table row(s), {len(paths['plots'])} plot(s), {tested} of {len(pairs)} paired "
          f"difference(s) with an interval ({int(pairs['significant'].eq(True).sum()) if tested else 0} excluding 0)")
    for key in ("report.md", "report.html", "table.csv", "table.tex", "paired.csv", "paired.tex"):
        print(f"  {paths[key]}")
    return 0
