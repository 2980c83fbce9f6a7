"""CLIP score, two protocols, from embeddings that the caller encodes (preprocessing shared with models.clip).

- ``clip_score_galip`` matches the official GALIP code's ``calc_clip_sim`` as used in ``calculate_FID_CLIP_sim``:
  per batch the mean cosine between the image embedding (ViT-B/32, the double-mapped "official" preprocessing) and
  the sentence embedding; the score is the mean of these batch means. Range [-1, 1] (GALIP reports e.g. 0.3338).
- ``clip_score`` is the common definition (Hessel et al. 2021 with w=100, as torchmetrics' ``CLIPScore``):
  the mean over samples of ``100 * max(cos, 0)``, with the standard CLIP preprocessing.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from models.clip import clip_input


def _cosine(img_emb, txt_emb) -> torch.Tensor:
    img_emb, txt_emb = torch.as_tensor(img_emb).double(), torch.as_tensor(txt_emb).double()
    if img_emb.shape != txt_emb.shape or img_emb.dim() != 2:
        raise ValueError(f"expected two [B, D] embeddings, got {tuple(img_emb.shape)} and {tuple(txt_emb.shape)}")
    return F.cosine_similarity(img_emb, txt_emb, dim=1)


class ClipScoreGALIP:
    """Accumulator of GALIP's CLIP score: the per-sample cosines are kept and averaged per score batch of
    ``batch`` samples in generation order, then the batch means are averaged (the official ``clip_cos +=
    calc_clip_sim(...)`` over the test batches, divided by their number). The score batch is part of the
    protocol, independent of how many images are generated at once."""

    def __init__(self, batch: int | None = None):
        self.batch = batch
        self.cosines: list[torch.Tensor] = []
        self.merged = None  # (sum of batch means, batches, samples) of every process, after `sync`

    def update(self, img_emb, txt_emb) -> None:
        self.cosines.append(_cosine(img_emb, txt_emb))  # stays on its device: no wait for the GPU per batch

    def _batch_means(self) -> list:
        if not self.cosines:
            return []
        cos = torch.cat(self.cosines).cpu()
        return [c.mean().item() for c in cos.split(self.batch or len(cos))]

    @property
    def n(self) -> int:
        return self.merged[2] if self.merged else sum(len(c) for c in self.cosines)

    def sync(self, comm) -> None:
        """Sum the batch means, batch counts and sample counts of every process in float64 (each process calls it;
        `comm`: ``galip_bench.distributed``'s collectives). Each process's share must be whole score
        batches, as the sharded evaluation gives it (then the batches are the one-process batches)."""
        if comm.rank_size()[1] == 1:
            return
        if self.batch is None:
            raise ValueError("a CLIP score over one batch of all samples cannot be merged across processes")
        means = self._batch_means()
        local = torch.tensor([sum(means), float(len(means)), float(self.n)], dtype=torch.float64)
        total, batches, samples = comm.all_reduce(local).tolist()
        self.merged = (total, int(round(batches)), int(round(samples)))

    def result(self) -> float:
        if self.merged is not None:
            total, batches, _ = self.merged
            if not batches:
                raise ValueError("no samples were accumulated")
            return float(total / batches)
        means = self._batch_means()
        if not means:
            raise ValueError("no samples were accumulated")
        return float(sum(means) / len(means))


class ClipScore:
    """Accumulator: mean over samples of ``100 * max(cos, 0)``."""

    def __init__(self):
        self.total, self.n = 0.0, 0

    def update(self, img_emb, txt_emb) -> None:
        self.total = self.total + (100.0 * _cosine(img_emb, txt_emb).clamp(min=0)).sum()  # a device tensor
        self.n += len(img_emb)

    def sync(self, comm) -> None:
        """Sum every process's total and count in float64 (each process calls it; `comm`:
        ``galip_bench.distributed``'s collectives)."""
        if comm.rank_size()[1] == 1:
            return
        local = torch.tensor([float(self.total), float(self.n)], dtype=torch.float64)
        total, n = comm.all_reduce(local).tolist()
        self.total, self.n = total, int(round(n))

    def result(self) -> float:
        if self.n == 0:
            raise ValueError("no samples were accumulated")
        return float(self.total) / self.n


def clip_score_galip(img_emb, txt_emb, batch_size: int | None = None) -> float:
    """GALIP's CLIP score of embeddings split into batches of ``batch_size`` (default: one batch)."""
    acc = ClipScoreGALIP(batch_size)
    acc.update(img_emb, txt_emb)
    return acc.result()


def clip_score(img_emb, txt_emb) -> float:
    """The common CLIP score: mean of ``100 * max(cos, 0)``."""
    acc = ClipScore()
    acc.update(img_emb, txt_emb)
    return acc.result()


def preprocess_official(images: torch.Tensor) -> torch.Tensor:
    """Matches the official GALIP code's ``transf_to_CLIP_input`` (the double [-1,1]->[0,1] map, nearest 224)."""
    return clip_input(images, "official", 224)


def preprocess_standard(images: torch.Tensor, size: int = 224) -> torch.Tensor:
    """Standard CLIP preprocessing: one map to [0,1], bicubic short side `size` (the CLIP's input size: 224, 336 for
    ViT-L/14@336), centre crop, CLIP mean/std."""
    return clip_input(images.float(), "standard", size)


PREPROCESS = {"official": preprocess_official, "standard": preprocess_standard}


class ClipEmbedder:
    """An open_clip model that embeds images ([-1, 1] tensors) and captions; used by ``clip_score`` and ``fid_clip``.

    ``weights``: a file (OpenAI ``ViT-B-32.pt`` or an open_clip checkpoint) or None for random init (tests).
    ``precision`` (``fp16_weights=True`` is ``clip.load-fp16``): ``fp32``, or ``clip.load-fp16``, which matches the
    official GALIP code's CLIP4evl as OpenAI's ``clip.load(device="cuda")`` builds it: ``convert_weights`` puts the
    conv/linear/attention weights and biases and the ``text_projection``/``proj`` matrices in fp16 before the
    weights are loaded, the LayerNorms and the embeddings stay fp32 and the LayerNorms compute in fp32 (open_clip's
    ``create_model(precision="fp16")``: ``LayerNormFp32`` + ``convert_weights_to_lp``, the same rule).
    """

    def __init__(self, model_name: str = "ViT-B-32-quickgelu", weights=None, preprocess: str = "standard",
                 device="cpu", fp16_weights: bool = False, precision: str | None = None):
        import open_clip

        from galip_bench.metrics.weights import read_clip_state_dict
        from models.clip import check_precision
        self.precision = check_precision(precision or ("clip.load-fp16" if fp16_weights else "fp32"))
        low = self.precision == "clip.load-fp16"
        self.model = open_clip.create_model(model_name, device=device, precision="fp16" if low else "fp32")
        if weights:  # load_state_dict casts each value to its parameter's dtype, as clip.load's build_model
            self.model.load_state_dict(read_clip_state_dict(weights))
        self.dtype = torch.float16 if low else torch.float32  # what the image tower's first conv takes
        self.model.eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.preprocess = PREPROCESS[preprocess]
        if preprocess == "standard":  # at the model's input size (GALIP's official map always resizes to 224)
            size = self.model.visual.image_size
            self.preprocess = partial(preprocess_standard, size=size[0] if isinstance(size, tuple) else size)
        self.device = torch.device(device)

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(self.preprocess(images.to(self.device).float()).to(self.dtype)).float()

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(captions).to(self.device)).float()


def _clip_module(obj):
    """The open_clip CLIP module of a CLIP holder (FrozenCLIP, ClipEmbedder, an extractor keeping it as `.model`)."""
    from open_clip.model import CLIP
    for _ in range(3):
        if obj is None or isinstance(obj, CLIP):
            return obj
        obj = getattr(obj, "model", None)
    return None


SAME_CLIP_KEYS = ("visual.conv1.weight", "visual.positional_embedding", "visual.proj", "text_projection")


def same_clip(a, b) -> bool:
    """Whether two CLIPs (open_clip CLIP modules, or holders of one as `.model`: FrozenCLIP, ClipEmbedder, the CMMD
    embedder) are one network: the same module, or the same shapes and values of the patch embedding, positional
    embedding and both projections (within fp16 rounding, so the clip.load-fp16 form of a CLIP is the same CLIP as its
    fp32 form). False when either holds no CLIP (a stand-in that runs none)."""
    a, b = _clip_module(a), _clip_module(b)
    if a is None or b is None:
        return False
    if a is b:
        return True
    sa, sb = a.state_dict(), b.state_dict()
    for key in SAME_CLIP_KEYS:
        if key not in sa or key not in sb or sa[key].shape != sb[key].shape:
            return False
        if not torch.allclose(sa[key].float().cpu(), sb[key].float().cpu(), rtol=2e-3, atol=1e-5):
            return False
    return True
