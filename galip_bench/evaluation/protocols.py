"""The registry of metric protocols: one class per protocol, each an executable spec (``evaluation.spec``) that
states its plan, preparation, extractor, weights, reference, directions and the settings it is compared on; and the
look-ups the driver, the gate and the report use."""
from __future__ import annotations

import torch

from galip_bench.errors import UserError
from galip_bench.evaluation.plans import SamplePlan
from galip_bench.evaluation.spec import HIGHER, LOWER, Protocol
from galip_bench.metrics import blur
from galip_bench.metrics import clip_score as cs
from galip_bench.metrics.fid import FeatureBank, StatsAccumulator, frechet_distance

PROTOCOLS: dict = {}


def register(cls):
    PROTOCOLS[cls.name] = cls
    return cls


# ---- Inception / CLIP-embedding FIDs ---------------------------------------------------------------------------------

class _FID(Protocol):
    kind = "features"
    feature_dim = 2048
    reference_source = "split"
    bootstrap = True  # the driver keeps the generated features for a bootstrap interval (evaluation.bootstrap)

    def new_accumulator(self):
        return StatsAccumulator()

    def compute_all(self, acc, reference: dict) -> dict:
        gen = acc.state()
        return {self.name: frechet_distance(gen["mu"], gen["sigma"], reference["mu"], reference["sigma"])}


@register
class FIDGALIP(_FID):
    name = "fid_galip"
    matches = ("official GALIP code (calculate_FID_CLIP_sim): torchvision ImageNet inception_v3 in pytorch-fid's "
               "block layout, float features, scipy sqrtm Frechet distance; paper-comparable")
    resize = "(x+1)/2, bilinear 299 align_corners=False, no antialias, no uint8"
    extractor = "galip_inception_torchvision_pool3"
    weights = "inception_torchvision"
    reference_source = "galip"

    def build(self, path, device):
        from galip_bench.metrics.legacy import GALIPInception
        return _Features(GALIPInception(path).to(device).features)


@register
class ZeroShotFIDCOCO(FIDGALIP):
    name = "zs_fid_coco"
    matches = ("GALIP's zero-shot COCO FID (official README: the CC3M/CC12M model through the same test loop with "
               "cfg/coco.yml): fid_galip on the COCO test split against COCO's released statistics")
    requires_data = "coco"


@register
class ZeroShotFIDCOCO30k(ZeroShotFIDCOCO):
    name = "zs_fid_coco_30k"
    matches = ("the 30k-caption zero-shot convention of other text-to-image papers: fid_galip's pipeline on 30,000 "
               "COCO (image, caption) pairs drawn without replacement; not the GALIP paper's protocol")
    plan = SamplePlan("distinct", num_samples=30000)


class _TorchFidelityFeatures:
    weights = "inception_tf"
    resize = "clamp, uint8 (x*127.5+128), TF-1.x bilinear 299 inside the extractor"
    extractor = "torch_fidelity_inception-v3-compat_2048"

    def build(self, path, device):
        from galip_bench.metrics.standard import TorchFidelityInception
        return TorchFidelityInception(path, device)


@register
class FID(_TorchFidelityFeatures, _FID):
    name = "fid"
    matches = "torch-fidelity calculate_metrics(fid=True), inception-v3-compat (TTUR / TF FID comparable)"


class _BlurredFID(FID):
    """FID-k of DALL-E and CLIP-GEN: `fid` after blurring both image sets (metrics.blur); k is `blur_sigma`."""
    matches = ("DALL-E / CLIP-GEN FID-k: fid after a Gaussian blur of radius k (read as sigma = k px) of both the "
               "generated and the reference images")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        sigma = self.option("blur_sigma")
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma >= 0:
            raise UserError(f"protocol {self.name}: blur_sigma must be a number >= 0, got {sigma!r}")
        self.resize = f"{blur.describe(sigma)}; then {FID.resize}"

    def wrap(self, extractor):
        return blur.Blurred(extractor, self.option("blur_sigma"))


@register
class FIDBlur1(_BlurredFID):
    name = "fid_blur1"
    default_options = (("blur_sigma", 1),)


@register
class FIDBlur2(_BlurredFID):
    name = "fid_blur2"
    default_options = (("blur_sigma", 2),)


@register
class FIDClean(_FID):
    name = "fid_clean"
    matches = "clean-fid compute_fid(mode='clean')"
    resize = "uint8, PIL bicubic float resize 299 (clean)"
    extractor = "cleanfid_torchscript_2048"
    weights = "inception_cleanfid"

    def build(self, path, device):
        from galip_bench.metrics.standard import CleanFIDInception
        return CleanFIDInception(path, device)


def _kid_defaults() -> tuple:
    from torch_fidelity.defaults import DEFAULTS
    return (("kid_subset_size", DEFAULTS["kid_subset_size"]), ("kid_subsets", DEFAULTS["kid_subsets"]),
            ("kid_rng_seed", DEFAULTS["rng_seed"]))


@register
class KID(_TorchFidelityFeatures, Protocol):
    name = "kid"
    kind = "features"
    feature_dim = None  # no covariance; subsets shrink to N
    reference_source = "split"
    metrics = {"kid": LOWER, "kid_std": None}
    matches = ("torch-fidelity calculate_metrics(kid=True): cubic polynomial kernel, unbiased MMD, its default "
               "subsets and rng_seed")
    default_options = _kid_defaults()

    def new_accumulator(self):
        return FeatureBank()

    def compute_all(self, acc, reference: dict) -> dict:
        from galip_bench.metrics.standard import kid_from_features
        mean, std = kid_from_features(acc.state()["features"], reference["features"], self.option("kid_subsets"),
                                      self.option("kid_subset_size"), self.option("kid_rng_seed"))
        return {"kid": mean, "kid_std": std}


def _isc_defaults() -> tuple:
    from torch_fidelity.defaults import DEFAULTS
    return (("isc_splits", DEFAULTS["isc_splits"]), ("isc_shuffle", DEFAULTS["samples_shuffle"]),
            ("isc_rng_seed", DEFAULTS["rng_seed"]))


@register
class InceptionScore(_TorchFidelityFeatures, Protocol):
    name = "is"
    kind = "features"
    reference_source = None  # a metric of the generated images alone
    metrics = {"is": HIGHER, "is_std": None}
    matches = ("torch-fidelity calculate_metrics(isc=True): softmax of inception-v3-compat's logits_unbiased, "
               "its default splits, shuffle and rng_seed")
    extractor = "torch_fidelity_inception-v3-compat_logits_unbiased_1008"
    smoke_logits = True
    default_options = _isc_defaults()
    min_samples_why = "one sample per isc_splits split"

    def min_samples(self) -> int:
        return self.option("isc_splits")

    def build(self, path, device):
        from galip_bench.metrics.standard import TorchFidelityInception
        return TorchFidelityInception(path, device, feature="logits_unbiased")

    def new_accumulator(self):
        return FeatureBank()

    def compute_all(self, acc, reference=None) -> dict:
        from galip_bench.metrics.standard import inception_score
        mean, std = inception_score(acc.state()["features"], self.option("isc_splits"), self.option("isc_shuffle"),
                                    self.option("isc_rng_seed"))
        return {"is": mean, "is_std": std}


@register
class FIDCLIP(_FID):
    name = "fid_clip"
    matches = "FID in CLIP image-embedding space (Kynkaanniemi et al. 2023; clean-fid's clip_vit_b_32 features)"
    resize = "clamp, (x+1)/2, bicubic 224 + centre crop, CLIP mean/std"
    extractor = "CLIP image embedding (unnormalised)"
    weights = "clip_vit_b32"
    default_options = (("clip_model", "ViT-B-32-quickgelu"),)

    def dim(self):
        if self.smoke:
            return 64
        import open_clip
        return (open_clip.get_model_config(self.option("clip_model")) or {}).get("embed_dim", 512)

    def build(self, path, device):
        embedder = cs.ClipEmbedder(self.option("clip_model"), path, "standard", device)
        return _Features(lambda images: embedder.encode_image(images).double())


class _Features:
    """An extractor callable: images -> [B, D] float64 features."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, images):
        return self.fn(images)


# ---- CLIP scores ---------------------------------------------------------------------------------------------------

@register
class ClipScoreGALIP(Protocol):
    name = "clip_score_galip"
    kind = "clip"
    matches = ("official GALIP code's calc_clip_sim in calculate_FID_CLIP_sim: the sum of per-batch mean cosines "
               "over the batches of 64, divided by the number of batches; ViT-B/32, double-mapped preprocessing; "
               "paper-comparable")
    resize = "x*0.5+0.5, nearest 224, (x+1)*0.5, CLIP mean/std (official, double map)"
    extractor = "CLIP ViT-B/32 image embedding vs its text embedding of the caption"
    weights = "clip_vit_b32"
    better = HIGHER
    clip_preprocess = "official"
    fp16_on_gpu = True  # the official clip.load: fp16 weights on a GPU, LayerNorm and embeddings fp32 (fp32 on a CPU)
    precision = ("as the official clip.load: on a GPU fp16 conv/linear/attention weights, fp32 LayerNorm (computing "
                 "in fp32) and embeddings; fp32 on a CPU")

    def clip_model(self) -> str:
        return "ViT-B-32-quickgelu"  # the official CLIP4evl: OpenAI ViT-B/32

    def build(self, path, device):
        fp16 = torch.device(device).type == "cuda" and self.fp16_on_gpu
        return cs.ClipEmbedder(self.clip_model(), path, self.clip_preprocess, device, fp16_weights=fp16)

    def new_accumulator(self):
        return cs.ClipScoreGALIP(self.plan.batch)

    def compute_all(self, acc, reference=None) -> dict:
        return {self.name: acc.result()}


@register
class ClipScore(ClipScoreGALIP):
    name = "clip_score"
    matches = "common CLIP score 100*max(cos, 0) (Hessel et al. 2021; torchmetrics CLIPScore)"
    resize = "clamp, (x+1)/2, bicubic 224 + centre crop, CLIP mean/std (standard)"
    extractor = "CLIP image embedding vs text embedding"
    default_options = (("clip_model", "ViT-B-32-quickgelu"),)
    clip_preprocess = "standard"
    fp16_on_gpu = False
    precision = "fp32"

    def clip_model(self) -> str:
        return self.option("clip_model")

    def new_accumulator(self):
        return cs.ClipScore()


# ---- speed ---------------------------------------------------------------------------------------------------------

@register
class Speed(Protocol):
    name = "speed"
    kind = "speed"
    metrics = {"latency_ms": LOWER, "throughput_img_s": HIGHER}
    matches = "synthesis latency/throughput of text encoder + generator (warm-up, synchronised timing, median)"
    extractor = "n/a"
    default_options = (("batch_sizes", None), ("repeats", None), ("warmup", 3))
    gated = ("options", "synthesis")
    # batch sizes and repeats when not given: GPU-sized on a GPU, CPU-sized (minutes, not hours) on a CPU
    DEVICE_DEFAULTS = {"cuda": {"batch_sizes": (1, 8, 32, 64, 128, 256), "repeats": 10},
                       "cpu": {"batch_sizes": (1, 4, 16), "repeats": 5}}

    def settings_dict(self) -> dict:
        return {"protocol": self.name, "matches": self.matches, "seed": self.plan.seed,
                "synthesis": self.synthesis, "options": dict(self.options)}

    def measure(self, encode_text, generator, tokens, noise_dim, device="cpu", report=None) -> dict:
        """Time text encoding + generation; `report(batch, result)` is called as each batch size completes."""
        from galip_bench.metrics.speed import measure_speed
        defaults = self.DEVICE_DEFAULTS["cuda" if torch.device(device).type == "cuda" else "cpu"]
        for key, value in defaults.items():
            if self.options[key] is None:
                self.options[key] = value  # recorded as measured
        return measure_speed(encode_text, generator, tokens, noise_dim, device, self.option("batch_sizes"),
                             self.option("repeats"), self.option("warmup"), self.plan.seed, report=report)


# ---- look-ups ------------------------------------------------------------------------------------------------------

def protocol_class(name: str):
    if name not in PROTOCOLS:
        raise UserError(f"unknown metric protocol '{name}'; choose from {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def get_protocol(name: str, **kwargs) -> Protocol:
    return protocol_class(name)(**kwargs)


def direction(protocol: str, metric: str):
    """LOWER (-1), HIGHER (+1) or None (informational) for a metric of a protocol."""
    cls = PROTOCOLS.get(protocol)
    return cls.metrics.get(metric) if cls is not None else None


def metric_direction(name: str):
    """The direction of a metric (or of a protocol's main metric) named alone, e.g. in a tolerance."""
    for cls in PROTOCOLS.values():
        if name in cls.metrics:
            return cls.metrics[name]
    return None
