"""CLIP-GEN stage 1: a VQGAN (conv encoder, codebook, conv decoder) and its PatchGAN discriminator, as
HFAiLab/clip-gen's models/codec.py, quantizer.py and discriminator.py. The options that rebuild our earlier VQGAN
(no attention outside the mid block, no quant convs, symmetric downsampling padding, the EMA codebook) keep its
parameter names, so its checkpoints still load."""
from typing import List

import torch
import torch.nn.functional as F
from torch import nn
from vector_quantize_pytorch import VectorQuantize

from models.clipgen.config import VQGANConfig
from models.clipgen.quantizer import GradientQuantizer


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, groups: int, dropout: float = 0.0):
        super().__init__()
        # the second SiLU and the dropout share one slot: the convs keep the names they had before dropout existed
        self.body = nn.Sequential(
            nn.GroupNorm(groups, c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1),
            nn.GroupNorm(groups, c_out), nn.Sequential(nn.SiLU(), nn.Dropout(dropout)),
            nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x):
        return self.skip(x) + self.body(x)


class Downsample(nn.Conv2d):
    """A 3x3 stride-2 conv. "asymmetric" pads the right and bottom by one zero (taming, HF), "symmetric" every side."""

    def __init__(self, c: int, padding: str):
        super().__init__(c, c, 3, stride=2, padding=0 if padding == "asymmetric" else 1)
        self.asymmetric = padding == "asymmetric"

    def forward(self, x):
        return super().forward(F.pad(x, (0, 1, 0, 1)) if self.asymmetric else x)


class AttnBlock(nn.Module):
    """Single-head self-attention over the spatial positions, residual. HF uses nn.MultiheadAttention; the fused
    q/k/v 1x1 conv and the output 1x1 conv here have as many parameters."""

    def __init__(self, c: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, c)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.out = nn.Conv2d(c, c, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)
        y = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)).squeeze(1)
        return x + self.out(y.transpose(-1, -2).reshape(b, c, h, w))


def _mid(c: int, cfg: VQGANConfig) -> List[nn.Module]:
    layers: List[nn.Module] = [ResBlock(c, c, cfg.norm_groups, cfg.dropout)]
    if cfg.mid_attention:
        layers += [AttnBlock(c, cfg.norm_groups), ResBlock(c, c, cfg.norm_groups, cfg.dropout)]
    return layers


def _level(c: int, width: int, blocks: int, attend: bool, cfg: VQGANConfig) -> List[nn.Module]:
    """`blocks` res blocks from c to width channels, each followed by attention when `attend`."""
    layers: List[nn.Module] = []
    for i in range(blocks):
        layers.append(ResBlock(c if i == 0 else width, width, cfg.norm_groups, cfg.dropout))
        if attend:
            layers.append(AttnBlock(width, cfg.norm_groups))
    return layers


class Encoder(nn.Module):
    """images [B,3,H,W] -> latents [B,code_dim,H/f,W/f]; each level but the last ends in a stride-2 conv. With
    quant_convs a 1x1 conv ends it (HF counts that conv in its encoder)."""

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        widths = [cfg.base_width * m for m in cfg.width_mults]
        layers: List[nn.Module] = [nn.Conv2d(cfg.in_channels, cfg.base_width, 3, padding=1)]
        c = cfg.base_width
        for level, (width, size) in enumerate(zip(widths, cfg.level_sizes)):
            layers += _level(c, width, cfg.num_res_blocks, size in cfg.attn_resolutions, cfg)
            c = width
            if level < len(widths) - 1:
                layers.append(Downsample(c, cfg.downsample_padding))
        layers += _mid(c, cfg)
        layers += [nn.GroupNorm(cfg.norm_groups, c), nn.SiLU(), nn.Conv2d(c, cfg.code_dim, 3, padding=1)]
        if cfg.quant_convs:
            layers.append(nn.Conv2d(cfg.code_dim, cfg.code_dim, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class Decoder(nn.Module):
    """latents [B,code_dim,h,w] -> images [B,3,h*f,w*f] (unbounded; trained towards [-1,1]). With quant_convs a 1x1
    conv starts it (HF counts that conv in its decoder)."""

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        widths = [cfg.base_width * m for m in cfg.width_mults][::-1]
        c = widths[0]
        layers: List[nn.Module] = [nn.Conv2d(cfg.code_dim, cfg.code_dim, 1)] if cfg.quant_convs else []
        layers += [nn.Conv2d(cfg.code_dim, c, 3, padding=1)] + _mid(c, cfg)
        for level, (width, size) in enumerate(zip(widths, cfg.level_sizes[::-1])):
            layers += _level(c, width, cfg.num_res_blocks + 1, size in cfg.attn_resolutions, cfg)
            c = width
            if level < len(widths) - 1:
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1)]
        layers += [nn.GroupNorm(cfg.norm_groups, c), nn.SiLU()]
        self.net = nn.Sequential(*layers)
        self.conv_out = nn.Conv2d(c, cfg.in_channels, 3, padding=1)

    @property
    def last_layer(self) -> torch.Tensor:
        """The weight the adaptive adversarial weight compares gradients at."""
        return self.conv_out.weight

    def forward(self, z):
        return self.conv_out(self.net(z))


class VQGAN(nn.Module):
    """Encoder -> quantizer -> Decoder. Tokens are row-major [B, h*w]. The quantizer is HF's codebook learned by
    gradient ("gradient", models.clipgen.quantizer) or vector-quantize-pytorch's EMA codebook with dead-code
    re-seeding ("ema"); in training mode the EMA one updates its codebook on every encode, so use eval() to
    tokenize a fixed dataset with it."""

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        if cfg.codebook == "gradient":
            self.quantizer = GradientQuantizer(cfg.codebook_size, cfg.code_dim, cfg.commitment_weight,
                                               cfg.codebook_weight)
        else:
            self.quantizer = VectorQuantize(
                dim=cfg.code_dim, codebook_size=cfg.codebook_size, decay=cfg.codebook_decay,
                commitment_weight=cfg.commitment_weight, threshold_ema_dead_code=cfg.dead_code_threshold,
                rotation_trick=cfg.rotation_trick, accept_image_fmap=True)

    @property
    def codebook(self) -> torch.Tensor:
        """[K, code_dim] code vectors: a Parameter ("gradient") or an EMA buffer that no gradient reaches ("ema")."""
        return self.quantizer.codebook

    def encode(self, images: torch.Tensor):
        """images [B,3,H,W] in [-1,1] -> (indices [B, h*w], quantized [B,code_dim,h,w], quantizer loss 0-d: the
        encoder (commitment) term, plus the codebook term for "gradient"; the EMA one gives 0 in eval mode)."""
        quantized, indices, loss = self.quantizer(self.encoder(images))
        return indices.flatten(1), quantized, loss

    def _decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, h*w, code_dim] -> images."""
        side = self.cfg.latent_size
        if codes.shape[1] != side * side:
            raise ValueError(f"expected {side * side} tokens ({side}x{side}), got {codes.shape[1]}")
        return self.decoder(codes.transpose(1, 2).reshape(codes.shape[0], -1, side, side))

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """indices [B, h*w] -> images [B,3,H,W]."""
        return self._decode_codes(F.embedding(indices, self.codebook))

    def decode_soft(self, probs: torch.Tensor) -> torch.Tensor:
        """probs [B, h*w, K] (rows sum to 1) -> images: the probability-weighted code vectors, decoded.
        Differentiable in probs; one-hot probs give decode_indices."""
        return self._decode_codes(probs @ self.codebook.to(probs.dtype))

    def forward(self, images: torch.Tensor):
        """-> (reconstruction [B,3,H,W], indices [B, h*w], quantizer loss)."""
        indices, quantized, loss = self.encode(images)
        return self.decoder(quantized), indices, loss


class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix, as HF's Discriminator): 4x4 convs, stride 2 for the first `disc_layers`, widths doubling
    up to 8x; one logit per patch [B,1,h',w']."""

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        ndf, n = cfg.disc_width, cfg.disc_layers
        layers: List[nn.Module] = [nn.Conv2d(cfg.in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = ndf
        for i in range(1, n + 1):
            width = ndf * min(2 ** i, 8)
            layers += [nn.Conv2d(c, width, 4, 2 if i < n else 1, 1, bias=False), nn.BatchNorm2d(width),
                       nn.LeakyReLU(0.2)]
            c = width
        layers.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, images):
        return self.net(images)
