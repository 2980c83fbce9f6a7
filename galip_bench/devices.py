"""Which torch device a command or a run uses."""
import torch


def resolve_device(name: str = "auto") -> torch.device:
    """auto: the GPU when one is visible, else the CPU; anything else as torch names it (cpu, cuda, cuda:1)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
