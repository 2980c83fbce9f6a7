"""`galip-bench regress --checkpoint NEW --baseline BASELINE.json`: evaluate NEW with exactly the baseline's protocol
settings, print old / new / delta / verdict, write JSON; exit 0 (nothing regressed beyond tolerance), 1 (something
did) or 2 (usage error). `--write-baseline FILE` makes a baseline from a checkpoint instead, with the evaluation's
per-sample data in FILE.samples/ beside it: the gate then tests each difference with a paired bootstrap interval and
tells `worse, significant` (exit 1) from `worse, within noise` (exit 0)."""
import json
from pathlib import Path

from galip_bench.commands.options import (add_model_source_arguments, add_plan_arguments, announce, eval_config,
                                          model_source, protocol_list)
from galip_bench.config.io import read_data_section
from galip_bench.config.site import load_site
from galip_bench.errors import UserError
from galip_bench.evaluation import gate, regress
from galip_bench.devices import check_device
from galip_bench.files import atomic_write_json, check_output_file, require_file


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
    p.add_argument("--out", help="where to write the verdict JSON (default: regress.json beside the baseline)")
    add_model_source_arguments(p)


def _write_baseline(args) -> int:
    check_output_file(args.write_baseline, "--write-baseline")
    if args.baseline or args.records:
        raise UserError("--write-baseline makes a baseline: give --checkpoint and --data, not --baseline/--records")
    if not args.checkpoint or not args.data:
        raise UserError("--write-baseline needs --checkpoint (the checkpoint to measure) and --data (the YAML "
                        "`data:` section to evaluate on)")
    eval_cfg = eval_config(args, protocol_list(args.protocols) or ["fid_galip", "clip_score_galip"])
    baseline = gate.write_baseline(args.checkpoint, read_data_section(args.data), eval_cfg, load_site(args.bench),
                                   model_source(args), announce=announce, path=args.write_baseline)
    atomic_write_json(args.write_baseline, baseline)
    for r in baseline["records"]:
        print(f"{r['protocol']:<18} {r['metric']:<18} {r['value']:.6g}")
    kept = {r["protocol"]: r["kept_samples"] for r in baseline["records"] if r.get("kept_samples")}
    if kept:
        size = sum((Path(args.write_baseline).parent / f["file"]).stat().st_size for f in kept.values())
        print(f"kept the per-sample data of {', '.join(kept)} in {gate.samples_folder(args.write_baseline)} "
              f"({size / 1e6:,.1f} MB): a gate pairs its differences")
    print(f"wrote baseline with {len(baseline['records'])} record(s) to {args.write_baseline}")
    return 0


def run(args) -> int:
    check_device(args.device, "--device")  # before any evaluation
    if args.out:
        check_output_file(args.out, "--out")
    if args.write_baseline:
        return _write_baseline(args)
    if not args.baseline:
        raise UserError("give --baseline BASELINE.json (or --write-baseline FILE to make one)")
    if not (args.checkpoint or args.records):
        raise UserError("give --checkpoint NEW (or --records NEW.json) to compare with the baseline")
    require_file(args.baseline, "a baseline JSON (from regress --write-baseline, or an `eval --out` record list)")
    if args.records:
        require_file(args.records, "an `eval --out` record list")
    if not args.out:
        check_output_file(Path(args.baseline).with_name("regress.json"), "the verdict file (--out)")
    result = gate.gate(args.baseline, load_site(args.bench), model_source(args), checkpoint=args.checkpoint,
                       records_path=args.records, data_path=args.data, protocols=protocol_list(args.protocols) or None,
                       tolerance_text=args.tolerance, announce=announce)
    rows = result["rows"]
    if result.get("redrawn_seed") is not None:
        print(f"re-drawn: the baseline's plan with --seed {result['redrawn_seed']} (other captions and noise): each "
              "difference is tested with an unpaired bootstrap interval")
    print(regress.format_table(rows))
    print(regress.verdict_line(result["verdict"], rows))
    out = Path(args.out) if args.out else Path(args.baseline).with_name("regress.json")
    atomic_write_json(out, json.loads(json.dumps(result, default=str)))
    print(f"wrote {out}")
    return result["exit_code"]
