"""`galip-bench regress --checkpoint NEW --baseline BASELINE.json`: evaluate NEW with exactly the baseline's protocol
settings, print old / new / delta / verdict, write JSON; exit 0 (nothing regressed beyond tolerance), 1 (something
did) or 2 (usage error). `--write-baseline FILE` makes a baseline from a checkpoint instead."""
import dataclasses
import json
import time
from pathlib import Path

from galip_bench import regress
from galip_bench.atomic import atomic_write_json
from galip_bench.commands.eval import (add_model_source_arguments, add_plan_arguments, announce, data_config,
                                       model_source, protocol_list)
from galip_bench.errors import UserError
from galip_bench.evaluation.evaluate import evaluate_checkpoint
from galip_bench.schema import EvalConfig
from galip_bench.site import load_site


def add_arguments(p):
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", help="the checkpoint to gate (galip-bench or official GALIP .pth)")
    src.add_argument("--records", help="compare already-computed `galip-bench eval --out` records instead")
    p.add_argument("--baseline", help="baseline JSON (from --write-baseline, or an `eval --out` record list)")
    p.add_argument("--write-baseline", metavar="FILE", help="evaluate --checkpoint and write a baseline here")
    p.add_argument("--data", help="YAML with a `data:` section; needed with --write-baseline and for plain "
                                  "record-list baselines (must be the data the baseline was measured on)")
    p.add_argument("--protocols", help="comma-separated subset to gate (default: every protocol of the baseline); "
                                       "with --write-baseline: the protocols to measure "
                                       "(default fid_galip,clip_score_galip)")
    p.add_argument("--tolerance", default="", help="how much worse each metric may get, e.g. "
                                                  "fid_galip=+0.3,clip_score_galip=-0.002,latency_ms=+10%%")
    add_plan_arguments(p)  # with --write-baseline; a gate re-evaluates with the baseline's own plan
    p.add_argument("--out", default="regress.json", help="where to write the verdict JSON (default regress.json)")
    add_model_source_arguments(p)


def _data_from_dict(d, source):
    from galip_bench.config import merge_onto, to_object
    from galip_bench.data.config import DataConfig
    return to_object(merge_onto(DataConfig, d, source=source), source)


_protocols = protocol_list
EVAL_KEYS = ("protocols", "num_samples", "passes", "batch_size", "seed", "extractor", "reference")


def _evaluate(args, data_cfg, eval_dict):
    eval_cfg = EvalConfig(**{k: eval_dict[k] for k in EVAL_KEYS if k in eval_dict})
    return evaluate_checkpoint(args.checkpoint, data_cfg, eval_cfg, load_site(args.bench), announce=announce,
                               **model_source(args))


def write_baseline(args) -> int:
    if not args.checkpoint:
        raise UserError("--write-baseline needs --checkpoint (the checkpoint to measure)")
    if not args.data:
        raise UserError("--write-baseline needs --data (the YAML `data:` section to evaluate on)")
    data_cfg = data_config(args.data)
    eval_dict = {"protocols": _protocols(args.protocols) or ["fid_galip", "clip_score_galip"],
                 "num_samples": args.num, "passes": args.passes, "batch_size": args.batch, "seed": args.seed,
                 "extractor": args.extractor, "reference": args.reference}
    records = _evaluate(args, data_cfg, eval_dict)
    baseline = regress.make_baseline(records, dataclasses.asdict(data_cfg), eval_dict,
                                     model_config=args.model_config, overrides=list(args.overrides),
                                     checkpoint=records[0]["checkpoint"] if records else str(args.checkpoint))
    atomic_write_json(args.write_baseline, baseline)
    for r in records:
        print(f"{r['protocol']:<18} {r['metric']:<18} {r['value']:.6g}")
    print(f"wrote baseline with {len(records)} record(s) to {args.write_baseline}")
    return 0


def run(args) -> int:
    if args.write_baseline:
        if args.baseline or args.records:
            raise UserError("--write-baseline makes a baseline: give --checkpoint and --data, not --baseline/--records")
        return write_baseline(args)
    if not args.baseline:
        raise UserError("give --baseline BASELINE.json (or --write-baseline FILE to make one)")
    if not (args.checkpoint or args.records):
        raise UserError("give --checkpoint NEW (or --records NEW.json) to compare with the baseline")
    tolerances = regress.parse_tolerances(args.tolerance)
    base = regress.read_baseline(args.baseline)
    old_records = base["records"]
    protocols = _protocols(args.protocols) or None
    regress.compare(old_records, [], tolerances, protocols)  # unknown protocols / tolerances fail before any work
    if args.records:
        new_records = regress.read_baseline(args.records)["records"]
    else:
        eval_dict = dict(base.get("eval") or regress.eval_settings_from_records(old_records))
        eval_dict["protocols"] = [p for p in eval_dict["protocols"] if protocols is None or p in protocols]
        if base.get("data") is not None:
            if args.data:
                raise UserError("the baseline records its own data config; drop --data (it is evaluated on exactly "
                                "the baseline's data)")
            data_cfg = _data_from_dict(base["data"], f"{args.baseline} (data)")
        elif args.data:
            data_cfg = data_config(args.data)
        else:
            raise UserError(f"{args.baseline} is a plain record list without its data config: pass --data DATA.yaml "
                            "(the data it was measured on), or re-create it with --write-baseline")
        from galip_bench.data import dataset_id
        wanted = {r.get("dataset") for r in old_records if r.get("dataset")}
        if wanted and data_cfg.size is not None and dataset_id(data_cfg) not in wanted:  # else checked after
            raise UserError(f"the data config gives dataset {dataset_id(data_cfg)} but the baseline was measured on "
                            f"{', '.join(sorted(wanted))}")
        if base.get("model_config") and not args.model_config:
            args.model_config = base["model_config"]
        if base.get("overrides") and not args.overrides:
            args.overrides = list(base["overrides"])
        new_records = _evaluate(args, data_cfg, eval_dict)
    regress.check_settings(old_records, new_records)
    rows, code = regress.compare(old_records, new_records, tolerances, protocols)
    print(regress.format_table(rows))
    verdict = "REGRESSED" if code else "PASS"
    print(f"{verdict}: {sum(r['verdict'] in ('regressed', 'missing') for r in rows)} of "
          f"{sum(r['verdict'] != 'info' for r in rows)} gated metric(s) worse than tolerance")
    result = {"verdict": verdict.lower(), "exit_code": code, "baseline": str(Path(args.baseline).resolve()),
              "new": str(Path(args.checkpoint or args.records).resolve()), "tolerances": args.tolerance,
              "time": time.time(), "rows": rows,
              "new_records": new_records}
    clean = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in rows]
    result["rows"] = clean
    atomic_write_json(args.out, json.loads(json.dumps(result, default=str)))
    print(f"wrote {args.out}")
    return code
