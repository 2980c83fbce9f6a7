"""Resolve metric weight files offline: ``bench.yaml`` ``paths.weights`` first, then the standard caches.

Nothing downloads unless ``allow_download=True`` (the CLI's ``--allow-download``). A missing file raises a
``UserError`` whose one line names the file, the protocol that needs it and where to obtain it.
"""
from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from galip_bench.errors import UserError


@dataclass(frozen=True)
class WeightSpec:
    name: str
    filenames: tuple[str, ...]  # accepted file names, preferred first
    url: str  # where the preferred file comes from
    about: str
    extra_dirs: tuple[str, ...] = ()  # standard caches besides $TORCH_HOME/hub/checkpoints
    hf_globs: tuple[str, ...] = ()  # patterns under the Hugging Face hub cache


WEIGHTS = {
    "inception_torchvision": WeightSpec(
        "inception_torchvision", ("inception_v3_google-0cc3c7bd.pth",),
        "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth",
        "torchvision ImageNet inception_v3 (GALIP's legacy FID)"),
    "inception_tf": WeightSpec(
        "inception_tf", ("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth"),
        "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
        "TF FID Inception (2015-12-05) ported to PyTorch, torch-fidelity naming (pytorch-fid's pt_inception "
        "file has the same keys)"),
    "inception_cleanfid": WeightSpec(
        "inception_cleanfid", ("inception-2015-12-05.pt",),
        "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt",
        "TF FID Inception as NVlabs TorchScript (clean-fid)", extra_dirs=("/tmp",)),
    "clip_vit_b32": WeightSpec(
        "clip_vit_b32", ("ViT-B-32.pt", "open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
        "https://openaipublic.azureedge.net/clip/models/"
        "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
        "OpenAI CLIP ViT-B/32 (OpenAI file, or open_clip's hf-hub copy timm/vit_base_patch32_clip_224.openai)",
        extra_dirs=("~/.cache/clip",),
        hf_globs=("models--timm--vit_base_patch32_clip_224.openai/snapshots/*/open_clip_model.safetensors",
                  "models--timm--vit_base_patch32_clip_224.openai/snapshots/*/open_clip_pytorch_model.bin")),
}


def _torch_checkpoints_dir() -> Path:
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(torch_home).expanduser() / "hub" / "checkpoints"


def _hf_hub_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    hf_home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(hf_home).expanduser() / "hub"


def candidate_paths(spec: WeightSpec, weights_dir: str | os.PathLike | None) -> list[Path]:
    """Every place looked at, in order: bench.yaml ``paths.weights``, $TORCH_HOME/hub/checkpoints, other caches."""
    dirs = ([Path(weights_dir).expanduser()] if weights_dir else []) + [_torch_checkpoints_dir()]
    dirs += [Path(d).expanduser() for d in spec.extra_dirs]
    paths = [d / f for d in dirs for f in spec.filenames]
    for pattern in spec.hf_globs:
        paths += [Path(p) for p in sorted(glob.glob(str(_hf_hub_dir() / pattern)))]
    return paths


def resolve_weights(name: str, weights_dir=None, protocol: str = "?", allow_download: bool = False) -> Path:
    """Path of the weight file ``name`` (a key of ``WEIGHTS``); raises a one-line ``UserError`` when missing."""
    if name not in WEIGHTS:
        raise UserError(f"unknown weights '{name}' (protocol {protocol}); known: {', '.join(WEIGHTS)}")
    spec = WEIGHTS[name]
    for path in candidate_paths(spec, weights_dir):
        if path.is_file():
            return path
    if allow_download:
        import torch.hub
        target = Path(weights_dir or _torch_checkpoints_dir()).expanduser() / spec.filenames[0]
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(spec.url, str(target))  # writes a temp file, then moves it into place
        return target
    where = weights_dir or "paths.weights in bench.yaml"
    raise UserError(f"missing weight file {spec.filenames[0]} needed by protocol '{protocol}' ({spec.about}): "
                    f"download it from {spec.url} into {where} (or rerun with --allow-download)")


class WeightsResolver:
    """Callable ``resolver(name, protocol) -> Path`` bound to the ``bench.yaml`` weights folder and download policy."""

    def __init__(self, weights_dir=None, allow_download: bool = False):
        self.weights_dir = weights_dir
        self.allow_download = allow_download

    def __call__(self, name: str, protocol: str = "?") -> Path:
        return resolve_weights(name, self.weights_dir, protocol, self.allow_download)


_HASHES: dict[tuple, str] = {}


def file_sha256(path) -> str:
    """sha256 of a weight file (memoised per path, size and mtime); part of reference-statistics cache keys."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def weights_report(needs: dict, weights_dir=None) -> list[dict]:
    """Rows for ``galip-bench weights``: for ``needs`` = {protocol: [weights names]}, what was found where."""
    rows = []
    for proto_name, names in needs.items():
        for wname in names:
            spec = WEIGHTS[wname]
            found = next((p for p in candidate_paths(spec, weights_dir) if p.is_file()), None)
            rows.append({"protocol": proto_name, "weights": wname, "file": spec.filenames[0],
                         "found": str(found) if found else None, "url": spec.url})
    return rows


def format_weights_report(rows: list[dict]) -> str:
    lines = [f"{'protocol':<18} {'weights':<22} status"]
    for r in rows:
        status = f"found {r['found']}" if r["found"] else f"MISSING {r['file']} <- {r['url']}"
        lines.append(f"{r['protocol']:<18} {r['weights']:<22} {status}")
    return "\n".join(lines)
