"""Command-line options shared by several commands (not a command itself): the sample plan, the model source, and
their translation into library arguments."""
import sys

from galip_bench.config.schema import EvalConfig


def add_plan_arguments(p):
    """The sample plan and extractor options (shared by eval and regress --write-baseline)."""
    p.add_argument("--num", type=int, help="N samples cycling over the test images (default: each protocol's plan, "
                                           "for most the official test loop)")
    p.add_argument("--passes", type=int, help="passes of the official test loop (default: the dataset's "
                                              "sample_times: COCO 1, CUB 12)")
    p.add_argument("--official-ranks", type=int, default=1,
                   help="the official plan's sampler processes: 1 = the released test.sh, 8 = the test inside "
                        "train.py on 8 GPUs (CUB: 34,560 vs 30,720 images)")
    p.add_argument("--batch", type=int, default=64, help="generation batch size (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise stream and caption choices")
    p.add_argument("--reference", choices=["auto", "npz", "split"], default="auto",
                   help="GALIP protocols' statistics: GALIP's released npz when present (auto), required (npz), "
                        "or the test split (split)")
    p.add_argument("--bootstrap", type=int, default=100,
                   help="resamples of the generated features for each FID's 95%% interval (0: off; default 100)")
    add_synthesis_argument(p)
    p.add_argument("--extractor", choices=["default", "tiny"], default="default",
                   help="tiny: small random-init extractors (tests, smoke; not comparable to published numbers)")


def add_synthesis_argument(p):
    p.add_argument("--synthesis", choices=["faithful", "fast"], default="faithful",
                   help="faithful: the official numerics (fp32; TF32 on a GPU, as the official environment); fast: "
                        "bf16 autocast, channels_last, torch.compile and CUDA graphs on a GPU (recorded; "
                        "default: faithful)")


def add_model_source_arguments(p):
    """How to build the model of a checkpoint and where to run it (shared by eval, regress and speed)."""
    p.add_argument("--model-config", help="YAML `model:` section describing an official checkpoint")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--clip-weights", help="OpenAI CLIP ViT-B/32 weights (overrides the checkpoint's model.clip.pretrained)")
    p.add_argument("--allow-clip-mismatch", action="store_true",
                   help="load an official checkpoint although its CLIP-ViT copy differs from --clip-weights")
    p.add_argument("--device", default="auto")
    p.add_argument("--bench", help="site config (default: $GALIP_BENCH_CONFIG or ./bench.yaml)")
    p.add_argument("--allow-download", action="store_true", help="let metric weights download when missing")


def protocol_list(text) -> list:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def eval_config(args, protocols) -> EvalConfig:
    return EvalConfig(protocols=protocols, num_samples=args.num, passes=args.passes, batch_size=args.batch,
                      seed=args.seed, extractor=args.extractor, reference=args.reference, bootstrap=args.bootstrap,
                      synthesis=args.synthesis, official_ranks=args.official_ranks)


def model_source(args) -> dict:
    return {"device": args.device, "model_config": args.model_config, "overrides": list(args.overrides),
            "clip_weights": args.clip_weights, "allow_clip_mismatch": args.allow_clip_mismatch,
            "allow_download": args.allow_download}


def announce(lines) -> None:
    print("evaluation plan:\n" + "\n".join(f"  {line}" for line in lines), file=sys.stderr)
