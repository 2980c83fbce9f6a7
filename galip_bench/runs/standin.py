"""Stand-in (smoke) numbers, labelled wherever a number is shown: a metric measured with the smoke profile's small
random-init extractors (records with `settings.smoke: true`, evaluation.spec) never appears under the bare name
of the real metric. This module labels the per-run tables of `run`, `status` and index.csv (runs.results.collect);
the report's tables and plots use `is_stand_in` on their records."""
import pandas as pd

LABEL = "smoke stand-in"
SUFFIX = f" [{LABEL}]"
NOTE = (f"[{LABEL}]: measured with the smoke profile's small random-init extractors and the tiny CLIP; these numbers "
        "compare only runs of the smoke profile, never the real metric or a published number")


def is_stand_in(settings) -> bool:
    """Whether a record's settings say a smoke stand-in extractor produced its number."""
    return isinstance(settings, dict) and bool(settings.get("smoke"))


def stand_in_cells(recs: pd.DataFrame) -> dict:
    """{(run_id, metric): stand-in?} for the value results.collect shows: each run's last record of the metric
    (`recs`: results.metric_records of the grid)."""
    if recs.empty:
        return {}
    settings = recs["settings"] if "settings" in recs else [None] * len(recs)
    return {(run_id, metric): is_stand_in(s) for run_id, metric, s in zip(recs["run_id"], recs["metric"], settings)}


def label_run_table(table: pd.DataFrame, recs: pd.DataFrame) -> tuple:
    """(table, notes) with every stand-in number labelled: a metric column whose values all come from stand-ins is
    renamed `<metric> [smoke stand-in]`; in a column that mixes them, each stand-in cell reads `<value> [smoke
    stand-in]`. `notes` holds the line that says what the label means (empty when nothing is a stand-in)."""
    cells = stand_in_cells(recs)
    if table.empty or not any(cells.values()):
        return table, []
    table = table.copy()
    renames = {}
    for metric in dict.fromkeys(m for _, m in cells):
        if metric not in table:
            continue
        flags = [cells.get((r, metric), False) for r in table["run_id"]]
        shown = [f for f, v in zip(flags, table[metric]) if v == v and v is not None]
        if not any(shown):
            continue
        if all(shown):
            renames[metric] = metric + SUFFIX
        else:
            table[metric] = [f"{v:.6f}{SUFFIX}" if f and isinstance(v, float) and v == v else v
                             for f, v in zip(flags, table[metric])]
    return table.rename(columns=renames), [NOTE]
