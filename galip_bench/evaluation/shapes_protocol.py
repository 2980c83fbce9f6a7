"""`shapes_acc` and `fd_shapes`. `shapes_acc`: the synthetic-shapes benchmark's exact compositional score (`galip_bench.shapes`). Each generated
image is read by the scene reader and checked against the scene its caption describes, attribute by attribute;
every metric is recorded with its chance level and a bootstrap 95% interval over the images."""
import numpy as np
import torch

from galip_bench.evaluation.spec import HIGHER, Features, FrechetProtocol, Protocol
from galip_bench.shapes.accuracy import METRICS, ShapesAccuracy, bootstrap_interval, chance
from galip_bench.shapes.labels import caption_labels
from galip_bench.shapes.reader import READ_SIZE

RESAMPLES = 1000


class ReaderExtractor:
    """The driver's CLIP-kind interface on the scene reader: images -> the reader's labels, captions -> the
    labels of their scenes."""

    weights_path = None

    def __init__(self, reader, device):
        self.reader, self.device = reader.to(device), torch.device(device)

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.reader.read(images.to(self.device)).cpu()

    def encode_text(self, captions) -> torch.Tensor:
        return torch.from_numpy(np.stack([caption_labels(c) for c in captions]))


class ShapesAcc(Protocol):
    name = "shapes_acc"
    kind = "clip"
    reference_source = None  # the captions are the reference
    requires_data = "synthetic"
    metrics = {m: HIGHER for m in METRICS}
    matches = ("galip-bench's shapes benchmark: the scene reader's reading of each generated image against the exact "
               "scene of its caption (colour, shape, size per object; relation, background, count; all), the mean "
               "over images, with its chance level and a bootstrap 95% interval (galip_bench/shapes)")
    resize = f"clamp, bilinear antialiased resize to {READ_SIZE} px (the reader's input)"
    extractor = ("the shapes scene reader: a small CNN trained on exact renders of fresh scenes (never on generated "
                 "images); its recipe hash, weights sha256 and accuracy on other fresh renders are in the record")
    weights = None
    paired_statistic = "columns"  # evaluation.paired: each metric's column of per-image correctness

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reader_info, self.chance, self.intervals = None, {}, {}

    def build_cached(self, cache_dir, device):
        """The extractor, from the reader cached under `cache_dir` (trained there on first use)."""
        from galip_bench.shapes.cache import load_reader
        reader, self.reader_info = load_reader(cache_dir, device=device)
        return ReaderExtractor(reader, device)

    def new_accumulator(self):
        return ShapesAccuracy()

    def compute_all(self, acc, reference=None) -> dict:
        rows = acc.rows()
        if not len(rows):
            raise ValueError("no samples were accumulated")
        self.chance = chance(acc.labels()[1])
        self.intervals = bootstrap_interval(rows, RESAMPLES, self.plan.seed)
        with np.errstate(all="ignore"):
            return {m: float(np.nanmean(rows[:, j])) if not np.isnan(rows[:, j]).all() else None
                    for j, m in enumerate(METRICS)}

    def metric_extras(self) -> dict:
        return {m: {"ci_low": low, "ci_high": high, "ci_resamples": RESAMPLES, "chance": self.chance.get(m)}
                for m, (low, high) in self.intervals.items()}

    def paired_rows(self, acc) -> np.ndarray:
        return acc.rows()

    def settings_dict(self) -> dict:
        info = self.reader_info or {}
        return {**super().settings_dict(), "reader_recipe_hash": info.get("recipe_hash"),
                "reader_sha256": info.get("sha256"), "reader_accuracy": info.get("accuracy")}


class FDShapes(FrechetProtocol):
    """Fréchet distance between the generated images and the test renders in the shapes CLIP's image-embedding space
    (the trained tiny CLIP, `shapes.clip`): a distribution check in a space that knows the scenes, where Inception
    (trained on photographs) sees flat colours."""
    name = "fd_shapes"
    requires_data = "synthetic"
    feature_dim = 64
    matches = ("galip-bench's shapes benchmark: Fréchet distance (np.cov, scipy sqrtm, as `fid`) of the shapes CLIP's "
               "image embeddings of the generated images against the test split's renders")
    resize = "the CLIP's own input (official preprocessing: x*0.5+0.5, nearest to 56 px, CLIP mean/std)"
    extractor = ("the shapes CLIP's image embedding (64-d, unnormalised): the tiny CLIP trained on rendered scenes; "
                 "its recipe hash and weights sha256 are in the record and the reference-statistics key")
    weights = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.clip_info = None

    def build_cached(self, cache_dir, device):
        from galip_bench.checkpoints.clip import SHAPES, build_clip
        from models import CLIPConfig
        clip = build_clip(CLIPConfig(model="tiny", pretrained=SHAPES, preprocess="official"), device=device,
                          precision="fp32", cache_dir=cache_dir)
        self.clip_info = clip.weights_info
        return Features(lambda images: clip.encode_image(images.to(device))[1].double())

    def reference_settings(self, dataset_id: str, weights_sha256=None) -> dict:
        return {**super().reference_settings(dataset_id, weights_sha256),
                "clip_sha256": (self.clip_info or {}).get("sha256")}

    def settings_dict(self) -> dict:
        info = self.clip_info or {}
        return {**super().settings_dict(), "clip_recipe_hash": info.get("recipe_hash"),
                "clip_sha256": info.get("sha256")}
