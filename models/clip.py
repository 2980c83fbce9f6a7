"""FrozenCLIP: the frozen CLIP towers GALIP uses (text encoder, D-side image encoder, G-side mapper).

Built on open_clip's CLIP module (batch-first transformer), in one of two precisions (`PRECISIONS`):

- ``fp32``: every tensor fp32, the weights' values kept exactly (what OpenAI's ``clip.load`` gives on a CPU, where
  it calls ``model.float()``; the golden fixtures are fp32).
- ``clip.load-fp16``: what OpenAI's ``clip.load(device="cuda")`` gives, and so what the official GALIP code trains
  and evaluates with on a GPU: ``build_model`` runs ``convert_weights`` (Conv/Linear weights and biases, the
  attention in_proj/q/k/v weights, in_proj_bias, bias_k/bias_v, and the ``text_projection`` / ``proj`` matrices to
  fp16) before ``load_state_dict``, so the LayerNorms and the embeddings (token, positional, class) stay fp32, and
  its LayerNorm subclass normalises in fp32 and casts back to the input dtype. Here: open_clip's CLIP built with
  ``cast_dtype=float16`` (its ``LayerNormFp32``) and open_clip's ``convert_weights_to_lp``, the same steps as
  open_clip's own ``build_model_from_openai_state_dict``.
"""
from typing import Optional, Sequence

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg, convert_weights_to_lp
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# A random-init CLIP for tests and the smoke profile: 12 vision blocks so the default taps (1,4,8) and prompt
# layers (1..8) exist, a 7x7 patch grid like ViT-B/32, and small widths so it runs fast on a CPU.
TINY_CLIP_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 56, "layers": 12, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def clip_input(images: torch.Tensor, preprocess: str, size: int = 224) -> torch.Tensor:
    """images [B,3,H,W] in [-1,1] -> normalised CLIP input [B,3,size,size].
    official: the official GALIP transf_to_CLIP_input: x*0.5+0.5, nearest resize, then ((x+1)*0.5 - mean)/std --
      the [-1,1]->[0,1] map applied twice, so pixels reach the normalisation in [0.5,1]. Kept on purpose: GALIP
      was trained and evaluated this way.
    standard: one map to [0,1], bicubic antialiased resize of the short side, centre crop, mean/std."""
    mean = torch.tensor(CLIP_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    if preprocess == "official":
        x = F.interpolate(images * 0.5 + 0.5, size=(size, size))
        return ((x + 1) * 0.5 - mean) / std
    x = (images.clamp(-1, 1) + 1) * 0.5
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        scale = size / min(h, w)
        x = F.interpolate(x, size=(max(size, round(h * scale)), max(size, round(w * scale))), mode="bicubic",
                          align_corners=False, antialias=True).clamp(0, 1)
        top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
        x = x[..., top:top + size, left:left + size]
    return (x - mean) / std


def _openai_architecture(sd: dict) -> dict:
    """Architecture of an OpenAI-format CLIP state_dict (the facts open_clip's converter reads off)."""
    width = sd["visual.conv1.weight"].shape[0]
    patch = sd["visual.conv1.weight"].shape[-1]
    grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = sd["ln_final.weight"].shape[0]
    return {
        "embed_dim": sd["text_projection"].shape[1],
        "vision_cfg": {
            "image_size": patch * grid,
            "patch_size": patch,
            "width": width,
            "layers": len({k.split(".")[3] for k in sd if k.startswith("visual.transformer.resblocks.")}),
        },
        "text_cfg": {
            "context_length": sd["positional_embedding"].shape[0],
            "vocab_size": sd["token_embedding.weight"].shape[0],
            "width": text_width,
            "heads": text_width // 64,
            "layers": len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")}),
        },
    }


PRECISIONS = ("fp32", "clip.load-fp16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"CLIP precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def _build_open_clip(arch: dict, quick_gelu: bool = True, precision: str = "fp32") -> CLIP:
    """A random-init open_clip CLIP of `arch` in `precision` (see the module docstring). With clip.load-fp16 this is
    OpenAI's build_model before its load_state_dict: fp32 LayerNorms that compute in fp32 (open_clip's
    LayerNormFp32, chosen by cast_dtype), then convert_weights (open_clip's convert_weights_to_lp)."""
    low = check_precision(precision) == "clip.load-fp16"
    model = CLIP(
        arch["embed_dim"],
        vision_cfg=CLIPVisionCfg(**arch["vision_cfg"]),
        text_cfg=CLIPTextCfg(**arch["text_cfg"]),
        quick_gelu=quick_gelu,
        cast_dtype=torch.float16 if low else None,
    )
    if low:
        convert_weights_to_lp(model, torch.float16)
    return model


class FrozenCLIP(nn.Module):
    """Frozen CLIP ViT. encode_text/encode_image match the official GALIP CLIP_TXT_ENCODER/CLIP_IMG_ENCODER;
    map_tokens matches its CLIP_Mapper."""

    def __init__(self, model: CLIP, preprocess: str = "official", taps: Sequence[int] = (1, 4, 8)):
        super().__init__()
        if preprocess not in ("official", "standard"):
            raise ValueError(f"preprocess must be 'official' or 'standard', got {preprocess!r}")
        self.model = model
        self.preprocess = preprocess
        visual = model.visual
        if not getattr(visual.transformer, "batch_first", True):
            raise ValueError("FrozenCLIP expects open_clip's batch-first transformer")
        self.width = visual.conv1.out_channels
        self.patch_size = visual.conv1.kernel_size[0]
        self.grid = round((visual.positional_embedding.shape[0] - 1) ** 0.5)
        self.image_size = self.grid * self.patch_size
        self.embed_dim = model.text_projection.shape[1]
        self.num_blocks = len(visual.transformer.resblocks)
        self.set_taps(taps)
        self.requires_grad_(False)
        self.eval()

    # construction -------------------------------------------------------------------------------------------
    @classmethod
    def from_openai_state_dict(cls, state_dict: dict, preprocess: str = "official", taps=(1, 4, 8),
                               precision: str = "fp32"):
        """From an OpenAI-format CLIP state_dict (any size). precision fp32: every tensor fp32 with the file's
        values exactly; clip.load-fp16: as OpenAI's clip.load on a GPU (build_model: convert_weights, then
        load_state_dict, which casts each value to its parameter's dtype)."""
        sd = {k: v for k, v in state_dict.items() if k not in ("input_resolution", "context_length", "vocab_size")}
        model = _build_open_clip(_openai_architecture(sd), precision=precision)
        model.load_state_dict(sd)
        return cls(model, preprocess, taps)

    @classmethod
    def from_open_clip(cls, name_or_config, pretrained: Optional[str] = None, preprocess: str = "official",
                       taps=(1, 4, 8), precision: str = "fp32"):
        """From an open_clip model name ("ViT-B-32"), "tiny", or a model-config dict (open_clip JSON layout).
        `pretrained` is a local file or an open_clip tag (tags may download; callers keep that opt-in).
        `precision`: fp32 or clip.load-fp16 (the random init, or the loaded weights, then converted as clip.load
        converts them on a GPU)."""
        if isinstance(name_or_config, str) and name_or_config == "tiny":
            name_or_config = TINY_CLIP_CONFIG
        if isinstance(name_or_config, str) and pretrained is None:
            config = open_clip.get_model_config(name_or_config)
            if config is None:
                raise ValueError(f"unknown open_clip model {name_or_config!r}")
            name_or_config = {**config, "quick_gelu": True}
        if isinstance(name_or_config, dict):
            if pretrained is not None:
                raise ValueError("pretrained weights need a named open_clip model, not a config dict")
            arch = {k: name_or_config[k] for k in ("embed_dim", "vision_cfg", "text_cfg")}
            model = _build_open_clip(arch, quick_gelu=name_or_config.get("quick_gelu", True), precision=precision)
        else:
            model = open_clip.create_model(name_or_config, pretrained=pretrained, force_quick_gelu=True,
                                           precision="fp16" if check_precision(precision) != "fp32" else "fp32")
        if not isinstance(model, CLIP):
            raise ValueError(f"{name_or_config!r} is not an open_clip CLIP with a ViT image tower")
        return cls(model, preprocess, taps)

    def set_taps(self, taps: Sequence[int]) -> None:
        taps = tuple(int(t) for t in taps)
        bad = [t for t in taps if not 0 <= t < self.num_blocks]
        if bad:
            raise ValueError(f"CLIP taps {bad} outside the {self.num_blocks} vision blocks")
        self.taps = taps

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: always in eval mode

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the towers compute in (as the official encoders' `dtype`: conv1's weight)."""
        return self.model.visual.conv1.weight.dtype

    @property
    def precision(self) -> str:
        """fp32, clip.load-fp16 (fp16 weights, fp32 LayerNorms and embeddings), or another dtype's name."""
        if self.dtype == torch.float32:
            return "fp32"
        if self.dtype == torch.float16 and self.model.visual.ln_pre.weight.dtype == torch.float32:
            return "clip.load-fp16"
        return str(self.dtype).replace("torch.", "")

    # text ---------------------------------------------------------------------------------------------------
    def encode_text(self, tokens: torch.Tensor):
        """tokens [B,77] -> sentence embedding [B,E] (EOT feature @ text_projection, unnormalised),
        word features [B,77,W] (after ln_final)."""
        m = self.model
        x = m.token_embedding(tokens).to(self.dtype) + m.positional_embedding.to(self.dtype)
        x = m.transformer(x, attn_mask=m.attn_mask)
        words = m.ln_final(x)
        sent = words[torch.arange(words.shape[0], device=words.device), tokens.argmax(dim=-1)] @ m.text_projection
        return sent, words

    # image --------------------------------------------------------------------------------------------------
    def to_clip_input(self, images: torch.Tensor, preprocess: Optional[str] = None) -> torch.Tensor:
        """images in [-1,1] -> normalised CLIP input at the CLIP resolution (this CLIP's preprocessing, unless
        another is named)."""
        return clip_input(images, preprocess or self.preprocess, self.image_size)

    def _tokens_with_pos(self, patches: torch.Tensor) -> torch.Tensor:
        """[B,W,g,g] patch features -> [B,1+g*g,W] with class token and positional embedding, after ln_pre."""
        v = self.model.visual
        x = patches.flatten(2).transpose(1, 2)
        cls_tok = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls_tok, x], dim=1) + v.positional_embedding.to(x.dtype)
        return v.ln_pre(x)

    def _blocks(self):
        return self.model.visual.transformer.resblocks

    def _patch_maps(self, x: torch.Tensor) -> torch.Tensor:
        """[B,1+g*g,W] tokens -> [B,W,g,g] patch maps."""
        return x[:, 1:, :].transpose(1, 2).reshape(x.shape[0], self.width, self.grid, self.grid)

    def encode_image(self, images: torch.Tensor, preprocess: Optional[str] = None):
        """images [B,3,H,W] in [-1,1] -> (maps [B,n_taps,W,g,g] after the tapped blocks, embedding [B,E]).
        `preprocess` overrides this CLIP's (GALIP's D keeps the official one; embeddings compared with text
        embeddings take the standard one)."""
        in_dtype = images.dtype
        v = self.model.visual
        x = v.conv1(self.to_clip_input(images, preprocess).to(self.dtype))
        x = self._tokens_with_pos(x)
        maps = []
        for i, block in enumerate(self._blocks()):
            x = block(x)
            if i in self.taps:
                maps.append(self._patch_maps(x))
        emb = v.ln_post(x[:, 0, :]) @ v.proj
        return torch.stack(maps, dim=1).to(in_dtype), emb.to(in_dtype)

    def map_tokens(self, bridge: torch.Tensor, prompts: Optional[torch.Tensor], prompt_layers: Sequence[int]):
        """GALIP's CLIP mapper. bridge [B,W,g,g] stands in for the patch embedding; before each block in
        prompt_layers the next prompt [B,W] is appended to the sequence and dropped after the block.
        Returns the patch tokens of the last block as [B,W,g,g] (no ln_post)."""
        in_dtype = bridge.dtype
        x = self._tokens_with_pos(bridge.to(self.dtype))
        slot = {layer: i for i, layer in enumerate(prompt_layers)} if prompts is not None else {}
        for i, block in enumerate(self._blocks()):
            if i in slot:
                prompt = prompts[:, slot[i], :].to(x.dtype).unsqueeze(1)
                x = block(torch.cat([x, prompt], dim=1))[:, :-1, :]
            else:
                x = block(x)
        return self._patch_maps(x).to(in_dtype)

    def visual_state_dict_official(self) -> dict:
        """The visual weights under the key names the official netG stores as mapping.CLIP_ViT.*"""
        return {k: v for k, v in self.model.visual.state_dict().items() if not k.startswith(("ln_post", "proj"))}
