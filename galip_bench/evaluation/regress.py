"""Regression gate: compare a checkpoint's metric records with a baseline's, under exactly the same protocol settings.

The verdict logic is pure (`compare`): records old/new + tolerances -> rows and an exit code (0 ok, 1 regressed).
Each metric's direction and the settings that must agree come from its protocol spec (`evaluation.protocols`).
"""
import math
import time
from pathlib import Path

import pandas as pd

from galip_bench.errors import UserError
from galip_bench.evaluation.protocols import PROTOCOLS, direction, metric_direction
from galip_bench.evaluation.spec import SETTING_DEFAULTS

BASELINE_FORMAT = 2
SPEED_PROTOCOLS = ("speed",)


def parse_tolerances(text) -> dict:
    """'fid_galip=+0.3,clip_score_galip=-0.002,latency_ms=+10%' -> {name: (amount, relative)}.

    The amount is how much worse the new value may be (a sign, if given, must point the worse way for that
    metric: + for lower-is-better metrics, - for higher-is-better). A trailing % makes it relative to the old value.
    """
    out = {}
    for item in [t.strip() for t in (text or "").split(",") if t.strip()]:
        if "=" not in item:
            raise UserError(f"tolerance {item!r} is not of the form metric=value (e.g. fid_galip=+0.3)")
        name, value = (s.strip() for s in item.split("=", 1))
        relative = value.endswith("%")
        raw = value[:-1] if relative else value
        try:
            amount = float(raw)
        except ValueError:
            raise UserError(f"tolerance {item!r}: {value!r} is not a number (e.g. +0.3, -0.002, +10%)") from None
        sign = metric_direction(name)
        if raw.startswith(("+", "-")) and sign is not None and amount != 0 and (amount > 0) != (sign < 0):
            worse = "+" if sign < 0 else "-"
            raise UserError(f"tolerance {item!r}: {name} is {'lower' if sign < 0 else 'higher'}-is-better, so its "
                            f"tolerance (how much worse it may get) is written {worse}{abs(amount):g}")
        out[name] = (abs(amount), relative)
    return out


def default_tolerance(protocol: str):
    """Quality metrics: 0 (the same checkpoint under the same settings reproduces its numbers exactly on the same
    device). Speed metrics: 10% (timings are noisy); pass a tolerance to tighten or loosen either."""
    if protocol in SPEED_PROTOCOLS:
        return (10.0, True)
    return (0.0, False)


def _key(record) -> tuple:
    return (record["protocol"], record["metric"])


def index_records(records) -> dict:
    """{(protocol, metric): record}; the last record wins when a step series is given (latest step)."""
    out = {}
    for r in sorted(records, key=lambda r: (r.get("step") is not None, r.get("step") or 0)):
        out[_key(r)] = r
    return out


# what a re-drawn evaluation (`regress --seed`: the baseline's plan with another seed) changes on purpose
REDRAWN = ("seed", "captions_sha256")


def settings_differences(old: dict, new: dict, ignore=()) -> list:
    """Human-readable differences between two records' gated protocol settings (and datasets), less `ignore`."""
    diffs = []
    so, sn = old.get("settings") or {}, new.get("settings") or {}
    cls = PROTOCOLS.get(old["protocol"])
    for k in (cls.gated if cls is not None else sorted(set(so) | set(sn))):
        if k in ignore:
            continue
        before, after = (s.get(k, SETTING_DEFAULTS.get(k)) for s in (so, sn))
        if before != after:
            diffs.append(f"{k}: baseline {before!r} vs new {after!r}")
    if old.get("dataset") and new.get("dataset") and old["dataset"] != new["dataset"]:
        diffs.append(f"dataset: baseline {old['dataset']!r} vs new {new['dataset']!r}")
    return diffs


def check_settings(old_records, new_records, ignore=()) -> None:
    """UserError when a metric present in both was measured under different settings (less `ignore`)."""
    old, new = index_records(old_records), index_records(new_records)
    for key in sorted(set(old) & set(new), key=str):
        diffs = settings_differences(old[key], new[key], ignore)
        if diffs:
            raise UserError(f"{key[0]}/{key[1]} was measured under different settings than the baseline "
                            f"({'; '.join(diffs)}); re-create the baseline or evaluate with its settings")


WORSE_SIGNIFICANT, WORSE_NOISE = "worse, significant", "worse, within noise"
FAILING = ("regressed", "missing", WORSE_SIGNIFICANT)


def compare(old_records, new_records, tolerances=None, protocols=None, paired=None, notes=None) -> tuple:
    """(rows, exit_code). One row per baseline metric: protocol, metric, old, new, delta, tolerance, verdict, and
    the paired test where there is one (ci_low, ci_high of new − old, paired: its text; evaluation.paired).

    verdict: ok | improved | regressed | missing (no new value; counts as a regression) | info (not gated); with a
    paired test ({(protocol, metric): paired_difference result} in `paired`), a metric worse than its tolerance is
    `worse, significant` (its interval excludes 0 on the worse side; a regression) or `worse, within noise` (not
    one). `notes`: {(protocol, metric): why there is no paired test}, shown in the row.
    exit_code: 1 when any row regressed, is missing or is worse and significant, else 0. Unknown tolerance names
    raise UserError.
    """
    tolerances = dict(tolerances or {})
    old, new = index_records(old_records), index_records(new_records)
    names = {m for _, m in old} | {p for p, _ in old}
    unknown = sorted(set(tolerances) - names)
    if unknown:
        raise UserError(f"tolerance for {', '.join(unknown)}: no such metric in the baseline "
                        f"({', '.join(sorted({m for _, m in old}))})")
    if protocols:
        unknown = sorted(set(protocols) - {p for p, _ in old})
        if unknown:
            raise UserError(f"protocol(s) {', '.join(unknown)} not in the baseline (it has "
                            f"{', '.join(sorted({p for p, _ in old}))})")
        old = {k: v for k, v in old.items() if k[0] in protocols}
    rows, failed = [], False
    for (proto, metric), rec in sorted(old.items()):
        sign = direction(proto, metric)
        amount, relative = tolerances.get(metric, tolerances.get(proto, default_tolerance(proto)))
        old_v = _value(rec)
        new_rec = new.get((proto, metric))
        new_v = _value(new_rec) if new_rec is not None else math.nan
        delta = new_v - old_v
        allowed = amount * abs(old_v) / 100.0 if relative else amount
        if sign is None:
            verdict = "info"
        elif new_rec is None or math.isnan(new_v):
            verdict = "missing"
        else:
            worse_by = -sign * delta  # > 0: the new value is worse
            verdict = "regressed" if worse_by > allowed + 1e-12 else ("improved" if worse_by < 0 else "ok")
        test = (paired or {}).get((proto, metric))
        if verdict == "regressed" and test is not None:
            worse = test["ci_low"] > 0 if sign < 0 else test["ci_high"] < 0  # the interval on the worse side of 0
            verdict = WORSE_SIGNIFICANT if worse else WORSE_NOISE
        failed |= verdict in FAILING
        tol_text = "n/a" if sign is None else (f"{'+' if sign < 0 else '-'}{amount:g}{'%' if relative else ''}")
        row = {"protocol": proto, "metric": metric, "old": old_v, "new": new_v, "delta": delta,
               "tolerance": tol_text, "allowed": allowed if sign is not None else None,
               "better": {-1: "lower", 1: "higher"}.get(sign), "verdict": verdict}
        if test is not None:
            row.update(ci_low=test["ci_low"], ci_high=test["ci_high"], paired_resamples=test["resamples"],
                       paired=("unpaired " if test.get("paired") is False else "")
                       + f"[{test['ci_low']:+.4g}, {test['ci_high']:+.4g}]" + (" *" if test["significant"] else ""))
        elif (notes or {}).get((proto, metric)):
            row["paired"] = notes[(proto, metric)]
        rows.append(row)
    return rows, int(failed)


def _value(record) -> float:
    """A record's value; a metric that failed (value null, with its error) is NaN."""
    return math.nan if record.get("value") is None else float(record["value"])


def format_table(rows) -> str:
    """The verdict rows as a plain-text table; failing verdicts in capitals. With paired tests, a column of each
    delta's paired bootstrap 95% interval (* where it excludes 0), or why there is none."""
    columns = ["protocol", "metric", "old", "new", "delta", "tolerance", "verdict"]
    if any(r.get("paired") for r in rows):
        columns.insert(5, "paired")
    df = pd.DataFrame(rows, columns=columns)
    if "paired" in df:
        df["paired"] = df["paired"].fillna("")
        df = df.rename(columns={"paired": "paired 95% CI of delta"})
    df["verdict"] = [v.upper() if v in FAILING else v for v in df["verdict"]]
    return df.to_string(index=False, formatters={"old": "{:.6g}".format, "new": "{:.6g}".format,
                                                 "delta": "{:+.6g}".format})


# ---- baselines ------------------------------------------------------------------------------------------------------

def verdict_line(verdict: str, rows) -> str:
    """The gate's summary line: how many gated metrics failed, and with paired tests whether each was significant
    or within noise."""
    gated = sum(r["verdict"] != "info" for r in rows)
    failing = [r["metric"] for r in rows if r["verdict"] in FAILING]
    noise = [r["metric"] for r in rows if r["verdict"] == WORSE_NOISE]
    significant = [r["metric"] for r in rows if r["verdict"] == WORSE_SIGNIFICANT]
    line = f"{verdict.upper()}: {len(failing)} of {gated} gated metric(s) worse than tolerance"
    if significant:
        line += (f", {len(significant)} of them significantly ({', '.join(significant)}: worse, significant; "
                 "paired bootstrap 95% interval excludes 0)")
    if noise:
        line += (f"; {len(noise)} worse than tolerance but within noise ({', '.join(noise)}: the paired bootstrap "
                 "95% interval of the difference contains 0), not counted")
    return line


def make_baseline(records, data: dict, eval_cfg: dict, **extra) -> dict:
    """The baseline file: the records plus everything needed to evaluate a new checkpoint identically."""
    return {"baseline": True, "format_version": BASELINE_FORMAT, "created": time.time(), "data": data,
            "eval": eval_cfg, **extra, "records": list(records)}


def read_baseline(path) -> dict:
    """A baseline file, or a plain `galip-bench eval --out` record list (then `data`/`eval` are None)."""
    import json
    path = Path(path)
    if not path.is_file():
        raise UserError(f"baseline {path} not found (make one with `galip-bench regress --checkpoint CKPT "
                        f"--data DATA.yaml --write-baseline {path}`)")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"baseline {path} is not a text file (expected JSON from `galip-bench eval --out` or "
                        "`regress --write-baseline`)") from None
    except json.JSONDecodeError as err:
        raise UserError(f"baseline {path} is not valid JSON ({err.msg}, line {err.lineno})") from None
    if isinstance(obj, list):
        obj = {"baseline": True, "data": None, "eval": None, "records": obj}
    if not isinstance(obj, dict) or not isinstance(obj.get("records"), list):
        raise UserError(f"baseline {path}: expected a list of eval records or an object with `records`")
    bad = [i for i, r in enumerate(obj["records"])
           if not isinstance(r, dict) or not {"protocol", "metric", "value"} <= set(r)]
    if bad:
        raise UserError(f"baseline {path}: record {bad[0]} lacks protocol/metric/value")
    if not obj["records"]:
        raise UserError(f"baseline {path} holds no records")
    return obj


def eval_settings_from_records(records) -> dict:
    """The eval options (protocols, plan, seed, extractor, reference) that produced a list of records."""
    protos = list(dict.fromkeys(r["protocol"] for r in records))
    quality = [r for r in records if r["protocol"] != "speed" and r.get("settings")]
    s = quality[0]["settings"] if quality else {}
    plan = s.get("plan")
    return {"protocols": protos, "num_samples": s.get("plan_num_samples") if plan in ("fixed", "distinct") else None,
            "passes": s.get("passes") if plan == "official" else None, "seed": s.get("seed", 0),
            "batch_size": 64, "extractor": "tiny" if s.get("smoke") else "default",
            "synthesis": s.get("synthesis", SETTING_DEFAULTS["synthesis"]),
            "official_ranks": s.get("plan_ranks", 1) if plan == "official" else 1,
            "reference": "split" if any(str(r["settings"].get("reference", "")).startswith("split") and
                                        getattr(PROTOCOLS.get(r["protocol"]), "reference_source", None) == "galip"
                                        for r in quality) else "auto"}
