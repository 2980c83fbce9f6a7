"""CLIP-GEN (Wang et al. 2022), the language-free text-to-image baseline, as HFAiLab/clip-gen reimplements it: a
VQGAN (stage 1) and an autoregressive prior over its tokens conditioned on a CLIP embedding (stage 2). Pure torch:
no file or network I/O.

The configs import at once; the modules (torch, vector-quantize-pytorch, x-transformers) on first use."""
from models.clipgen.config import ClipGenConfig, PriorConfig, SamplingConfig, VQGANConfig

__all__ = ["ClipGen", "ClipGenConfig", "VQGANConfig", "PriorConfig", "SamplingConfig", "VQGAN", "PatchDiscriminator",
           "GradientQuantizer", "Prior", "TokenSampler", "rerank", "filter_logits", "draw", "vqgan_g_loss",
           "vqgan_d_loss", "prior_loss", "relaxed_probs", "straight_through_one_hot", "parameter_counts",
           "HF_PARAMETERS", "NETS"]
_WHERE = {"ClipGen": "model", "TokenSampler": "model", "rerank": "model", "parameter_counts": "model",
          "HF_PARAMETERS": "model", "NETS": "model", "VQGAN": "vqgan", "PatchDiscriminator": "vqgan",
          "GradientQuantizer": "quantizer", "Prior": "prior", "filter_logits": "prior", "draw": "prior",
          "vqgan_g_loss": "losses", "vqgan_d_loss": "losses", "prior_loss": "losses", "relaxed_probs": "losses",
          "straight_through_one_hot": "losses"}


def __getattr__(name):
    if name in _WHERE:
        import importlib
        return getattr(importlib.import_module(f"models.clipgen.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'models.clipgen' has no attribute {name!r}")
