"""The regression gate's two jobs, on top of the pure verdict logic (`evaluation.regress`): measure a checkpoint
into a baseline file, and gate a new checkpoint (or records) against a baseline under exactly its settings.

Paired: a baseline keeps its per-sample data (`eval.keep_samples: final`, the default) beside its file, as
`<baseline file>.samples/<protocol>.npy` (and `.reference.npz` for FID-type protocols), named in its records
(`kept_samples`, paths relative to the baseline's folder). The new checkpoint is evaluated with the baseline's plan
and seed, so sample i of both came from the same caption and noise, and each metric that kept samples on both
sides gets a paired bootstrap interval of new − baseline (`evaluation.paired`); the verdict then separates worse
and significant (exit 1) from worse within noise (exit 0)."""
import dataclasses
import sys
import time
from pathlib import Path

from galip_bench.config.io import merge_onto, read_data_section, to_object
from galip_bench.config.schema import DataConfig, EvalConfig
from galip_bench.errors import UserError
from galip_bench.evaluation import paired, regress
from galip_bench.evaluation.evaluate import prepare_evaluation, run_evaluation
from galip_bench.evaluation.protocols import direction

EVAL_KEYS = ("protocols", "num_samples", "passes", "batch_size", "seed", "extractor", "reference", "bootstrap",
             "synthesis", "official_ranks")


def _eval_config(eval_dict) -> EvalConfig:
    return EvalConfig(**{k: eval_dict[k] for k in EVAL_KEYS if k in eval_dict})


def write_baseline(checkpoint, data_cfg, eval_cfg, site, source: dict, announce=None, path=None) -> dict:
    """Evaluate `checkpoint` and return the baseline (records + the data and eval settings that made them). With
    `path` (where the baseline file goes), the per-sample data the evaluation kept is written beside it."""
    source = {k: v for k, v in source.items() if k != "plan_options"}  # they make the baseline's plan here
    prepared = prepare_evaluation(checkpoint, data_cfg, eval_cfg, site, announce=announce, **source)
    records = run_evaluation(prepared)
    if path is not None:
        records = keep_beside(records, prepared.evaluator.kept_samples, path)
    eval_dict = {k: getattr(eval_cfg, k) for k in EVAL_KEYS}
    return regress.make_baseline(records, dataclasses.asdict(data_cfg), eval_dict,
                                 model_config=source.get("model_config"), overrides=list(source.get("overrides", [])),
                                 checkpoint=records[0]["checkpoint"] if records else str(checkpoint))


def samples_folder(path) -> Path:
    """Where a baseline file's per-sample data goes: `<file>.samples/` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".samples")


def keep_beside(records, kept: dict, path) -> list:
    """Write each protocol's kept samples ({protocol: Samples}) to `<path>.samples/<protocol>.npy` and name them
    in its records (relative to the baseline file's folder)."""
    path, fields = Path(path), {}
    for name, samples in kept.items():
        try:
            fields[name] = paired.kept_field(samples, path.parent, Path(samples_folder(path).name) / name)
        except UserError as err:  # the records matter more than their samples: they are written all the same
            print(f"warning: {name}: per-sample data not kept ({err})", file=sys.stderr)
    return [paired.name_kept(r, fields.get(r["protocol"])) for r in records]


def paired_tests(old_records, new_records, old_root, new_samples, device="cpu", unpaired: bool = False) -> tuple:
    """({(protocol, metric): paired_difference result}, {(protocol, metric): why there is none}) for the gated
    metrics of the baseline (`old_root`: the folder its kept-sample paths are relative to). `new_samples(record)`
    gives the new side's Samples of a record, or raises paired.SamplesUnavailable. Each side's kept samples must
    give its record's value back."""
    old, new = regress.index_records(old_records), regress.index_records(new_records)
    tests, notes = {}, {}
    for key, rec in sorted(old.items()):
        if direction(*key) is None or key not in new or not isinstance(rec.get("kept_samples"), dict):
            continue
        try:
            problem = paired.records_problem(rec, new[key], ignore=regress.REDRAWN if unpaired else ())
            base = paired.load_kept(rec["kept_samples"], old_root) if not problem else None
            mine = new_samples(new[key]) if not problem else None
            problem = problem or paired.samples_problem(base, mine)
            if problem:
                notes[key] = f"not paired: {problem}"
                continue
            test = {**paired.paired_difference(base, mine, device=device, paired=not unpaired), "paired": not unpaired}
            paired.check_value(base.statistic, test["base_value"], rec)
            paired.check_value(mine.statistic, test["new_value"], new[key])
        except paired.SamplesUnavailable as err:
            notes[key] = str(err)
            continue
        tests[key] = test
    return tests, notes


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


def refuse_other_plan(plan_options: dict, eval_dict: dict, baseline_path, redraw: bool = False) -> None:
    """A UserError naming the first plan option given on the command line whose value differs from the baseline's:
    a gate evaluates with the baseline's settings, so such an option would be silently ignored. The seed is the
    exception where the gate evaluates (`redraw`): `--seed` re-draws the baseline's plan (`redraw_seed`).
    plan_options: {EvalConfig field: (option as typed, value)}."""
    for field, (option, value) in (plan_options or {}).items():
        if not (redraw and field == "seed") and field in eval_dict and value != eval_dict[field]:
            theirs = "none (each protocol's own plan)" if eval_dict[field] is None else eval_dict[field]
            raise UserError(f"{option} {value} differs from the baseline's {field} {theirs} ({baseline_path}): a "
                            f"gate evaluates with the baseline's own settings; drop {option}, or write a new "
                            "baseline with it (--write-baseline)")


def redraw_seed(plan_options: dict, eval_dict: dict):
    """The seed `--seed` asks for when it differs from the baseline's (a re-draw: the same plan, N and settings with
    other captions and noise, so each difference is tested unpaired), else None."""
    option = (plan_options or {}).get("seed")
    return option[1] if option is not None and option[1] != eval_dict.get("seed") else None


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
    refuse_other_plan(plan_options, baseline_eval(base), baseline_path, redraw=not records_path)
    seed = redraw_seed(plan_options, baseline_eval(base)) if not records_path else None
    if records_path:
        new_records = regress.read_baseline(records_path)["records"]
        device = paired.default_device()

        def new_samples(record):  # `eval --out`-style records whose kept samples lie beside the file
            return paired.load_kept(record.get("kept_samples"), Path(records_path).parent)
    else:
        eval_dict = baseline_eval(base)
        eval_dict["protocols"] = [p for p in eval_dict["protocols"] if protocols is None or p in protocols]
        if seed is not None:
            eval_dict["seed"] = seed
        source = {**source, "model_config": source.get("model_config") or base.get("model_config"),
                  "overrides": list(source.get("overrides") or base.get("overrides") or [])}
        prepared = prepare_evaluation(checkpoint, _baseline_data(base, baseline_path, data_path),
                                      _eval_config(eval_dict), site, announce=announce, **source)
        new_records, device = run_evaluation(prepared), prepared.device
        kept = prepared.evaluator.kept_samples  # the evaluation's per-sample data, in memory

        def new_samples(record):
            if record["protocol"] not in kept:
                raise paired.SamplesUnavailable("samples not kept (new)")
            return paired.for_metric(kept[record["protocol"]], record["metric"])
    redrawn = regress.REDRAWN if seed is not None else ()
    regress.check_settings(old_records, new_records, ignore=redrawn)
    tests, notes = paired_tests(old_records, new_records, Path(baseline_path).parent, new_samples, device,
                                unpaired=seed is not None)
    rows, code = regress.compare(old_records, new_records, tolerances, protocols, paired=tests, notes=notes)
    clean = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in rows]
    return {"verdict": "regressed" if code else "pass", "exit_code": code, "redrawn_seed": seed,
            "baseline": str(Path(baseline_path).resolve()), "new": str(Path(checkpoint or records_path).resolve()),
            "tolerances": tolerance_text, "time": time.time(), "rows": clean, "new_records": new_records}
