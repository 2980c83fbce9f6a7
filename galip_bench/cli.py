"""`python -m galip_bench` / `galip-bench`: one subcommand per module under galip_bench/commands."""
import argparse
import importlib
import sys
import traceback

from galip_bench.errors import UserError

# name -> (module under galip_bench.commands or None while not delivered, one-line help)
COMMANDS = {
    "run": ("run", "train and evaluate an ablation grid from YAML (locally or on SLURM)"),
    "train": ("train", "train a single run"),
    "eval": ("eval", "evaluate a checkpoint (ours or official) with named metric protocols"),
    "report": ("report", "build tables and plots for a grid"),
    "regress": ("regress", "regression-gate a checkpoint against a baseline"),
    "speed": ("speed", "measure synthesis latency and throughput"),
    "status": ("status", "show the state of each run of a grid"),
    "convert": ("convert", "convert checkpoints between the official GALIP format and ours"),
    "data": ("data", "validate a dataset and write a sample grid: data check CONFIG"),
    "weights": ("weights", "list the weight files each metric protocol needs and which were found"),
    "params": ("params", "print trainable/frozen parameter counts of a model config"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="galip-bench", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        if module is None:
            p = sub.add_parser(name, help=f"{help_text} (not available yet)", add_help=False)
            p.add_argument("rest", nargs=argparse.REMAINDER)
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(f"galip_bench.commands.{module}").add_arguments(p)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line, not only before the subcommand
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    args.debug = debug
    if args.command is None:
        parser.print_help()
        return 2
    module, _ = COMMANDS[args.command]
    if module is None:
        print(f"galip-bench {args.command}: not available yet in this version", file=sys.stderr)
        return 2
    try:
        return importlib.import_module(f"galip_bench.commands.{module}").run(args) or 0
    except UserError as err:
        if args.debug:
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
