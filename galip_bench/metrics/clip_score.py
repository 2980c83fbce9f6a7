"""CLIP score, two protocols, from embeddings that the caller encodes (preprocessing shared with models.clip).

- ``clip_score_galip`` matches the official GALIP code's ``calc_clip_sim`` as used in ``calculate_FID_CLIP_sim``:
  per batch the mean cosine between the image embedding (ViT-B/32, the double-mapped "official" preprocessing) and
  the sentence embedding; the score is the mean of these batch means. Range [-1, 1] (GALIP reports e.g. 0.3338).
- ``clip_score`` is the common definition (Hessel et al. 2021 with w=100, as torchmetrics' ``CLIPScore``):
  the mean over samples of ``100 * max(cos, 0)``, with the standard CLIP preprocessing.
"""
from __future__ import annotations

import zipfile

import torch
import torch.nn.functional as F

from models.clip import clip_input


def _cosine(img_emb, txt_emb) -> torch.Tensor:
    img_emb, txt_emb = torch.as_tensor(img_emb).double(), torch.as_tensor(txt_emb).double()
    if img_emb.shape != txt_emb.shape or img_emb.dim() != 2:
        raise ValueError(f"expected two [B, D] embeddings, got {tuple(img_emb.shape)} and {tuple(txt_emb.shape)}")
    return F.cosine_similarity(img_emb, txt_emb, dim=1)


class ClipScoreGALIP:
    """Accumulator: mean of batch-mean cosines (matches GALIP's ``clip_cos += calc_clip_sim(...)`` / batches)."""

    def __init__(self):
        self.batch_means: list[float] = []

    def update(self, img_emb, txt_emb) -> None:
        self.batch_means.append(_cosine(img_emb, txt_emb).mean().item())

    def result(self) -> float:
        if not self.batch_means:
            raise ValueError("no batches were accumulated")
        return sum(self.batch_means) / len(self.batch_means)


class ClipScore:
    """Accumulator: mean over samples of ``100 * max(cos, 0)``."""

    def __init__(self):
        self.total, self.n = 0.0, 0

    def update(self, img_emb, txt_emb) -> None:
        self.total += (100.0 * _cosine(img_emb, txt_emb).clamp(min=0)).sum().item()
        self.n += len(img_emb)

    def result(self) -> float:
        if self.n == 0:
            raise ValueError("no samples were accumulated")
        return self.total / self.n


def clip_score_galip(img_emb, txt_emb, batch_size: int | None = None) -> float:
    """GALIP's CLIP score of embeddings split into batches of ``batch_size`` (default: one batch)."""
    acc, bs = ClipScoreGALIP(), batch_size or len(img_emb)
    for i in range(0, len(img_emb), bs):
        acc.update(img_emb[i:i + bs], txt_emb[i:i + bs])
    return acc.result()


def clip_score(img_emb, txt_emb) -> float:
    """The common CLIP score: mean of ``100 * max(cos, 0)``."""
    acc = ClipScore()
    acc.update(img_emb, txt_emb)
    return acc.result()


def preprocess_official(images: torch.Tensor) -> torch.Tensor:
    """Matches the official GALIP code's ``transf_to_CLIP_input`` (the double [-1,1]->[0,1] map, nearest 224)."""
    return clip_input(images, "official", 224)


def preprocess_standard(images: torch.Tensor) -> torch.Tensor:
    """Standard CLIP preprocessing: one map to [0,1], bicubic short side 224, centre crop, CLIP mean/std."""
    return clip_input(images.float(), "standard", 224)


def _is_torchscript(path) -> bool:
    return zipfile.is_zipfile(path) and any(n.endswith("constants.pkl") for n in zipfile.ZipFile(path).namelist())


PREPROCESS = {"official": preprocess_official, "standard": preprocess_standard}


class ClipEmbedder:
    """An open_clip model that embeds images ([-1, 1] tensors) and captions; used by ``clip_score`` and ``fid_clip``.

    ``weights``: a file (OpenAI ``ViT-B-32.pt`` or an open_clip checkpoint) or None for random init (tests).
    """

    def __init__(self, model_name: str = "ViT-B-32-quickgelu", weights=None, preprocess: str = "standard",
                 device="cpu"):
        import open_clip
        if weights and _is_torchscript(weights):  # OpenAI's ViT-B-32.pt (a JIT archive): rebuild as non-JIT model
            self.model = open_clip.load_openai_model(str(weights), precision="fp32", device=device)
        else:
            self.model = open_clip.create_model(model_name, pretrained=str(weights) if weights else None,
                                                device=device)
        self.model.eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.preprocess = PREPROCESS[preprocess]
        self.device = torch.device(device)

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(self.preprocess(images.to(self.device).float())).float()

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(captions).to(self.device)).float()
