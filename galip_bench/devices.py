"""Which torch device a command or a run uses, and whether the machine that will run it has it.

The accepted names are auto | cpu | cuda | cuda:K. A malformed name, or a GPU the machine does not have, is a
UserError naming the setting, before any work starts (commands) or before anything is written (grids).
torch is imported only when a GPU is looked for, so that config checks stay light."""
import re
from typing import Optional

from galip_bench.errors import UserError

DEVICE_NAMES = "auto, cpu, cuda or cuda:K"
_DEVICE = re.compile(r"(auto|cpu|cuda)(?::(\d+))?")


def parse_device(name, setting: str = "--device") -> tuple:
    """(type, index or None) of a device name; a UserError for anything but auto | cpu | cuda | cuda:K."""
    text = str(name).strip() if name is not None else ""
    match = _DEVICE.fullmatch(text)
    if match is None or (match.group(2) is not None and match.group(1) != "cuda"):
        raise UserError(f"{_shown(setting, name)} is not a device: use {DEVICE_NAMES}")
    return match.group(1), None if match.group(2) is None else int(match.group(2))


def check_device(name, setting: str = "--device", gpus: Optional[int] = None,
                 where: str = "this machine", hint: str = None) -> None:
    """Refuse a malformed device name, or a CUDA device that `where` lacks. `gpus`: the GPUs there (None: this
    machine's, torch.cuda.device_count())."""
    kind, index = parse_device(name, setting)
    if kind != "cuda":
        return
    if gpus is None:
        import torch
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus == 0:
        raise UserError(f"{_shown(setting, name)}: {where} has no CUDA GPU" + (f" ({hint})" if hint else "")
                        + f": use {_shown(setting, 'cpu')}, or {_shown(setting, 'auto')} (the GPU when there is one)")
    if index is not None and index >= gpus:
        raise UserError(f"{_shown(setting, name)}: {where} has {gpus} GPU(s), cuda:0 to cuda:{gpus - 1}"
                        + (f" ({hint})" if hint else ""))


def _shown(setting: str, value) -> str:
    """'--device cuda' for a command-line option, 'train.device=cuda' for a config setting."""
    return f"{setting} {value}" if setting.startswith("--") else f"{setting}={value}"


def resolve_device(name: str = "auto", setting: str = "--device"):
    """auto: the GPU when one is visible, else the CPU; cpu, cuda, cuda:K once this machine is known to have it."""
    import torch
    check_device(name, setting)
    kind, index = parse_device(name, setting)
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(kind) if index is None else torch.device(kind, index)
