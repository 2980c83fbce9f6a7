"""Discriminators: NetD on frozen CLIP maps (Mate-D), a DF-GAN-style scratch NetD on pixels, and NetC."""
import torch
import torch.nn.functional as F
from torch import nn

from models.blocks import DBlock, DownBlock
from models.config import GALIPConfig


class NetD(nn.Module):
    """Official NetD. maps [B,n_taps,W,g,g] -> [B,d_out_ch,g,g].
    mate_d=True: start from the first tap, each D_Block adds beta * the next tap (the paper's Mate-D).
    mate_d=False: the last tap alone through the same number of blocks, without CLIP inputs."""

    def __init__(self, cfg: GALIPConfig, clip_width: int):
        super().__init__()
        self.mate_d = cfg.mate_d
        blocks = [DBlock(clip_width, clip_width, clip_feat=cfg.mate_d) for _ in range(len(cfg.d_taps) - 1)]
        self.DBlocks = nn.ModuleList(blocks)
        self.main = DBlock(clip_width, cfg.d_out_ch, clip_feat=False)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        if not self.mate_d:
            out = maps[:, -1]
            for block in self.DBlocks:
                out = block(out)
            return self.main(out)
        out = maps[:, 0]
        for i, block in enumerate(self.DBlocks):
            out = block(out, maps[:, i + 1])
        return self.main(out)


class ScratchNetD(nn.Module):
    """DF-GAN-style discriminator trained from pixels (no CLIP in D): images [B,3,S,S] -> [B,d_out_ch,g,g].
    Stride-2 residual blocks halve the image while it stays at least g, then an average pool lands on g so
    the same NetC serves both backbones."""

    def __init__(self, cfg: GALIPConfig, grid: int):
        super().__init__()
        self.grid = grid
        self.conv_img = nn.Conv2d(3, cfg.ndf, 3, 1, 1)
        size, chans = cfg.img_size, [cfg.ndf]
        while size // 2 >= grid:
            size //= 2
            chans.append(cfg.ndf * min(2 ** len(chans), 8))
        chans[-1] = cfg.d_out_ch
        self.DBlocks = nn.ModuleList([DownBlock(i, o) for i, o in zip(chans[:-1], chans[1:])])
        if len(self.DBlocks) == 0:
            self.proj = nn.Conv2d(cfg.ndf, cfg.d_out_ch, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.conv_img(images)
        for block in self.DBlocks:
            out = block(out)
        if hasattr(self, "proj"):
            out = self.proj(out)
        if out.shape[-1] != self.grid:
            out = F.adaptive_avg_pool2d(out, self.grid)
        return out


class NetC(nn.Module):
    """Official NetC: cat(D features, sentence tiled to g x g) -> conv4x4 -> LeakyReLU -> conv to 1x1 logit."""

    def __init__(self, cfg: GALIPConfig, grid: int):
        super().__init__()
        if grid < 4:
            raise ValueError(f"NetC needs a CLIP grid of at least 4, got {grid}")
        self.grid = grid
        self.joint_conv = nn.Sequential(
            nn.Conv2d(cfg.d_out_ch + cfg.cond_dim, cfg.c_hidden, 4, 1, 0, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(cfg.c_hidden, 1, grid - 3, 1, 0, bias=False),
        )

    def forward(self, feats: torch.Tensor, sent: torch.Tensor) -> torch.Tensor:
        cond = sent[:, :, None, None].expand(-1, -1, self.grid, self.grid)
        return self.joint_conv(torch.cat((feats, cond), dim=1))
