"""`galip-bench convert IN OUT`: an official GALIP checkpoint into ours, or ours into the official layout."""
from galip_bench.checkpoints import load_model, read_checkpoint, save_checkpoint
from galip_bench.checkpoints.format import system_of
from galip_bench.errors import UserError
from galip_bench.files import atomic_torch_save, check_output_file


def add_arguments(p):
    p.add_argument("input", help="checkpoint to read (official {'model': {netG, netD, netC}} or galip-bench)")
    p.add_argument("output", help="checkpoint to write")
    p.add_argument("--to-official", action="store_true",
                   help="write the official layout (netG includes the frozen CLIP-ViT as mapping.CLIP_ViT.*)")
    p.add_argument("--config", help="YAML with a `model:` section describing the official checkpoint "
                                    "(default: the paper's full GALIP)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="model override for an official input, e.g. --set model.ngf=32")
    p.add_argument("--clip-weights", help="OpenAI CLIP weights: needed by --to-official to fill mapping.CLIP_ViT.*; "
                                          "for an official input, checked against its mapping.CLIP_ViT.* copy")
    p.add_argument("--allow-clip-mismatch", action="store_true",
                   help="convert an official checkpoint whose CLIP-ViT copy differs from --clip-weights")


def run(args) -> int:
    check_output_file(args.output, "OUTPUT")  # before reading (and converting) the input
    kind, ckpt = read_checkpoint(args.input)
    if kind == "ours" and system_of(ckpt) == "clipgen":
        raise UserError(f"{args.input} is a CLIP-GEN checkpoint: convert handles GALIP checkpoints only")
    if args.to_official:
        if kind != "ours":
            raise UserError(f"{args.input} is already in the official layout")
        model_cfg = ckpt.get("model_config") or {}
        needs_clip = model_cfg.get("g_clip_vit", True) and (model_cfg.get("clip") or {}).get("model") != "tiny"
        if needs_clip and not args.clip_weights:
            raise UserError("--to-official needs --clip-weights PATH: the official netG stores the frozen "
                            "CLIP-ViT weights (mapping.CLIP_ViT.*)")
        loaded = load_model(args.input, clip_weights=args.clip_weights)
        official = loaded.galip.export_official()
        official["epoch"] = ckpt.get("extra", {}).get("epoch", 0)
        atomic_torch_save(official, args.output)
        print(f"wrote official-layout checkpoint {args.output}")
        return 0
    if kind != "official":
        raise UserError(f"{args.input} is already a galip-bench checkpoint (use --to-official for the reverse)")
    # our checkpoints do not store the CLIP: without --clip-weights a random-init one stands in (nothing to check)
    loaded = load_model(args.input, model_config=args.config, overrides=args.overrides,
                        clip_weights=args.clip_weights or _random_clip(args), allow_clip_mismatch=args.allow_clip_mismatch)
    if loaded.galip.cfg.clip.pretrained == "random":
        loaded.galip.cfg.clip.pretrained = None  # the stand-in is not the model's CLIP: eval asks for the weights
    extra = {"converted_from": str(args.input), "epoch": ckpt.get("epoch", 0)}
    save_checkpoint(args.output, loaded.galip, step=0, extra=extra)
    print(f"wrote galip-bench checkpoint {args.output} (model config: {args.config or 'paper default'})")
    return 0


def _random_clip(args):
    from galip_bench.config.model import model_config
    return None if model_config(args.config, args.overrides).clip.model == "tiny" else "random"
