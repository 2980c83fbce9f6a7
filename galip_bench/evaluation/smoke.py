"""The smoke profile's stand-ins for the real extractors: a fixed, seeded random conv net for the Inception
features (with a seeded random classifier head giving logits for the Inception Scores) and the model's own (tiny)
CLIP for the CLIP protocols. Their numbers only compare runs of the same profile; the records say so (`smoke: true`
and the extractor's description)."""
import zlib

import torch
import torch.nn.functional as F
from torch import nn

from models.clip import FrozenCLIP

TINY_DIM = 64
TINY_CLASSES = 16
LOGIT_SCALE, LOGIT_FREQ = 5.0, 8.0  # the smoke logit head: amplitude and frequency of its sinusoidal logits


class TinyExtractor(nn.Module):
    """Images in [-1, 1] -> [B, 64] float64 features of a seeded random conv net (a cheap Inception stand-in);
    with `logits`, [B, 16] logits of a seeded random classifier for the Inception Score stand-in: each image
    standardised (its own mean and std over pixels), the conv net's features standardised by their statistics on
    fixed calibration images, a seeded random projection to 16 values and
    ``LOGIT_SCALE * sin(LOGIT_FREQ * projection)`` (bounded logits that change class with small changes of the
    image). A linear head on the raw features gave near-uniform softmaxes whatever the image (the random net's
    features share a large common offset) and so an Inception Score of 1.000 for every generator; this one gives
    scores that differ between generators (near-constant images still score 1). Per sample and seeded: the same
    images always give the same logits."""

    weights_path = None

    def __init__(self, seed: int = 0, logits: bool = False):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(16, 32, 3, 2, 1),
                                     nn.LeakyReLU(0.2), nn.Conv2d(32, TINY_DIM, 3, 2, 1), nn.AdaptiveAvgPool2d(1),
                                     nn.Flatten())
            self.head = None
            if logits:
                self.head = nn.Linear(TINY_DIM, TINY_CLASSES, bias=False)
                nn.init.normal_(self.head.weight, std=TINY_DIM ** -0.5)
                features = self.net(self._standardise(self._resize(calibration_images())))
                self.register_buffer("shift", features.mean(0))
                self.register_buffer("scale", features.std(0))
        self.requires_grad_(False)

    @staticmethod
    def _resize(images):
        return F.interpolate(images.float().clamp(-1, 1), size=(64, 64), mode="bilinear", align_corners=False)

    @staticmethod
    def _standardise(x):
        return (x - x.mean((1, 2, 3), keepdim=True)) / (x.std((1, 2, 3), keepdim=True) + 1e-2)

    @torch.no_grad()
    def __call__(self, images):
        x = self._resize(images)
        self.to(x.device)
        if self.head is None:
            return self.net(x).double()
        z = self.head((self.net(self._standardise(x)) - self.shift) / self.scale)
        return (LOGIT_SCALE * torch.sin(LOGIT_FREQ * z)).double()


def calibration_images(n: int = 64, seed: int = 0) -> torch.Tensor:
    """Fixed smooth random images in [-1, 1] (8x8 noise, bilinear to 64 px), whose features' mean and std the
    smoke logit head standardises by."""
    low = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return F.interpolate(low, size=(64, 64), mode="bilinear", align_corners=False)


def smoke_extractor(proto, galip):
    """The stand-in for `proto`'s extractor: TinyExtractor for features (inside the protocol's own image step, e.g.
    a blur), the model's CLIP with the protocol's preprocessing for the CLIP scores; a protocol with a stand-in of
    its own (`smoke_stand_in(galip)`: cmmd, clip_score_heldout) builds it."""
    stand_in = getattr(proto, "smoke_stand_in", None)
    if stand_in is not None:
        return stand_in(galip)
    if proto.kind == "features":  # one net per protocol, so two protocols never report the same number by design
        return proto.wrap(TinyExtractor(seed=zlib.crc32(proto.name.encode()), logits=proto.smoke_logits))
    return FrozenCLIP(galip.clip.model, preprocess=proto.clip_preprocess, taps=galip.clip.taps)


class HeldOutTinyClip:
    """clip_score_heldout's stand-in: a seeded tiny random-init CLIP (``FrozenCLIP.from_open_clip("tiny")``) that is
    not the model's, so the stand-in is held out too. Images in [-1, 1] -> its image embeddings (the standard
    preprocessing at its input size); captions -> its text embeddings (CLIP BPE tokens)."""

    weights_path = None

    def __init__(self, seed: int, device="cpu"):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.clip = FrozenCLIP.from_open_clip("tiny", preprocess="standard").to(device)
        self.model = self.clip.model
        self.device = torch.device(device)

    @torch.no_grad()
    def encode_image(self, images):
        return self.clip.encode_image(images.to(self.device).float())[1].float()

    @torch.no_grad()
    def encode_text(self, captions):
        from galip_bench.data.tokens import tokenize
        return self.clip.encode_text(tokenize(captions).to(self.device))[0].float()
