"""`shapes_acc`'s arithmetic: for each generated image, the scene reader's labels against the labels of the caption
it was generated from (`shapes.labels`), one row of 0/1 (or shares) per image:

- colour, shape, size: the share of the caption's objects whose attribute the reader finds at the object's place
  (the canonical slot: upper / left object first); an object the reader does not see (it reads one object where
  the caption has two) counts as wrong;
- relation: for two-object captions, whether the reader sees two objects on the caption's axis (above/below vs left
  of/right of; which object is where is the colour/shape/size check); NaN for one-object captions (left out);
- background, count: equal or not; all: every label of the scene right.

Each metric is the mean of its column over the images that it applies to. Chance: the exact expected score, on the
same captions, of a reader answering uniformly at random (each label drawn uniformly; the axis and a second object
only when it draws two objects): per image, then averaged. For a one-object caption colour 1/8, shape 1/3, size
1/2; for a two-object caption the second object is seen half the time: colour (1/8)(1 + 1/2)/2 = 3/32, shape 1/4,
size 3/8, relation (1/2)(1/2) = 1/4; background 1/3, count 1/2; all the product of 1/classes over the caption's
labels."""
import numpy as np
import torch

from galip_bench.shapes.labels import CLASSES, NONE

METRICS = ("shapes_colour", "shapes_shape", "shapes_size", "shapes_relation", "shapes_background", "shapes_count",
           "shapes_all")
_OBJECT_FIELDS = {"shapes_shape": (3, 6), "shapes_colour": (4, 7), "shapes_size": (5, 8)}


def correctness(read: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """[N, len(METRICS)] float64 rows for reader labels `read` and caption labels `truth` ([N, 9] each)."""
    read, truth = np.asarray(read, np.int64), np.asarray(truth, np.int64)
    two = truth[:, 1] == 1
    out = np.empty((len(truth), len(METRICS)))
    for j, name in enumerate(METRICS):
        if name in _OBJECT_FIELDS:
            first, second = _OBJECT_FIELDS[name]
            right = (read[:, first] == truth[:, first]).astype(float)
            right2 = (read[:, second] == truth[:, second]) & two
            out[:, j] = np.where(two, (right + right2) / 2, right)
        elif name == "shapes_relation":
            out[:, j] = np.where(two, (read[:, 1] == 1) & (read[:, 2] == truth[:, 2]), np.nan)
        elif name == "shapes_background":
            out[:, j] = read[:, 0] == truth[:, 0]
        elif name == "shapes_count":
            out[:, j] = read[:, 1] == truth[:, 1]
        else:
            out[:, j] = (read == truth).all(1)
    return out


def chance(truth: np.ndarray) -> dict:
    """{metric: expected score of a uniformly random reader on these captions}."""
    truth = np.asarray(truth, np.int64)
    two = truth[:, 1] == 1
    seen_second = 1.0 / CLASSES[1]  # a random reader draws two objects this often
    per_object = lambda c: np.where(two, (1 + seen_second) / 2, 1.0).mean() / c  # noqa: E731
    per_scene = np.array([np.prod([1.0 / c for c, v in zip(CLASSES, row) if v != NONE]) for row in truth])
    return {"shapes_colour": float(per_object(CLASSES[4])), "shapes_shape": float(per_object(CLASSES[3])),
            "shapes_size": float(per_object(CLASSES[5])),
            "shapes_relation": seen_second / CLASSES[2] if two.any() else float("nan"),
            "shapes_background": 1 / CLASSES[0], "shapes_count": 1 / CLASSES[1],
            "shapes_all": float(per_scene.mean())}


def bootstrap_interval(rows: np.ndarray, resamples: int = 1000, seed: int = 0) -> dict:
    """{metric: (low, high)}: percentile 95% intervals of each column's mean over images resampled with
    replacement (NaN entries left out of each mean)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(rows), size=(resamples, len(rows)))
    out = {}
    for j, name in enumerate(METRICS):
        col = rows[:, j]
        if np.isnan(col).all():
            out[name] = (float("nan"), float("nan"))
            continue
        means = np.nanmean(col[idx], axis=1)
        out[name] = tuple(float(v) for v in np.nanpercentile(means, [2.5, 97.5]))
    return out


class ShapesAccuracy:
    """Accumulator: the correctness rows of every image (rank order = plan order after `sync`)."""

    def __init__(self):
        self.read, self.truth = [], []

    def update(self, read, truth) -> None:
        self.read.append(torch.as_tensor(read).long().cpu())
        self.truth.append(torch.as_tensor(truth).long().cpu())

    @property
    def n(self) -> int:
        return sum(len(r) for r in self.read)

    def labels(self) -> tuple:
        cat = lambda xs: torch.cat(xs).numpy() if xs else np.zeros((0, len(CLASSES)), np.int64)  # noqa: E731
        return cat(self.read), cat(self.truth)

    def rows(self) -> np.ndarray:
        return correctness(*self.labels())

    def sync(self, comm) -> None:
        """Gather every process's labels onto process 0, in rank order (each process calls it)."""
        if comm.rank_size()[1] == 1:
            return
        read, truth = (torch.from_numpy(a).double() for a in self.labels())
        both = comm.gather_rows(torch.cat([read, truth], dim=1))
        if both is not None:
            self.read, self.truth = [both[:, :len(CLASSES)].long()], [both[:, len(CLASSES):].long()]
