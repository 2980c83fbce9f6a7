"""CLIP-GEN (Wang et al. 2022), the language-free text-to-image baseline: a VQGAN (stage 1) and an autoregressive
prior over its tokens conditioned on a CLIP embedding (stage 2). Pure torch: no file or network I/O."""
from models.clipgen.config import ClipGenConfig, PriorConfig, VQGANConfig
from models.clipgen.losses import prior_loss, relaxed_probs, vqgan_d_loss, vqgan_g_loss
from models.clipgen.model import ClipGen
from models.clipgen.prior import Prior, filter_logits
from models.clipgen.vqgan import VQGAN, PatchDiscriminator

__all__ = ["ClipGen", "ClipGenConfig", "VQGANConfig", "PriorConfig", "VQGAN", "PatchDiscriminator", "Prior",
           "filter_logits", "vqgan_g_loss", "vqgan_d_loss", "prior_loss", "relaxed_probs"]
