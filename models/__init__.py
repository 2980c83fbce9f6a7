"""GALIP (Generative Adversarial CLIPs, CVPR 2023) with switchable components. Pure torch: no file or network I/O.

The configs import at once; the modules (torch, open_clip) on first use, so that reading a config is cheap."""
from models.config import CLIPConfig, GALIPConfig

__all__ = ["GALIP", "GALIPConfig", "CLIPConfig", "CheckpointMismatch", "ClipWeightsMismatch", "parameter_counts"]
_FROM_GALIP = ("GALIP", "CheckpointMismatch", "ClipWeightsMismatch", "parameter_counts")


def __getattr__(name):
    if name in _FROM_GALIP:
        from models import galip
        return getattr(galip, name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
