"""CLIP-GEN stage 2: an autoregressive transformer over VQGAN tokens, conditioned on a CLIP embedding (the image's
while training, the caption's at inference). HFAiLab/clip-gen's is a GPT-2-medium with the projected embedding as
its first position; ours is an x-transformers Decoder of the same depth, width and heads with the same prefix
conditioning (a few parameters fewer: see models.clipgen.model.HF_PARAMETERS)."""
import warnings
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

with warnings.catch_warnings():  # x-transformers scripts a helper at import: deprecated in torch 2.14, not ours
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
    from x_transformers import Decoder, TransformerWrapper

from models.clipgen.config import PriorConfig


def filter_logits(logits: torch.Tensor, top_k: Optional[int] = None, top_p: Optional[float] = None) -> torch.Tensor:
    """logits [B,K] with all but the top_k largest (a top_k above K keeps all), and all outside the smallest set
    whose probability reaches top_p (the most likely token always stays), set to -inf."""
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # probability mass ranked above each token
        drop = (before >= top_p).scatter(-1, order, before >= top_p)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def draw(logits: torch.Tensor, temperature: float = 1.0, top_k: Optional[int] = None, top_p: Optional[float] = None,
         generator: Optional[torch.Generator] = None, uniforms: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One token [B,1] per row of logits [B,K] from softmax(filter_logits(logits / temperature)): drawn with
    `generator`, or by inverting the distribution's CDF at `uniforms` [B] in [0, 1]."""
    probs = filter_logits(logits.float() / temperature, top_k, top_p).softmax(dim=-1)
    if uniforms is None:
        return torch.multinomial(probs, 1, generator=generator)
    cdf = probs.double().cumsum(dim=-1)
    u = uniforms[:, None].to(cdf) * cdf[:, -1:]
    last_kept = probs.shape[-1] - 1 - (probs > 0).flip(-1).int().argmax(dim=-1, keepdim=True)
    return torch.minimum(torch.searchsorted(cdf, u, right=True), last_kept)  # u = 1 (Phi of a huge noise) stays in


class Prior(nn.Module):
    """p(tokens | CLIP embedding). The first position is the projected embedding ("prefix") or a learned start
    vector with the projected embedding as the cross-attention context ("cross")."""

    def __init__(self, cfg: PriorConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        cross = cfg.conditioning == "cross"
        self.net = TransformerWrapper(
            num_tokens=cfg.vocab_size, max_seq_len=cfg.seq_len, emb_dropout=cfg.dropout,
            attn_layers=Decoder(dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, cross_attend=cross,
                                attn_dropout=cfg.dropout, ff_dropout=cfg.dropout))
        self.cond = nn.Linear(cfg.clip_dim, cfg.dim)
        self.start = nn.Parameter(torch.randn(1, 1, cfg.dim) * 0.02) if cross else None

    def _condition(self, clip_emb: torch.Tensor) -> torch.Tensor:
        if clip_emb.shape[-1] != self.cfg.clip_dim:
            raise ValueError(f"expected {self.cfg.clip_dim}-d CLIP embeddings, got {tuple(clip_emb.shape)}")
        if self.cfg.normalize_clip:
            clip_emb = F.normalize(clip_emb, dim=-1)
        return self.cond(clip_emb.to(self.cond.weight.dtype)).unsqueeze(1)

    def _run(self, inputs: torch.Tensor, cond: torch.Tensor, cache=None):
        """inputs [B,n] (n < seq_len) -> (logits [B, n+1, K] for positions 0..n, or the last one with a cache;
        the new key/value cache)."""
        if self.start is None:
            return self.net(inputs, prepend_embeds=cond, cache=cache, return_intermediates=True)
        start = self.start.expand(inputs.shape[0], -1, -1)
        return self.net(inputs, prepend_embeds=start, context=cond, cache=cache, return_intermediates=True)

    def forward(self, tokens: torch.Tensor, clip_emb: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: tokens [B,n] (n <= seq_len) -> logits [B,n,K]; logits[:, i] predicts tokens[:, i]
        from tokens[:, :i] and the condition."""
        if not 1 <= tokens.shape[1] <= self.cfg.seq_len:
            raise ValueError(f"expected 1 to {self.cfg.seq_len} tokens, got {tokens.shape[1]}")
        return self._run(tokens[:, :-1], self._condition(clip_emb))[0]

    @torch.no_grad()
    def sample(self, clip_emb: torch.Tensor, temperature: float = 1.0, top_k: Optional[int] = None,
               top_p: Optional[float] = None, generator: Optional[torch.Generator] = None,
               uniforms: Optional[torch.Tensor] = None) -> torch.Tensor:
        """clip_emb [B,E] -> tokens [B, seq_len], decoded with a key/value cache in eval mode (dropout off).
        The draws come from `generator` alone: the same seed gives the same tokens. top_k=1 is greedy decoding.
        `uniforms` [B, seq_len] in [0, 1) instead: token t of sample i is drawn by inverting the filtered
        distribution's CDF at uniforms[i, t], so each sample depends on its own row only, whatever the batch."""
        if uniforms is not None and tuple(uniforms.shape) != (clip_emb.shape[0], self.cfg.seq_len):
            raise ValueError(f"uniforms must be [{clip_emb.shape[0]}, {self.cfg.seq_len}], got {tuple(uniforms.shape)}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        was_training = self.training
        self.eval()
        try:
            cond = self._condition(clip_emb)
            tokens = torch.empty(clip_emb.shape[0], 0, dtype=torch.long, device=clip_emb.device)
            cache = None
            for _ in range(self.cfg.seq_len):
                logits, cache = self._run(tokens, cond, cache)
                u = uniforms[:, tokens.shape[1]] if uniforms is not None else None
                nxt = draw(logits[:, -1], temperature, top_k, top_p, generator, u)
                tokens = torch.cat([tokens, nxt], dim=1)
            return tokens
        finally:
            self.train(was_training)
