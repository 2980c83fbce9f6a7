"""NetG: GALIP's generator (Mate-G): bridge-feature predictor, prompt predictor, frozen CLIP-ViT mapper, G_Blocks."""
import math

import torch
from torch import nn

from models.blocks import GBlock, MBlock
from models.clip import FrozenCLIP
from models.config import GALIPConfig


def g_block_plan(ngf: int, img_size: int):
    """(in_ch, out_ch, size) per G_Block, as the official get_G_in_out_chs for a 2^n canvas: sizes double from 8
    and the last block lands on img_size (224 for the 256 canvas of the paper)."""
    canvas_log2 = max(3, math.ceil(math.log2(img_size)))
    chs = [ngf * min(2 ** i, 8) for i in range(canvas_log2 - 1)][::-1]
    pairs = list(zip(chs[:-1], chs[1:]))
    sizes = [2 ** (3 + i) for i in range(len(pairs) - 1)] + [img_size]
    return [(i, o, s) for (i, o), s in zip(pairs, sizes)]


class BridgeMapper(nn.Module):
    """The official CLIP_Adapter: noise code -> M_Blocks -> bridge feature -> CLIP mapper -> conv."""

    def __init__(self, cfg: GALIPConfig, clip_width: int, out_ch: int):
        super().__init__()
        cond = cfg.z_dim + cfg.cond_dim
        if cfg.bridge:
            blocks = [MBlock(cfg.bridge_ch, cfg.bridge_mid_ch, cfg.bridge_ch, cond) for _ in range(cfg.bridge_blocks)]
            self.FBlocks = nn.ModuleList(blocks)
        self.conv_fuse = nn.Conv2d(cfg.bridge_ch, clip_width, 5, 1, 2)
        self.conv = nn.Conv2d(clip_width, out_ch, 5, 1, 2)
        if cfg.g_clip_vit and cfg.prompts:
            self.fc_prompt = nn.Linear(cond, clip_width * len(cfg.prompt_layers))
        self.cfg = cfg
        self.clip_width = clip_width

    def forward(self, code, cond, clip: FrozenCLIP):
        h = code
        for block in getattr(self, "FBlocks", ()):
            h = block(h, cond)
        bridge = self.conv_fuse(h)
        if not self.cfg.g_clip_vit:
            return self.conv(bridge)
        prompts = None
        if hasattr(self, "fc_prompt"):
            prompts = self.fc_prompt(cond).view(cond.shape[0], -1, self.clip_width)
        mapped = clip.map_tokens(bridge, prompts, self.cfg.prompt_layers)
        return self.conv(bridge + self.cfg.mapper_scale * mapped)


class NetG(nn.Module):
    """noise [B,z], sentence embedding [B,E] -> image [B,3,img_size,img_size] (no tanh, as the official NetG).
    The frozen CLIP is held by reference, not registered, so state_dict() holds only the generator's own weights."""

    def __init__(self, cfg: GALIPConfig, clip: FrozenCLIP):
        super().__init__()
        self.cfg = cfg
        self._clip = [clip]  # a list hides it from nn.Module registration
        self.code_size = clip.grid
        cond = cfg.z_dim + cfg.cond_dim
        plan = g_block_plan(cfg.ngf, cfg.img_size)
        self.fc_code = nn.Linear(cfg.z_dim, self.code_size * self.code_size * cfg.bridge_ch)
        self.mapping = BridgeMapper(cfg, clip.width, plan[0][0])
        self.GBlocks = nn.ModuleList([GBlock(cond, i, o, s) for i, o, s in plan])
        self.to_rgb = nn.Sequential(nn.LeakyReLU(0.2), nn.Conv2d(plan[-1][1], 3, 3, 1, 1))

    @property
    def clip(self) -> FrozenCLIP:
        return self._clip[0]

    def forward(self, noise: torch.Tensor, sent: torch.Tensor) -> torch.Tensor:
        cond = torch.cat((noise, sent), dim=1)
        code = self.fc_code(noise).view(noise.shape[0], self.cfg.bridge_ch, self.code_size, self.code_size)
        h = self.mapping(code, cond, self.clip)
        for block in self.GBlocks:
            h = block(h, cond)
        return self.to_rgb(h)
