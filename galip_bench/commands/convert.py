"""`galip-bench convert IN OUT`: an official GALIP checkpoint into ours, or ours into the official layout."""
from galip_bench.atomic import atomic_torch_save
from galip_bench.checkpoint import config_of, load_nets, load_official_nets, read_checkpoint, save_checkpoint
from galip_bench.clip_weights import build_clip
from galip_bench.errors import UserError
from galip_bench.modelcfg import model_config
from models import GALIP


def add_arguments(p):
    p.add_argument("input", help="checkpoint to read (official {'model': {netG, netD, netC}} or galip-bench)")
    p.add_argument("output", help="checkpoint to write")
    p.add_argument("--to-official", action="store_true",
                   help="write the official layout (netG includes the frozen CLIP-ViT as mapping.CLIP_ViT.*)")
    p.add_argument("--config", help="YAML with a `model:` section describing the official checkpoint "
                                    "(default: the paper's full GALIP)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="model override for an official input, e.g. --set model.ngf=32")
    p.add_argument("--clip-weights", help="OpenAI CLIP weights, needed by --to-official to fill mapping.CLIP_ViT.*")


def run(args) -> int:
    kind, ckpt = read_checkpoint(args.input)
    if args.to_official:
        if kind != "ours":
            raise UserError(f"{args.input} is already in the official layout")
        cfg = config_of(ckpt, args.input)
        if cfg.g_clip_vit and not args.clip_weights and cfg.clip.model != "tiny":
            raise UserError("--to-official needs --clip-weights PATH: the official netG stores the frozen "
                            "CLIP-ViT weights (mapping.CLIP_ViT.*)")
        cfg.clip.pretrained = args.clip_weights or cfg.clip.pretrained
        galip = GALIP(cfg, clip=build_clip(cfg.clip, taps=cfg.d_taps))
        load_nets(galip, ckpt, args.input)
        official = galip.export_official()
        official["epoch"] = ckpt.get("extra", {}).get("epoch", 0)
        atomic_torch_save(official, args.output)
        print(f"wrote official-layout checkpoint {args.output}")
        return 0
    if kind != "official":
        raise UserError(f"{args.input} is already a galip-bench checkpoint (use --to-official for the reverse)")
    cfg = model_config(args.config, args.overrides)
    clip_cfg = cfg.clip if cfg.clip.model == "tiny" else type(cfg.clip)(cfg.clip.model, "random", cfg.clip.preprocess)
    galip = GALIP(cfg, clip=build_clip(clip_cfg, taps=cfg.d_taps))  # CLIP weights are not part of our checkpoint
    load_official_nets(galip, ckpt, args.input)
    extra = {"converted_from": str(args.input), "epoch": ckpt.get("epoch", 0)}
    save_checkpoint(args.output, galip, step=0, rng={}, extra=extra)
    print(f"wrote galip-bench checkpoint {args.output} (model config: {'paper default' if not args.config else args.config})")
    return 0
