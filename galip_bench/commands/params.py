"""`galip-bench params`: trainable and frozen parameter counts of a model config (or of every switch combination)."""
from galip_bench.checkpoints.params import parameter_table
from galip_bench.config.model import model_config


def add_arguments(p):
    p.add_argument("--config", help="YAML file with a `model:` section (default: the paper's full GALIP)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="model override, e.g. --set model.prompts=false (repeatable)")
    p.add_argument("--switches", action="store_true", help="one row per combination of the ablation switches")


def run(args) -> int:
    table = parameter_table(model_config(args.config, args.overrides), args.switches)
    if args.switches:
        print(table.to_string(index=False))
    else:
        print(table.to_string(formatters={"parameters": "{:,}".format}))
    return 0
