"""Report tables: per (protocol, metric, variant) the final and best values, mean ± std over seeds, and the published
reference where the protocol and its settings match. One long DataFrame feeds markdown, CSV and LaTeX."""
import math
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from galip_bench.errors import UserError
from galip_bench.evaluation.protocols import PROTOCOLS, direction
from galip_bench.evaluation.spec import PLAN_KEYS, SETTING_DEFAULTS

ORDER = {"finished": 0, "running": 1, "pending": 2, "failed": 3}


# ---- references ----------------------------------------------------------------------------------------------------

def default_references_path():
    local = Path("reports/paper_reference.yaml")
    if local.is_file():
        return local
    shipped = Path(__file__).resolve().parents[2] / "reports" / "paper_reference.yaml"
    return shipped if shipped.is_file() else None


def load_references(path=None) -> dict:
    """{'references': [...], 'parameters': {...}, 'sources': {...}} from paper_reference.yaml (empty when absent)."""
    path = Path(path) if path else default_references_path()
    if path is None:
        return {"references": [], "parameters": {}, "sources": {}}
    if not path.is_file():
        raise UserError(f"paper reference file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    refs = raw.get("references") or []
    for i, ref in enumerate(refs):
        missing = {"grid", "variant", "protocol", "metric", "value", "label", "source"} - set(ref)
        if missing:
            raise UserError(f"{path}: references[{i}] lacks {', '.join(sorted(missing))}")
    return {"references": refs, "parameters": raw.get("parameters") or {}, "sources": raw.get("sources") or {},
            "path": str(path)}


def reference_mismatch(ref: dict, settings: dict):
    """None when `settings` (a record's) agree with the published number's: every setting the protocol spec lists as
    `comparable` must be the protocol's default (the plan and the reference as the reference entry states them),
    else why not."""
    if settings.get("protocol", ref["protocol"]) != ref["protocol"]:
        return f"protocol {settings.get('protocol')} ≠ {ref['protocol']}"
    cls = PROTOCOLS.get(ref["protocol"])
    defaults = cls().settings_dict() if cls is not None else {}
    stated = PLAN_KEYS + ("reference",)
    wanted = {k: defaults[k] for k in (cls.comparable if cls else ()) if k in defaults and k not in stated}
    wanted["smoke"] = False
    wanted.update(ref.get("settings") or {})
    for key, value in wanted.items():
        have = settings.get(key, SETTING_DEFAULTS.get(key))
        if isinstance(value, tuple):
            value = dict(value)
        if have != value:
            return f"{key} {have!r} ≠ {value!r}"
    return None


# ---- numbers ------------------------------------------------------------------------------------------------------

def _step_key(step):
    return -1 if step is None or (isinstance(step, float) and math.isnan(step)) else step


def per_run_values(recs: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, protocol, metric): final step and value, best value, and the final record's settings."""
    rows = []
    if recs.empty:
        return pd.DataFrame(columns=["run_id", "variant", "seed", "protocol", "metric", "final_step", "final",
                                     "best", "settings", "ci"])
    for (run_id, proto, metric), g in recs.groupby(["run_id", "protocol", "metric"], sort=True, dropna=False):
        g = g.assign(_k=[_step_key(s) for s in g["step"]]).sort_values("_k", kind="stable")
        last = g.iloc[-1]
        values = g["value"].astype(float)
        sign = direction(proto, metric)
        best = values.min() if sign == -1 else values.max() if sign == 1 else float("nan")
        step = last["step"]
        rows.append({"run_id": run_id, "variant": last["variant"], "seed": last["seed"], "protocol": proto,
                     "metric": metric, "final_step": None if _step_key(step) == -1 else int(step),
                     "final": float("nan") if last["value"] is None else float(last["value"]), "best": float(best), "settings": last.get("settings"),
                     "ci": (float(last["ci_low"]), float(last["ci_high"]))
                     if "ci_low" in last and last["ci_low"] == last["ci_low"] else None})
    return pd.DataFrame(rows)


def _mean_std(values) -> tuple:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else float("nan"))


def state_summary(runs: pd.DataFrame) -> str:
    """'finished 2, running 1 (step 60/120), failed 1' for the runs of one variant."""
    parts = []
    for state in sorted(set(runs["state"]), key=lambda s: ORDER.get(s, 9)):
        sub = runs[runs["state"] == state]
        text = f"{state} {len(sub)}"
        if state in ("running", "failed", "pending"):
            steps = ", ".join(f"{int(r.step or 0)}/{int(r.steps) if r.steps == r.steps and r.steps else '?'}"
                              for r in sub.itertuples())
            text += f" (step {steps})"
        parts.append(text)
    return ", ".join(parts)


def summarize(runs: pd.DataFrame, recs: pd.DataFrame, grid: str, references=()) -> pd.DataFrame:
    """Long table: one row per (protocol, metric, variant).

    Mean ± std (sample std, ddof=1; empty for one seed) are over the variant's finished runs; a variant with no
    finished run falls back to its unfinished runs' latest values and is marked provisional.
    """
    per_run = per_run_values(recs)
    runs_by_variant = {v: g for v, g in runs.groupby("variant", sort=False)} if not runs.empty else {}
    state_of = dict(zip(runs["run_id"], runs["state"])) if not runs.empty else {}
    out = []
    keys = per_run[["protocol", "metric"]].drop_duplicates().itertuples(index=False) if not per_run.empty else []
    variants = list(dict.fromkeys(runs["variant"])) if not runs.empty else []
    labels = list(dict.fromkeys(r["label"] for r in references if r["grid"] == grid))
    for proto, metric in sorted(keys, key=lambda k: (k[0] == "speed", k[0], k[1])):
        for variant in variants:
            vr = runs_by_variant[variant]
            sub = per_run[(per_run["protocol"] == proto) & (per_run["metric"] == metric) &
                          (per_run["variant"] == variant)]
            finished = sub[[state_of.get(r) == "finished" for r in sub["run_id"]]]
            used = finished if len(finished) else sub
            provisional = len(used) > 0 and len(finished) == 0
            fm, fs = _mean_std(list(used["final"]))
            bm, bs = _mean_std(list(used["best"]))
            steps = sorted({s for s in used["final_step"] if s is not None and s == s})
            row = {"protocol": proto, "metric": metric, "variant": variant, "n_seeds": int(len(used)),
                   "seeds": ",".join(str(s) for s in sorted(used["seed"])),
                   "final_step": (str(int(steps[0])) if len(steps) == 1 else
                                  f"{int(steps[0])}-{int(steps[-1])}" if steps else ""),
                   "final_mean": fm, "final_std": fs, "best_mean": bm, "best_std": bs,
                   "better": {-1: "lower", 1: "higher"}.get(direction(proto, metric), ""),
                   "runs": state_summary(vr), "provisional": bool(provisional)}
            cis = [c for c in used.get("ci", pd.Series(dtype=object)) if c]
            # a bootstrap interval (report.bootstrap) is shown for a single seed; with seeds, the seed spread is
            row["final_ci_low"], row["final_ci_high"] = cis[0] if len(used) == 1 and cis else (math.nan, math.nan)
            notes = []
            for label in labels:
                refs = [r for r in references if r["grid"] == grid and r["variant"] == variant and
                        r["protocol"] == proto and r["metric"] == metric and r["label"] == label]
                row[f"ref:{label}"], row[f"diff:{label}"] = float("nan"), float("nan")
                if not refs:
                    continue
                ref = refs[0]
                why = next((m for m in (reference_mismatch(ref, s or {}) for s in used["settings"]) if m), None)
                if len(used) == 0:
                    notes.append(f"{label} {ref['value']:g}: no results yet")
                elif why:
                    notes.append(f"{label} {ref['value']:g} not comparable ({why})")
                else:
                    row[f"ref:{label}"] = float(ref["value"])
                    row[f"diff:{label}"] = fm - float(ref["value"])
                    notes.append(f"{label}: {ref['source']}")
            row["notes"] = "; ".join(notes)
            out.append(row)
    return pd.DataFrame(out)


# ---- formatting ----------------------------------------------------------------------------------------------------

def fmt(v, signed=False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    a = abs(v)
    spec = ".1f" if a >= 1000 else ".3f" if a >= 1 else ".4f"
    return format(v, ("+" if signed else "") + spec)


def mean_std(m, s) -> str:
    if m != m:
        return "–"
    return fmt(m) if s != s else f"{fmt(m)} ± {fmt(s)}"


def protocol_frame(table: pd.DataFrame, proto: str) -> pd.DataFrame:
    """The display table of one protocol: rows = variants, columns = metrics final/best, seeds, references."""
    sub = table[table["protocol"] == proto]
    ref_cols = [c for c in sub.columns if c.startswith("ref:") and sub[c].notna().any()]
    rows = {}
    for r in sub.to_dict("records"):
        if proto == "speed" and (not r["n_seeds"] or not r["better"]):
            continue  # speed: the gated numbers of the variants that were timed
        row = rows.setdefault(r["variant"], {"variant": r["variant"] + (" †" if r["provisional"] else ""),
                                             "runs": r["runs"], "seeds": r["n_seeds"], "step": r["final_step"]})
        m = r["metric"]
        arrow = {"lower": " ↓", "higher": " ↑"}.get(r["better"], "")
        row[f"{m}{arrow} final"] = mean_std(r["final_mean"], r["final_std"])
        if r.get("final_ci_low") == r.get("final_ci_low") and r.get("final_ci_low") is not None:
            row[f"{m}{arrow} final"] += f" [{fmt(r['final_ci_low'])}, {fmt(r['final_ci_high'])}]"
        if r["better"] and proto != "speed":
            row[f"{m}{arrow} best"] = mean_std(r["best_mean"], r["best_std"])
        for col in ref_cols:
            label = col[4:]
            row[f"{m} {label}"] = fmt(r[col])
            row[f"Δ {m} {label}"] = fmt(r[f"diff:{label}"], signed=True)
    return pd.DataFrame(list(rows.values()))


def markdown_table(df: pd.DataFrame) -> str:
    """A pipe table (pandas/tabulate), with `|` inside cells escaped."""
    return df.map(lambda v: str(v).replace("|", "\\|")).to_markdown(index=False, tablefmt="pipe",
                                                                     disable_numparse=True)


# LaTeX for the symbols our cells use (after pandas has escaped the text)
TEX_SYMBOLS = {"±": "$\\pm$", "Δ": "$\\Delta$", "†": "$^\\dagger$", "–": "--", "↓": "$\\downarrow$",
               "↑": "$\\uparrow$", "≠": "$\\neq$"}


def latex_tables(table: pd.DataFrame, grid: str) -> str:
    """booktabs tables (pandas `to_latex`), one per protocol."""
    out = [f"% galip-bench report of grid {grid}: final (and best) values, mean ± std over seeds",
           "% needs \\usepackage{booktabs}"]
    for proto in dict.fromkeys(table["protocol"]):
        df = protocol_frame(table, proto).drop(columns=["runs"]).astype(str)
        out.append(df.to_latex(index=False, escape=True, caption=f"{grid}: {proto}", position="t",
                               column_format="l" + "r" * (len(df.columns) - 1)))
    text = "\n".join(out)
    for symbol, tex in TEX_SYMBOLS.items():
        text = text.replace(symbol, tex)
    return text
