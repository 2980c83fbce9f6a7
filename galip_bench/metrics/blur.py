"""The Gaussian blur of DALL-E's and CLIP-GEN's FID-k: both image sets blurred with a Gaussian "of radius k" before
the Inception features. The original code is not public; we read radius k as sigma = k pixels at the evaluated
resolution, truncated at 3 sigma (kernel 2*ceil(3*sigma)+1), reflect padding (scipy's ``mode='mirror'``)."""
from __future__ import annotations

import math

import torch
from torchvision.transforms.v2.functional import gaussian_blur


def kernel_size(sigma: float) -> int:
    return 2 * math.ceil(3 * sigma) + 1


def describe(sigma: float) -> str:
    return (f"Gaussian blur sigma={sigma:g} px, kernel {kernel_size(sigma)}, reflect padding (torchvision), "
            "on the clamped [-1, 1] image at the evaluated resolution")


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
        return self.extractor(blur(images, self.sigma))
