"""The Gaussian blur of DALL-E's and CLIP-GEN's FID-k: both image sets blurred with a Gaussian "of radius k" before
the Inception features. The original code is not public; we read radius k as sigma = k pixels at the 256 px those
papers evaluate at, scaled with the image side elsewhere (sigma * side / 256), so that the generated set and the
reference set, which may come at different sizes (GALIP: 224 px samples, a 256 px canvas), get the same blur
relative to their content. Truncated at 3 sigma as scipy's `truncate=3` (radius int(3 sigma + 0.5)), reflect padding
(scipy's ``mode='mirror'``)."""
from __future__ import annotations

import torch
from torchvision.transforms.v2.functional import gaussian_blur


SCALE = 256  # the side "radius k" refers to


def kernel_size(sigma: float) -> int:
    return 2 * int(3 * sigma + 0.5) + 1


def scaled(sigma: float, side: int) -> float:
    return sigma * side / SCALE


def describe(sigma: float) -> str:
    return (f"Gaussian blur sigma={sigma:g} px at {SCALE} px (sigma*side/{SCALE} at other sizes; kernel "
            f"{kernel_size(sigma)} at {SCALE} px), reflect padding (torchvision), on the clamped [-1, 1] image")


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """[B, C, H, W] float images in [-1, 1], clamped, each channel blurred; sigma 0 returns them unchanged."""
    if not images.is_floating_point():
        raise TypeError(f"the blur takes float images in [-1, 1], got {images.dtype}")
    if sigma == 0:
        return images
    size = kernel_size(sigma)
    return gaussian_blur(images.float().clamp(-1, 1), [size, size], [float(sigma), float(sigma)])


class Blurred:
    """An extractor that sees the images blurred first, so the generated and the reference sets get the same blur."""

    def __init__(self, extractor, sigma: float):
        self.extractor, self.sigma = extractor, sigma
        self.weights_path = getattr(extractor, "weights_path", None)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.extractor(blur(images, scaled(self.sigma, images.shape[-1])))
