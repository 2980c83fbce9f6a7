"""Resolve metric weight files offline: ``bench.yaml`` ``paths.weights`` first, then the standard caches.

Nothing downloads unless ``allow_download=True`` (the CLI's ``--allow-download``). A missing file raises a
``UserError`` whose one line names the file, the protocol that needs it and where to obtain it.
"""
from __future__ import annotations

import glob
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

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
    "clip_vit_l14_336": WeightSpec(  # no generic open_clip file name in paths.weights: clip_vit_b32 accepts those
        "clip_vit_l14_336", ("ViT-L-14-336px.pt",),
        "https://openaipublic.azureedge.net/clip/models/"
        "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/ViT-L-14-336px.pt",
        "OpenAI CLIP ViT-L/14@336 (cmmd; the file google-research/cmmd's scenic CLIP converts), or open_clip's "
        "hf-hub copy timm/vit_large_patch14_clip_336.openai",
        extra_dirs=("~/.cache/clip",),
        hf_globs=("models--timm--vit_large_patch14_clip_336.openai/snapshots/*/open_clip_model.safetensors",
                  "models--timm--vit_large_patch14_clip_336.openai/snapshots/*/open_clip_pytorch_model.bin")),
    "clip_vit_l14": WeightSpec(
        "clip_vit_l14", ("ViT-L-14.pt",),
        "https://openaipublic.azureedge.net/clip/models/"
        "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
        "OpenAI CLIP ViT-L/14 (clip_score_heldout: a CLIP GALIP does not train with), or open_clip's hf-hub copy "
        "timm/vit_large_patch14_clip_224.openai",
        extra_dirs=("~/.cache/clip",),
        hf_globs=("models--timm--vit_large_patch14_clip_224.openai/snapshots/*/open_clip_model.safetensors",
                  "models--timm--vit_large_patch14_clip_224.openai/snapshots/*/open_clip_pytorch_model.bin")),
    "vgg16": WeightSpec(
        "vgg16", ("vgg16-397923af.pth",), "https://download.pytorch.org/models/vgg16-397923af.pth",
        "torchvision ImageNet VGG16 (the backbone of LPIPS, CLIP-GEN's VQGAN perceptual loss)"),
    "dinov2_vitl14": WeightSpec(
        "dinov2_vitl14", ("dinov2_vitl14_pretrain.pth",),
        "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth",
        "DINOv2 ViT-L/14 (LVD-142M), the file torch.hub's facebookresearch/dinov2 dinov2_vitl14 loads (dgm-eval)"),
}


def _torch_checkpoints_dir() -> Path:
    """torch.hub's checkpoint folder ($TORCH_HOME/hub/checkpoints), read at call time."""
    import torch.hub
    return Path(torch.hub.get_dir()) / "checkpoints"


def _hf_hub_dir() -> Path:
    """The Hugging Face hub cache (huggingface_hub's HF_HUB_CACHE, from HF_HOME / HF_HUB_CACHE at import)."""
    from huggingface_hub import constants
    return Path(constants.HF_HUB_CACHE)


CLIP_HINT = ("the OpenAI CLIP ViT-B/32 checkpoint ViT-B-32.pt (from the openai/CLIP repository's model list, or "
             "~/.cache/clip/ViT-B-32.pt after `clip.load('ViT-B/32')` on a machine with internet)")
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


def read_clip_state_dict(path) -> dict:
    """The one reader of CLIP weight files: OpenAI's TorchScript archive as released, a plain OpenAI-format
    state_dict, or open_clip's safetensors / .bin copy; returns an OpenAI-key state_dict (as open_clip uses)."""
    import torch
    path = Path(path)
    if not path.is_file():
        raise UserError(f"CLIP weights {path} not found: expected {CLIP_HINT}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(path))
        elif zipfile.is_zipfile(path) and any(n.endswith("constants.pkl") for n in zipfile.ZipFile(path).namelist()):
            sd = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
            sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    except Exception as err:
        raise UserError(f"CLIP weights {path} could not be read ({type(err).__name__}): corrupt file?") from None
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()
          if k not in OPENAI_EXTRA_KEYS}
    if "visual.conv1.weight" not in sd or "visual.proj" not in sd:
        raise UserError(f"{path} is not an OpenAI-format CLIP ViT state_dict (no visual.conv1.weight/visual.proj)")
    return sd


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


def weights_report(needs: dict, weights_dir=None) -> list[dict]:
    """Rows for ``galip-bench weights``: for ``needs`` = {protocol: [weights names]}, what was found where."""
    rows = []
    for proto_name, names in needs.items():
        for wname in names:
            spec = WEIGHTS[wname]
            found = next((p for p in candidate_paths(spec, weights_dir) if p.is_file()), None)
            searched = sorted({str(p.parent) for p in candidate_paths(spec, weights_dir)})
            rows.append({"protocol": proto_name, "weights": wname, "file": spec.filenames[0],
                         "found": str(found) if found else None, "url": spec.url, "searched": searched})
    return rows


def format_weights_report(rows: list[dict]) -> str:
    df = pd.DataFrame([{"protocol": r["protocol"], "weights": r["weights"],
                        "status": f"found {r['found']}" if r["found"] else f"MISSING {r['file']} <- {r['url']}"}
                       for r in rows])
    searched = sorted({d for r in rows if not r["found"] for d in r.get("searched", [])})
    text = df.to_string(index=False, justify="left")
    return text + (f"\nsearched: {', '.join(searched)} (and the Hugging Face cache for CLIP)" if searched else "")
