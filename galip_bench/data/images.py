"""Image files: decoding with clear errors, GALIP's transforms, and the bounding-box crop of CUB."""
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torchvision import transforms

from galip_bench.errors import UserError


class CorruptImage(UserError):
    """An image file that does not decode."""


def open_rgb(path) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"image {path} not found")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise CorruptImage(f"image {path} does not decode ({type(err).__name__}); expected a JPEG/PNG file "
                           "(set data.skip_corrupt=true to skip such files)") from None


def bbox_box(bbox, width: int, height: int) -> tuple:
    """GALIP's CUB crop box (left, top, right, bottom): a square of side 1.5*max(w, h) around the bounding box's
    centre, clipped to the image. Matches the official get_imgs on the int box its load_bbox gives (`.astype(int)`:
    layouts.read_boxes truncates the file's values the same way); the PIL and the on-device decode crop this box."""
    x, y, w, h = bbox
    r = int(max(w, h) * 0.75)
    cx, cy = int((2 * x + w) / 2), int((2 * y + h) / 2)
    return max(0, cx - r), max(0, cy - r), min(width, cx + r), min(height, cy + r)


def bbox_crop(img: Image.Image, bbox) -> Image.Image:
    return img.crop(bbox_box(bbox, *img.size))


def image_transform(size: int, train: bool):
    """Training: resize to int(size*76/64), random crop, random horizontal flip (GALIP's). Evaluation: the same
    resize and a centre crop (deterministic; the official code applies the training augmentation at test time)."""
    resize = transforms.Resize(int(size * 76 / 64))
    crop = [transforms.RandomCrop(size), transforms.RandomHorizontalFlip()] if train else [transforms.CenterCrop(size)]
    return transforms.Compose([resize, *crop, transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)])


def to_tensor_minus1_1(img: Image.Image) -> torch.Tensor:
    return transforms.functional.to_tensor(img) * 2 - 1
