"""CLIP-GEN (Wang et al. 2022), the language-free text-to-image baseline: a VQGAN (stage 1) and an autoregressive
prior over its tokens conditioned on a CLIP embedding (stage 2). Pure torch: no file or network I/O.

The configs import at once; the modules (torch, vector-quantize-pytorch, x-transformers) on first use."""
from models.clipgen.config import ClipGenConfig, PriorConfig, SamplingConfig, VQGANConfig

__all__ = ["ClipGen", "ClipGenConfig", "VQGANConfig", "PriorConfig", "SamplingConfig", "VQGAN", "PatchDiscriminator",
           "Prior", "TokenSampler", "filter_logits", "vqgan_g_loss", "vqgan_d_loss", "prior_loss", "relaxed_probs",
           "parameter_counts", "NETS"]
_WHERE = {"ClipGen": "model", "TokenSampler": "model", "parameter_counts": "model", "NETS": "model",
          "VQGAN": "vqgan", "PatchDiscriminator": "vqgan", "Prior": "prior", "filter_logits": "prior",
          "vqgan_g_loss": "losses", "vqgan_d_loss": "losses", "prior_loss": "losses", "relaxed_probs": "losses"}


def __getattr__(name):
    if name in _WHERE:
        import importlib
        return getattr(importlib.import_module(f"models.clipgen.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'models.clipgen' has no attribute {name!r}")
