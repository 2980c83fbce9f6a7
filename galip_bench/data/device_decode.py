"""JPEG decoding on the training device (`data.decode: torchvision`): loader workers read the file's bytes and its
header and draw the augmentation exactly as the PIL path draws it (the same torchvision calls on the same seeded
RNG: the same crop and flip); the training process decodes the whole batch with `torchvision.io.decode_jpeg` on its
device (nvJPEG on a GPU) and resizes, crops and flips there. The pixels differ from PIL's by JPEG decoder and
resampling rounding (a few 1/255 on edges), not by content; `tests/test_loader.py` bounds the difference."""
import warnings

import torch
import torchvision.transforms.functional as F
from PIL import Image
from torchvision import io, transforms

from galip_bench.data.images import CorruptImage, bbox_box

JPEG_MAGIC = b"\xff\xd8"
# torchvision 0.29 marks its decoders deprecated in favour of TorchCodec; they are what this path uses (and tests)
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)


def resized_size(height: int, width: int, short: int) -> tuple:
    """(h, w) after torchvision's Resize(short) (the short side to `short`, the long side scaled and truncated)."""
    if width <= height:
        return int(short * height / width), short
    return short, int(short * width / height)


def plan_sample(path, bbox, size: int, train: bool) -> dict:
    """The bytes of one JPEG and its augmentation: box, resized size, crop offsets, flip. Raises CorruptImage when the
    header does not read; returns None for files that are not JPEGs (the caller decodes those with PIL)."""
    with open(path, "rb") as f:  # plain bytes: cheap to pass from a worker (a tensor would cost a file descriptor)
        data = f.read()
    if data[:2] != JPEG_MAGIC:
        return None
    try:
        with Image.open(path) as img:
            width, height = img.size
    except Exception as err:  # noqa: BLE001 - any header failure is a corrupt image
        raise CorruptImage(f"image {path} does not decode ({type(err).__name__})") from None
    box = bbox_box(bbox, width, height) if bbox is not None else (0, 0, width, height)
    h, w = resized_size(box[3] - box[1], box[2] - box[0], int(size * 76 / 64))
    if train:  # the draws of transforms.RandomCrop then RandomHorizontalFlip, in their order
        top, left, _, _ = transforms.RandomCrop.get_params(torch.empty(()).expand(3, h, w), (size, size))
        flip = bool(torch.rand(1) < 0.5)
    else:  # CenterCrop's offsets
        top, left, flip = int(round((h - size) / 2.0)), int(round((w - size) / 2.0)), False
    return {"bytes": data, "box": box, "resized": (h, w), "top": top, "left": left, "flip": flip, "size": size,
            "path": str(path)}


def decode_batch(plans: list, device) -> torch.Tensor:
    """[B,3,S,S] in [-1,1] on `device` from the plans of one batch (one batched decode call)."""
    data = [torch.frombuffer(bytearray(p["bytes"]), dtype=torch.uint8) for p in plans]
    try:
        decoded = io.decode_jpeg(data, mode=io.ImageReadMode.RGB, device=device)
    except RuntimeError:
        decoded = []
        for p, d in zip(plans, data):  # find the file that failed, and say which
            try:
                decoded.append(io.decode_jpeg(d, mode=io.ImageReadMode.RGB, device=device))
            except RuntimeError as err:
                raise CorruptImage(f"image {p['path']} does not decode on {device} ({err})") from None
    out = []
    for img, p in zip(decoded, plans):
        x0, y0, x1, y1 = p["box"]
        img = F.resize(img[:, y0:y1, x0:x1], list(p["resized"]), antialias=True)
        img = img[:, p["top"]:p["top"] + p["size"], p["left"]:p["left"] + p["size"]]
        out.append(img.flip(-1) if p["flip"] else img)
    return torch.stack(out).float().div_(127.5).sub_(1.0)
