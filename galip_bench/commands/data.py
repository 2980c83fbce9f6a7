"""`galip-bench data check CONFIG`: validate a dataset (every split decodes its first samples, captions exist),
print its size, and write a sample grid with the captions."""
import tempfile
from pathlib import Path

import torch
from torch.utils.data import IterableDataset
from torchvision.transforms.functional import to_pil_image
from torchvision.utils import make_grid

from galip_bench.atomic import atomic_write, atomic_write_text
from galip_bench.commands.eval import data_config
from galip_bench.config import dotlist, merge_onto, to_object
from galip_bench.data import build_dataset, legacy_stats_path
from galip_bench.data.config import DataConfig
from galip_bench.schema import canvas_size
from models import GALIPConfig


def add_arguments(p):
    p.add_argument("action", choices=["check"], help="check: validate and summarise a dataset")
    p.add_argument("config", help="YAML file with a `data:` section")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="data override, e.g. --set data.size=256")
    p.add_argument("--samples", type=int, default=16, help="samples drawn per split (and shown in the grid)")
    p.add_argument("--out", help="folder for the sample grid (default: a new temp folder)")


def _first(dataset, n: int) -> list:
    if isinstance(dataset, IterableDataset):
        out = []
        for sample in dataset:
            out.append(sample)
            if len(out) == n:
                break
        return out
    return [dataset[i] for i in range(min(n, len(dataset)))]


def run(args) -> int:
    cfg = data_config(args.config)
    overrides = [o[len("data."):] if o.startswith("data.") else o for o in args.overrides]
    cfg = to_object(merge_onto(DataConfig, cfg, dotlist(overrides), source="--set"), "--set")
    if cfg.size is None:  # no model here: the paper model's canvas
        cfg.size = canvas_size(GALIPConfig().img_size)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="galip-data-"))
    shown = []
    for split in ("train", "test"):
        dataset = build_dataset(cfg, split, train=False)
        samples = _first(dataset, args.samples)
        size = "streamed" if isinstance(dataset, IterableDataset) else f"{len(dataset)} images"
        skipped = len(getattr(dataset, "skipped", []))
        lo = min(float(s["image"].min()) for s in samples) if samples else 0.0
        hi = max(float(s["image"].max()) for s in samples) if samples else 0.0
        print(f"{split}: {size}, {len(samples)} checked (pixel range [{lo:.2f}, {hi:.2f}])"
              + (f", {skipped} corrupt image(s) skipped" if skipped else ""))
        shown = shown or samples
    print(f"legacy FID statistics: {legacy_stats_path(cfg) or 'none (ROOT/npz/*.npz)'}")
    if shown:
        grid = make_grid((torch.stack([s["image"] for s in shown]) + 1) / 2, nrow=4, padding=2)
        image = to_pil_image(grid.clamp(0, 1))
        path = out / f"{cfg.kind}_samples.png"
        atomic_write(path, lambda f: image.save(f, format="PNG"))
        atomic_write_text(path.with_suffix(".txt"), "\n".join(f"{s['key']}\t{s['caption']}" for s in shown) + "\n")
        print(f"sample grid: {path} (captions: {path.with_suffix('.txt')})")
    return 0
