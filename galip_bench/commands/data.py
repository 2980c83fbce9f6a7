"""`galip-bench data check CONFIG`: validate a dataset (every split decodes its first samples, captions exist), print
its size, and write a sample grid. `galip-bench data fake-coco DIR --images N`: write a rehearsal COCO-layout tree of
full-size JPEGs."""
import tempfile
from pathlib import Path

from galip_bench.config.io import dotlist, merge_onto, read_data_section, to_object
from galip_bench.config.resolve import canvas_size
from galip_bench.config.schema import DataConfig
from galip_bench.data.check import check_dataset
from galip_bench.data.fake import write_fake_coco
from galip_bench.errors import UserError
from galip_bench.files import check_output_dir
from models import GALIPConfig


def add_arguments(p):
    p.add_argument("action", choices=["check", "fake-coco"],
                   help="check: validate and summarise a dataset; fake-coco: write a rehearsal COCO tree")
    p.add_argument("target", help="check: YAML file with a `data:` section; fake-coco: the folder to write")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="check: data override, e.g. --set data.size=256")
    p.add_argument("--samples", type=int, default=16, help="check: samples drawn per split (and shown in the grid)")
    p.add_argument("--out", help="check: folder for the sample grid (default: a new temp folder)")
    p.add_argument("--images", type=int, default=3000, help="fake-coco: images in all (2/3 train, 1/3 test)")
    p.add_argument("--seed", type=int, default=0, help="fake-coco: seed of the procedural images and captions")


def run(args) -> int:
    if args.action == "fake-coco":
        if args.images < 2:
            raise UserError(f"--images must be at least 2, got {args.images}")
        check_output_dir(args.target, "fake-coco DIR")
        counts = write_fake_coco(args.target, args.images, args.seed)
        print(f"wrote {counts['train']} train and {counts['test']} test images under {args.target} "
              f"(use data: {{kind: coco, root: {args.target}}}); procedural content: numbers on it mean nothing")
        return 0
    if args.out:
        check_output_dir(args.out, "--out")
    cfg = read_data_section(args.target)
    overrides = [o[len("data."):] if o.startswith("data.") else o for o in args.overrides]
    cfg = to_object(merge_onto(DataConfig, cfg, dotlist(overrides), source="--set"), "--set")
    if cfg.size is None:  # no model here: the paper model's canvas
        cfg.size = canvas_size(GALIPConfig().img_size)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="galip-data-"))
    print("\n".join(check_dataset(cfg, args.samples, out)))
    return 0
