"""The report's paired differences: each variant against the grid's baseline variant (its `baseline_variant:`, else
its first), seed by seed, at each run's final evaluation: Δ = variant − baseline of every metric that has a paired
test, with its paired bootstrap 95% interval (`evaluation.paired`), marked * where the interval excludes 0.

A run's resampled values depend only on its kept samples, the statistic, B and the seed, so each run is resampled
once per report (not once per pair) and the values are cached in the report folder (`paired_cache.json`, keyed by
the samples' sha256): a rebuilt report resamples only runs whose final evaluation is new."""
import json
import math
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from galip_bench.evaluation import paired
from galip_bench.evaluation.protocols import PROTOCOLS, direction
from galip_bench.files import atomic_write_text
from galip_bench.progress import progress_options
from galip_bench.report import tables
from galip_bench.runs.standin import LABEL as STAND_IN, is_stand_in

CACHE = "paired_cache.json"
COLUMNS = ["variant", "seed", "baseline", "baseline_run", "run", "protocol", "metric", "better", "step",
           "baseline_step", "value", "baseline_value", "diff", "ci_low", "ci_high", "significant", "resamples",
           "resample_seed", "n", "stand_in", "cell"]


def baseline_name(info: dict, runs: pd.DataFrame):
    """The variant every other is compared with: the grid's `baseline_variant`, else its first variant (the YAML's
    order, else the runs' order)."""
    if info.get("baseline_variant"):
        return info["baseline_variant"]
    if info.get("variants"):
        return info["variants"][0]
    return tables.base_variant(runs["variant"].iloc[0]) if not runs.empty else None


def testable(protocol: str, metric: str) -> bool:
    """Whether a metric has a paired test (its per-sample data is kept): FID-type protocols, CMMD, the Inception
    Scores and the CLIP scores (a gated metric of a protocol with a paired statistic)."""
    cls = PROTOCOLS.get(protocol)
    return cls is not None and direction(protocol, metric) is not None and \
        paired.statistic_of(cls()) is not None


# why a gated metric has no paired interval (its per-sample data is not kept: no resample of it is the recorded metric)
NO_PAIRED_TEST = {
    "kid": "KID is itself a mean over random subsets of 1,000 (its kid_std says how much they vary)",
    "prdc": "the k-NN radii of the generated set change with every resample (duplicates at distance 0)",
    "prdc_dinov2": "the k-NN radii of the generated set change with every resample (duplicates at distance 0)",
}


def untested(recs: pd.DataFrame) -> list:
    """[(protocol, [metrics])] of the gated metrics in `recs` that have no paired test (speed excluded: it is not a
    per-sample metric)."""
    if recs.empty:
        return []
    out = {}
    for proto, metric in sorted({(p, m) for p, m in zip(recs["protocol"], recs["metric"])}):
        if proto != "speed" and direction(proto, metric) is not None and not testable(proto, metric):
            out.setdefault(proto, []).append(metric)
    return list(out.items())


def final_records(recs: pd.DataFrame) -> dict:
    """{(run_id, protocol, metric): the record of the run's last evaluated step} (records with a step only)."""
    out = {}
    if recs.empty:
        return out
    for rec in recs.to_dict("records"):
        step = rec.get("step")
        if step is None or (isinstance(step, float) and math.isnan(step)):
            continue
        key = (rec["run_id"], rec["protocol"], rec["metric"])
        if key not in out or step >= out[key]["step"]:
            out[key] = rec
    return out


class _Resampler:
    """Each run's resampled metric values, computed once and cached on disk; a run's features are read, resampled
    and let go (a grid's runs are never all in memory)."""

    def __init__(self, out_dir, resamples, seed, device):
        self.path = Path(out_dir) / CACHE
        self.resamples, self.seed, self.device = resamples, seed, device
        try:
            self.cache = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.cache = {}
        self.used, self.computed = {}, False

    def values(self, record, run_dir) -> tuple:
        """(the run's B resampled values, B); SamplesUnavailable where its kept samples cannot be used."""
        field = record.get("kept_samples")
        b = self.resamples.get(field["statistic"], paired.RESAMPLES[field["statistic"]])
        key = paired.cache_key(field, b, self.seed)
        if key in self.cache:
            paired.verify_kept(field, run_dir)  # still there, unchanged
        else:
            samples = paired.load_kept(field, run_dir)
            full, values = paired.bootstrap_values(samples, b, self.seed, device=self.device, full=True)
            paired.check_value(samples.statistic, full, record)
            self.cache[key], self.computed = values.tolist(), True
        self.used[key] = self.cache[key]
        return self.cache[key], b

    def save(self) -> None:
        """Keep the values this report used (entries of runs no longer in it go)."""
        if self.used and (self.computed or set(self.used) != set(self.cache)):
            atomic_write_text(self.path, json.dumps(self.used) + "\n")


def _finite(value) -> bool:
    return value is not None and math.isfinite(float(value))


def _kept(record) -> bool:
    return isinstance(record.get("kept_samples"), dict)


def paired_table(runs: pd.DataFrame, recs: pd.DataFrame, grid_root, baseline: str, out_dir, resamples=None,
                 seed: int = paired.SEED, device=None) -> pd.DataFrame:
    """One row per (variant, seed, protocol, metric) with a paired test: the difference to the baseline run of the
    same seed, its interval, and the display cell (which says why where there is no interval)."""
    if runs.empty or recs.empty or baseline is None:
        return pd.DataFrame(columns=COLUMNS)
    device = device or paired.default_device()
    finals = final_records(recs)
    resampler = _Resampler(out_dir, dict(resamples or {}), seed, device)
    labels = list(dict.fromkeys(runs["variant"]))
    base_labels = [v for v in labels if tables.base_variant(v) == baseline]
    if not base_labels:
        return pd.DataFrame(columns=COLUMNS)
    base_label = base_labels[0]
    base_runs = {}
    for r in runs[runs["variant"] == base_label].itertuples():
        base_runs.setdefault(int(r.seed), r.run_id)
    metrics = sorted({(p, m) for _, p, m in finals if testable(p, m)}, key=lambda k: (k[0], k[1]))
    rows = []
    others = [r for r in runs.itertuples() if r.variant != base_label]
    # resampling a 40k x 2048 FID on a CPU takes minutes per run: a bar (cached runs pass at once)
    bar = tqdm(total=len(others) * len(metrics), desc="paired differences", unit="metric", leave=False,
               disable=not others or not metrics, **progress_options())
    for r in others:
        base_run = base_runs.get(int(r.seed))
        for proto, metric in metrics:
            bar.update()
            new = finals.get((r.run_id, proto, metric))
            old = finals.get((base_run, proto, metric)) if base_run else None
            row = {"variant": r.variant, "seed": int(r.seed), "baseline": base_label, "baseline_run": base_run,
                   "run": r.run_id, "protocol": proto, "metric": metric,
                   "better": {-1: "lower", 1: "higher"}.get(direction(proto, metric), ""),
                   "step": new["step"] if new else None, "baseline_step": old["step"] if old else None,
                   "value": new["value"] if new else None, "baseline_value": old["value"] if old else None,
                   "stand_in": any(is_stand_in(x.get("settings")) for x in (new, old) if x)}
            row["cell"] = _pair(row, old, new, Path(grid_root), resampler)
            rows.append(row)
    bar.close()
    resampler.save()
    return pd.DataFrame(rows, columns=COLUMNS)


def _pair(row, old, new, grid_root: Path, resampler) -> str:
    """Fill the row's interval; return its cell text."""
    if row["baseline_run"] is None:
        return f"no {row['baseline']} run of seed {row['seed']}"
    if new is None or old is None:
        return "no final evaluation yet" if new is None else "baseline: no final evaluation yet"
    if not all(_finite(x.get("value")) for x in (new, old)):
        return "metric failed (no finite value)"
    if not _kept(new) or not _kept(old):
        which = "either run" if not _kept(new) and not _kept(old) else "the baseline" if not _kept(old) else "this run"
        return f"samples not kept ({which})"
    problem = paired.records_problem(old, new) or paired.samples_problem(old["kept_samples"], new["kept_samples"])
    if problem:
        return f"not paired: {problem}"
    sides = []
    for rec, run, name in ((old, row["baseline_run"], "baseline"), (new, row["run"], "this run")):
        try:
            sides.append(resampler.values(rec, grid_root / run))
        except paired.SamplesUnavailable as err:
            return f"{err} ({name})"
    (base_v, b), (new_v, _) = sides
    result = paired.summary([a - c for a, c in zip(new_v, base_v)], b, resampler.seed, old["kept_samples"]["n"])
    row.update(diff=float(new["value"]) - float(old["value"]), ci_low=result["ci_low"], ci_high=result["ci_high"],
               significant=result["significant"], resamples=b, resample_seed=resampler.seed, n=result["n"])
    return paired.fmt_difference(row["diff"], result)


def display_frame(table: pd.DataFrame) -> pd.DataFrame:
    """Rows = (variant, seed), columns = metrics (`<metric> ↓ Δ`, with the stand-in label where it applies)."""
    rows = {}
    for r in table.to_dict("records"):
        key = (r["variant"], r["seed"])
        steps = f"{_step(r['step'])} vs {_step(r['baseline_step'])}"
        row = rows.setdefault(key, {"variant": r["variant"], "seed": r["seed"], "final step (vs baseline)": steps})
        arrow = {"lower": " ↓", "higher": " ↑"}.get(r["better"], "")
        label = f" [{STAND_IN}]" if r["stand_in"] else ""
        row[f"Δ {r['metric']}{arrow}{label}"] = r["cell"]
    return pd.DataFrame(list(rows.values()))


def _step(step) -> str:
    return "–" if step is None or step != step else f"{int(step):,}"


def description(table: pd.DataFrame, baseline: str, resamples=None, seed: int = paired.SEED) -> str:
    """What the cells are: the sentence under the markdown table and in the TeX caption."""
    b = {**paired.RESAMPLES, **dict(resamples or {})}
    return (f"Δ = variant − baseline ({baseline}), seed by seed (each run against the {baseline} run of the same "
            "seed), at each run's final evaluation (its last evaluated step, whose per-sample data the run kept: "
            "eval.keep_samples). In brackets: the paired bootstrap 95% interval (percentiles 2.5 and 97.5) of the "
            "difference: sample indices resampled with replacement jointly for both runs (sample i of both came "
            "from the same caption and noise), each run's metric recomputed on the resample (FID-type: the "
            "resampled generated features against the fixed reference statistics; CMMD: the resampled embeddings "
            "against the fixed reference embeddings; CLIP and Inception Scores: their own formula; shapes_acc: the "
            f"mean of each image's correctness), {b['frechet']:,} resamples for FID-type metrics, "
            f"{b['mmd_biased']:,} for CMMD, {b['inception_score']:,} for Inception Scores and "
            f"{b['clip_batch_mean']:,} for CLIP scores and shapes_acc, "
            f"resample seed {seed}. * the interval excludes 0. The Δ is of the recorded values; the "
            "interval does not include the spread between training seeds (the results tables show it).")


def markdown_section(table: pd.DataFrame, baseline, resamples=None, seed: int = paired.SEED, recs=None) -> list:
    lines = ["## Paired differences", ""]
    without = [f"`{proto}` ({', '.join(metrics)}: {NO_PAIRED_TEST.get(proto, 'no per-sample statistic kept')})"
               for proto, metrics in untested(recs if recs is not None else pd.DataFrame())]
    note = [tables.md_text("No paired interval for " + "; ".join(without) + ": the results tables show their values, "
                           "and a gap between variants there is not a tested difference."), ""] \
        if without else []
    if baseline is None or table.empty:
        why = ("there is only the baseline variant" if baseline is not None else "no variants")
        return lines + [f"No paired differences ({why}, or no metric with a paired test).", ""] + note
    lines += [tables.md_text(description(table, baseline, resamples, seed)), "",
              tables.markdown_table(display_frame(table)), ""]
    if (table["cell"].str.startswith("samples not kept")).any():
        lines += ["Where a cell says `samples not kept`, the run's final records name no per-sample data (runs "
                  "made before eval.keep_samples existed, or with eval.keep_samples: none): no paired test.", ""]
    return lines + note


def csv_text(table: pd.DataFrame) -> str:
    return table.to_csv(index=False)


def latex_text(table: pd.DataFrame, grid: str, baseline, resamples=None, seed: int = paired.SEED) -> str:
    out = [f"% galip-bench report of grid {tables.tex_symbols(str(grid))}: paired differences against the baseline",
           "% needs \\usepackage{booktabs}"]
    if table.empty:
        return "\n".join(out + ["% no paired differences"]) + "\n"
    df = display_frame(table).astype(str).map(lambda v: tables.tex_symbols(tables.tex_escape(v)))
    df.columns = [tables.tex_symbols(tables.tex_escape(c)) for c in df.columns]
    caption = f"{grid}: paired differences. {description(table, baseline, resamples, seed)}"
    out.append(df.to_latex(index=False, escape=False, caption=tables.tex_symbols(tables.tex_escape(caption)),
                           position="t", column_format="lr" + "r" * (len(df.columns) - 2)))
    return "\n".join(out)
