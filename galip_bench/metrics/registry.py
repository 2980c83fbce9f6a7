"""Named metric protocols (the stylegan3 ``metric_main`` idea): each states its settings and what it matches.

An eval loop uses them like this::

    protos = [get_protocol(name) for name in names]          # optional overrides: get_protocol("fid", num_samples=5000)
    extractors = {p.name: p.make_extractor(resolver, device) for p in protos if p.kind != "speed"}
    accs = {p.name: p.new_accumulator() for p in protos}
    for images, img_emb, txt_emb in batches:                 # images in [-1, 1]
        for p in protos:
            if p.kind == "features": accs[p.name].update(extractors[p.name](images))
            if p.kind == "clip":     accs[p.name].update(img_emb, txt_emb)
    ref = cache.get_or_compute(p.reference_settings(dataset_id, extractor), compute_reference)  # features kinds
    value = p.compute(accs[p.name], ref)                     # float; p.compute_all(...) adds e.g. kid_std

Every setting goes into ``settings_dict()`` (the results record) and, with the dataset identity and the extractor
weights' sha256, into the reference-statistics cache key (``reference_settings``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from galip_bench.errors import UserError
from galip_bench.metrics import clip_score as cs
from galip_bench.metrics.fid import FeatureBank, StatsAccumulator, frechet_distance
from galip_bench.metrics.weights import file_sha256


@dataclass(frozen=True)
class Settings:
    num_samples: int = 30000
    seed: int = 0
    captions_per_image: str = "one_random"  # GALIP: one random caption of the image per sample
    batch_size: int = 100  # matters for clip_score_galip (mean of batch means); recorded for all
    resize: str = ""
    extractor: str = ""
    weights: str | None = None
    reference: str = "split:test"  # "split:<name>" (stats computed by the same pipeline) or "npz:<path>"
    options: tuple = ()  # protocol-specific (key, value) pairs, e.g. (("kid_subsets", 100),)


class Protocol:
    name: ClassVar[str]
    matches: ClassVar[str]  # the reference implementation it reproduces
    kind: ClassVar[str]  # "features" | "clip" | "speed"
    defaults: ClassVar[Settings]

    def __init__(self, **overrides):
        unknown = set(overrides) - {f.name for f in dataclasses.fields(Settings)}
        if unknown:
            raise UserError(f"protocol {self.name}: unknown setting(s) {', '.join(sorted(unknown))}")
        self.settings = dataclasses.replace(self.defaults, **overrides)

    @classmethod
    def weights_needed(cls) -> list[str]:
        return [cls.defaults.weights] if cls.defaults.weights else []

    def option(self, key, default=None):
        return dict(self.settings.options).get(key, default)

    def settings_dict(self) -> dict:
        d = dataclasses.asdict(self.settings)
        d["options"] = dict(self.settings.options)
        return {"protocol": self.name, "matches": self.matches, **d}

    def reference_settings(self, dataset_id: str, extractor=None) -> dict:
        """Everything the reference statistics depend on: the cache key input."""
        path = getattr(extractor, "weights_path", None)
        return {**self.settings_dict(), "dataset": dataset_id, "weights_sha256": file_sha256(path) if path else None}

    def compute_all(self, acc, reference=None) -> dict:
        return {self.name: self.compute(acc, reference)}


# ---- Inception / CLIP feature protocols -----------------------------------------------------------------------------

class _FIDProtocol(Protocol):
    kind = "features"

    def new_accumulator(self):
        return StatsAccumulator()

    def compute(self, acc, reference: dict) -> float:
        gen = acc.state() if hasattr(acc, "state") else acc
        return frechet_distance(gen["mu"], gen["sigma"], reference["mu"], reference["sigma"])


class _GALIPExtractor:
    def __init__(self, weights_path, device):
        from galip_bench.metrics.legacy import GALIPInception
        self.weights_path = str(weights_path)
        self.net = GALIPInception(weights_path).to(device)

    def __call__(self, images):
        return self.net.features(images)


class FIDGALIP(_FIDProtocol):
    name = "fid_galip"
    matches = ("official GALIP code (calculate_FID_CLIP_sim): torchvision ImageNet inception_v3 in pytorch-fid's "
               "block layout, float features, scipy sqrtm Frechet distance; paper-comparable")
    defaults = Settings(resize="clamp, (x+1)/2, bilinear 299 align_corners=False, no antialias, no uint8",
                        extractor="galip_inception_torchvision_pool3", weights="inception_torchvision")

    def make_extractor(self, resolver, device="cpu"):
        return _GALIPExtractor(resolver(self.settings.weights, self.name), device)


class ZeroShotFIDCOCO(FIDGALIP):
    """Zero-shot COCO: captions drawn from COCO val2014 (``select_captions``), reference = COCO val statistics."""
    name = "zs_fid_coco"
    matches = ("GALIP paper's zero-shot COCO FID (model trained on CC3M/CC12M): legacy fid_galip pipeline on "
               "30,000 COCO val2014 captions")
    defaults = dataclasses.replace(FIDGALIP.defaults, captions_per_image="seeded_choice_without_replacement",
                                   reference="coco2014:val2014")


def select_captions(captions_per_image: list[list[str]], num: int = 30000, seed: int = 0) -> list[tuple[int, int]]:
    """zs_fid_coco's caption choice: all (image, caption) pairs of the split in order, ``num`` of them drawn without
    replacement by ``numpy.random.default_rng(seed).choice``; returns (image index, caption index) pairs."""
    pairs = [(i, j) for i, caps in enumerate(captions_per_image) for j in range(len(caps))]
    if num > len(pairs):
        raise UserError(f"zs_fid_coco: asked for {num} captions but the split has {len(pairs)}")
    idx = np.random.default_rng(seed).choice(len(pairs), size=num, replace=False)
    return [pairs[k] for k in idx]


class _TorchFidelityExtractorMixin:
    def make_extractor(self, resolver, device="cpu"):
        from galip_bench.metrics.standard import TorchFidelityInception
        return TorchFidelityInception(resolver(self.settings.weights, self.name), device)


class FID(_TorchFidelityExtractorMixin, _FIDProtocol):
    name = "fid"
    matches = "torch-fidelity calculate_metrics(fid=True), inception-v3-compat (TTUR / TF FID comparable)"
    defaults = Settings(resize="uint8, TF-1.x bilinear 299 inside the extractor",
                        extractor="torch_fidelity_inception-v3-compat_2048", weights="inception_tf")


class FIDClean(_FIDProtocol):
    name = "fid_clean"
    matches = "clean-fid compute_fid(mode='clean')"
    defaults = Settings(resize="uint8, PIL bicubic float resize 299 (clean)", extractor="cleanfid_torchscript_2048",
                        weights="inception_cleanfid")

    def make_extractor(self, resolver, device="cpu"):
        from galip_bench.metrics.standard import CleanFIDInception
        return CleanFIDInception(resolver(self.settings.weights, self.name), device)


class KID(_TorchFidelityExtractorMixin, Protocol):
    name = "kid"
    kind = "features"
    matches = "torch-fidelity calculate_metrics(kid=True): cubic polynomial kernel, unbiased MMD, 100 subsets"
    defaults = Settings(resize=FID.defaults.resize, extractor=FID.defaults.extractor, weights="inception_tf",
                        options=(("kid_subset_size", 1000), ("kid_subsets", 100)))

    def new_accumulator(self):
        return FeatureBank()

    def compute_all(self, acc, reference: dict) -> dict:
        from galip_bench.metrics.standard import kid_from_features
        gen = acc.state() if hasattr(acc, "state") else acc
        mean, std = kid_from_features(gen["features"], reference["features"], self.option("kid_subsets"),
                                      self.option("kid_subset_size"), self.settings.seed)
        return {"kid": mean, "kid_std": std}

    def compute(self, acc, reference: dict) -> float:
        return self.compute_all(acc, reference)["kid"]


class _ClipEmbeddingExtractor:
    def __init__(self, embedder):
        self.embedder, self.weights_path = embedder, None

    def __call__(self, images):
        return self.embedder.encode_image(images).double()


class FIDCLIP(_FIDProtocol):
    name = "fid_clip"
    matches = "FID in CLIP image-embedding space (Kynkaanniemi et al. 2023; clean-fid's clip_vit_b_32 features)"
    defaults = Settings(resize="clamp, (x+1)/2, bicubic 224 + centre crop, CLIP mean/std",
                        extractor="CLIP image embedding (unnormalised; 512-d for ViT-B/32)",
                        weights="clip_vit_b32", options=(("clip_model", "ViT-B-32-quickgelu"),))

    def make_extractor(self, resolver, device="cpu"):
        path = resolver(self.settings.weights, self.name)
        extractor = _ClipEmbeddingExtractor(cs.ClipEmbedder(self.option("clip_model"), path, "standard", device))
        extractor.weights_path = str(path)
        return extractor


# ---- CLIP score -----------------------------------------------------------------------------------------------------

class ClipScoreGALIPProtocol(Protocol):
    name = "clip_score_galip"
    kind = "clip"
    matches = ("official GALIP code's calc_clip_sim: mean over batches of the batch-mean cosine, ViT-B/32, "
               "double-mapped preprocessing; paper-comparable")
    defaults = Settings(resize="x*0.5+0.5, nearest 224, (x+1)*0.5, CLIP mean/std (official, double map)",
                        extractor="CLIP ViT-B/32 image embedding vs sentence embedding", weights="clip_vit_b32")

    def make_extractor(self, resolver, device="cpu"):
        return cs.ClipEmbedder("ViT-B-32-quickgelu", resolver(self.settings.weights, self.name), "official", device)

    def new_accumulator(self):
        return cs.ClipScoreGALIP()

    def compute(self, acc, reference=None) -> float:
        return acc.result()


class ClipScoreProtocol(ClipScoreGALIPProtocol):
    name = "clip_score"
    matches = "common CLIP score 100*max(cos, 0) (Hessel et al. 2021; torchmetrics CLIPScore)"
    defaults = Settings(resize="clamp, (x+1)/2, bicubic 224 + centre crop, CLIP mean/std (standard)",
                        extractor="CLIP image embedding vs text embedding", weights="clip_vit_b32",
                        options=(("clip_model", "ViT-B-32-quickgelu"),))

    def make_extractor(self, resolver, device="cpu"):
        return cs.ClipEmbedder(self.option("clip_model"), resolver(self.settings.weights, self.name), "standard",
                               device)

    def new_accumulator(self):
        return cs.ClipScore()


# ---- speed ----------------------------------------------------------------------------------------------------------

class Speed(Protocol):
    name = "speed"
    kind = "speed"
    matches = "synthesis latency/throughput of text encoder + generator (warm-up, synchronised timing, median)"
    defaults = Settings(num_samples=0, captions_per_image="n/a", batch_size=1, extractor="n/a",
                        reference="n/a", options=(("batch_sizes", (1, 8, 32, 64, 128, 256)), ("repeats", 10),
                                                  ("warmup", 3)))

    def measure(self, encode_text, generator, tokens, noise_dim, device="cpu") -> dict:
        from galip_bench.metrics.speed import measure_speed
        return measure_speed(encode_text, generator, tokens, noise_dim, device, self.option("batch_sizes"),
                             self.option("repeats"), self.option("warmup"), self.settings.seed)


PROTOCOLS: dict[str, type[Protocol]] = {cls.name: cls for cls in (
    FIDGALIP, FID, FIDClean, KID, ClipScoreGALIPProtocol, ClipScoreProtocol, FIDCLIP, ZeroShotFIDCOCO, Speed)}


def get_protocol(name: str, **overrides) -> Protocol:
    if name not in PROTOCOLS:
        raise UserError(f"unknown metric protocol '{name}'; choose from {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name](**overrides)
