"""`data check`: every split of a dataset decodes its first samples and has captions; a sample grid with the
captions is written for a look."""
from pathlib import Path

import torch
from torch.utils.data import IterableDataset
from torchvision.transforms.functional import to_pil_image
from torchvision.utils import make_grid

from galip_bench.data import build_dataset, legacy_stats_path
from galip_bench.files import atomic_write, atomic_write_text


def _first(dataset, n: int) -> list:
    if isinstance(dataset, IterableDataset):
        out = []
        for sample in dataset:
            out.append(sample)
            if len(out) == n:
                break
        return out
    return [dataset[i] for i in range(min(n, len(dataset)))]


def check_dataset(cfg, samples: int, out: Path) -> list:
    """Lines describing each split (size, pixel range, skipped images), the statistics file and the sample grid."""
    lines, shown = [], []
    for split in ("train", "test"):
        dataset = build_dataset(cfg, split, train=False)
        drawn = _first(dataset, samples)
        size = "streamed" if isinstance(dataset, IterableDataset) else f"{len(dataset)} images"
        skipped = len(getattr(dataset, "skipped", []))
        lo = min(float(s["image"].min()) for s in drawn) if drawn else 0.0
        hi = max(float(s["image"].max()) for s in drawn) if drawn else 0.0
        lines.append(f"{split}: {size}, {len(drawn)} checked (pixel range [{lo:.2f}, {hi:.2f}])"
                     + (f", {skipped} corrupt image(s) skipped" if skipped else ""))
        shown = shown or drawn
    lines.append(f"legacy FID statistics: {legacy_stats_path(cfg) or 'none (ROOT/npz/*.npz)'}")
    if shown:
        grid = make_grid((torch.stack([s["image"] for s in shown]) + 1) / 2, nrow=4, padding=2)
        image = to_pil_image(grid.clamp(0, 1))
        path = Path(out) / f"{cfg.kind}_samples.png"
        atomic_write(path, lambda f: image.save(f, format="PNG"))
        atomic_write_text(path.with_suffix(".txt"), "\n".join(f"{s['key']}\t{s['caption']}" for s in shown) + "\n")
        lines.append(f"sample grid: {path} (captions: {path.with_suffix('.txt')})")
    return lines
