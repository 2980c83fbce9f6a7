"""Command-line options shared by several commands (not a command itself): the sample plan, the model source, and
their translation into library arguments."""
import argparse
import sys

from galip_bench.config.schema import EvalConfig

# plan option (its dest) -> the EvalConfig field it sets; what `regress` compares with its baseline's
PLAN_FIELDS = {"num": "num_samples", "passes": "passes", "official_ranks": "official_ranks", "batch": "batch_size",
               "seed": "seed", "reference": "reference", "bootstrap": "bootstrap", "synthesis": "synthesis",
               "extractor": "extractor"}


class Given(argparse.Action):
    """Stores the value like `store` and notes that the option was given on the command line (in
    `namespace.plan_given`), so that a command can tell an explicit value from its default."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.plan_given = {*(getattr(namespace, "plan_given", None) or ()), self.dest}


def given_plan_options(args) -> dict:
    """{option dest: value} of the plan options given on the command line (not their defaults)."""
    return {dest: getattr(args, dest) for dest in sorted(getattr(args, "plan_given", None) or ())}


def add_plan_arguments(p):
    """The sample plan and extractor options (shared by eval and regress --write-baseline; `regress` against a
    baseline refuses one that differs from the baseline's)."""
    p.add_argument("--num", type=int, action=Given,
                   help="N samples cycling over the test images (default: each protocol's plan, for most the "
                        "official test loop)")
    p.add_argument("--passes", type=int, action=Given, help="passes of the official test loop (default: the "
                                                            "dataset's sample_times: COCO 1, CUB 12)")
    p.add_argument("--official-ranks", type=int, default=1, action=Given,
                   help="the official plan's sampler processes: 1 = the released test.sh, 8 = the test inside "
                        "train.py on 8 GPUs (CUB: 34,560 vs 30,720 images)")
    p.add_argument("--batch", type=int, default=64, action=Given, help="generation batch size (default 64)")
    p.add_argument("--seed", type=int, default=0, action=Given, help="seed of the noise stream and caption choices")
    p.add_argument("--reference", choices=["auto", "npz", "split"], default="auto", action=Given,
                   help="GALIP protocols' statistics: GALIP's released npz when present (auto), required (npz), "
                        "or the test split (split)")
    p.add_argument("--bootstrap", type=int, default=100, action=Given,
                   help="resamples of the generated features for each FID's 95%% interval (0: off; default 100)")
    add_synthesis_argument(p, action=Given)
    p.add_argument("--extractor", choices=["default", "tiny"], default="default", action=Given,
                   help="default: each protocol's own extractor and weights; tiny: small random-init stand-ins "
                        "(tests, smoke; not comparable to published numbers)")


def add_synthesis_argument(p, action="store"):
    p.add_argument("--synthesis", choices=["faithful", "fast"], default="faithful", action=action,
                   help="faithful: the official numerics (fp32; TF32 on a GPU, as the official environment); fast: "
                        "bf16 autocast, channels_last, torch.compile and CUDA graphs on a GPU (recorded; "
                        "default: faithful)")


def add_model_source_arguments(p):
    """How to build the model of a checkpoint and where to run it (shared by eval, regress and speed)."""
    p.add_argument("--model-config", help="YAML `model:` section describing an official checkpoint")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="model override for an official checkpoint's config (with --model-config), e.g. --set "
                        "model.ngf=32 (repeatable); a galip-bench checkpoint carries its own config, but a CLIP-GEN "
                        "one takes its sampling, e.g. --set clipgen.model.sampling.candidates=64")
    p.add_argument("--clip-weights",
                   help="OpenAI CLIP ViT-B/32 weights (overrides the checkpoint's model.clip.pretrained)")
    p.add_argument("--allow-clip-mismatch", action="store_true",
                   help="load an official checkpoint although its CLIP-ViT copy differs from --clip-weights")
    p.add_argument("--device", default="auto", help="where to run: auto (the GPU when visible), cpu, cuda, cuda:1 ...")
    p.add_argument("--bench", help="site config (default: $GALIP_BENCH_CONFIG or ./bench.yaml)")
    p.add_argument("--allow-download", action="store_true", help="let metric weights download when missing")


def protocol_list(text) -> list:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def eval_config(args, protocols) -> EvalConfig:
    return EvalConfig(protocols=protocols, num_samples=args.num, passes=args.passes, batch_size=args.batch,
                      seed=args.seed, extractor=args.extractor, reference=args.reference, bootstrap=args.bootstrap,
                      synthesis=args.synthesis, official_ranks=args.official_ranks)


def model_source(args) -> dict:
    """The model-source keywords of evaluate_checkpoint; for `regress`, also `plan_options` (the plan options given
    on its command line), which the gate compares with its baseline's (evaluation.gate pops them)."""
    source = {"device": args.device, "model_config": args.model_config, "overrides": list(args.overrides),
              "clip_weights": args.clip_weights, "allow_clip_mismatch": args.allow_clip_mismatch,
              "allow_download": args.allow_download}
    if getattr(args, "command", None) == "regress":
        source["plan_options"] = {PLAN_FIELDS[dest]: (f"--{dest.replace('_', '-')}", value)
                                  for dest, value in given_plan_options(args).items()}
    return source


def announce(lines) -> None:
    print("evaluation plan:\n" + "\n".join(f"  {line}" for line in lines), file=sys.stderr)
