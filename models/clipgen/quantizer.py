"""The VQGAN's codebook learned by gradient, as HFAiLab/clip-gen's VectorQuantizer (models/quantizer.py).

Why not vector-quantize-pytorch with a learnable codebook: its loss puts one weight (commitment_weight) on
mse(q, z) with the gradient reaching both z and q, so the encoder and codebook terms always weigh the same, and it
initialises the codebook with Kaiming-uniform. HF weighs the encoder term mse(z, sg(q)) by 1 and the codebook term
mse(sg(z), q) by 0.2, and draws the initial codes uniform in [-1/K, 1/K]."""
import torch
import torch.nn.functional as F
from torch import nn


class GradientQuantizer(nn.Module):
    """latents z [B,D,h,w] -> (quantized [B,D,h,w] with the straight-through gradient z + sg(q - z), indices
    [B, h*w] of the nearest codes by L2, commitment_weight * mse(z, sg(q)) + codebook_weight * mse(sg(z), q))."""

    def __init__(self, codebook_size: int, code_dim: int, commitment_weight: float, codebook_weight: float):
        super().__init__()
        self.commitment_weight, self.codebook_weight = commitment_weight, codebook_weight
        bound = 1.0 / codebook_size
        self.codebook = nn.Parameter(torch.empty(codebook_size, code_dim).uniform_(-bound, bound))

    def forward(self, z: torch.Tensor):
        b, d, h, w = z.shape
        vectors = z.permute(0, 2, 3, 1).reshape(-1, d)
        indices = torch.cdist(vectors.float(), self.codebook.float()).argmin(dim=1)  # fp32 even under autocast
        q = F.embedding(indices, self.codebook).to(z.dtype).view(b, h, w, d).permute(0, 3, 1, 2)
        loss = self.commitment_weight * F.mse_loss(z, q.detach()) + self.codebook_weight * F.mse_loss(z.detach(), q)
        # = HF's z + sg(q - z) in value and gradient, but exactly q forward (theirs rounds: the codes are far smaller)
        return q.detach() + (z - z.detach()), indices.view(b, h * w), loss
