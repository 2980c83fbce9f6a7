"""DINOv2 ViT features as dgm-eval computes them (Stein et al., NeurIPS 2023; layer6ai-labs/dgm-eval).

dgm-eval's ``DINOv2Encoder`` (``dgm_eval/models/dinov2.py``, default ``clean_resize=False``) loads the hub model
``torch.hub.load('facebookresearch/dinov2', 'dinov2_vitl14')`` and feeds it each image file through its
``transform``: the PIL image, ``torchvision.transforms.Resize((224, 224), BICUBIC)`` (PIL's antialiased bicubic on
the uint8 image, aspect ratio not kept), ``ToTensor`` (/255) and ``Normalize`` with the ImageNet mean/std; its
``get_representations`` keeps the model's output, the final-LayerNorm CLS token (``x_norm_clstoken``, 1024-d for
ViT-L/14), unnormalised.

Here the same network is timm's ``vit_large_patch14_dinov2`` built at the hub model's ``img_size=518`` (a 37x37
position-embedding grid), loaded with the official ``dinov2_vitl14_pretrain.pth`` (its keys are timm's, less the
unused ``mask_token``), and run by ``dinov2_cls`` with the hub model's own position-embedding step for 224 px input
(``DinoVisionTransformer.interpolate_pos_encoding``: bicubic, no antialias, ``scale_factor`` (16 + 0.1) / 37, the
"interpolate_offset" kludge). timm's own variable-size path resamples to ``size=(16, 16)`` instead and gives other
features; torch-fidelity 0.4's ``dinov2-vit-l-14`` extractor resizes with TF-1.x bilinear (no antialias) and only
loads through torch.hub, so neither is used.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from galip_bench.errors import UserError

# arch -> (timm model name, feature size); dgm-eval's VALID_ARCHITECTURES less the giant
ARCHS = {"vits14": ("vit_small_patch14_dinov2", 384), "vitb14": ("vit_base_patch14_dinov2", 768),
         "vitl14": ("vit_large_patch14_dinov2", 1024)}
HUB_IMG_SIZE = 518          # dinov2.hub.backbones._make_dinov2_model(img_size=518)
INTERPOLATE_OFFSET = 0.1    # ... interpolate_offset=0.1, interpolate_antialias=False
INPUT_SIZE = 224            # dgm-eval's Resize((224, 224))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_dinov2(arch: str = "vitl14", state_dict: dict | None = None) -> torch.nn.Module:
    """timm's DINOv2 ViT at the hub model's img_size 518, with `state_dict` (official DINOv2 keys, see
    ``read_dinov2_state_dict``) or timm's random init; frozen, in eval mode, on the CPU."""
    import timm
    if arch not in ARCHS:
        raise UserError(f"unknown DINOv2 architecture {arch!r} (choose from {', '.join(ARCHS)})")
    if state_dict is None:
        model = timm.create_model(ARCHS[arch][0], pretrained=False, img_size=HUB_IMG_SIZE, num_classes=0)
    else:  # skip the random init of ~300M parameters: build on the meta device, then take the file's tensors
        with torch.device("meta"):
            model = timm.create_model(ARCHS[arch][0], pretrained=False, img_size=HUB_IMG_SIZE, num_classes=0)
        wanted = model.state_dict()
        missing, extra = sorted(set(wanted) - set(state_dict)), sorted(set(state_dict) - set(wanted))
        wrong = [k for k in wanted if k in state_dict and tuple(state_dict[k].shape) != tuple(wanted[k].shape)]
        if missing or extra or wrong:
            raise UserError(f"not a DINOv2 {arch} state_dict: {len(missing)} missing keys (e.g. "
                            f"{(missing or ['-'])[0]}), {len(extra)} unexpected (e.g. {(extra or ['-'])[0]}), "
                            f"{len(wrong)} of another shape (e.g. {(wrong or ['-'])[0]})")
        model.load_state_dict({k: v.float() for k, v in state_dict.items()}, assign=True)
    return model.requires_grad_(False).eval()


def read_dinov2_state_dict(path) -> dict:
    """The official hub file (``dinov2_vitl14_pretrain.pth``: a plain state_dict) or a copy saved with a
    ``state_dict``/``model`` wrapper or ``module.`` prefixes; the ``mask_token`` (used only in DINOv2's training)
    is dropped."""
    path = Path(path)
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same one-line error
        raise UserError(f"DINOv2 weights {path} could not be read ({type(err).__name__}): corrupt file?") from None
    for key in ("state_dict", "model"):
        sd = sd[key] if isinstance(sd, dict) and isinstance(sd.get(key), dict) else sd
    if not isinstance(sd, dict):
        raise UserError(f"DINOv2 weights {path}: not a state_dict")
    sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}
    sd.pop("mask_token", None)
    return sd


def hub_pos_embed(pos_embed: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """The DINOv2 hub model's ``interpolate_pos_encoding`` for a grid of rows x cols patches: the class position
    kept, the square patch grid resized bicubically (no antialias) by ``scale_factor`` (n + 0.1) / M, in float32."""
    n = pos_embed.shape[1] - 1
    side = int(math.sqrt(n))
    if n == rows * cols and rows == cols:
        return pos_embed
    dtype, pos = pos_embed.dtype, pos_embed.float()
    grid = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    scale = (float(rows + INTERPOLATE_OFFSET) / side, float(cols + INTERPOLATE_OFFSET) / side)
    grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)
    if tuple(grid.shape[-2:]) != (rows, cols):
        raise ValueError(f"position grid resized to {tuple(grid.shape[-2:])}, expected {(rows, cols)}")
    grid = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
    return torch.cat([pos[:, :1], grid], dim=1).to(dtype)


def dinov2_cls(model, x: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] normalised images -> [B, D] final-LayerNorm CLS tokens: the hub model's ``forward`` (its
    ``head`` is the identity on ``x_norm_clstoken``), with timm's modules and the hub's position step."""
    patches = model.patch_embed.proj(x)  # the conv; timm's PatchEmbed wrapper would insist on 518 px
    rows, cols = patches.shape[-2:]
    tokens = patches.flatten(2).transpose(1, 2)
    tokens = torch.cat([model.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)
    tokens = tokens + hub_pos_embed(model.pos_embed, rows, cols)
    return model.norm(model.blocks(tokens))[:, 0]


def dgm_eval_pixels(images_uint8: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float [B, 3, size, size] in [0, 1], as dgm-eval's ``Resize((size, size), BICUBIC)`` +
    ``ToTensor`` on a PIL image. A PIL resize to the image's own size is a copy, so `size` px images stay on their
    device; others go through PIL on the CPU, one at a time, as in dgm-eval's data loader."""
    if tuple(images_uint8.shape[-2:]) == (size, size):
        return images_uint8.float().div(255)
    from PIL import Image
    from torchvision.transforms.functional import to_tensor
    pils = [Image.fromarray(img.permute(1, 2, 0).cpu().numpy()) for img in images_uint8]
    out = [to_tensor(pil.resize((size, size), Image.Resampling.BICUBIC)) for pil in pils]
    return torch.stack(out).to(images_uint8.device)


def imagenet_normalise(x: torch.Tensor) -> torch.Tensor:
    """torchvision ``Normalize(IMAGENET_MEAN, IMAGENET_STD)``."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class DINOv2Features:
    """Images in [-1, 1] (or uint8) -> [B, D] float64 DINOv2 CLS features, dgm-eval's ``DINOv2Encoder`` path:
    the images quantised to uint8 as written to an image file (``(x * 127.5 + 128).clamp(0, 255)``, stylegan3's
    convention, as `fid`), ``dgm_eval_pixels``, ``imagenet_normalise``, ``dinov2_cls`` in float32.
    `weights`: a path to the official file, or a state_dict (tests: random-init weights)."""

    def __init__(self, weights, device="cpu", arch: str = "vitl14"):
        self.weights_path = str(weights) if not isinstance(weights, dict) else None
        sd = weights if isinstance(weights, dict) else read_dinov2_state_dict(weights)
        self.device = torch.device(device)
        self.model = build_dinov2(arch, sd).to(self.device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        from galip_bench.metrics.standard import to_uint8
        x = images if images.dtype == torch.uint8 else to_uint8(images)
        x = imagenet_normalise(dgm_eval_pixels(x.to(self.device)))
        return dinov2_cls(self.model, x).double()
