"""A procedural, deterministic captioned set: scenes of one or two coloured shapes with captions that name
shape, colour, size, relative position and background, so the text conditioning matters. Sample i of a split
depends only on (seed, split, i): identical tensors across runs and processes, nothing on disk."""
import numpy as np
import torch
from torch.utils.data import Dataset

from galip_bench.data.tokens import tokenize_one

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 70, 220), "yellow": (235, 210, 40),
           "purple": (140, 50, 170), "orange": (245, 140, 20), "cyan": (40, 200, 210), "pink": (240, 120, 180)}
BACKGROUNDS = {"white": (245, 245, 245), "black": (15, 15, 15), "gray": (128, 128, 128)}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 0.16, "large": 0.3}
SPLITS = {"train": 0, "test": 1}


class SyntheticShapes(Dataset):
    def __init__(self, size: int = 64, num: int = 2000, split: str = "train", seed: int = 0):
        if split not in SPLITS:
            raise ValueError(f"synthetic split must be train or test, got {split!r}")
        self.size, self.num, self.split, self.seed = size, num, split, seed
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
        self.xs, self.ys = xs, ys

    def __len__(self) -> int:
        return self.num

    def all_captions(self) -> list:
        return [c for i in range(self.num) for c in self.captions(self.scene(i))]

    def key(self, index: int) -> str:
        return f"synthetic/{self.split}/{index:06d}"

    def caption_table(self) -> list:
        """[(key, captions)] in index order (scenes are cheap to describe; nothing is rendered)."""
        return [(self.key(i), self.captions(self.scene(i))) for i in range(self.num)]

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, SPLITS[self.split], index])

    def _mask(self, shape: str, cx: float, cy: float, r: float, window) -> np.ndarray:
        dx, dy = self.xs[window] - cx, self.ys[window] - cy
        if shape == "circle":
            return dx * dx + dy * dy <= r * r
        if shape == "square":
            return (np.abs(dx) <= r) & (np.abs(dy) <= r)
        return (dy <= r) & (dy >= -r) & (np.abs(dx) <= (dy + r) / 2)  # triangle pointing up

    def scene(self, index: int) -> dict:
        rng = self._rng(index)
        bg = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
        n = 1 + int(rng.integers(2))
        objs = [{"shape": SHAPES[rng.integers(3)], "colour": list(COLOURS)[rng.integers(len(COLOURS))],
                 "size": list(SIZES)[rng.integers(2)]} for _ in range(n)]
        relation = None
        if n == 1:
            objs[0]["pos"] = (0.5 + rng.uniform(-0.15, 0.15), 0.5 + rng.uniform(-0.15, 0.15))
        else:
            relation = ("above", "below", "left of", "right of")[rng.integers(4)]
            a, b = (0.5, 0.27), (0.5, 0.73)  # first above second
            if relation == "below":
                a, b = b, a
            elif relation in ("left of", "right of"):
                a, b = (0.27, 0.5), (0.73, 0.5)
                if relation == "right of":
                    a, b = b, a
            objs[0]["pos"], objs[1]["pos"] = a, b
        return {"background": bg, "objects": objs, "relation": relation}

    @staticmethod
    def captions(scene: dict) -> list:
        bg, objs, rel = scene["background"], scene["objects"], scene["relation"]
        phrase = [f"a {o['size']} {o['colour']} {o['shape']}" for o in objs]
        if rel is None:
            return [f"{phrase[0]} on a {bg} background", f"{phrase[0]} in front of a plain {bg} backdrop"]
        inverse = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}[rel]
        return [f"{phrase[0]} {rel} {phrase[1]} on a {bg} background",
                f"{phrase[1]} {inverse} {phrase[0]}, {bg} background"]

    def render(self, scene: dict) -> np.ndarray:
        img = np.empty((self.size, self.size, 3), dtype=np.float32)
        img[:] = BACKGROUNDS[scene["background"]]
        for o in scene["objects"]:
            (cx, cy), r = o["pos"], SIZES[o["size"]]
            lo = lambda c: max(0, int((c - r) * self.size))  # noqa: E731  (the shape's bounding window)
            hi = lambda c: min(self.size, int((c + r) * self.size) + 2)  # noqa: E731
            window = (slice(lo(cy), hi(cy)), slice(lo(cx), hi(cx)))
            img[window][self._mask(o["shape"], cx, cy, r, window)] = COLOURS[o["colour"]]
        return img

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num:
            raise IndexError(index)
        scene = self.scene(index)
        image = torch.from_numpy(self.render(scene)).permute(2, 0, 1) / 127.5 - 1.0
        captions = self.captions(scene)
        caption = captions[int(np.random.randint(len(captions)))] if self.split == "train" else captions[0]
        return {"image": image, "caption": caption, "tokens": tokenize_one(caption).clone(),
                "key": self.key(index), "captions": captions}
