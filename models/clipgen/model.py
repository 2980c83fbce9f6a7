"""ClipGen: the VQGAN and the prior together; text-to-image inference."""
from typing import Optional

import torch
from torch import nn

from models.clipgen.config import ClipGenConfig
from models.clipgen.prior import Prior
from models.clipgen.vqgan import VQGAN


class ClipGen(nn.Module):
    def __init__(self, cfg: Optional[ClipGenConfig] = None):
        super().__init__()
        cfg = cfg or ClipGenConfig()
        cfg.validate()
        self.cfg = cfg
        self.vqgan = VQGAN(cfg.vqgan)
        self.prior = Prior(cfg.prior)

    @torch.no_grad()
    def generate(self, clip_emb: torch.Tensor, temperature: float = 1.0, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """CLIP embeddings [B,E] (a caption's text embedding at inference) -> images [B,3,H,W] in [-1,1]."""
        tokens = self.prior.sample(clip_emb, temperature, top_k, top_p, generator)
        return self.vqgan.decode_indices(tokens).clamp(-1.0, 1.0)
