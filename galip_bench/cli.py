"""galip-bench: train GALIP ablation grids locally or on SLURM, evaluate any GALIP checkpoint with the paper's
own protocols (FID, zero-shot FID, CLIP score) and the standard ones (FID, KID, clean-fid, speed), gate new
checkpoints against a baseline, and report the results as tables and plots."""
import argparse
import importlib
import sys
import traceback

from galip_bench.errors import UserError

EPILOG = """first steps:
  galip-bench grids                                          the shipped grids and what they compare
  galip-bench run ablations/smoke.yaml --profile smoke       the embedded default: CPU, no data, no weights
  galip-bench run ablations/paper_table1_coco.yaml --dry-run what a paper grid will do, before any GPU time
  galip-bench eval --checkpoint C --data D.yaml              evaluate a checkpoint (ours or official)
add --debug to any command for the traceback of an error"""

# name -> (module under galip_bench.commands, one-line help)
COMMANDS = {
    "grids": ("grids", "list the shipped ablation grids: what each compares and its runs"),
    "run": ("run", "train and evaluate an ablation grid from YAML (locally or on SLURM); --dry-run shows the plan"),
    "train": ("train", "train a single run"),
    "eval": ("eval", "evaluate a checkpoint (ours or official) with named metric protocols"),
    "report": ("report", "build tables and plots for a grid"),
    "regress": ("regress", "regression-gate a checkpoint against a baseline"),
    "speed": ("speed", "measure synthesis latency and throughput"),
    "bench": ("bench", "measure synthesis, training and evaluation speed, faithful and fast paths side by side"),
    "status": ("status", "show the state of each run of a grid"),
    "convert": ("convert", "convert checkpoints between the official GALIP format and ours"),
    "data": ("data", "validate a dataset (data check CONFIG) or write a rehearsal COCO tree (data fake-coco DIR)"),
    "weights": ("weights", "list the weight files each metric protocol needs and which were found; `weights build "
                           "shapes` trains the shapes benchmark's CLIP and scene reader"),
    "params": ("params", "print trainable/frozen parameter counts of a model config"),
}


# help for options a command declares without one (shared names, one meaning each); (command, dest) wins over dest
OPTION_HELP = {
    "overrides": "model override for the checkpoint's config (an official one, or a random init), e.g. --set "
                 "model.ngf=32 (repeatable); a galip-bench checkpoint carries its own config",
    ("train", "overrides"): "override for the run, e.g. --set train.steps=500 (repeatable; as `run --set`)",
    "allow_download": "let metric weights download when missing",
    "allow_clip_mismatch": "load an official checkpoint although its CLIP-ViT copy differs from --clip-weights",
    "device": "where to run: auto (the GPU when visible), cpu, cuda, cuda:1 ...",
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's defaults formatter, minus its repeats: an option whose help already says its default, or whose
    default is nothing (None, False, an empty list or text), is shown as written; the others get `(default: X)`."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if "default" in text.lower() or default is None or default is False or default == argparse.SUPPRESS or \
                (isinstance(default, (list, tuple, str)) and not default):
            return text
        return super()._get_help_string(action)


def fill_missing_help(command: str, parser: argparse.ArgumentParser) -> None:
    """Give every option declared without help the shared text of OPTION_HELP."""
    for action in parser._actions:
        if action.help is None and action.option_strings:
            action.help = OPTION_HELP.get((command, action.dest), OPTION_HELP.get(action.dest))


def build_parser(command: str = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s module is imported (all of them when None), so a command starts without
    importing what the others need (torch, open_clip, matplotlib...)."""
    parser = argparse.ArgumentParser(prog="galip-bench", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        if command is None or name == command:
            importlib.import_module(f"galip_bench.commands.{module}").add_arguments(p)
            fill_missing_help(name, p)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line, not only before the subcommand
    argv = [a for a in argv if a != "--debug"]
    command = next((a for a in argv if not a.startswith("-")), "")
    parser = build_parser(command if command in COMMANDS else "")
    args = parser.parse_args(argv)
    args.debug = debug
    if args.command is None:
        parser.print_help()
        return 2
    module, _ = COMMANDS[args.command]
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
