"""Standard (TTUR-comparable) Inception feature extractors (torch-fidelity and clean-fid), KID and IS.

Both take generated images in [-1, 1], quantise them to uint8 like stylegan3's metrics
(``(x * 127.5 + 128).clamp(0, 255).to(uint8)``) and hand them to the reference implementation unchanged.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from galip_bench.errors import UserError


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float images -> uint8 [0, 255], stylegan3's convention (truncation after +128, i.e. rounding)."""
    return (images.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)


class TorchFidelityInception:
    """torch-fidelity's ``inception-v3-compat`` (TF FID Inception, TF-1.x bilinear resize): its 2048-d pool features
    (``feature="2048"``) or its ``logits_unbiased`` (1008 logits without the bias, what its Inception Score uses).

    Matches torch-fidelity's ``calculate_metrics(fid=True)`` / ``(isc=True)`` feature path, loading
    ``weights_path`` instead of downloading.
    """

    def __init__(self, weights_path, device="cpu", feature: str = "2048"):
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        self.weights_path = str(weights_path)
        self.net = FeatureExtractorInceptionV3("inception-v3-compat", [feature],
                                               feature_extractor_weights_path=self.weights_path).to(device)
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images if images.dtype == torch.uint8 else to_uint8(images)
        return self.net(x.to(self.device))[0].double()


class CleanFIDInception:
    """clean-fid in ``mode="clean"``: PIL bicubic float resize to 299 per channel, NVlabs TorchScript Inception.

    Matches ``cleanfid.fid.compute_fid(mode="clean")`` on generated uint8 images; ``weights_path`` is the
    ``inception-2015-12-05.pt`` file (clean-fid loads it by that name from its folder).
    """

    def __init__(self, weights_path, device="cpu"):
        from cleanfid.inception_torchscript import InceptionV3W
        from cleanfid.resize import build_resizer
        self.weights_path = str(weights_path)
        if os.path.basename(self.weights_path) != "inception-2015-12-05.pt":
            raise UserError(f"clean-fid needs the file to be named inception-2015-12-05.pt, got {self.weights_path}")
        self.net = InceptionV3W(os.path.dirname(self.weights_path), download=False, resize_inside=False).to(device)
        self.resize = build_resizer("clean")
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images if images.dtype == torch.uint8 else to_uint8(images)
        resized = [self.resize(img.permute(1, 2, 0).cpu().numpy()) for img in x]
        batch = torch.from_numpy(np.stack(resized).transpose(0, 3, 1, 2).astype(np.float32))
        return self.net(batch.to(self.device)).double()


def kid_from_features(features_gen: np.ndarray, features_ref: np.ndarray, subsets: int = 100,
                      subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID (mean, std) via torch-fidelity's ``kid_features_to_metric`` (polynomial kernel, degree 3, unbiased)."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
    size = min(subset_size, len(features_gen), len(features_ref))
    out = kid_features_to_metric(torch.as_tensor(features_gen), torch.as_tensor(features_ref), kid_subsets=subsets,
                                 kid_subset_size=size, rng_seed=seed, verbose=False)
    return out[KEY_METRIC_KID_MEAN], out[KEY_METRIC_KID_STD]


def inception_score(logits, splits: int = 10, shuffle: bool = True, seed: int = 2020) -> tuple[float, float]:
    """IS (mean, std over `splits`) of [N, classes] logits via torch-fidelity's ``isc_features_to_metric``
    (softmax, samples shuffled with `seed` before splitting)."""
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric
    logits = torch.as_tensor(logits)
    if len(logits) < splits:
        raise ValueError(f"the Inception Score needs at least one sample per split: {len(logits)} samples, "
                         f"{splits} splits")
    out = isc_features_to_metric(logits, splits=splits, shuffle=shuffle, rng_seed=seed)
    return out[KEY_METRIC_ISC_MEAN], out[KEY_METRIC_ISC_STD]
