"""GALIP (Generative Adversarial CLIPs, CVPR 2023) with switchable components. Pure torch: no file or network I/O."""
from models.config import CLIPConfig, GALIPConfig
from models.galip import GALIP, CheckpointMismatch, ClipWeightsMismatch, parameter_counts

__all__ = ["GALIP", "GALIPConfig", "CLIPConfig", "CheckpointMismatch", "ClipWeightsMismatch", "parameter_counts"]
