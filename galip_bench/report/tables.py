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
from galip_bench.runs.standin import LABEL as STAND_IN, is_stand_in

ORDER = {"finished": 0, "running": 1, "pending": 2, "failed": 3}


# ---- references ----------------------------------------------------------------------------------------------------

NOT_STATED = "not stated"  # a plan or recipe the source does not give: its number is never shown beside a run
DATASETS = ("coco", "cub")
REQUIRED = ("grid", "variant", "protocol", "metric", "value", "label", "source", "url", "dataset", "plan",
            "reference", "recipe")
# the plan of a published number: what the record's settings must equal (N first: the most telling difference)
PLAN_FIELDS = ("num_samples",) + tuple(k for k in PLAN_KEYS if k != "plan_num_samples")
# the recipe of a published number, against the run's config.yaml train section; `length` is text for the reader
RECIPE_FIELDS = {"global_batch": "global batch", "batch_size": "batch size", "precision": "precision",
                 "epochs": "epochs", "steps": "steps", "noise": "noise", "tf32": "tf32"}
RECIPE_REQUIRED = ("global_batch", "precision", "epochs")


def default_references_path():
    local = Path("reports/paper_reference.yaml")
    if local.is_file():
        return local
    shipped = Path(__file__).resolve().parents[2] / "reports" / "paper_reference.yaml"
    return shipped if shipped.is_file() else None


def _entry_name(i: int, ref) -> str:
    if not isinstance(ref, dict):
        return f"references[{i}]"
    what = "/".join(str(ref[k]) for k in ("grid", "variant", "metric", "label") if k in ref)
    return f"references[{i}]" + (f" ({what})" if what else "")


def check_reference(ref, where: str) -> None:
    """A UserError naming the entry unless it has every field of the schema (docs/report.md) with valid values."""
    if not isinstance(ref, dict):
        raise UserError(f"{where}: expected a mapping with {', '.join(REQUIRED)}")
    missing = [k for k in REQUIRED if k not in ref]
    if missing:
        raise UserError(f"{where} lacks {', '.join(missing)}")
    if not str(ref["url"]).startswith(("https://", "http://")):
        raise UserError(f"{where}: url must be a web address a reader can open, got {ref['url']!r}")
    if ref["dataset"] not in DATASETS:
        raise UserError(f"{where}: dataset must be one of {', '.join(DATASETS)}, got {ref['dataset']!r}")
    plan, recipe = ref["plan"], ref["recipe"]
    if plan != NOT_STATED:
        if not isinstance(plan, dict):
            raise UserError(f"{where}: plan must be a mapping of {', '.join(PLAN_FIELDS)} or '{NOT_STATED}'")
        unknown, absent = set(plan) - set(PLAN_FIELDS) - {"plan_num_samples"}, set(PLAN_FIELDS) - set(plan)
        if unknown or absent:
            raise UserError(f"{where}: plan " + "; ".join(
                t for t in (f"has unknown key(s) {', '.join(sorted(unknown))}" if unknown else "",
                            f"lacks {', '.join(k for k in PLAN_FIELDS if k in absent)}" if absent else "") if t))
    if recipe != NOT_STATED:
        if not isinstance(recipe, dict):
            raise UserError(f"{where}: recipe must be a mapping ({', '.join(RECIPE_FIELDS)}, length) or "
                            f"'{NOT_STATED}'")
        unknown = set(recipe) - set(RECIPE_FIELDS) - {"length"}
        absent = [k for k in RECIPE_REQUIRED if k not in recipe]
        if unknown or absent:
            raise UserError(f"{where}: recipe " + "; ".join(
                t for t in (f"has unknown key(s) {', '.join(sorted(unknown))}" if unknown else "",
                            f"lacks {', '.join(absent)}" if absent else "") if t))
        if recipe["epochs"] is None and recipe.get("steps") is None and not recipe.get("length"):
            raise UserError(f"{where}: recipe states no length: give epochs (or steps), or `length` saying why not")


def load_references(path=None) -> dict:
    """{'references': [...], 'parameters': {...}, 'sources': {...}} from paper_reference.yaml (empty when absent).
    Every entry must carry its source and URL, dataset, plan, protocol, reference and recipe (check_reference)."""
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
        check_reference(ref, f"{path}: {_entry_name(i, ref)}")
    return {"references": refs, "parameters": raw.get("parameters") or {}, "sources": raw.get("sources") or {},
            "path": str(path)}


def _show(value, quote: bool = False) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() else f"{value:g}"
    return repr(value) if quote else str(value)


def dataset_kind(dataset):
    """'coco' of a record's dataset id ('coco:test:<hash>'), None when unrecorded."""
    return str(dataset).split(":")[0] if isinstance(dataset, str) and dataset else None


def run_recipe(config: dict) -> dict:
    """The recipe a run followed, from its config.yaml (RunDir.read_config()): the train section's global batch
    (configs written before train.global_batch existed: batch_size x processes x grad_accum), batch size, processes,
    accumulation, length, precision, noise (absent: per_rank), tf32 and recipe_change (set only by
    `run --allow-recipe-change`)."""
    from galip_bench.config.recipe import global_batch_of
    train = dict((config or {}).get("train") or {})
    gb = global_batch_of(train) if train.get("global_batch") or train.get("batch_size") else None
    return {"global_batch": gb, "batch_size": train.get("batch_size"), "processes": train.get("processes"),
            "grad_accum": train.get("grad_accum"), "epochs": train.get("epochs"), "steps": train.get("steps"),
            "precision": train.get("precision"), "noise": train.get("noise") or "per_rank",
            "tf32": bool(train.get("tf32", False)), "recipe_change": train.get("recipe_change") or None}


def reference_mismatch(ref: dict, settings: dict):
    """None when `settings` (a record's) agree with the published number's protocol settings, else the first that
    differs: the entry's plan and N, its reference, the smoke stand-in, then every other setting the protocol spec
    lists as `comparable` at the protocol's defaults."""
    if settings.get("protocol", ref["protocol"]) != ref["protocol"]:
        return f"protocol {settings.get('protocol')} ≠ {ref['protocol']}"
    if ref["plan"] == NOT_STATED:
        return f"the source's sample plan and N are {NOT_STATED}"
    cls = PROTOCOLS.get(ref["protocol"])
    defaults = cls().settings_dict() if cls is not None else {}
    stated = PLAN_KEYS + ("reference",)
    wanted = {**ref["plan"], "reference": ref["reference"], "smoke": False}
    wanted.update({k: defaults[k] for k in (cls.comparable if cls else ()) if k in defaults and k not in stated})
    for key, value in wanted.items():
        have = settings.get(key, SETTING_DEFAULTS.get(key))
        if isinstance(value, tuple):
            value = dict(value)
        if have != value:
            return f"{key} {_show(have, quote=True)} ≠ {_show(value, quote=True)}"
    return None


def recipe_mismatch(ref: dict, recipe: dict):
    """None when the run's recipe (run_recipe) has every value the published number's recipe states (a null value,
    e.g. an unstated length, is not checked), else the first that differs."""
    want = ref["recipe"]
    if want == NOT_STATED:
        return f"the source's training recipe is {NOT_STATED}"
    for key, name in RECIPE_FIELDS.items():
        if want.get(key) is None:
            continue
        have = recipe.get(key)
        if key in ("epochs", "steps") and have is None:
            other = "steps" if key == "epochs" else "epochs"
            ran = f"the run is {_show(recipe.get(other))} {other}" if recipe.get(other) else "not recorded"
            return f"{name}: {ran}, the source {_show(want[key])} {name}"
        if have != want[key]:
            return f"{name} {_show(have) if have is not None else 'not recorded'} ≠ {_show(want[key])}"
    return None


def comparability(ref: dict, settings: dict, dataset=None, recipe=None):
    """None when a published number may stand beside a record: the run's recipe was not changed by
    --allow-recipe-change, the record's dataset, protocol settings, plan, N and reference are the entry's, and
    the run's recipe has the entry's. Otherwise the first setting that differs, as the report cell shows it."""
    recipe = recipe or {}
    if recipe.get("recipe_change"):
        return f"recipe changed: {recipe['recipe_change']}"
    kind = dataset_kind(dataset)
    if kind != ref["dataset"]:
        return f"dataset {kind or 'not recorded'} ≠ {ref['dataset']}"
    return reference_mismatch(ref, settings or {}) or recipe_mismatch(ref, recipe)


def length_remark(ref: dict):
    """The cell's remark when the published number's training length is not a checked epochs/steps value: 'length
    not stated: not checked', 'length about 30 epochs (...): not checked'."""
    recipe = ref["recipe"]
    if recipe == NOT_STATED or recipe.get("epochs") is not None or recipe.get("steps") is not None:
        return None
    return f"length {recipe.get('length') or NOT_STATED}: not checked"


# ---- numbers ------------------------------------------------------------------------------------------------------

def _step_key(step):
    return -1 if step is None or (isinstance(step, float) and math.isnan(step)) else step


def per_run_values(recs: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, protocol, metric): final step and value, best value, the final record's settings and
    dataset id, and whether any of its records is a smoke stand-in's (`stand_in`)."""
    rows = []
    if recs.empty:
        return pd.DataFrame(columns=["run_id", "variant", "seed", "protocol", "metric", "final_step", "final",
                                     "best", "settings", "dataset", "ci", "stand_in"])
    for (run_id, proto, metric), g in recs.groupby(["run_id", "protocol", "metric"], sort=True, dropna=False):
        g = g.assign(_k=[_step_key(s) for s in g["step"]]).sort_values("_k", kind="stable")
        last = g.iloc[-1]
        values = g["value"].astype(float)
        sign = direction(proto, metric)
        best = values.min() if sign == -1 else values.max() if sign == 1 else float("nan")
        step = last["step"]
        rows.append({"run_id": run_id, "variant": last["variant"], "seed": last["seed"], "protocol": proto,
                     "metric": metric, "final_step": None if _step_key(step) == -1 else int(step),
                     "final": float("nan") if last["value"] is None else float(last["value"]), "best": float(best),
                     "settings": last.get("settings"),
                     "dataset": last.get("dataset") if isinstance(last.get("dataset"), str) else None,
                     "ci": (float(last["ci_low"]), float(last["ci_high"]))
                     if "ci_low" in last and last["ci_low"] == last["ci_low"] else None,
                     "stand_in": any(is_stand_in(s) for s in g.get("settings", ()))})
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


def base_variant(label: str) -> str:
    """The grid's variant name of a report row label ('galip [train.steps=12] [recipe changed: ...]' -> 'galip')."""
    return str(label).split(" [")[0]


def summarize(runs: pd.DataFrame, recs: pd.DataFrame, grid: str, references=(), configs=None) -> pd.DataFrame:
    """Long table: one row per (protocol, metric, variant).

    Mean ± std (sample std, ddof=1; empty for one seed) are over the variant's finished runs; a variant with no
    finished run falls back to its unfinished runs' latest values and is marked provisional.
    A published number (`ref:<label>`, and `diff:<label>` = ours − published) is filled only where every record
    used is comparable (`comparability`: recipe not changed, dataset, protocol settings, plan, N, reference, and
    the recipe of the run's config in `configs` {run_id: config}); otherwise `why:<label>` names the first
    setting that differs. `smoke_stand_in`: a record used came from a smoke stand-in extractor.
    """
    recipes = {r: run_recipe(c) for r, c in (configs or {}).items()}
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
                   "runs": state_summary(vr), "provisional": bool(provisional),
                   "smoke_stand_in": bool(used["stand_in"].any()) if len(used) else False}
            cis = [c for c in used.get("ci", pd.Series(dtype=object)) if c]
            # a bootstrap interval (report.bootstrap) is shown for a single seed; with seeds, the seed spread is
            row["final_ci_low"], row["final_ci_high"] = cis[0] if len(used) == 1 and cis else (math.nan, math.nan)
            notes = []
            for label in labels:
                refs = [r for r in references if r["grid"] == grid and r["variant"] == base_variant(variant) and
                        r["protocol"] == proto and r["metric"] == metric and r["label"] == label]
                row[f"ref:{label}"], row[f"diff:{label}"] = float("nan"), float("nan")
                row[f"why:{label}"], row[f"remark:{label}"] = "", ""
                if not refs:
                    continue
                ref = refs[0]
                why = next((m for m in (comparability(ref, r.settings if isinstance(r.settings, dict) else {},
                                                      r.dataset, recipes.get(r.run_id))
                                        for r in used.itertuples()) if m), None)
                if len(used) == 0:
                    notes.append(f"{label} {ref['value']:g}: no results yet")
                elif why:
                    row[f"why:{label}"] = f"not comparable ({why})"
                    notes.append(f"{label} {ref['value']:g} not comparable ({why})")
                else:
                    row[f"ref:{label}"] = float(ref["value"])
                    row[f"diff:{label}"] = fm - float(ref["value"])
                    row[f"remark:{label}"] = length_remark(ref) or ""
                    notes.append(f"{label}: {ref['source']} ({ref['url']})"
                                 + (f"; {row[f'remark:{label}']}" if row[f"remark:{label}"] else ""))
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


def _true(flag) -> bool:
    return flag is not None and flag == flag and bool(flag)


def protocol_frame(table: pd.DataFrame, proto: str) -> pd.DataFrame:
    """The display table of one protocol: rows = variants, columns = metrics final/best, seeds, references. A
    metric whose numbers all come from smoke stand-ins has ` [smoke stand-in]` in its column names; where only some
    rows do, their cells carry it."""
    sub = table[table["protocol"] == proto]
    flags = sub.get("smoke_stand_in", pd.Series(False, index=sub.index)).fillna(False).astype(bool)
    all_stand_in = {m: bool(f.all()) for m, f in flags.groupby(sub["metric"])}
    ref_cols = [c for c in sub.columns if c.startswith("ref:") and
                (sub[c].notna().any() or (sub.get(f"why:{c[4:]}", pd.Series(dtype=object)).fillna("") != "").any())]
    rows = {}
    for r in sub.to_dict("records"):
        if proto == "speed" and (not r["n_seeds"] or not r["better"]):
            continue  # speed: the gated numbers of the variants that were timed
        row = rows.setdefault(r["variant"], {"variant": r["variant"] + (" †" if r["provisional"] else ""),
                                             "runs": r["runs"], "seeds": r["n_seeds"], "step": r["final_step"]})
        m = r["metric"]
        arrow = {"lower": " ↓", "higher": " ↑"}.get(r["better"], "")
        column, cell = ((f" [{STAND_IN}]", "") if all_stand_in.get(m) else
                        ("", f" [{STAND_IN}]" if _true(r.get("smoke_stand_in")) else ""))
        row[f"{m}{arrow} final{column}"] = mean_std(r["final_mean"], r["final_std"])
        if r.get("final_ci_low") == r.get("final_ci_low") and r.get("final_ci_low") is not None:
            row[f"{m}{arrow} final{column}"] += f" [{fmt(r['final_ci_low'])}, {fmt(r['final_ci_high'])}]"
        row[f"{m}{arrow} final{column}"] += cell
        if r["better"] and proto != "speed":
            row[f"{m}{arrow} best{column}"] = mean_std(r["best_mean"], r["best_std"]) + cell
        for col in ref_cols:
            label = col[4:]
            why, remark = r.get(f"why:{label}") or "", r.get(f"remark:{label}") or ""
            why, remark = (why if isinstance(why, str) else ""), (remark if isinstance(remark, str) else "")
            row[f"{m} {label}"] = (why if why and r[col] != r[col] else
                                   fmt(r[col]) + (f" ({remark})" if remark and r[col] == r[col] else ""))
            row[f"Δ {m} {label}"] = fmt(r[f"diff:{label}"], signed=True)
    return pd.DataFrame(list(rows.values()))


def md_text(text) -> str:
    """Plain text for markdown: `*` escaped, so that `x*0.5+0.5, (x+1)*0.5` is not rendered as italics."""
    return str(text).replace("\\", "\\\\").replace("*", "\\*")


def md_code(text) -> str:
    """Text as a markdown code span (a setting's value is shown as written)."""
    text = str(text)
    fence = "``" if "`" in text else "`"
    return f"{fence} {text} {fence}" if fence == "``" else f"`{text}`"


def markdown_table(df: pd.DataFrame, escape: bool = True) -> str:
    """A pipe table (pandas/tabulate), with `|` inside cells escaped, and `*` (md_text) unless the caller has
    escaped the cells' text itself (`escape=False`: cells that carry their own markup, e.g. **bold**)."""
    text = md_text if escape else str
    return df.map(lambda v: text(v).replace("|", "\\|")).to_markdown(index=False, tablefmt="pipe",
                                                                      disable_numparse=True)


# LaTeX for the symbols our cells and notes use (after the text has been escaped); any other non-ASCII character
# becomes its code point in text ([U+00B5]): pdflatex stops at a Unicode character it has not been set up for
TEX_SYMBOLS = {"±": "$\\pm$", "Δ": "$\\Delta$", "†": "$^\\dagger$", "–": "--", "—": "---", "↓": "$\\downarrow$",
               "↑": "$\\uparrow$", "≠": "$\\neq$", "→": "$\\rightarrow$", "×": "$\\times$", "·": "$\\cdot$",
               "≈": "$\\approx$", "≤": "$\\leq$", "≥": "$\\geq$", "µ": "$\\mu$", "°": "$^\\circ$",
               "’": "'", "‘": "`", "“": "``", "”": "''", "\u00a0": "~", "−": "$-$"}
TEX_SPECIALS = {"\\": "\\textbackslash{}", "&": "\\&", "%": "\\%", "$": "\\$", "#": "\\#", "_": "\\_",
                "{": "\\{", "}": "\\}", "~": "\\textasciitilde{}", "^": "\\textasciicircum{}", "<": "\\textless{}",
                ">": "\\textgreater{}", "|": "\\textbar{}"}


def tex_escape(text: str) -> str:
    """Plain text as LaTeX: its special characters escaped (one pass, so an escape is never escaped again); a
    leading `[` or `*` is shielded with `{}` (after a row's `\\\\` LaTeX would read it as that command's option)."""
    text = "".join(TEX_SPECIALS.get(char, char) for char in str(text))
    return "{}" + text if text.startswith(("[", "*")) else text


def tex_symbols(text: str) -> str:
    """Escaped LaTeX text with its non-ASCII characters replaced: TEX_SYMBOLS, else `[U+XXXX]`."""
    return "".join(char if ord(char) < 128 else TEX_SYMBOLS.get(char, f"[U+{ord(char):04X}]") for char in text)


def latex_tables(table: pd.DataFrame, grid: str) -> str:
    """booktabs tables, one per protocol: every cell, column name and caption escaped here (tex_escape, then
    tex_symbols), so that the file compiles with pdflatex and booktabs whatever the text. A protocol whose numbers
    come from smoke stand-ins says so in its caption (and its columns or cells, protocol_frame)."""
    out = [f"% galip-bench report of grid {tex_symbols(str(grid))}: final (and best) values, mean +- std over seeds",
           "% needs \\usepackage{booktabs}"]
    for proto in dict.fromkeys(table["protocol"]):
        sub = table.loc[table["protocol"] == proto]
        df = protocol_frame(table, proto).drop(columns=["runs"]).astype(str)
        notes = list(dict.fromkeys(n for n in sub.get("reference_note", []) if isinstance(n, str) and n))
        if sub.get("smoke_stand_in", pd.Series(False, index=sub.index)).fillna(False).astype(bool).any():
            notes.append(f"{STAND_IN} numbers: the smoke profile's small random-init extractors and tiny CLIP, "
                         "comparable only with runs of the smoke profile")
        caption = f"{grid}: {proto}" + (f" ({'; '.join(notes)})" if notes else "")
        df = df.map(lambda v: tex_symbols(tex_escape(v)))
        df.columns = [tex_symbols(tex_escape(c)) for c in df.columns]
        out.append(df.to_latex(index=False, escape=False, caption=tex_symbols(tex_escape(caption)), position="t",
                               column_format="l" + "r" * (len(df.columns) - 1)))
    return "\n".join(out)
