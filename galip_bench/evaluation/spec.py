"""The protocol spec: the base class of every metric protocol (registered in ``evaluation.protocols``, the
stylegan3 ``metric_main`` idea). Each protocol owns everything its number depends on, and the evaluation driver
(``evaluation.driver``) only executes it:

- its sample plan (which captions, how many, which passes: ``evaluation.plans``),
- its image preparation (``prepare``: e.g. the official loop's clamp and nan_to_num before CLIP and Inception),
- its extractor, weights, feature size and precision, and its smoke-profile substitute,
- its reference (GALIP's released statistics or the test split through the same pipeline; none for a metric of
  the generated images alone, e.g. the Inception Score: then ``reference_source`` is None and the record says n/a),
- each metric's direction (lower or higher is better) and the settings ``regress`` must compare,
- the settings a published number depends on (``comparable``), which the report checks before showing one.

The results record is serialised from the protocol instance that ran (``settings_dict``), so the recorded plan,
N, captions digest and reference are the ones that were executed.
"""
from __future__ import annotations

import dataclasses

import torch

from galip_bench.errors import UserError
from galip_bench.evaluation.plans import SamplePlan
from galip_bench.metrics.fid import StatsAccumulator, frechet_distance

LOWER, HIGHER = -1, +1
OFFICIAL_CLAMP = "clamp(-1, 1), then nan_to_num(nan=-1, posinf=1, neginf=-1) (the official test loop)"
TINY_FEATURES = "tiny random conv net, 64-d (smoke profile; numbers not comparable to anything published)"
TINY_LOGITS = ("tiny random conv net + standardised sinusoidal random head, 16 logits (smoke profile; numbers not "
               "comparable to anything published)")
TINY_CLIP = "the model's own CLIP (smoke profile; numbers not comparable to anything published)"
# settings that must be equal for two records of a protocol to be compared (regress) or for a published number to
# apply (report); the plan's drawn captions and N are part of both
PLAN_KEYS = ("plan", "passes", "plan_num_samples", "plan_batch", "plan_ranks", "plan_subset")
GATED = PLAN_KEYS + ("seed", "num_samples", "captions_sha256", "synthesis", "prepare", "resize", "extractor",
                     "weights", "precision", "reference", "reference_sha256", "options", "self_referential",
                     "sampling")
COMPARABLE = PLAN_KEYS + ("synthesis", "prepare", "resize", "extractor", "weights", "precision", "reference",
                          "options", "self_referential")
# what records written before a setting existed ran: one sampler process, and the test split in its own order (the
# official plan kept the first floor(N/64)*64 images in split order then, so those records do not compare with the
# official plan's DistributedSampler subset now)
SETTING_DEFAULTS = {"synthesis": "faithful", "plan_ranks": 1, "plan_subset": "split order",
                    # the CLIP-based protocols then (clip_score_galip, clip_score, fid_clip) ran OpenAI ViT-B/32, the
                    # CLIP GALIP trains with; a record of a protocol without a CLIP never carries the key
                    "self_referential": True}


def prepare_official(images: torch.Tensor) -> torch.Tensor:
    """The official test loop's ``clamp(-1, 1)`` then ``nan_to_num(nan=-1, posinf=1, neginf=-1)``."""
    return torch.nan_to_num(images.float().clamp(-1, 1), nan=-1.0, posinf=1.0, neginf=-1.0)


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
    reference_source: str | None = None   # features: "galip" (GALIP's npz when present), "split" or None (none)
    smoke_logits = False                  # features: the smoke stand-in ends in logits (TINY_LOGITS)
    requires_data: str | None = None      # a data kind the protocol is defined on
    plan = SamplePlan()
    bootstrap = False
    default_options: tuple = ()
    gated = GATED
    comparable = COMPARABLE
    # CLIP-based protocols: whether the metric's CLIP is the generator's own (GALIP trains with OpenAI ViT-B/32), so
    # that the number partly grades the model by its own training signal; the driver decides it from the model
    # (`observe_model`); None: no CLIP, the record has no such key
    self_referential: bool | None = None
    # how a sampling model (CLIP-GEN) drew its images: its clipgen.model.sampling (temperature, top_k, top_p,
    # candidates reranked by its own CLIP), decided from the model (`observe_model`); None: GALIP (one forward pass)
    sampling: dict | None = None

    def __init__(self, plan: SamplePlan | None = None, options=None, smoke: bool = False,
                 synthesis: str = "faithful"):
        self.plan, self.synthesis = plan or type(self).plan, synthesis
        opts = dict(self.default_options)
        unknown = set(dict(options or {})) - set(opts)
        if unknown:
            raise UserError(f"protocol {self.name}: unknown option(s) {', '.join(sorted(unknown))} "
                            f"(has: {', '.join(opts) or 'none'})")
        opts.update(dict(options or {}))
        self.options, self.smoke = opts, smoke
        self.reference = f"{self.reference_source}: not resolved yet" if self.has_reference else "n/a"
        self.reference_sha256 = self.reference_path = None
        self.ran: dict = {}      # the resolved plan's summary (N, distinct captions, digest, description)
        if smoke:
            tiny = TINY_LOGITS if self.smoke_logits else TINY_FEATURES
            self.extractor, self.weights = (tiny if self.kind == "features" else TINY_CLIP), None

    @property
    def has_reference(self) -> bool:
        """Whether the metric compares with reference features (FID, KID), which the driver resolves and caches."""
        return self.kind == "features" and self.reference_source is not None

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
        extractor = self.wrap(self.build(path, device))
        extractor.weights_path = str(path)
        return extractor

    def wrap(self, extractor):
        """The protocol's own image step around an extractor, the smoke stand-in's too (fid_blur*: the blur)."""
        return extractor

    min_samples_why = ""

    def min_samples(self) -> int | None:
        """The fewest samples the metric is defined on, beyond FID's full-rank covariance (None: no minimum)."""
        return None

    def dim(self) -> int | None:
        """Feature size (FID needs more samples than this); None where the metric has no covariance."""
        return 64 if (self.smoke and self.feature_dim) else self.feature_dim

    def settings_dict(self) -> dict:
        matches = (f"smoke-profile stand-in for {self.name} ({self.extractor}); compares only runs of the smoke "
                   "profile" if self.smoke else self.matches)
        return {"protocol": self.name, "matches": matches, **self.plan.settings(), "synthesis": self.synthesis,
                "prepare": OFFICIAL_CLAMP if self.kind != "speed" else "n/a", "resize": self.resize,
                "extractor": self.extractor, "weights": self.weights, "precision": self.precision,
                "reference": self.reference, "reference_sha256": self.reference_sha256,
                "options": dict(self.options), "smoke": self.smoke,
                **({} if self.self_referential is None else {"self_referential": self.self_referential}),
                **self._sampling_settings(), **self.ran}

    def _sampling_settings(self) -> dict:
        """{"sampling": ..., and for a CLIP-based metric "reranked_by_metric_clip"}: true where the generator kept,
        of several candidates per caption, the one its own CLIP scored highest and this metric's CLIP is that CLIP
        (the score is then inflated by the selection)."""
        if self.sampling is None:
            return {}
        out = {"sampling": dict(self.sampling)}
        if self.self_referential is not None:
            out["reranked_by_metric_clip"] = bool(self.self_referential and self.sampling.get("candidates", 1) > 1)
        return out

    def metric_extras(self) -> dict:
        """{metric: fields added to its record} after compute_all (e.g. a per-metric interval); none by default."""
        return {}

    def observe_model(self, model, extractor) -> None:
        """Called by the driver as it builds the extractor for `model`: a CLIP-based protocol's `self_referential`
        becomes whether the extractor runs the model's own CLIP (``metrics.clip_score.same_clip``: the same network,
        or the same weights; a stand-in that runs no CLIP is not); a model with no `clip` attribute keeps the class's
        value (the CLIP GALIP trains with). A model that samples (CLIP-GEN: `cfg.sampling`) has its sampling
        settings recorded."""
        sampling = getattr(getattr(model, "cfg", None), "sampling", None)
        self.sampling = None if sampling is None else {**dataclasses.asdict(sampling),
                                                        "rerank_clip": "the generator's own CLIP"}
        if self.self_referential is None or not hasattr(model, "clip"):
            return
        from galip_bench.metrics.clip_score import same_clip
        self.self_referential = same_clip(model.clip, extractor)

    def compute(self, acc, reference=None) -> float:
        """The protocol's main metric (the one named like the protocol)."""
        return self.compute_all(acc, reference)[self.name]

    def gated_settings(self, settings: dict) -> dict:
        return {k: settings.get(k, SETTING_DEFAULTS.get(k)) for k in self.gated}

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


class FrechetProtocol(Protocol):
    """A Fréchet distance between the generated images' features and the reference's (np.cov, scipy sqrtm:
    metrics.fid), 2048-d Inception features unless a subclass says otherwise."""
    kind = "features"
    feature_dim = 2048
    reference_source = "split"
    bootstrap = True  # the driver keeps the generated features for a bootstrap interval (evaluation.bootstrap)

    def new_accumulator(self):
        return StatsAccumulator()

    def compute_all(self, acc, reference: dict) -> dict:
        gen = acc.state()
        return {self.name: frechet_distance(gen["mu"], gen["sigma"], reference["mu"], reference["sigma"])}


class Features:
    """An extractor callable: images -> [B, D] float64 features (no gradient)."""

    def __init__(self, fn):
        self.fn = fn

    @torch.no_grad()
    def __call__(self, images):
        return self.fn(images)
