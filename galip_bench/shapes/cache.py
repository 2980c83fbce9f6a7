"""The shapes CLIP and scene reader, built once per recipe and kept under `paths.cache/shapes/` (file name: the recipe's hash):
the first use trains them (a minute or two on a CPU), later uses load them. Two processes that need one at once
do not both train it: the second waits for the first's file (an exclusive lock beside it)."""
import dataclasses
import fcntl
import hashlib
import io
import json
import sys
import time
from pathlib import Path

import torch

from galip_bench.files import atomic_write
from galip_bench.shapes.clip import ClipRecipe, train_clip
from galip_bench.shapes.reader import ReaderRecipe, SceneReader, train_reader


def recipe_hash(kind: str, recipe: dict) -> str:
    return hashlib.sha256(json.dumps({"kind": kind, **recipe}, sort_keys=True).encode()).hexdigest()[:16]


def _state_sha256(state: dict) -> str:
    """sha256 of a state_dict's names and values (the checksum runs and records carry)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


BUILD_THREADS = 2  # CPU float sums depend on how many threads split them: a fixed count makes builds bit-identical


def _build_once(path: Path, what: str, build) -> None:
    """Run `build()` (-> the bytes to store) and write `path`, unless it exists; one process at a time."""
    if path.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():  # another process built it while we waited
            return
        t0 = time.time()
        print(f"shapes {what}: building (first use; cached in {path.parent})", file=sys.stderr)
        threads = torch.get_num_threads()
        torch.set_num_threads(BUILD_THREADS)  # the same float reductions on every machine: the same weights
        try:
            data, summary = build()
        finally:
            torch.set_num_threads(threads)
        atomic_write(path, lambda f: f.write(data))
        print(f"shapes {what}: built in {time.time() - t0:.0f} s; {summary}", file=sys.stderr)


def _saved(obj) -> bytes:
    blob = io.BytesIO()
    torch.save(obj, blob)
    return blob.getvalue()


CLIP_RECIPE = ClipRecipe()  # the shapes CLIP (with the run's preprocessing) every shapes run and record uses


def load_clip(cache_dir, recipe: ClipRecipe = None, preprocess: str = "official", progress: bool = True) -> tuple:
    """(the trained shapes CLIP's state_dict, info: {recipe, recipe_hash, sha256, retrieval_top1, path}), trained
    and cached on first use (`CLIP_RECIPE` with the given preprocessing unless a recipe is given)."""
    recipe = recipe or dataclasses.replace(CLIP_RECIPE, preprocess=preprocess)
    path = Path(cache_dir).expanduser() / "shapes" / f"clip-{recipe_hash('clip', recipe.as_dict())}.pt"

    def build():
        model, top1 = train_clip(recipe, progress)
        return (_saved({"state_dict": model.state_dict(), "retrieval_top1": top1, "recipe": recipe.as_dict()}),
                f"caption -> image top-1 retrieval on {recipe.test_scenes:,} fresh scenes: {top1:.3f}")

    _build_once(path, "CLIP", build)
    saved = torch.load(path, map_location="cpu", weights_only=True)
    info = {"recipe": saved["recipe"], "recipe_hash": recipe_hash("clip", saved["recipe"]),
            "sha256": _state_sha256(saved["state_dict"]), "retrieval_top1": saved["retrieval_top1"], "path": str(path)}
    return saved["state_dict"], info


READER_RECIPE = ReaderRecipe()  # the reader every shapes_acc record uses (its hash is recorded)


def load_reader(cache_dir, recipe: ReaderRecipe = None, progress: bool = True, device="cpu") -> tuple:
    """(SceneReader in eval mode on `device`, info: {recipe, recipe_hash, sha256 of its weights, accuracy on fresh
    renders, path}), trained and cached on first use (`READER_RECIPE` unless a recipe is given)."""
    recipe = recipe or READER_RECIPE
    path = Path(cache_dir).expanduser() / "shapes" / f"reader-{recipe_hash('reader', recipe.as_dict())}.pt"

    def build():
        reader, accuracy = train_reader(recipe, progress)
        return (_saved({"state_dict": reader.state_dict(), "accuracy": accuracy, "recipe": recipe.as_dict()}),
                format_accuracy(accuracy, recipe))

    _build_once(path, "reader", build)
    saved = torch.load(path, map_location="cpu", weights_only=True)
    reader = SceneReader()
    reader.load_state_dict(saved["state_dict"])
    reader.eval().requires_grad_(False)
    info = {"recipe": saved["recipe"], "recipe_hash": recipe_hash("reader", saved["recipe"]),
            "sha256": _state_sha256(reader.state_dict()), "accuracy": saved["accuracy"], "path": str(path)}
    return reader.to(device), info


def format_accuracy(accuracy: dict, recipe: ReaderRecipe) -> str:
    fields = ", ".join(f"{k} {v:.4f}" for k, v in accuracy.items())
    return f"accuracy on {recipe.test_scenes:,} other fresh renders: {fields}"


def build_for(configs, cache_dir) -> list:
    """Build (or find) every shapes evaluator the run configs need, in this process with all its threads, before
    runs start (each run would otherwise build it on its own thread budget); returns their info dicts."""
    clips, reader = set(), False
    for cfg in configs:
        if cfg.model.clip.pretrained == "shapes":
            clips.add(cfg.model.clip.preprocess)
        protocols = set(cfg.eval.protocols or [])
        if "fd_shapes" in protocols:
            clips.add("official")
        reader |= "shapes_acc" in protocols
    out = [load_clip(cache_dir, preprocess=p)[1] for p in sorted(clips)]
    if reader:
        out.append(load_reader(cache_dir)[1])
    return out
