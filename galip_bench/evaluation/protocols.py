"""Metric protocols as executable specs (the stylegan3 ``metric_main`` idea). Each protocol owns everything its number
depends on, and the evaluation driver (``evaluation.driver``) only executes it:

- its sample plan (which captions, how many, which passes: ``evaluation.plans``),
- its image preparation (``prepare``: e.g. the official loop's clamp and nan_to_num before CLIP and Inception),
- its extractor, weights, feature size and precision, and its smoke-profile substitute,
- its reference (GALIP's released statistics or the test split through the same pipeline),
- each metric's direction (lower or higher is better) and the settings ``regress`` must compare,
- the settings a published number depends on (``comparable``), which the report checks before showing one.

The results record is serialised from the protocol instance that ran (``settings_dict``), so the recorded plan,
N, captions digest and reference are the ones that were executed.
"""
from __future__ import annotations

import torch

from galip_bench.errors import UserError
from galip_bench.evaluation.plans import SamplePlan
from galip_bench.metrics import clip_score as cs
from galip_bench.metrics.fid import FeatureBank, StatsAccumulator, frechet_distance

LOWER, HIGHER = -1, +1
OFFICIAL_CLAMP = "clamp(-1, 1), then nan_to_num(nan=-1, posinf=1, neginf=-1) (the official test loop)"
TINY_FEATURES = "tiny random conv net, 64-d (smoke profile; numbers not comparable to anything published)"
TINY_CLIP = "the model's own CLIP (smoke profile; numbers not comparable to anything published)"
# settings that must be equal for two records of a protocol to be compared (regress) or for a published number to
# apply (report); the plan's drawn captions and N are part of both
PLAN_KEYS = ("plan", "passes", "plan_num_samples", "plan_batch")
GATED = PLAN_KEYS + ("seed", "num_samples", "captions_sha256", "prepare", "resize", "extractor", "weights",
                     "precision", "reference", "reference_sha256", "options")
COMPARABLE = PLAN_KEYS + ("prepare", "resize", "extractor", "weights", "precision", "reference", "options")


def prepare_official(images: torch.Tensor) -> torch.Tensor:
    """The official test loop's ``clamp(-1, 1)`` then ``nan_to_num(nan=-1, posinf=1, neginf=-1)``."""
    return torch.nan_to_num(images.float().clamp(-1, 1), nan=-1.0, posinf=1.0, neginf=-1.0)


PROTOCOLS: dict = {}


def register(cls):
    PROTOCOLS[cls.name] = cls
    return cls


class Protocol:
    name: str
    matches: str                 # the reference implementation it reproduces
    kind: str                    # "features" | "clip" | "speed"
    metrics: dict                # metric -> LOWER | HIGHER | None (informational); default {name: better}
    better: int = LOWER
    resize: str = ""
    extractor: str = ""
    weights: str | None = None   # key of metrics.weights.WEIGHTS
    feature_dim: int | None = None
    precision: str = "fp32"
    reference_source: str | None = None   # features: "galip" (GALIP's npz when present) or "split"
    requires_data: str | None = None      # a data kind the protocol is defined on
    plan = SamplePlan()
    bootstrap = False
    default_options: tuple = ()
    gated = GATED
    comparable = COMPARABLE

    def __init__(self, plan: SamplePlan | None = None, options=None, smoke: bool = False):
        self.plan = plan or type(self).plan
        opts = dict(self.default_options)
        unknown = set(dict(options or {})) - set(opts)
        if unknown:
            raise UserError(f"protocol {self.name}: unknown option(s) {', '.join(sorted(unknown))} "
                            f"(has: {', '.join(opts) or 'none'})")
        opts.update(dict(options or {}))
        self.options, self.smoke = opts, smoke
        self.reference = "n/a" if self.kind != "features" else f"{self.reference_source}: not resolved yet"
        self.reference_sha256 = self.reference_path = None
        self.ran: dict = {}      # the resolved plan's summary (N, distinct captions, digest, description)
        if smoke:
            self.extractor, self.weights = (TINY_FEATURES if self.kind == "features" else TINY_CLIP), None

    @classmethod
    def weights_needed(cls) -> list:
        return [cls.weights] if cls.weights else []

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__ and "metrics" not in cls.__dict__:  # one metric, named like the protocol
            cls.metrics = {cls.name: cls.better}

    def option(self, key):
        return self.options[key]

    def make_extractor(self, resolver, device="cpu"):
        """The protocol's extractor on `device`, from the weight file `resolver` finds; it remembers the file
        (its hash enters the reference statistics' cache key)."""
        path = resolver(self.weights, self.name)
        extractor = self.build(path, device)
        extractor.weights_path = str(path)
        return extractor

    def dim(self) -> int | None:
        """Feature size (FID needs more samples than this); None where the metric has no covariance."""
        return 64 if (self.smoke and self.feature_dim) else self.feature_dim

    def settings_dict(self) -> dict:
        matches = (f"smoke-profile stand-in for {self.name} ({self.extractor}); compares only runs of the smoke "
                   "profile" if self.smoke else self.matches)
        return {"protocol": self.name, "matches": matches, **self.plan.settings(),
                "prepare": OFFICIAL_CLAMP if self.kind != "speed" else "n/a", "resize": self.resize,
                "extractor": self.extractor, "weights": self.weights, "precision": self.precision,
                "reference": self.reference, "reference_sha256": self.reference_sha256,
                "options": dict(self.options), "smoke": self.smoke, **self.ran}

    def compute(self, acc, reference=None) -> float:
        """The protocol's main metric (the one named like the protocol)."""
        return self.compute_all(acc, reference)[self.name]

    def gated_settings(self, settings: dict) -> dict:
        return {k: settings.get(k) for k in self.gated}

    def reference_settings(self, dataset_id: str, weights_sha256=None) -> dict:
        """Everything split reference statistics depend on (the stats-cache key): not the generated side's plan."""
        keep = ("protocol", "prepare", "resize", "extractor", "weights", "precision", "options", "smoke")
        return {**{k: v for k, v in self.settings_dict().items() if k in keep}, "dataset": dataset_id,
                "weights_sha256": weights_sha256}

    def check_data(self, data_kind: str) -> None:
        if self.requires_data and data_kind != self.requires_data:
            raise UserError(f"protocol {self.name} is defined on {self.requires_data} (its captions and "
                            f"statistics); the evaluation data is {data_kind}: set eval.data to the "
                            f"{self.requires_data} dataset")


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

    def clip_model(self) -> str:
        return "ViT-B-32-quickgelu"  # the official CLIP4evl: OpenAI ViT-B/32

    def build(self, path, device):
        return cs.ClipEmbedder(self.clip_model(), path, self.clip_preprocess, device)

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
    gated = ("options",)
    # batch sizes and repeats when not given: GPU-sized on a GPU, CPU-sized (minutes, not hours) on a CPU
    DEVICE_DEFAULTS = {"cuda": {"batch_sizes": (1, 8, 32, 64, 128, 256), "repeats": 10},
                       "cpu": {"batch_sizes": (1, 4, 16), "repeats": 5}}

    def settings_dict(self) -> dict:
        return {"protocol": self.name, "matches": self.matches, "seed": self.plan.seed,
                "options": dict(self.options)}

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
