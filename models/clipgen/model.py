"""ClipGen: the VQGAN (with its discriminator), the prior and the frozen CLIP together, with the interface the
evaluation uses for any text-to-image model: `text_condition(tokens)`, `noise_dim` and `generator(noise, cond)`."""
import math
from typing import Optional

import torch
from torch import nn

from models.clipgen.config import ClipGenConfig, SamplingConfig
from models.clipgen.prior import Prior
from models.clipgen.vqgan import VQGAN, PatchDiscriminator

NETS = ("vqgan", "disc", "prior")


class TokenSampler(nn.Module):
    """generator(noise [B, seq_len] ~ N(0, 1), cond [B, E]) -> images [B,3,H,W] in [-1,1]: the prior's tokens drawn
    at the uniforms Phi(noise) (one per token, so a sample depends on its own noise row only), then decoded."""

    def __init__(self, prior: Prior, vqgan: VQGAN, sampling: SamplingConfig):
        super().__init__()
        self.prior, self.vqgan, self.sampling = prior, vqgan, sampling

    def forward(self, noise: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        uniforms = 0.5 * (1.0 + torch.erf(noise.double() / math.sqrt(2.0)))
        s = self.sampling
        tokens = self.prior.sample(cond, s.temperature, s.top_k, s.top_p, uniforms=uniforms)
        return self.vqgan.decode_indices(tokens)


class ClipGen(nn.Module):
    def __init__(self, cfg: Optional[ClipGenConfig] = None, clip: Optional[nn.Module] = None):
        super().__init__()
        cfg = cfg or ClipGenConfig()
        cfg.validate()
        if clip is not None and clip.embed_dim != cfg.prior.clip_dim:
            raise ValueError(f"prior.clip_dim={cfg.prior.clip_dim} must equal the CLIP embedding size {clip.embed_dim}")
        self.cfg = cfg
        self.clip = clip  # frozen: the image embedding in training, the text embedding at inference
        self.vqgan = VQGAN(cfg.vqgan)
        self.disc = PatchDiscriminator(cfg.vqgan)
        self.prior = Prior(cfg.prior)

    @property
    def noise_dim(self) -> int:
        return self.cfg.prior.seq_len

    @property
    def generator(self) -> TokenSampler:
        """Built on each access around the same modules (not registered: their weights are saved once)."""
        return TokenSampler(self.prior, self.vqgan, self.cfg.sampling)

    def parameter_counts(self) -> dict:
        return parameter_counts(self)

    def text_condition(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_text(tokens)[0].float()

    def image_condition(self, images: torch.Tensor) -> torch.Tensor:
        """The CLIP image embedding under CLIP's own preprocessing (the joint space with the text embedding)."""
        return self.clip.encode_image(images, preprocess="standard")[1].float()

    @torch.no_grad()
    def generate(self, clip_emb: torch.Tensor, temperature: float = 1.0, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """CLIP embeddings [B,E] (a caption's text embedding at inference) -> images [B,3,H,W] in [-1,1]."""
        tokens = self.prior.sample(clip_emb, temperature, top_k, top_p, generator)
        return self.vqgan.decode_indices(tokens).clamp(-1.0, 1.0)


def parameter_counts(model: ClipGen) -> dict:
    """{'vqgan'|'disc'|'prior'|'clip': {'trainable': n, 'frozen': n}} (the CLIP frozen, when present)."""
    counts = {}
    for name in NETS:
        params = list(getattr(model, name).parameters())
        counts[name] = {"trainable": sum(p.numel() for p in params if p.requires_grad),
                        "frozen": sum(p.numel() for p in params if not p.requires_grad)}
    if model.clip is not None:
        counts["clip"] = {"trainable": 0, "frozen": sum(p.numel() for p in model.clip.parameters())}
    return counts
