"""ClipGen: the VQGAN (with its discriminator), the prior and the frozen CLIP together, with the interface the
evaluation uses for any text-to-image model: `text_condition(tokens)`, `noise_dim` and `generator(noise, cond)`.
Sampling is HFAiLab/clip-gen's: filtered sampling from the prior, optionally several candidates per caption of
which the one closest to the caption in CLIP is kept (its demo.py)."""
import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from models.clipgen.config import ClipGenConfig, SamplingConfig
from models.clipgen.losses import embedding
from models.clipgen.prior import Prior
from models.clipgen.vqgan import VQGAN, PatchDiscriminator

NETS = ("vqgan", "disc", "prior")
# HFAiLab/clip-gen's models at its defaults: VQGAN(16384, 256)'s encoder + decoder + codebook (its discriminator
# not counted; "codebook": its 16,384 x 256 share), its PatchGAN discriminator and gpt2_medium(vocab_size=16384).
# Our VQGAN and discriminator have exactly as many; our prior is x-transformers'.
HF_PARAMETERS = {"vqgan": 76_073_859, "codebook": 4_194_304, "disc": 2_765_633, "prior": 336_669_696}


def clip_cosine(images: torch.Tensor, cond: torch.Tensor, encode_image: Callable) -> torch.Tensor:
    """images [B,3,H,W], cond [B,E] -> [B]: the cosine of each image's embedding encode_image(image) with its
    condition (HF demo.py's CLIP similarity)."""
    emb = F.normalize(embedding(encode_image(images)).float(), dim=-1)
    return (emb * F.normalize(cond.float(), dim=-1)).sum(-1)


def rerank(images: torch.Tensor, cond: torch.Tensor, encode_image: Callable) -> torch.Tensor:
    """images [B,C,3,H,W] (C candidates per condition), cond [B,E] -> the index [B] of each row's candidate with
    the highest `clip_cosine` (HF demo.py's CLIP filter)."""
    b, c = images.shape[:2]
    return clip_cosine(images.flatten(0, 1), cond.repeat_interleave(c, dim=0), encode_image).view(b, c).argmax(dim=1)


def best_of(draw: Callable[[int], torch.Tensor], candidates: int, cond: torch.Tensor,
            encode_image: Optional[Callable]) -> torch.Tensor:
    """draw(c) -> candidate c's images [B,3,H,W] for the B conditions `cond` [B,E]: each row's candidate whose
    clamped image (as the metrics see it) has the highest cosine with its condition under `encode_image` (the first
    on ties, as `rerank`), drawing and scoring one candidate at a time, so memory does not grow with the candidates
    (HF demo.py draws its 64 in chunks of 8)."""
    best = draw(0)
    if candidates == 1:
        return best
    with torch.no_grad():
        best_score = clip_cosine(best.clamp(-1.0, 1.0), cond, encode_image)
    for c in range(1, candidates):
        images = draw(c)
        with torch.no_grad():
            new_score = clip_cosine(images.clamp(-1.0, 1.0), cond, encode_image)
        better = new_score > best_score
        best = torch.where(better.view(-1, *[1] * (images.dim() - 1)), images, best)
        best_score = torch.where(better, new_score, best_score)
    return best


class TokenSampler(nn.Module):
    """generator(noise [B, seq_len * candidates] ~ N(0, 1), cond [B, E]) -> images [B,3,H,W] in [-1,1]. Each noise
    row is split into `candidates` rows of seq_len; each row's tokens are drawn from the prior at the uniforms
    Phi(noise) (one per token) and decoded. With several candidates the one whose image embedding `encode_image`
    (the generator's own CLIP, under CLIP's standard preprocessing) is closest in cosine to cond is returned. A sample
    depends on its own noise row only."""

    def __init__(self, prior: Prior, vqgan: VQGAN, sampling: SamplingConfig, encode_image: Optional[Callable] = None):
        super().__init__()
        if sampling.candidates > 1 and encode_image is None:
            raise ValueError(f"sampling.candidates={sampling.candidates} reranks with a CLIP: give encode_image")
        self.prior, self.vqgan, self.sampling, self.encode_image = prior, vqgan, sampling, encode_image

    def forward(self, noise: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        s, seq_len = self.sampling, self.prior.cfg.seq_len
        if noise.shape[-1] != seq_len * s.candidates:
            raise ValueError(f"noise must be [B, {seq_len * s.candidates}] (seq_len {seq_len} x candidates "
                             f"{s.candidates}), got {tuple(noise.shape)}")
        uniforms = 0.5 * (1.0 + torch.erf(noise.double() / math.sqrt(2.0)))
        uniforms = uniforms.view(noise.shape[0], s.candidates, seq_len)

        def draw(c: int) -> torch.Tensor:
            tokens = self.prior.sample(cond, s.temperature, s.top_k, s.top_p, uniforms=uniforms[:, c])
            return self.vqgan.decode_indices(tokens)
        return best_of(draw, s.candidates, cond, self.encode_image)


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
        return self.cfg.prior.seq_len * self.cfg.sampling.candidates

    @property
    def generator(self) -> TokenSampler:
        """Built on each access around the same modules (not registered: their weights are saved once); reranks
        candidates with this model's own CLIP."""
        encode_image = self.image_condition if self.clip is not None else None
        return TokenSampler(self.prior, self.vqgan, self.cfg.sampling, encode_image)

    def parameter_counts(self) -> dict:
        return parameter_counts(self)

    def text_condition(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_text(tokens)[0].float()

    def image_condition(self, images: torch.Tensor) -> torch.Tensor:
        """The CLIP image embedding under CLIP's own preprocessing (the joint space with the text embedding)."""
        return self.clip.encode_image(images, preprocess="standard")[1].float()

    @torch.no_grad()
    def generate(self, clip_emb: torch.Tensor, temperature: float = 1.0, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, generator: Optional[torch.Generator] = None,
                 candidates: int = 1) -> torch.Tensor:
        """CLIP embeddings [B,E] (a caption's text embedding at inference) -> images [B,3,H,W] in [-1,1]; with
        several candidates per embedding, the one this model's CLIP puts closest to it (see `rerank`)."""
        if candidates < 1 or (candidates > 1 and self.clip is None):
            raise ValueError(f"candidates={candidates}: give at least 1, and a CLIP to rerank several")

        def draw(c: int) -> torch.Tensor:
            tokens = self.prior.sample(clip_emb, temperature, top_k, top_p, generator)
            return self.vqgan.decode_indices(tokens).clamp(-1.0, 1.0)
        return best_of(draw, candidates, clip_emb, self.image_condition if candidates > 1 else None)


def parameter_counts(model: ClipGen) -> dict:
    """{'vqgan'|'disc'|'prior'|'clip': {'trainable': n, 'frozen': n}} (the CLIP frozen, when present); the VQGAN's
    also has 'codebook' (its K x D code vectors) and 'with_codebook' (all its parameters plus the codebook when that
    is an EMA buffer, not a parameter), the count to set beside HF_PARAMETERS['vqgan']."""
    counts = {}
    for name in NETS:
        params = list(getattr(model, name).parameters())
        counts[name] = {"trainable": sum(p.numel() for p in params if p.requires_grad),
                        "frozen": sum(p.numel() for p in params if not p.requires_grad)}
    book, vq = model.vqgan.codebook, counts["vqgan"]
    vq["codebook"] = book.numel()
    vq["with_codebook"] = vq["trainable"] + vq["frozen"] + (0 if isinstance(book, nn.Parameter) else book.numel())
    if model.clip is not None:
        counts["clip"] = {"trainable": 0, "frozen": sum(p.numel() for p in model.clip.parameters())}
    return counts
