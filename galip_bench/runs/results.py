"""Grid-level results, rebuilt from the run folders (never edited in place, so concurrent jobs cannot corrupt it)."""
import sys
from pathlib import Path

import pandas as pd

from galip_bench.errors import UserError
from galip_bench.files import atomic_write_text
from galip_bench.runs.liveness import effective_state, slurm_states
from galip_bench.runs.rundir import RunDir, read_jsonl
from galip_bench.runs.standin import label_run_table


def run_dirs(grid_root) -> list:
    root = Path(grid_root)
    return sorted(p.parent for p in root.glob("*/config.yaml")) if root.exists() else []


def collect(grid_root) -> pd.DataFrame:
    """One row per run: id, variant, seed, state, step, error, log path and the last value of every metric. Reads
    only: a torn record is left out with a warning, and its run shows as failed (the next `run` redoes it)."""
    rows = []
    statuses = {path: RunDir(path).status() for path in run_dirs(grid_root)}
    scheduler = slurm_states(s.get("job_id") for s in statuses.values()
                             if s.get("executor") == "slurm" and s.get("state") in ("pending", "running"))
    for path, status in statuses.items():
        rd = RunDir(path)
        config = rd.read_config()
        state, error = effective_state(status, scheduler)
        torn = rd.torn()
        for name in torn:  # one warning line per damaged log (status.json warned when read)
            if name.endswith(".jsonl"):
                read_jsonl(rd.path / name)
        if torn and state not in ("pending", "running"):
            state, error = "failed", (f"torn record in {', '.join(sorted(torn))}: the next `run` redoes the run from "
                                      "its last checkpoint before it")
        row = {"run_id": path.name, "variant": status.get("variant", config.get("variant")),
               "seed": status.get("seed", config.get("seed")), "state": state, "step": status.get("step", 0),
               "steps": status.get("steps", (config.get("train") or {}).get("steps")),
               "error": (error or "").splitlines()[0] if error else "",
               "resumed_from": status.get("resumed_from") or "", "log": str(rd.train_log)}
        change = (config.get("train") or {}).get("recipe_change")
        if change:  # run with --allow-recipe-change: said beside its numbers wherever they are listed
            row["recipe"] = f"CHANGED: {change}"
        for record in read_jsonl(rd.metrics):
            row[record["metric"]] = record["value"]
        rows.append(row)
    table = pd.DataFrame(rows)
    if "recipe" in table:
        table["recipe"] = table["recipe"].fillna("grid's")
    return table


def metric_records(grid_root) -> pd.DataFrame:
    """Every metrics.jsonl record of the grid, with its run id and variant."""
    frames = []
    for path in run_dirs(grid_root):
        status = RunDir(path).status()
        records = read_jsonl(RunDir(path).metrics)
        if records:
            df = pd.DataFrame(records)
            df["run_id"], df["variant"], df["seed"] = path.name, status.get("variant"), status.get("seed")
            frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write_index(grid_root) -> Path:
    """runs/<grid>/index.csv, written by `run` (never by `status`, which only reads). A folder that cannot be
    written gets no index: one `note:` line says so, and `status` shows the same table."""
    path = Path(grid_root) / "index.csv"
    if Path(grid_root).exists():
        table, _ = label_run_table(collect(grid_root), metric_records(grid_root))  # stand-ins say so
        try:
            atomic_write_text(path, table.to_csv(index=False))
        except (OSError, UserError) as err:  # atomic writes say why as a UserError
            why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            print(f"note: {path} not written ({why}); `galip-bench status` shows the same table", file=sys.stderr)
    return path
