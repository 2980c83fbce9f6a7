"""Mixed precision as the official GALIP trains: autocast, one GradScaler per optimiser, and the scale reset to
16384 whenever it falls under 64 (the official `scaler_min` rule). bf16 needs no scaler."""
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Optional

import torch

RESET_SCALE = 16384.0
SCALER_MIN = 64.0


@dataclass
class AMP:
    dtype: torch.dtype = torch.float16
    device_type: str = "cuda"
    scaler_d: Optional[torch.amp.GradScaler] = field(default=None)
    scaler_g: Optional[torch.amp.GradScaler] = field(default=None)

    @classmethod
    def create(cls, precision: str, device_type: str) -> Optional["AMP"]:
        """precision: 'fp32' (None), 'fp16' (with GradScalers) or 'bf16'."""
        if precision == "fp32":
            return None
        if precision == "bf16":
            return cls(torch.bfloat16, device_type)
        if precision != "fp16":
            raise ValueError(f"precision must be fp32, fp16 or bf16, got {precision!r}")
        make = lambda: torch.amp.GradScaler(device_type, growth_interval=2000)  # noqa: E731
        return cls(torch.float16, device_type, make(), make())

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype)

    def state_dict(self) -> dict:
        return {k: s.state_dict() for k, s in (("scaler_d", self.scaler_d), ("scaler_g", self.scaler_g)) if s}

    def load_state_dict(self, state: dict) -> None:
        for key, scaler in (("scaler_d", self.scaler_d), ("scaler_g", self.scaler_g)):
            if scaler is not None and key in state:
                scaler.load_state_dict(state[key])


def autocast(amp: Optional[AMP]):
    return amp.autocast() if amp is not None else nullcontext()


def backward_and_step(backward, optimizer, scaler: Optional[torch.amp.GradScaler], grad_sync=None) -> None:
    """zero_grad, backward() (which scales its losses itself when a scaler is given), optional gradient
    all-reduce, then the optimiser step with the official scale-reset rule."""
    optimizer.zero_grad(set_to_none=True)
    backward()
    if grad_sync is not None:
        grad_sync([p for group in optimizer.param_groups for p in group["params"]])
    if scaler is None:
        optimizer.step()
        return
    scaler.step(optimizer)
    scaler.update()
    if scaler.get_scale() < SCALER_MIN:
        scaler.update(RESET_SCALE)
