"""Building blocks of GALIP. Attribute names follow the official state_dict keys so checkpoints load as they are."""
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


def _mlp(cond_dim: int, ch: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict([
        ("linear1", nn.Linear(cond_dim, ch)),
        ("relu1", nn.ReLU(inplace=True)),
        ("linear2", nn.Linear(ch, ch)),
    ]))


class Affine(nn.Module):
    """Text-conditioned channel-wise affine: gamma(c) * x + beta(c). gamma starts at 1, beta at 0."""

    def __init__(self, cond_dim: int, ch: int):
        super().__init__()
        self.fc_gamma = _mlp(cond_dim, ch)
        self.fc_beta = _mlp(cond_dim, ch)
        nn.init.zeros_(self.fc_gamma.linear2.weight)
        nn.init.ones_(self.fc_gamma.linear2.bias)
        nn.init.zeros_(self.fc_beta.linear2.weight)
        nn.init.zeros_(self.fc_beta.linear2.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma = self.fc_gamma(cond)[:, :, None, None]
        beta = self.fc_beta(cond)[:, :, None, None]
        return gamma * x + beta


class DFBlock(nn.Module):
    """DF-GAN fusion block: Affine -> LeakyReLU -> Affine -> LeakyReLU (the official DFBLK)."""

    def __init__(self, cond_dim: int, ch: int):
        super().__init__()
        self.affine0 = Affine(cond_dim, ch)
        self.affine1 = Affine(cond_dim, ch)

    def forward(self, x, cond):
        x = F.leaky_relu(self.affine0(x, cond), 0.2)
        return F.leaky_relu(self.affine1(x, cond), 0.2)


class MBlock(nn.Module):
    """Bridge-predictor block (official M_Block): conv -> fuse -> conv -> fuse, plus a shortcut."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, cond_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, mid_ch, 3, 1, 1)
        self.fuse1 = DFBlock(cond_dim, mid_ch)
        self.conv2 = nn.Conv2d(mid_ch, out_ch, 3, 1, 1)
        self.fuse2 = DFBlock(cond_dim, out_ch)
        if in_ch != out_ch:
            self.c_sc = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x, cond):
        h = self.fuse1(self.conv1(x), cond)
        h = self.fuse2(self.conv2(h), cond)
        shortcut = self.c_sc(x) if hasattr(self, "c_sc") else x
        return shortcut + h


class GBlock(nn.Module):
    """Generator block (official G_Block): nearest upsample, then fuse -> conv -> fuse -> conv plus a shortcut."""

    def __init__(self, cond_dim: int, in_ch: int, out_ch: int, size: int):
        super().__init__()
        self.size = size
        self.c1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.c2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        self.fuse1 = DFBlock(cond_dim, in_ch)
        self.fuse2 = DFBlock(cond_dim, out_ch)
        if in_ch != out_ch:
            self.c_sc = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x, cond):
        x = F.interpolate(x, size=(self.size, self.size))
        h = self.c2(self.fuse2(self.c1(self.fuse1(x, cond)), cond))
        shortcut = self.c_sc(x) if hasattr(self, "c_sc") else x
        return shortcut + h


class DBlock(nn.Module):
    """Discriminator block on CLIP maps (official D_Block with res=True): x' + gamma*res(x) [+ beta*clip_map].
    conv_s exists in every block, as in the official code, but only runs when the channel count changes."""

    def __init__(self, fin: int, fout: int, clip_feat: bool):
        super().__init__()
        self.fin, self.fout = fin, fout
        self.conv_r = nn.Sequential(
            nn.Conv2d(fin, fout, 3, 1, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(fout, fout, 3, 1, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        )
        self.conv_s = nn.Conv2d(fin, fout, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        if clip_feat:
            self.beta = nn.Parameter(torch.zeros(1))

    def forward(self, x, clip_map=None):
        res = self.conv_r(x)
        if self.fin != self.fout:
            x = self.conv_s(x)
        out = x + self.gamma * res
        if hasattr(self, "beta"):
            out = out + self.beta * clip_map
        return out


class DownBlock(nn.Module):
    """DF-GAN discriminator block on pixels: stride-2 residual path, avg-pooled (and projected) shortcut."""

    def __init__(self, fin: int, fout: int):
        super().__init__()
        self.conv_r = nn.Sequential(
            nn.Conv2d(fin, fout, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(fout, fout, 3, 1, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        )
        self.conv_s = nn.Conv2d(fin, fout, 1) if fin != fout else nn.Identity()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return F.avg_pool2d(self.conv_s(x), 2) + self.gamma * self.conv_r(x)
