"""Captions' tokens + noise -> images, in one of two recorded numerics (`eval.synthesis`):

- faithful (default): the official test loop's numerics. netG and the text encoder run in fp32; on a GPU with
  TF32 for matmuls and convolutions, as the official environment (PyTorch 1.9) had it by default.
- fast: bf16 autocast and channels_last activations for the text encoder and netG, and on a GPU `torch.compile`
  (CUDA graphs for batches up to `GRAPH_BATCH`, where launch overhead dominates). Images come back in fp32.
  Its distance from the faithful images on the same noise is measured by `compare` (and by `galip-bench bench`).

The model is not copied: fast mode switches netG to channels_last for the duration of a `with` block and back."""
from contextlib import contextmanager

import torch
import torch.nn.functional as F

SYNTHESIS_MODES = ("faithful", "fast")
GRAPH_BATCH = 8


@contextmanager
def official_tf32(device: torch.device):
    """TF32 for CUDA matmuls and cuDNN convolutions inside the block, as PyTorch 1.9 enabled by default (newer
    releases keep it off for matmuls); the previous flags come back after it."""
    if torch.device(device).type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class Synthesizer:
    """synth(tokens, noise) -> images [B,3,H,W] fp32 (raw netG output: the protocols prepare them), and
    synth.encode(tokens) -> sentence embeddings. Use inside `with synth:` (fast mode's layout switch, TF32)."""

    def __init__(self, galip, mode: str = "faithful", compile: bool = None):
        if mode not in SYNTHESIS_MODES:
            raise ValueError(f"synthesis mode must be one of {SYNTHESIS_MODES}, got {mode!r}")
        self.galip, self.mode = galip, mode
        self.generator = galip.generator  # GALIP's netG, or CLIP-GEN's token sampler and decoder
        self.device = next(self.generator.parameters()).device
        self.compile = (self.device.type == "cuda") if compile is None else compile
        self._compiled = {}
        self._stack = None

    def __enter__(self):
        self._stack = official_tf32(self.device)
        self._stack.__enter__()
        if self.mode == "fast":
            self.generator.to(memory_format=torch.channels_last)
        return self

    def __exit__(self, *exc):
        if self.mode == "fast":
            self.generator.to(memory_format=torch.contiguous_format)
        self._stack.__exit__(*exc)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.mode == "fast")

    def _fn(self, name: str, fn, batch: int):
        if self.mode != "fast" or not self.compile:
            return fn
        mode = "reduce-overhead" if (batch <= GRAPH_BATCH and self.device.type == "cuda") else "default"
        key = (name, mode)
        if key not in self._compiled:
            self._compiled[key] = torch.compile(fn, mode=mode, dynamic=False)
        return self._compiled[key]

    @torch.no_grad()
    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        encode = self._fn("text", self.galip.text_condition, tokens.shape[0])
        with self._autocast():
            return encode(tokens.to(self.device)).float()

    @torch.no_grad()
    def generate(self, noise: torch.Tensor, sent: torch.Tensor) -> torch.Tensor:
        generate = self._fn("generator", self.generator, noise.shape[0])
        with self._autocast():
            images = generate(noise.to(self.device), sent.to(self.device))
        return images.float().contiguous()

    def __call__(self, tokens: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.generate(noise, self.encode(tokens))


@torch.no_grad()
def compare(images: torch.Tensor, reference: torch.Tensor, embed=None) -> dict:
    """How far `images` are from `reference` (same noise and captions): max and mean absolute difference in
    [-1,1] units, and, with `embed(images) -> [B,E]` (a CLIP image tower), the mean and least cosine similarity
    of the embeddings."""
    diff = (images.float() - reference.float()).abs()
    out = {"max_abs": float(diff.max()), "mean_abs": float(diff.mean())}
    if embed is not None:
        cos = F.cosine_similarity(embed(images).float(), embed(reference).float(), dim=-1)
        out.update(cosine_mean=float(cos.mean()), cosine_min=float(cos.min()))
    return out
