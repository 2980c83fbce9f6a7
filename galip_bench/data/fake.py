"""A rehearsal dataset: a COCO-layout tree (GALIP's coco metadata layout: images/<key>.jpg, text/<key>.txt with 5
captions, {train,test}/filenames.pickle) of full-size JPEGs with COCO's typical sizes, for trying any grid, the
data pipeline and its speed at real image sizes before the real data is there. The images are procedural (smooth
colour fields and shapes), so numbers measured on them mean nothing."""
import pickle
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from galip_bench.progress import progress_options

SIZES = ((640, 480), (640, 427), (480, 640), (500, 375), (640, 424))  # frequent COCO image sizes
OBJECTS = ("dog", "cat", "bus", "pizza", "bird", "train", "clock", "horse", "boat", "bench")
PLACES = ("on a street", "in a kitchen", "next to a river", "in a park", "on a table", "near a building")
COLOURS = ("red", "white", "black", "brown", "yellow", "blue", "green")


def _image(rng, size) -> Image.Image:
    w, h = size
    field = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)  # a smooth colour field, upsampled
    img = Image.fromarray(field).resize((w, h), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 6))):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(rng.integers(20, min(w, h) // 3))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x - r, y - r, x + r, y + r), fill=colour)
    noise = rng.normal(0, 6, (h, w, 3))  # sensor-like noise keeps JPEG sizes realistic (~50-150 KB)
    return Image.fromarray(np.clip(np.asarray(img, np.float32) + noise, 0, 255).astype(np.uint8))


def _captions(rng) -> list:
    out = []
    for _ in range(5):
        obj, place, colour = (str(rng.choice(x)) for x in (OBJECTS, PLACES, COLOURS))
        out.append(f"a {colour} {obj} {place}")
    return out


def write_fake_coco(root, images: int, seed: int = 0, quality: int = 90, progress: bool = True) -> dict:
    """Write `images` JPEGs (two thirds train, one third test, like COCO's 82,783 / 40,504) under `root`."""
    root = Path(root)
    n_test = max(images // 3, 1)
    splits = {"train": [f"COCO_train2014_{i:012d}" for i in range(images - n_test)],
              "test": [f"COCO_val2014_{i:012d}" for i in range(n_test)]}
    for sub in ("images", "text", "train", "test"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    keys = splits["train"] + splits["test"]
    for key in tqdm(keys, desc="fake COCO", disable=not progress, **progress_options()):
        _image(rng, SIZES[int(rng.integers(len(SIZES)))]).save(root / "images" / f"{key}.jpg", quality=quality)
        (root / "text" / f"{key}.txt").write_text("\n".join(_captions(rng)) + "\n")
    for split, split_keys in splits.items():
        (root / split / "filenames.pickle").write_bytes(pickle.dumps(split_keys))
    return {split: len(k) for split, k in splits.items()}
