"""The shapes benchmark's CLIP: the tiny CLIP architecture (`models.clip.TINY_CLIP_CONFIG`) trained contrastively on
rendered synthetic-shapes scenes and their captions, so that GALIP's text condition, its CLIP-based discriminator and
Mate-G's CLIP-ViT see features that mean something (the smoke profile's tiny CLIP is random). Images reach it as
GALIP feeds them (`clip_input` with the run's preprocessing); captions through the CLIP tokenizer. Scenes with the
same labels are all positives of one another (a batch holds repeats of a scene's content), so the loss is the
multi-positive InfoNCE in both directions. Deterministic for a recipe; trained on scenes of its own seed."""
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from galip_bench.data.synthetic import SyntheticShapes
from galip_bench.data.tokens import tokenize
from galip_bench.progress import progress_options
from galip_bench.shapes.labels import scene_labels
from galip_bench.shapes.reader import descend
from models.clip import FrozenCLIP, clip_input


@dataclass(frozen=True)
class ClipRecipe:
    """Everything the trained CLIP depends on (its cache key)."""
    size: int = 32              # render size (the shapes profile's image size)
    preprocess: str = "official"
    train_scenes: int = 12000
    test_scenes: int = 500
    steps: int = 300
    batch: int = 128
    lr: float = 1e-3
    seed: int = 8001            # scene seed of the training renders (test renders: seed + 1)
    version: int = 1

    def as_dict(self) -> dict:
        return asdict(self)


def _scenes(n: int, size: int, seed: int) -> tuple:
    """(images [n, 3, size, size] in [-1, 1], both captions of each, labels [n, 9])."""
    data = SyntheticShapes(size=size, num=n, split="train", seed=seed)
    scenes = [data.scene(i) for i in range(n)]
    images = torch.from_numpy(np.stack([data.render(s) for s in scenes])).permute(0, 3, 1, 2) / 127.5 - 1.0
    return images, [data.captions(s) for s in scenes], torch.from_numpy(np.stack([scene_labels(s) for s in scenes]))


def _embed(model, images, tokens, preprocess):
    img = model.encode_image(clip_input(images, preprocess, model.visual.image_size[0]
                                        if isinstance(model.visual.image_size, tuple) else model.visual.image_size))
    return F.normalize(img, dim=-1), F.normalize(model.encode_text(tokens), dim=-1)


def retrieval_accuracy(model, images, captions, labels, preprocess, batch: int = 250) -> float:
    """Caption -> image top-1 among the given scenes, correct when the retrieved image shows the caption's scene
    (the same labels: scenes that share every label are the same picture up to placement)."""
    with torch.no_grad():
        parts = [_embed(model, images[i:i + batch], tokenize([c[0] for c in captions[i:i + batch]]), preprocess)
                 for i in range(0, len(images), batch)]
        img, txt = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        best = (txt @ img.T).argmax(1)
    return float((labels[best] == labels).all(1).float().mean())


def train_clip(recipe: ClipRecipe = ClipRecipe(), progress: bool = True) -> tuple:
    """(the trained open_clip CLIP in eval mode, caption->image top-1 retrieval accuracy on fresh test scenes)."""
    images, captions, labels = _scenes(recipe.train_scenes, recipe.size, recipe.seed)
    test = _scenes(recipe.test_scenes, recipe.size, recipe.seed + 1)
    with torch.random.fork_rng(devices=[]), torch.enable_grad():  # also when built inside an evaluation
        torch.manual_seed(recipe.seed)
        model = FrozenCLIP.from_open_clip("tiny", preprocess=recipe.preprocess).model
        model.train().requires_grad_(True)
        opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.1)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=recipe.steps)
        gen = torch.Generator().manual_seed(recipe.seed)
        bar = tqdm(total=recipe.steps, desc="shapes CLIP", disable=not progress, leave=False, **progress_options())
        for _ in range(recipe.steps):
            idx = torch.randint(len(images), (recipe.batch,), generator=gen)
            which = torch.randint(2, (recipe.batch,), generator=gen)
            tokens = tokenize([captions[i][w] for i, w in zip(idx.tolist(), which.tolist())])
            img, txt = _embed(model, images[idx], tokens, recipe.preprocess)
            same = (labels[idx][:, None, :] == labels[idx][None, :, :]).all(-1).float()
            target = same / same.sum(1, keepdim=True)
            logits = model.logit_scale.exp() * img @ txt.T
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
            descend(loss, opt, sched)
            bar.update()
        bar.close()
    model.eval().requires_grad_(False)
    return model, retrieval_accuracy(model, *test, recipe.preprocess)
