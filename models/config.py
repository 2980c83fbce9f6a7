"""GALIPConfig: the paper's full model by default; every ablation switch is a field."""
from dataclasses import dataclass, field
from typing import List, Optional

D_BACKBONES = ("clip", "scratch")
PREPROCESS_MODES = ("official", "standard")
CONDITIONS = ("text", "clip_image")
CONDITION_NOISE_FORMS = ("additive", "lafite")
CONDITION_NORMS = ("none", "l2")


@dataclass
class CLIPConfig:
    model: str = "ViT-B-32"           # open_clip model name, or "tiny" (random-init test/smoke CLIP)
    pretrained: Optional[str] = None  # path to an OpenAI/open_clip checkpoint; resolved by galip_bench, never here
    preprocess: str = "official"      # official: GALIP's double-mapped, nearest resize; standard: one map, bicubic


@dataclass
class GALIPConfig:
    # sizes
    z_dim: int = 100
    cond_dim: int = 512                # sentence-embedding size; must equal the CLIP embedding size
    ngf: int = 64
    img_size: int = 224
    bridge_ch: int = 64                # channels of the noise code fed to the bridge predictor
    bridge_mid_ch: int = 32
    bridge_blocks: int = 4
    mapper_scale: float = 0.1          # out = conv(bridge + mapper_scale * mapped)
    d_out_ch: int = 512
    c_hidden: int = 128
    ndf: int = 64                      # scratch discriminator width
    clip: CLIPConfig = field(default_factory=CLIPConfig)
    # switches
    d_backbone: str = "clip"           # clip: D on frozen CLIP-ViT maps; scratch: DF-GAN-style CNN on pixels
    mate_d: bool = True                # fuse the CLIP maps of all d_taps; False: last tap alone
    d_taps: List[int] = field(default_factory=lambda: [1, 4, 8])
    g_clip_vit: bool = True            # generator runs the frozen CLIP-ViT mapper (Mate-G)
    bridge: bool = True                # text-conditioned bridge predictor (M_Blocks); False: linear noise code
    prompts: bool = True               # text-conditioned prompt tokens in the mapper blocks
    prompt_layers: List[int] = field(default_factory=lambda: list(range(1, 9)))
    # conditioning: text (the paper: the caption's CLIP sentence embedding) or clip_image (language-free: the real
    # image's CLIP image embedding in training; the caption's text embedding at evaluation, CLIP's joint space)
    condition: str = "text"
    condition_norm: str = "none"       # none | l2: both embeddings scaled to unit length, the same way
    condition_noise: float = 0.0       # clip_image: Gaussian perturbation of the training embedding (ours: 0.1)
    # additive (ours): e + s*|e|*eps/|eps|; lafite: LAFITE's released language-free code (training/loss.py,
    # aug_level_2 = 0.75): normalise((1 - s)*e/|e| + s*eps/|eps|)
    condition_noise_form: str = "additive"

    def validate(self) -> None:
        if self.d_backbone not in D_BACKBONES:
            raise ValueError(f"d_backbone must be one of {D_BACKBONES}, got {self.d_backbone!r}")
        if self.clip.preprocess not in PREPROCESS_MODES:
            raise ValueError(f"clip.preprocess must be one of {PREPROCESS_MODES}, got {self.clip.preprocess!r}")
        if self.condition not in CONDITIONS:
            raise ValueError(f"condition must be one of {CONDITIONS}, got {self.condition!r}")
        if self.condition_norm not in CONDITION_NORMS:
            raise ValueError(f"condition_norm must be one of {CONDITION_NORMS}, got {self.condition_norm!r}")
        if self.condition_noise < 0:
            raise ValueError(f"condition_noise must be at least 0, got {self.condition_noise}")
        if self.condition_noise_form not in CONDITION_NOISE_FORMS:
            raise ValueError(f"condition_noise_form must be one of {CONDITION_NOISE_FORMS}, got "
                             f"{self.condition_noise_form!r}")
        if self.condition_noise_form == "lafite" and self.condition_noise > 1:
            raise ValueError(f"condition_noise_form=lafite mixes (1 - s)*e + s*noise: s must be at most 1, got "
                             f"{self.condition_noise}")
        if self.condition_noise and self.condition != "clip_image":
            raise ValueError("condition_noise perturbs the training image embedding: it needs condition=clip_image")
        if not self.d_taps:
            raise ValueError("d_taps must name at least one CLIP block")
        if self.prompts and not self.prompt_layers:
            raise ValueError("prompts=True needs at least one entry in prompt_layers")
        if self.img_size < 8:
            raise ValueError(f"img_size must be at least 8, got {self.img_size}")
        for name in ("z_dim", "cond_dim", "ngf", "bridge_ch", "bridge_mid_ch", "d_out_ch", "c_hidden", "ndf"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.bridge_blocks < 0:
            raise ValueError(f"bridge_blocks must be at least 0, got {self.bridge_blocks}")
