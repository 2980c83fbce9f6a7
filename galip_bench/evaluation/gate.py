"""The regression gate's two jobs, on top of the pure verdict logic (`evaluation.regress`): measure a checkpoint
into a baseline file, and gate a new checkpoint (or records) against a baseline under exactly its settings."""
import dataclasses
import time
from pathlib import Path

from galip_bench.config.io import merge_onto, read_data_section, to_object
from galip_bench.config.schema import DataConfig, EvalConfig
from galip_bench.errors import UserError
from galip_bench.evaluation import regress
from galip_bench.evaluation.evaluate import evaluate_checkpoint

EVAL_KEYS = ("protocols", "num_samples", "passes", "batch_size", "seed", "extractor", "reference", "bootstrap",
             "synthesis", "official_ranks")


def _eval_config(eval_dict) -> EvalConfig:
    return EvalConfig(**{k: eval_dict[k] for k in EVAL_KEYS if k in eval_dict})


def write_baseline(checkpoint, data_cfg, eval_cfg, site, source: dict, announce=None) -> dict:
    """Evaluate `checkpoint` and return the baseline (records + the data and eval settings that made them)."""
    source = {k: v for k, v in source.items() if k != "plan_options"}  # they make the baseline's plan here
    records = evaluate_checkpoint(checkpoint, data_cfg, eval_cfg, site, announce=announce, **source)
    eval_dict = {k: getattr(eval_cfg, k) for k in EVAL_KEYS}
    return regress.make_baseline(records, dataclasses.asdict(data_cfg), eval_dict,
                                 model_config=source.get("model_config"), overrides=list(source.get("overrides", [])),
                                 checkpoint=records[0]["checkpoint"] if records else str(checkpoint))


def _baseline_data(base: dict, baseline_path, data_path) -> DataConfig:
    if base.get("data") is not None:
        if data_path:
            raise UserError("the baseline records its own data config; drop --data (it is evaluated on exactly "
                            "the baseline's data)")
        source = f"{baseline_path} (data)"
        return to_object(merge_onto(DataConfig, base["data"], source=source), source)
    if data_path:
        return read_data_section(data_path)
    raise UserError(f"{baseline_path} is a plain record list without its data config: pass --data DATA.yaml "
                    "(the data it was measured on), or re-create it with --write-baseline")


def baseline_eval(base: dict) -> dict:
    """The eval options a baseline was measured with: its `eval` section, completed from its records' settings for
    what a baseline of an earlier version did not write (synthesis, official_ranks) or a plain record list."""
    defaults = {k: getattr(EvalConfig(), k) for k in EVAL_KEYS}
    return {**defaults, **regress.eval_settings_from_records(base["records"]), **(base.get("eval") or {})}


def refuse_other_plan(plan_options: dict, eval_dict: dict, baseline_path) -> None:
    """A UserError naming the first plan option given on the command line whose value differs from the baseline's:
    a gate evaluates with the baseline's settings, so such an option would be silently ignored.
    plan_options: {EvalConfig field: (option as typed, value)}."""
    for field, (option, value) in (plan_options or {}).items():
        if field in eval_dict and value != eval_dict[field]:
            theirs = "none (each protocol's own plan)" if eval_dict[field] is None else eval_dict[field]
            raise UserError(f"{option} {value} differs from the baseline's {field} {theirs} ({baseline_path}): a "
                            f"gate evaluates with the baseline's own settings; drop {option}, or write a new "
                            "baseline with it (--write-baseline)")


def gate(baseline_path, site, source: dict, *, checkpoint=None, records_path=None, data_path=None, protocols=None,
         tolerance_text: str = "", announce=None) -> dict:
    """Compare a new checkpoint (evaluated with the baseline's own settings) or new records with a baseline.
    Returns {verdict, exit_code, rows, new_records, ...}; usage errors and settings that differ are UserErrors, as
    is a plan option in `source["plan_options"]` (given on the command line) that differs from the baseline's."""
    source = dict(source)
    plan_options = source.pop("plan_options", None)
    tolerances = regress.parse_tolerances(tolerance_text)
    base = regress.read_baseline(baseline_path)
    old_records = base["records"]
    regress.compare(old_records, [], tolerances, protocols)  # unknown protocols / tolerances fail before any work
    refuse_other_plan(plan_options, baseline_eval(base), baseline_path)
    if records_path:
        new_records = regress.read_baseline(records_path)["records"]
    else:
        eval_dict = baseline_eval(base)
        eval_dict["protocols"] = [p for p in eval_dict["protocols"] if protocols is None or p in protocols]
        source = {**source, "model_config": source.get("model_config") or base.get("model_config"),
                  "overrides": list(source.get("overrides") or base.get("overrides") or [])}
        new_records = evaluate_checkpoint(checkpoint, _baseline_data(base, baseline_path, data_path),
                                          _eval_config(eval_dict), site, announce=announce, **source)
    regress.check_settings(old_records, new_records)
    rows, code = regress.compare(old_records, new_records, tolerances, protocols)
    clean = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in rows]
    return {"verdict": "regressed" if code else "pass", "exit_code": code,
            "baseline": str(Path(baseline_path).resolve()), "new": str(Path(checkpoint or records_path).resolve()),
            "tolerances": tolerance_text, "time": time.time(), "rows": clean, "new_records": new_records}
