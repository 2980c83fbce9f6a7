"""`galip-bench params`: trainable and frozen parameter counts of a model config (or of every switch combination);
`--system clipgen`: CLIP-GEN's nets beside HFAiLab/clip-gen's."""
from galip_bench.checkpoints.params import clipgen_parameter_table, parameter_table
from galip_bench.config.model import clipgen_model_config, model_config
from galip_bench.errors import UserError


def add_arguments(p):
    p.add_argument("--system", choices=("galip", "clipgen"), default="galip",
                   help="galip (default) or clipgen: the CLIP-GEN baseline's VQGAN, discriminator and prior beside "
                        "HFAiLab/clip-gen's counts")
    p.add_argument("--config", help="YAML file with a `model:` section (clipgen: `clipgen.model:`; default: the "
                                    "paper's full GALIP, or CLIP-GEN as HFAiLab/clip-gen)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="model override, e.g. --set model.prompts=false, or with --system clipgen "
                        "--set vqgan.codebook=ema (repeatable)")
    p.add_argument("--switches", action="store_true", help="one row per combination of the ablation switches")


def run(args) -> int:
    if args.system == "clipgen":
        if args.switches:
            raise UserError("--switches lists GALIP's ablation switches; CLIP-GEN has none")
        table = clipgen_parameter_table(clipgen_model_config(args.config, args.overrides))
        print(table.to_string(formatters={c: "{:,}".format for c in table.columns}))
        return 0
    table = parameter_table(model_config(args.config, args.overrides), args.switches)
    if args.switches:
        print(table.to_string(index=False))
    else:
        print(table.to_string(formatters={"parameters": "{:,}".format}))
    return 0
