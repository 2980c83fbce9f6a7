"""CLIP-GEN configs (Wang et al. 2022, "CLIP-GEN: Language-Free Training of a Text-to-Image Generator with CLIP").

CLIP-GEN trains a VQGAN on images, then a GPT-like prior over its tokens conditioned on the CLIP ViT-B/32 image
embedding (512-d). The full-size defaults are VQGAN-f16 style, not numbers read off the paper: 256px images, 16x
down to 16x16 = 256 tokens, a codebook of 16384 256-d codes and a GPT-2-medium prior (24 layers, 16 heads, 1024 wide),
as the HFAiLab clip-gen reimplementation uses; encoder/decoder widths and loss settings as taming-transformers' f16
configs (vqgan_imagenet_f16_16384, custom_vqgan.yaml). `tiny()` presets are for tests and smoke runs on a CPU.
"""
from dataclasses import dataclass, field
from typing import Optional, Tuple

CONDITIONING = ("prefix", "cross")
RELAXATIONS = ("gumbel", "softmax")
RECON_LOSSES = ("l1", "l2")


@dataclass
class VQGANConfig:
    img_size: int = 256
    in_channels: int = 3
    base_width: int = 128                              # taming f16: ch 128
    width_mults: Tuple[int, ...] = (1, 1, 2, 2, 4)     # one level per entry; each but the last halves the size
    num_res_blocks: int = 2
    norm_groups: int = 32
    mid_attention: bool = True                         # self-attention at the lowest resolution, as taming's mid block
    codebook_size: int = 16384                         # taming vqgan_imagenet_f16_16384; HFAiLab clip-gen
    code_dim: int = 256                                # taming embed_dim / z_channels
    commitment_weight: float = 0.25                    # taming beta
    codebook_decay: float = 0.99                       # EMA codebook decay (VQ-VAE-2: 0.99)
    dead_code_threshold: float = 2.0                   # codes with an EMA usage below this are re-seeded from the batch
    rotation_trick: bool = False                       # False: VQGAN's straight-through gradient; True: Fifty+ 2024
    recon_loss: str = "l1"                             # taming: L1 (+ LPIPS)
    disc_width: int = 64                               # PatchGAN ndf
    disc_layers: int = 3                               # PatchGAN n_layers
    adversarial_weight: float = 0.8                    # taming disc_weight
    adversarial_start: int = 10000                     # taming custom_vqgan.yaml disc_start
    adaptive_weight: bool = True                       # taming: scale by ||grad rec|| / ||grad adv|| at the last layer
    perceptual_weight: float = 1.0                     # taming LPIPS weight; used only when a perceptual fn is given

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.width_mults) - 1)

    @property
    def latent_size(self) -> int:
        return self.img_size // self.downsample

    @property
    def num_tokens(self) -> int:
        return self.latent_size ** 2

    @classmethod
    def tiny(cls) -> "VQGANConfig":
        """32px, 4x down (8x8 = 64 tokens), 64 codes: trains on a CPU in seconds."""
        return cls(img_size=32, base_width=16, width_mults=(1, 2, 2), num_res_blocks=1, norm_groups=8,
                   codebook_size=64, code_dim=32, codebook_decay=0.8, disc_width=16, disc_layers=2,
                   adversarial_start=0)

    def validate(self) -> None:
        if not self.width_mults:
            raise ValueError("width_mults needs at least one level")
        if self.img_size % self.downsample:
            raise ValueError(f"img_size {self.img_size} is not divisible by the downsampling factor {self.downsample}")
        for width in [self.base_width * m for m in self.width_mults]:
            if width % self.norm_groups:
                raise ValueError(f"width {width} is not divisible by norm_groups={self.norm_groups}")
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be at least 2, got {self.codebook_size}")
        if self.recon_loss not in RECON_LOSSES:
            raise ValueError(f"recon_loss must be one of {RECON_LOSSES}, got {self.recon_loss!r}")


@dataclass
class PriorConfig:
    vocab_size: int = 16384          # = VQGANConfig.codebook_size
    seq_len: int = 256               # = VQGANConfig.num_tokens: (256 / 16) ** 2
    depth: int = 24
    heads: int = 16
    dim: int = 1024
    dropout: float = 0.1
    clip_dim: int = 512              # CLIP ViT-B/32 embedding
    normalize_clip: bool = True      # L2-normalise the condition (text and image embeddings differ in norm), as HFAiLab
    conditioning: str = "prefix"     # prefix: the projected embedding is the first position; cross: cross-attention
    emb_rec_weight: float = 1.0      # weight of 1 - cos(CLIP(decoded relaxed tokens), condition); a guess: tune it
    relaxation: str = "gumbel"       # gumbel: Gumbel-softmax; softmax: plain softmax over the logits
    relax_temperature: float = 1.0

    @classmethod
    def tiny(cls) -> "PriorConfig":
        """Fits VQGANConfig.tiny() and the repo's tiny CLIP (64-d embeddings)."""
        return cls(vocab_size=64, seq_len=64, depth=2, heads=4, dim=64, dropout=0.0, clip_dim=64)

    def validate(self) -> None:
        if self.conditioning not in CONDITIONING:
            raise ValueError(f"conditioning must be one of {CONDITIONING}, got {self.conditioning!r}")
        if self.relaxation not in RELAXATIONS:
            raise ValueError(f"relaxation must be one of {RELAXATIONS}, got {self.relaxation!r}")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if self.relax_temperature <= 0:
            raise ValueError(f"relax_temperature must be positive, got {self.relax_temperature}")


@dataclass
class SamplingConfig:
    """How images are drawn at evaluation and sampling: plain sampling from the prior's softmax by default."""
    temperature: float = 1.0
    top_k: Optional[int] = None
    top_p: Optional[float] = None

    def validate(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"sampling.temperature must be positive, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"sampling.top_k must be at least 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"sampling.top_p must be in (0, 1], got {self.top_p}")


@dataclass
class ClipGenConfig:
    vqgan: VQGANConfig = field(default_factory=VQGANConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    @classmethod
    def tiny(cls) -> "ClipGenConfig":
        return cls(VQGANConfig.tiny(), PriorConfig.tiny())

    def validate(self) -> None:
        self.vqgan.validate()
        self.prior.validate()
        self.sampling.validate()
        if self.prior.vocab_size != self.vqgan.codebook_size:
            raise ValueError(f"prior.vocab_size={self.prior.vocab_size} must equal vqgan.codebook_size="
                             f"{self.vqgan.codebook_size}")
        if self.prior.seq_len != self.vqgan.num_tokens:
            raise ValueError(f"prior.seq_len={self.prior.seq_len} must equal the VQGAN's token count "
                             f"{self.vqgan.num_tokens} ({self.vqgan.latent_size}x{self.vqgan.latent_size})")
