"""GALIP: the frozen CLIP plus netG, netD, netC, and conversion to and from the official checkpoint layout."""
from typing import Optional

import torch
from torch import nn

from models.clip import FrozenCLIP
from models.config import GALIPConfig
from models.discriminator import NetC, NetD, ScratchNetD
from models.generator import NetG

NETS = ("netG", "netD", "netC")
CLIP_VIT_PREFIX = "mapping.CLIP_ViT."


class CheckpointMismatch(ValueError):
    """A state_dict does not fit the model config; the message names the first mismatching key."""


class ClipWeightsMismatch(CheckpointMismatch):
    """An official checkpoint's netG carries other CLIP-ViT weights than the CLIP in use."""


# relative to each tensor's largest magnitude: fp16 storage of the same weights differs by at most 2^-11 (~4.9e-4)
CLIP_WEIGHTS_RTOL = 1e-3


def _strip_module_prefix(sd: dict) -> dict:
    """DDP-wrapped official runs save keys as 'module.<key>'."""
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def check_state_dict(net: nn.Module, sd: dict, name: str) -> None:
    """Raise CheckpointMismatch naming the first key that is missing, unexpected or of another shape."""
    own = net.state_dict()
    for key, value in own.items():
        if key not in sd:
            raise CheckpointMismatch(f"{name}: key '{key}' missing from the checkpoint (config expects it)")
        if tuple(sd[key].shape) != tuple(value.shape):
            raise CheckpointMismatch(f"{name}: key '{key}' has shape {tuple(sd[key].shape)} in the checkpoint, "
                                     f"the config expects {tuple(value.shape)}")
    for key in sd:
        if key not in own:
            raise CheckpointMismatch(f"{name}: unexpected key '{key}' in the checkpoint (not in this config)")


class GALIP(nn.Module):
    def __init__(self, cfg: Optional[GALIPConfig] = None, clip: Optional[FrozenCLIP] = None):
        super().__init__()
        cfg = cfg or GALIPConfig()
        cfg.validate()
        if clip is None:  # random init of the named architecture; weights come from galip_bench.checkpoints.clip
            clip = FrozenCLIP.from_open_clip(cfg.clip.model, preprocess=cfg.clip.preprocess, taps=cfg.d_taps)
        if clip.preprocess != cfg.clip.preprocess:
            raise ValueError(f"the CLIP was built with preprocess={clip.preprocess!r} but the config asks for "
                             f"{cfg.clip.preprocess!r}")
        if clip.embed_dim != cfg.cond_dim:
            raise ValueError(f"cond_dim={cfg.cond_dim} must equal the CLIP embedding size {clip.embed_dim}")
        clip.set_taps(cfg.d_taps)
        if cfg.g_clip_vit and cfg.prompts and max(cfg.prompt_layers) >= clip.num_blocks:
            raise ValueError(f"prompt_layers {list(cfg.prompt_layers)} outside the {clip.num_blocks} CLIP blocks")
        self.cfg = cfg
        self.clip = clip
        self.netG = NetG(cfg, clip)
        self.netD = NetD(cfg, clip.width) if cfg.d_backbone == "clip" else ScratchNetD(cfg, clip.grid)
        self.netC = NetC(cfg, clip.grid)

    # the interface the evaluation uses for any text-to-image model (models.clipgen.ClipGen has it too) ----------
    @property
    def generator(self) -> nn.Module:
        return self.netG

    @property
    def noise_dim(self) -> int:
        return self.cfg.z_dim

    def parameter_counts(self) -> dict:
        return parameter_counts(self)

    # conditioning ---------------------------------------------------------------------------------------------
    def condition(self, emb: torch.Tensor) -> torch.Tensor:
        """A CLIP embedding (text or image) as netG/netC's condition: unchanged, or at unit length (l2)."""
        emb = emb.float()
        return emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12) if self.cfg.condition_norm == "l2" else emb

    def text_condition(self, tokens: torch.Tensor) -> torch.Tensor:
        """The condition of a caption: what evaluation and sampling use, and what text training uses."""
        return self.condition(self.clip.encode_text(tokens)[0])

    def image_condition(self, images: torch.Tensor) -> torch.Tensor:
        """The language-free training condition of real images in [-1,1]: their CLIP image embedding (CLIP's own
        preprocessing, the one its joint space with text was trained on, not GALIP's double-mapped input for D),
        perturbed (global RNG) as `condition_noise_form` says, then normalised as text: "additive" adds Gaussian
        noise of `condition_noise` times its norm; "lafite" mixes the unit embedding with a unit Gaussian direction,
        (1 - s)*e/|e| + s*eps/|eps|, and renormalises (LAFITE's language-free training)."""
        emb = self.clip.encode_image(images, preprocess="standard")[1].float()
        s = self.cfg.condition_noise
        if s:
            eps = torch.randn_like(emb)
            eps = eps / eps.norm(dim=-1, keepdim=True)
            if self.cfg.condition_noise_form == "lafite":
                emb = (1 - s) * emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12) + s * eps
                emb = emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            else:
                emb = emb + s * emb.norm(dim=-1, keepdim=True) * eps
        return self.condition(emb)

    def d_input(self, images: torch.Tensor, with_embedding: bool = False):
        """What netD sees for images in [-1,1]: CLIP maps (clip backbone) or the pixels (scratch), and the
        CLIP image embedding (always free with the clip backbone; computed on request for scratch)."""
        if self.cfg.d_backbone == "clip":
            return self.clip.encode_image(images)
        emb = self.clip.encode_image(images)[1] if with_embedding else None
        return images, emb

    # official checkpoints -----------------------------------------------------------------------------------
    def load_official(self, ckpt: dict, check_clip: bool = True) -> None:
        """Load {'model': {'netG','netD','netC'}} as saved by the official code, or the three dicts.
        netG's mapping.CLIP_ViT.* entries are copies of the frozen CLIP the checkpoint was trained with: their
        shapes must fit and, unless check_clip=False, their values must equal the CLIP in use (ClipWeightsMismatch
        names the tensor that differs most), since other CLIP weights change every generated image."""
        nets = ckpt.get("model", ckpt)
        state = {}
        for name in NETS:
            if name not in nets:
                raise CheckpointMismatch(f"checkpoint has no '{name}' (expected {{'model': {{netG, netD, netC}}}})")
            sd = _strip_module_prefix(nets[name])
            if name == "netG":
                self._check_clip_vit({k[len(CLIP_VIT_PREFIX):]: v for k, v in sd.items()
                                      if k.startswith(CLIP_VIT_PREFIX)}, check_clip)
                sd = {k: v for k, v in sd.items() if not k.startswith(CLIP_VIT_PREFIX)}
            check_state_dict(getattr(self, name), sd, name)
            state[name] = sd
        for name in NETS:
            getattr(self, name).load_state_dict(state[name])

    def _check_clip_vit(self, sd: dict, compare_values: bool = True) -> None:
        if not self.cfg.g_clip_vit:
            return
        own = self.clip.visual_state_dict_official()
        worst = (0.0, 0.0, "")  # (relative, absolute, key)
        for key, value in own.items():
            if key not in sd:
                continue
            if tuple(sd[key].shape) != tuple(value.shape):
                raise CheckpointMismatch(f"netG: key '{CLIP_VIT_PREFIX}{key}' has shape {tuple(sd[key].shape)}, "
                                         f"the CLIP in use has {tuple(value.shape)}")
            if compare_values:
                ours, theirs = value.detach().float().cpu(), sd[key].detach().float().cpu()
                diff = float((ours - theirs).abs().max()) if ours.numel() else 0.0
                rel = diff / max(float(ours.abs().max()) if ours.numel() else 0.0, 1e-12)
                worst = max(worst, (rel, diff, key))
        if worst[0] > CLIP_WEIGHTS_RTOL:
            raise ClipWeightsMismatch(
                f"netG: '{CLIP_VIT_PREFIX}{worst[2]}' differs from the CLIP weights in use by up to {worst[1]:.3g} "
                f"({worst[0]:.1%} of the tensor's largest value): the checkpoint was trained with another CLIP")

    def export_official(self) -> dict:
        """The reverse of load_official: {'model': {'netG','netD','netC'}} with the official keys."""
        netG = dict(self.netG.state_dict())
        if self.cfg.g_clip_vit:
            for k, v in self.clip.visual_state_dict_official().items():
                netG[CLIP_VIT_PREFIX + k] = v
        return {"model": {"netG": netG, "netD": self.netD.state_dict(), "netC": self.netC.state_dict()}}


def parameter_counts(galip: GALIP) -> dict:
    """{'netG'|'netD'|'netC'|'clip': {'trainable': n, 'frozen': n}}. netG's frozen count is the CLIP-ViT it
    runs as its mapper (shared with the D-side encoder), as the official netG holds it."""
    counts = {}
    for name in NETS:
        params = list(getattr(galip, name).parameters())
        counts[name] = {"trainable": sum(p.numel() for p in params if p.requires_grad),
                        "frozen": sum(p.numel() for p in params if not p.requires_grad)}
    if galip.cfg.g_clip_vit:
        counts["netG"]["frozen"] += sum(v.numel() for v in galip.clip.visual_state_dict_official().values())
    counts["clip"] = {"trainable": 0, "frozen": sum(p.numel() for p in galip.clip.parameters())}
    return counts
