"""The scene reader: a small CNN trained on rendered synthetic-shapes scenes with their exact labels
(`shapes.labels`), which reads a generated image back into the same labels, so that a caption's scene can be checked
attribute by attribute. Trained on fresh renders of its own seed (never on a generator's images), with mild pixel
noise so that it reads slightly imperfect pictures as a person would; its accuracy on other fresh renders is measured
at build time and recorded."""
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from galip_bench.data.synthetic import SyntheticShapes
from galip_bench.progress import progress_options
from galip_bench.shapes.labels import CLASSES, FIELDS, NONE, scene_labels

READ_SIZE = 32  # every image is read at 32 px (the scenes' smallest shape is 5 px across there)


@dataclass(frozen=True)
class ReaderRecipe:
    """Everything the trained reader depends on (its cache key)."""
    train_scenes: int = 16000
    test_scenes: int = 4000
    render_size: int = 64      # rendered, then resized to READ_SIZE as any image is
    epochs: int = 4
    batch: int = 128
    lr: float = 2e-3
    noise: float = 0.05        # std of the Gaussian pixel noise added in training ([-1, 1] images)
    seed: int = 7001           # scene seed of the training renders (the test renders use seed + 1)
    version: int = 1

    def as_dict(self) -> dict:
        return asdict(self)


class SceneReader(nn.Module):
    """Images in [-1, 1] [B, 3, H, W] -> logits of every label field, concatenated ([B, sum(CLASSES)])."""

    def __init__(self):
        super().__init__()
        conv = lambda i, o, s: nn.Sequential(nn.Conv2d(i, o, 3, s, 1), nn.BatchNorm2d(o), nn.ReLU())  # noqa: E731
        self.body = nn.Sequential(conv(3, 32, 1), conv(32, 64, 2), conv(64, 64, 2), conv(64, 128, 2), nn.Flatten(),
                                  nn.Linear(128 * (READ_SIZE // 8) ** 2, 256), nn.ReLU())
        self.head = nn.Linear(256, sum(CLASSES))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(to_read_size(images)))

    @torch.no_grad()
    def read(self, images: torch.Tensor) -> torch.Tensor:
        """[B, len(FIELDS)] integer labels (NONE for the axis and the second object when it reads one object)."""
        was = self.training
        self.eval()
        out = torch.stack([part.argmax(1) for part in split_logits(self(images))], dim=1)
        self.train(was)
        single = out[:, 1] == 0
        out[single, 2] = NONE
        out[single, 6:] = NONE
        return out


def to_read_size(images: torch.Tensor) -> torch.Tensor:
    """Clamped to [-1, 1] and resized (bilinear, antialiased) to READ_SIZE: how every image is read."""
    x = images.float().clamp(-1, 1)
    if x.shape[-1] != READ_SIZE or x.shape[-2] != READ_SIZE:
        x = F.interpolate(x, size=(READ_SIZE, READ_SIZE), mode="bilinear", antialias=True, align_corners=False)
    return x


def descend(loss: torch.Tensor, opt, sched) -> None:
    """One optimiser step on `loss` and one scheduler step (the evaluators' training loops)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()


def split_logits(logits: torch.Tensor) -> list:
    return list(torch.split(logits, CLASSES, dim=1))


def render_set(n: int, size: int, seed: int) -> tuple:
    """(uint8 images [n, 3, size, size], labels [n, len(FIELDS)]) of n fresh scenes of scene seed `seed`."""
    data = SyntheticShapes(size=size, num=n, split="train", seed=seed)
    images = np.empty((n, 3, size, size), dtype=np.uint8)
    labels = np.empty((n, len(FIELDS)), dtype=np.int64)
    for i in range(n):
        scene = data.scene(i)
        images[i] = data.render(scene).transpose(2, 0, 1).astype(np.uint8)
        labels[i] = scene_labels(scene)
    return torch.from_numpy(images), torch.from_numpy(labels)


def _as_input(images_uint8: torch.Tensor) -> torch.Tensor:
    return images_uint8.float() / 127.5 - 1.0


def _loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every field that applies (the axis and second object only for two-object scenes)."""
    total = 0.0
    for j, part in enumerate(split_logits(logits)):
        total = total + F.cross_entropy(part, labels[:, j].clamp(min=0), reduction="none").mul(
            (labels[:, j] != NONE).float()).mean()
    return total


def field_accuracy(reader: SceneReader, images_uint8: torch.Tensor, labels: torch.Tensor,
                   batch: int = 500) -> dict:
    """{field: accuracy over the scenes where it applies} of the reader on these images."""
    read = torch.cat([reader.read(_as_input(images_uint8[i:i + batch])) for i in range(0, len(labels), batch)])
    out = {}
    for j, name in enumerate(FIELDS):
        applies = labels[:, j] != NONE
        out[name] = float((read[applies, j] == labels[applies, j]).float().mean())
    out["scene"] = float((read == labels).all(1).float().mean())
    return out


def train_reader(recipe: ReaderRecipe = ReaderRecipe(), progress: bool = True) -> tuple:
    """(trained SceneReader in eval mode, {field: accuracy on fresh test renders}), deterministic for a recipe."""
    images, labels = render_set(recipe.train_scenes, recipe.render_size, recipe.seed)
    inputs = torch.cat([to_read_size(_as_input(images[i:i + 1000])) for i in range(0, len(images), 1000)])
    test_images, test_labels = render_set(recipe.test_scenes, recipe.render_size, recipe.seed + 1)
    with torch.random.fork_rng(devices=[]), torch.enable_grad():  # also when built inside an evaluation
        torch.manual_seed(recipe.seed)
        reader = SceneReader()
        opt = torch.optim.Adam(reader.parameters(), lr=recipe.lr)
        steps = recipe.epochs * (len(labels) // recipe.batch)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=steps)
        gen = torch.Generator().manual_seed(recipe.seed)
        bar = tqdm(total=steps, desc="shapes reader", disable=not progress, leave=False, **progress_options())
        for _ in range(recipe.epochs):
            order = torch.randperm(len(labels), generator=gen)
            for k in range(len(labels) // recipe.batch):
                idx = order[k * recipe.batch:(k + 1) * recipe.batch]
                x = inputs[idx] + recipe.noise * torch.randn(inputs[idx].shape, generator=gen)
                loss = _loss(reader(x), labels[idx])
                descend(loss, opt, sched)
                bar.update()
        bar.close()
    reader.eval().requires_grad_(False)
    return reader, field_accuracy(reader, test_images, test_labels)
