"""The registry of metric protocols: one class per protocol, each an executable spec (``evaluation.spec``) that
states its plan, preparation, extractor, weights, reference, directions and the settings it is compared on; and the
look-ups the driver, the gate and the report use."""
from __future__ import annotations

import torch

from galip_bench.errors import UserError
from galip_bench.evaluation.plans import SamplePlan
from galip_bench.evaluation.shapes_protocol import FDShapes, ShapesAcc
from galip_bench.evaluation.spec import HIGHER, LOWER, Features, FrechetProtocol, Protocol
from galip_bench.metrics import blur
from galip_bench.metrics import clip_score as cs
from galip_bench.metrics.fid import FeatureBank

PROTOCOLS: dict = {}


def register(cls):
    PROTOCOLS[cls.name] = cls
    return cls


# ---- Inception / CLIP-embedding FIDs ---------------------------------------------------------------------------------

@register
class FIDGALIP(FrechetProtocol):
    name = "fid_galip"
    matches = ("official GALIP code (calculate_FID_CLIP_sim): torchvision ImageNet inception_v3 in pytorch-fid's "
               "block layout, float features, scipy sqrtm Frechet distance; paper-comparable")
    resize = "(x+1)/2, bilinear 299 align_corners=False, no antialias, no uint8"
    extractor = "galip_inception_torchvision_pool3"
    weights = "inception_torchvision"
    reference_source = "galip"

    def build(self, path, device):
        from galip_bench.metrics.legacy import GALIPInception
        return Features(GALIPInception(path).to(device).features)


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
class FID(_TorchFidelityFeatures, FrechetProtocol):
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
class FIDClean(FrechetProtocol):
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

    paired_statistic = "inception_score"  # evaluation.paired: the logits resampled through this formula
    kept_width = 1008

    def paired_params(self, reference=None) -> dict:
        return {"flavour": "torch_fidelity", "splits": self.option("isc_splits"),
                "shuffle": self.option("isc_shuffle"), "rng_seed": self.option("isc_rng_seed")}


@register
class FIDCLIP(FrechetProtocol):
    name = "fid_clip"
    matches = "FID in CLIP image-embedding space (Kynkaanniemi et al. 2023; clean-fid's clip_vit_b_32 features)"
    resize = "clamp, (x+1)/2, bicubic 224 + centre crop, CLIP mean/std"
    extractor = "CLIP image embedding (unnormalised)"
    weights = "clip_vit_b32"
    default_options = (("clip_model", "ViT-B-32-quickgelu"),)
    self_referential = True  # OpenAI ViT-B/32: the CLIP GALIP trains with (decided from the model when it is known)

    def dim(self):
        if self.smoke:
            return 64
        import open_clip
        return (open_clip.get_model_config(self.option("clip_model")) or {}).get("embed_dim", 512)

    def build(self, path, device):
        embedder = cs.ClipEmbedder(self.option("clip_model"), path, "standard", device)
        features = Features(lambda images: embedder.encode_image(images).double())
        features.model = embedder.model  # its CLIP, which `observe_model` compares with the model's
        return features


# ---- DINOv2 features: fd_dinov2, prdc ----------------------------------------------------------------------------

class _DINOv2Features:
    """dgm-eval's DINOv2 ViT-L/14 representations (metrics.dinov2)."""
    weights = "dinov2_vitl14"
    resize = ("clamp, uint8 (x*127.5+128), PIL bicubic (antialiased) to 224x224, aspect not kept (a copy at 224 px), "
              "/255, ImageNet mean/std (dgm-eval DINOv2Encoder.transform, clean_resize=False)")
    extractor = ("dinov2_vitl14 final-LayerNorm CLS token, 1024-d (timm vit_large_patch14_dinov2 at img_size 518 "
                 "with the DINOv2 hub model's position-embedding interpolation, offset 0.1)")

    def build(self, path, device):
        from galip_bench.metrics.dinov2 import DINOv2Features
        return DINOv2Features(path, device)


@register
class FDDINOv2(_DINOv2Features, FrechetProtocol):
    name = "fd_dinov2"
    feature_dim = 1024
    matches = ("dgm-eval FD_DINOv2 (Stein et al. 2023): DINOv2Encoder(arch='vitl14', clean_resize=False) "
               "representations and compute_FD_with_reps (np.cov, scipy sqrtm Frechet distance); the torch.hub model "
               "re-expressed with timm (torch-fidelity 0.4's dinov2-vit-l-14 resizes with TF-1.x bilinear: not used)")


PRDC_METRICS = ("precision", "recall", "density", "coverage")


class _PRDC(Protocol):
    """Precision, recall, density, coverage (metrics.prdc) of all N generated against all the test split's
    features; the k-NN radii need the reference features themselves (a FeatureBank, as KID)."""
    kind = "features"
    reference_source = "split"
    suffix = ""  # metric names: precision<suffix>, ... (unique across protocols: run tables key on the metric)
    default_options = (("nearest_k", 5),)
    min_samples_why = "more samples than nearest_k (each sample's radius is its k-th nearest other sample)"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        k = self.option("nearest_k")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise UserError(f"protocol {self.name}: nearest_k must be an integer >= 1, got {k!r}")
        self.reference_num_samples = None

    def min_samples(self) -> int:
        return self.option("nearest_k") + 1

    def new_accumulator(self):
        from galip_bench.metrics.prdc import DeviceFeatureBank
        return DeviceFeatureBank()

    def compute_all(self, acc, reference: dict) -> dict:
        from galip_bench.metrics.prdc import compute_prdc
        real = reference["features"]
        self.reference_num_samples = int(len(real))
        values = compute_prdc(real, acc.state()["features"], self.option("nearest_k"), device=acc.device)
        return {f"{m}{self.suffix}": values[m] for m in PRDC_METRICS}

    def settings_dict(self) -> dict:
        return {**super().settings_dict(), "nearest_k": self.option("nearest_k"),
                "reference_num_samples": self.reference_num_samples}


_PRDC_MATCHES = ("prdc package compute_prdc(real, fake, nearest_k) (Naeem et al. 2020; dgm-eval's copy, its default "
                 "--nearest_k 5) on all N generated and all test-split features (dgm-eval's CLI first draws 10,000 of "
                 "each; torch-fidelity's prc: k=3, <=, precision/recall only)")


@register
class PRDC(_TorchFidelityFeatures, _PRDC):
    name = "prdc"
    metrics = {m: HIGHER for m in PRDC_METRICS}
    matches = f"{_PRDC_MATCHES}; fid's features (torch-fidelity inception-v3-compat pool3, 2048-d)"


@register
class PRDCDINOv2(_DINOv2Features, _PRDC):
    name = "prdc_dinov2"
    suffix = "_dinov2"
    metrics = {f"{m}_dinov2": HIGHER for m in PRDC_METRICS}
    matches = f"{_PRDC_MATCHES}; fd_dinov2's features (dgm-eval DINOv2 ViT-L/14 CLS, 1024-d)"


# ---- DM-GAN / CogView PyTorch evaluation: fid_dmgan, is_dmgan ----------------------------------------------------

_DMGAN_PNG = "clamp, uint8 by truncation ((x+1)*127.5 -> uint8: DM-GAN's PNG writer)"
_DMGAN_RESIZE = {
    "loader": "PIL bilinear Resize((299, 299)) on the uint8 image (DM-GAN's eval/FID loader), ToTensor /255",
    "network": "ToTensor /255 at the image's own size, then the network side's bilinear resize to 299"}


class _DMGANPath:
    """The released PyTorch evaluation of DM-GAN (eval/FID) and CogView (eval_utils/inception_score.py), which
    CLIP-GEN's MS-COCO table most likely used (metrics.dmgan): torchvision ImageNet inception_v3, not the TF FID
    Inception; the image written as a uint8 PNG, read back and resized to 299 by PIL (`resize_at: loader`) or
    handed over at its own size (`resize_at: network`, CogView's tensors: the FID wrapper's align_corners=True
    upsample, the IS's nn.Upsample)."""
    weights = "inception_torchvision"
    network_resize = ""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        where = self.option("resize_at")
        if where not in _DMGAN_RESIZE:
            raise UserError(f"protocol {self.name}: resize_at must be one of {', '.join(_DMGAN_RESIZE)}, "
                            f"got {where!r}")
        self.resize = f"{_DMGAN_PNG}; {_DMGAN_RESIZE[where]}" + (f" ({self.network_resize})"
                                                                   if where == "network" else "")


@register
class FIDDMGAN(_DMGANPath, FrechetProtocol):
    name = "fid_dmgan"
    matches = ("DM-GAN's PyTorch FID (eval/FID/fid_score.py, inception.py: pytorch-fid's early InceptionV3 wrapper "
               "of torchvision's ImageNet inception_v3) on the PNGs its sampling writes: pool3 features, np.cov, "
               "scipy sqrtm Frechet distance; the test split through the same pipeline as reference (DM-GAN's own "
               "coco_val.npz is a precomputed file); every sample of the plan (its loader drops N mod 50)")
    extractor = ("torchvision inception_v3 in pytorch-fid's block layout: bilinear 299 align_corners=True, "
                 "x*std/0.5+(mean-0.5)/0.5 (ImageNet), pool3 2048-d, float32")
    network_resize = "the wrapper's F.upsample bilinear 299, align_corners=True"
    default_options = (("resize_at", "loader"),)

    def build(self, path, device):
        from galip_bench.metrics.dmgan import DMGANFeatures
        return DMGANFeatures(path, device, self.option("resize_at"))


class _BlurredFIDDMGAN(FIDDMGAN):
    """FID-k on DM-GAN's pipeline: the blur of fid_blur1/2 (metrics.blur: radius k read as sigma = k px at 256 px,
    scaled with the image side) on the clamped float image, before the uint8 PNG step."""
    matches = ("DALL-E / CogView / CLIP-GEN FID-k on DM-GAN's PyTorch FID pipeline: fid_dmgan after the Gaussian "
               "blur of fid_blur1/2 (radius k read as sigma = k px at 256 px) of both the generated and the "
               "reference images")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        sigma = self.option("blur_sigma")
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma >= 0:
            raise UserError(f"protocol {self.name}: blur_sigma must be a number >= 0, got {sigma!r}")
        self.resize = f"{blur.describe(sigma)}; then {self.resize}"

    def wrap(self, extractor):
        return blur.Blurred(extractor, self.option("blur_sigma"))


@register
class FIDDMGANBlur1(_BlurredFIDDMGAN):
    name = "fid_dmgan_blur1"
    default_options = (("resize_at", "loader"), ("blur_sigma", 1))


@register
class FIDDMGANBlur2(_BlurredFIDDMGAN):
    name = "fid_dmgan_blur2"
    default_options = (("resize_at", "loader"), ("blur_sigma", 2))


@register
class InceptionScoreDMGAN(_DMGANPath, Protocol):
    name = "is_dmgan"
    kind = "features"
    reference_source = None  # a metric of the generated images alone
    metrics = {"is_dmgan": HIGHER, "is_dmgan_std": None}
    matches = ("CogView's PyTorch Inception Score (eval_utils/inception_score.py, after sbarratt/"
               "inception-score-pytorch): torchvision ImageNet inception_v3(transform_input=False) on images in "
               "[-1, 1], float32 softmax of its 1000 logits (with the fc bias), consecutive splits without shuffle "
               "(isc_splits: CogView's 1), exp(mean scipy entropy(p(y|x), p(y))); mean and std over the splits. "
               "DM-GAN's own COCO IS is OpenAI's TF one (the `is` family)")
    extractor = "torchvision inception_v3, whole network in eval mode: 1000 logits (fc with bias), float32"
    network_resize = "inception_score(resize=True): nn.Upsample bilinear 299, align_corners=False"
    smoke_logits = True
    default_options = (("isc_splits", 1), ("resize_at", "loader"))
    min_samples_why = "one sample per isc_splits split"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        splits = self.option("isc_splits")
        if isinstance(splits, bool) or not isinstance(splits, int) or splits < 1:
            raise UserError(f"protocol {self.name}: isc_splits must be an integer >= 1, got {splits!r}")
        self.resize += "; (x-0.5)/0.5 (Normalize(0.5, 0.5): [-1, 1]) before the network"

    def min_samples(self) -> int:
        return self.option("isc_splits")

    def build(self, path, device):
        from galip_bench.metrics.dmgan import CogViewLogits
        return CogViewLogits(path, device, self.option("resize_at"))

    def new_accumulator(self):
        return FeatureBank()

    def compute_all(self, acc, reference=None) -> dict:
        from galip_bench.metrics.dmgan import inception_score_cogview
        mean, std = inception_score_cogview(acc.state()["features"], self.option("isc_splits"))
        return {"is_dmgan": mean, "is_dmgan_std": std}

    paired_statistic = "inception_score"
    kept_width = 1000

    def paired_params(self, reference=None) -> dict:
        return {"flavour": "cogview", "splits": self.option("isc_splits")}


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
    self_referential = True  # GALIP's own CLIP grades it (decided from the model when it is known)
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


# ---- CMMD and the held-out CLIP score --------------------------------------------------------------------------------

TINY_CMMD = ("the model's own CLIP's L2-normalised image embeddings through CMMD's image steps at its input size "
             "(smoke profile; numbers not comparable to anything published)")
TINY_HELD_OUT = ("a seeded tiny random CLIP that is not the model's (smoke profile; numbers not comparable to anything "
                 "published)")


@register
class CMMD(Protocol):
    name = "cmmd"
    kind = "features"
    reference_source = "split"
    metrics = {"cmmd": LOWER, "cmmd_unbiased": LOWER}
    matches = ("google-research/cmmd main.compute_cmmd (Jayasumana et al. 2024): embedding.ClipEmbeddingModel (CLIP "
               "ViT-L/14@336, OpenAI weights, L2-normalised embeddings), distance.mmd (Gaussian RBF sigma=10, the "
               "biased V-statistic MMD^2, x1000) against the test split's embeddings; cmmd_unbiased: the unbiased "
               "U-statistic of the same kernel (not in the official code); float64 sums")
    resize = ("clamp, uint8 as torchvision save_image writes a PNG (x+1)/2*255+0.5 truncated, centre square crop and "
              "PIL bicubic resize to the CLIP's input size (io_util._center_crop_and_resize; PIL's 8-bit resampler "
              "in torch, pixel-exact), /255, CLIP mean/std")
    extractor = "CLIP ViT-L/14@336 image embedding, L2-normalised (open_clip ViT-L-14-336-quickgelu)"
    weights = "clip_vit_l14_336"
    default_options = (("sigma", 10), ("scale", 1000))
    self_referential = False  # GALIP trains with ViT-B/32 (decided from the model when it is known)
    min_samples_why = "the unbiased estimate needs two samples per set"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for key in ("sigma", "scale"):
            value = self.option(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise UserError(f"protocol {self.name}: {key} must be a number > 0, got {value!r}")
        if self.smoke:
            self.extractor = TINY_CMMD
        self.device, self.stand_in_sha256, self.reference_num_samples = "cpu", None, None

    def min_samples(self) -> int:
        return 2

    def build(self, path, device):
        from galip_bench.metrics.cmmd import CLIP_MODEL, ClipImageEmbedder
        self.device = device  # the kernel sums run there too
        return ClipImageEmbedder(cs.ClipEmbedder(CLIP_MODEL, path, "standard", device).model)

    def smoke_stand_in(self, galip):
        from galip_bench.metrics.cmmd import ClipImageEmbedder, state_sha256
        self.device = galip.clip.model.visual.conv1.weight.device
        self.stand_in_sha256 = state_sha256(galip.clip.model.visual)  # the cached reference is this CLIP's
        return ClipImageEmbedder(galip.clip.model)

    def reference_settings(self, dataset_id: str, weights_sha256=None) -> dict:
        settings = super().reference_settings(dataset_id, weights_sha256)
        return {**settings, "stand_in_sha256": self.stand_in_sha256} if self.smoke else settings

    def new_accumulator(self):
        return FeatureBank()

    def compute_all(self, acc, reference: dict) -> dict:
        from galip_bench.metrics.cmmd import mmd
        self.reference_num_samples = int(len(reference["features"]))
        value = mmd(reference["features"], acc.state()["features"], self.option("sigma"), self.option("scale"),
                    device=self.device)
        self.kernel_terms = value  # what a paired resample needs (paired_params, paired_cross)
        return {"cmmd": value["biased"], "cmmd_unbiased": value["unbiased"]}

    paired_statistic = "mmd"  # evaluation.paired: cmmd and cmmd_unbiased of resampled embeddings
    kept_width = 768  # ViT-L/14@336 embeddings

    def paired_params(self, reference: dict) -> dict:
        """sigma, scale, the reference's own kernel terms and the digest of its embeddings (after compute_all)."""
        import hashlib

        import numpy as np
        features = np.ascontiguousarray(reference["features"], np.float64)
        return {"sigma": self.option("sigma"), "scale": self.option("scale"),
                "reference_biased": self.kernel_terms["x_biased"],
                "reference_unbiased": self.kernel_terms["x_unbiased"],
                "reference_sha256": hashlib.sha256(features.tobytes()).hexdigest()}

    def paired_cross(self):
        return self.kernel_terms["y_cross"]

    def settings_dict(self) -> dict:
        return {**super().settings_dict(), "reference_num_samples": self.reference_num_samples}


HELD_OUT_WEIGHTS = {"ViT-L-14": "clip_vit_l14", "ViT-L-14-336": "clip_vit_l14_336", "ViT-B-32": "clip_vit_b32"}


@register
class ClipScoreHeldOut(ClipScore):
    name = "clip_score_heldout"
    matches = ("clip_score's formula (mean of 100*max(cos, 0), torchmetrics CLIPScore; standard preprocessing) with a "
               "CLIP GALIP did not train with: OpenAI ViT-L/14 by default (option clip_model)")
    extractor = "held-out CLIP image embedding vs its text embedding of the caption"
    weights = "clip_vit_l14"
    default_options = (("clip_model", "ViT-L-14-quickgelu"),)
    self_referential = False  # GALIP trains with ViT-B/32 (decided from the model when it is known)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        import open_clip
        model = self.option("clip_model")
        config = open_clip.get_model_config(model) if isinstance(model, str) else None
        if config is None:
            raise UserError(f"protocol {self.name}: clip_model {model!r} is not an open_clip model name")
        size = config["vision_cfg"]["image_size"]
        self.resize = f"clamp, (x+1)/2, bicubic {size} + centre crop, CLIP mean/std (standard)"
        if self.smoke:
            self.extractor = TINY_HELD_OUT
        else:  # OpenAI's file for the models it released; another model reads the default's file name
            self.weights = HELD_OUT_WEIGHTS.get(model.removesuffix("-quickgelu"), type(self).weights)

    def smoke_stand_in(self, galip):
        import zlib

        from galip_bench.evaluation.smoke import HeldOutTinyClip
        return HeldOutTinyClip(zlib.crc32(self.name.encode()), next(galip.parameters()).device)


# ---- speed ---------------------------------------------------------------------------------------------------------

@register
class Speed(Protocol):
    name = "speed"
    kind = "speed"
    metrics = {"latency_ms": LOWER, "throughput_img_s": HIGHER}
    matches = "synthesis latency/throughput of text encoder + generator (warm-up, synchronised timing, median)"
    extractor = "n/a"
    default_options = (("batch_sizes", None), ("repeats", None), ("warmup", 3))
    gated = ("options", "synthesis", "sampling")
    # batch sizes and repeats when not given: GPU-sized on a GPU, CPU-sized (minutes, not hours) on a CPU
    DEVICE_DEFAULTS = {"cuda": {"batch_sizes": (1, 8, 32, 64, 128, 256), "repeats": 10},
                       "cpu": {"batch_sizes": (1, 4, 16), "repeats": 5}}

    def settings_dict(self) -> dict:
        return {"protocol": self.name, "matches": self.matches, "seed": self.plan.seed,
                "synthesis": self.synthesis, "options": dict(self.options), **self._sampling_settings()}

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


register(ShapesAcc)
register(FDShapes)
