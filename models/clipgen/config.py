"""CLIP-GEN configs (Wang et al. 2022, "CLIP-GEN: Language-Free Training of a Text-to-Image Generator with CLIP"),
as HFAiLab/clip-gen reimplements it (the paper's code is not public).

CLIP-GEN trains a VQGAN on images, then a GPT-like prior over its tokens conditioned on the CLIP ViT-B/32 image
embedding (512-d). The full-size defaults are HFAiLab/clip-gen's ("HF" below: models/codec.py, quantizer.py,
gpt.py, train_gpt.py, demo.py): a 256 px VQGAN-f16 (16x16 = 256 tokens, 16384 codes of 256-d learned by gradient,
attention at 16x16), a GPT-2-medium-sized prior (24 layers, 16 heads, 1024 wide; ours is built with x-transformers,
so its parameter count differs slightly from HF's GPT) and top-k 500 / top-p 0.95 sampling. What HF does not show
(the VQGAN's reconstruction, perceptual and adversarial losses) follows taming-transformers' f16 configs
(vqgan_imagenet_f16_16384, custom_vqgan.yaml). `tiny()` presets are for tests and smoke runs on a CPU.
"""
from dataclasses import dataclass, field
from typing import Optional, Tuple

CONDITIONING = ("prefix", "cross")
RELAXATIONS = ("gumbel", "softmax")
RECON_LOSSES = ("l1", "l2")
CODEBOOKS = ("gradient", "ema")
DOWNSAMPLE_PADDINGS = ("asymmetric", "symmetric")
EMB_REC_FORMS = ("mse_straight_through", "cos_relaxed")

# The settings added when CLIP-GEN was aligned with HF, at the values that rebuild the earlier models: a stored
# config that lacks one of them describes an earlier model (see galip_bench.checkpoints.format.config_of).
EARLIER_DEFAULTS = {
    "vqgan": {"attn_resolutions": [], "quant_convs": False, "downsample_padding": "symmetric", "dropout": 0.0,
              "codebook": "ema"},
    "prior": {"emb_rec_form": "cos_relaxed"},
    "sampling": {"candidates": 1},
}


@dataclass
class VQGANConfig:
    img_size: int = 256                                # HF resolution
    in_channels: int = 3                               # HF in_c / out_ch: RGB
    base_width: int = 128                              # HF ch (= taming f16)
    width_mults: Tuple[int, ...] = (1, 1, 2, 2, 4)     # HF ch_mult; one level per entry, each but the last halves
    num_res_blocks: int = 2                            # HF num_res_blocks (the decoder has one more per level)
    attn_resolutions: Tuple[int, ...] = (16,)          # HF attn_resolutions: attention after each res block there
    mid_attention: bool = True                         # HF mid block: res, attention, res
    norm_groups: int = 32                              # HF GroupNorm(32, ...)
    dropout: float = 0.0                               # HF ResnetBlock dropout
    downsample_padding: str = "asymmetric"             # HF/taming: pad right and bottom by 1; "symmetric": 1 all round
    quant_convs: bool = True                           # HF: a 1x1 conv ends the encoder and starts the decoder
    codebook_size: int = 16384                         # HF codebook_size
    code_dim: int = 256                                # HF embed_dim / z_channels
    codebook: str = "gradient"                         # HF VectorQuantizer; "ema": vector-quantize-pytorch's EMA
    commitment_weight: float = 1.0                     # HF: encoder term mse(z, sg(q)) weight 1 (taming beta: 0.25)
    codebook_weight: float = 0.2                       # HF beta on the codebook term mse(sg(z), q); "gradient" only
    codebook_decay: float = 0.99                       # "ema" only: VQ-VAE-2's EMA decay
    dead_code_threshold: float = 2.0                   # "ema" only: codes used less than this (EMA) are re-seeded
    rotation_trick: bool = False                       # "ema" only: False, VQGAN's straight-through; True, Fifty+ 2024
    recon_loss: str = "l1"                             # taming: L1 (+ LPIPS)
    disc_width: int = 64                               # HF Discriminator ch (pix2pix PatchGAN ndf)
    disc_layers: int = 3                               # HF Discriminator n_layer
    adversarial_weight: float = 0.8                    # taming disc_weight
    adversarial_start: int = 10000                     # taming custom_vqgan.yaml disc_start (steps)
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

    @property
    def level_sizes(self) -> Tuple[int, ...]:
        """The feature-map side at each level, the input's first."""
        return tuple(self.img_size // 2 ** level for level in range(len(self.width_mults)))

    @classmethod
    def tiny(cls) -> "VQGANConfig":
        """32px, 4x down (8x8 = 64 tokens), 64 codes, attention at the 8x8 level: trains on a CPU in seconds."""
        return cls(img_size=32, base_width=16, width_mults=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,),
                   norm_groups=8, codebook_size=64, code_dim=32, codebook_decay=0.8, disc_width=16, disc_layers=2,
                   adversarial_start=0)

    def validate(self) -> None:
        if not self.width_mults:
            raise ValueError("width_mults needs at least one level")
        if self.img_size % self.downsample:
            raise ValueError(f"img_size {self.img_size} is not divisible by the downsampling factor {self.downsample}")
        for width in [self.base_width * m for m in self.width_mults]:
            if width % self.norm_groups:
                raise ValueError(f"width {width} is not divisible by norm_groups={self.norm_groups}")
        unused = [r for r in self.attn_resolutions if r not in self.level_sizes]
        if unused:
            raise ValueError(f"attn_resolutions {unused} match no level's feature size {list(self.level_sizes)}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.downsample_padding not in DOWNSAMPLE_PADDINGS:
            raise ValueError(f"downsample_padding must be one of {DOWNSAMPLE_PADDINGS}, "
                             f"got {self.downsample_padding!r}")
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be at least 2, got {self.codebook_size}")
        if self.codebook not in CODEBOOKS:
            raise ValueError(f"codebook must be one of {CODEBOOKS}, got {self.codebook!r}")
        if self.commitment_weight < 0:
            raise ValueError(f"commitment_weight must be at least 0, got {self.commitment_weight}")
        if self.codebook_weight < 0:
            raise ValueError(f"codebook_weight must be at least 0, got {self.codebook_weight}")
        if self.recon_loss not in RECON_LOSSES:
            raise ValueError(f"recon_loss must be one of {RECON_LOSSES}, got {self.recon_loss!r}")


@dataclass
class PriorConfig:
    vocab_size: int = 16384          # = VQGANConfig.codebook_size
    seq_len: int = 256               # = VQGANConfig.num_tokens: (256 / 16) ** 2
    depth: int = 24                  # HF gpt2_medium n_layer
    heads: int = 16                  # HF gpt2_medium n_head
    dim: int = 1024                  # HF gpt2_medium n_embed
    dropout: float = 0.1             # HF train_gpt.py --dropout
    clip_dim: int = 512              # CLIP ViT-B/32 embedding (HF n_cond_embed)
    normalize_clip: bool = True      # HF normalize_clip: L2-normalise the condition (text and image norms differ)
    conditioning: str = "prefix"     # HF: the projected embedding is the first position; cross: cross-attention
    emb_rec_form: str = "mse_straight_through"  # HF: MSE of normalised CLIP embeddings of the argmax tokens' image
    emb_rec_weight: float = 0.0      # HF train_gpt.py loss_clip_weight = 0 (the term is then not computed)
    relaxation: str = "gumbel"       # "cos_relaxed" only: gumbel (Gumbel-softmax) or softmax over the logits
    relax_temperature: float = 1.0   # "cos_relaxed" only: the relaxation's temperature

    @classmethod
    def tiny(cls) -> "PriorConfig":
        """Fits VQGANConfig.tiny() and the repo's tiny CLIP (64-d embeddings)."""
        return cls(vocab_size=64, seq_len=64, depth=2, heads=4, dim=64, dropout=0.0, clip_dim=64)

    def validate(self) -> None:
        if self.conditioning not in CONDITIONING:
            raise ValueError(f"conditioning must be one of {CONDITIONING}, got {self.conditioning!r}")
        if self.emb_rec_form not in EMB_REC_FORMS:
            raise ValueError(f"emb_rec_form must be one of {EMB_REC_FORMS}, got {self.emb_rec_form!r}")
        if self.emb_rec_weight < 0:
            raise ValueError(f"emb_rec_weight must be at least 0, got {self.emb_rec_weight}")
        if self.relaxation not in RELAXATIONS:
            raise ValueError(f"relaxation must be one of {RELAXATIONS}, got {self.relaxation!r}")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if self.relax_temperature <= 0:
            raise ValueError(f"relax_temperature must be positive, got {self.relax_temperature}")


@dataclass
class SamplingConfig:
    """How images are drawn at evaluation and sampling: HF's filtered sampling from the prior's softmax."""
    temperature: float = 1.0         # HF GPT.sample default
    top_k: Optional[int] = 500       # HF train_gpt.py / demo.py top_k (more than the vocabulary keeps all)
    top_p: Optional[float] = 0.95    # HF train_gpt.py / demo.py top_p
    candidates: int = 1              # draws per caption, the one closest to it in CLIP kept (HF demo.py: 64); 1: none

    def validate(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"sampling.temperature must be positive, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"sampling.top_k must be at least 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"sampling.top_p must be in (0, 1], got {self.top_p}")
        if self.candidates < 1:
            raise ValueError(f"sampling.candidates must be at least 1, got {self.candidates}")


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
