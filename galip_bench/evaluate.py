"""The evaluation engine shared by training (periodic evaluation) and `eval`: generate from the test captions with
a seeded noise stream, stream the images straight into every protocol's extractor, and return one results record
per metric with the protocol's full settings."""
import dataclasses
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import IterableDataset
from torchvision.transforms.functional import to_pil_image
from tqdm import tqdm

from galip_bench.data import build_dataset, dataset_id, legacy_stats_path, reference_images
from galip_bench.errors import UserError
from galip_bench.metrics import get_protocol
from galip_bench.metrics.fid import load_stats_npz
from galip_bench.metrics.stats_cache import StatsCache
from galip_bench.metrics.weights import WeightsResolver
from galip_bench.provenance import git_commit, library_versions
from models.clip import FrozenCLIP

TINY_FEATURES = "tiny random conv net, 64-d (smoke profile; numbers not comparable to anything published)"
TINY_CLIP = "the model's own CLIP (smoke profile)"
LEGACY_NPZ_PROTOCOLS = ("fid_galip", "zs_fid_coco")


class TinyExtractor(nn.Module):
    """A fixed, seeded random conv net: a cheap stand-in for Inception in the smoke profile."""

    weights_path = None

    def __init__(self, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(16, 32, 3, 2, 1),
                                     nn.LeakyReLU(0.2), nn.Conv2d(32, 64, 3, 2, 1), nn.AdaptiveAvgPool2d(1))
        self.requires_grad_(False)

    @torch.no_grad()
    def __call__(self, images):
        x = F.interpolate(images.float().clamp(-1, 1), size=(64, 64), mode="bilinear", align_corners=False)
        return self.net.to(x.device)(x).flatten(1).double()


def make_protocols(names, eval_cfg) -> list:
    protos = []
    for name in names:
        overrides = {"seed": eval_cfg.seed, "batch_size": eval_cfg.batch_size}
        if eval_cfg.num_samples:
            overrides["num_samples"] = eval_cfg.num_samples
        probe = get_protocol(name)
        if eval_cfg.extractor == "tiny" and probe.kind in ("features", "clip"):
            overrides.update(extractor=TINY_FEATURES if probe.kind == "features" else TINY_CLIP, weights=None)
        protos.append(get_protocol(name, **overrides))
    return protos


class Evaluator:
    """evaluator(galip, step) -> list of records. Extractors and reference statistics are built once."""

    def __init__(self, cfg, site, device, allow_download: bool = False, progress: bool = True, save_images=None):
        self.cfg, self.device, self.progress = cfg, torch.device(device), progress
        self.data = cfg.eval.data or cfg.data
        self.protos = [p for p in make_protocols(cfg.eval.protocols, cfg.eval) if p.kind != "speed"]
        self.speed = [p for p in make_protocols(cfg.eval.protocols, cfg.eval) if p.kind == "speed"]
        self.tiny = cfg.eval.extractor == "tiny"
        self.resolver = WeightsResolver(site.paths.weights, allow_download)
        self.cache = StatsCache(site.paths.cache)
        self.dataset = build_dataset(self.data, "test", train=False)
        if isinstance(self.dataset, IterableDataset):
            raise UserError(f"evaluation needs a dataset with a fixed test split, not streamed {self.data.kind} "
                            "shards: set eval.data (e.g. {kind: coco, root: data/coco})")
        npz = legacy_stats_path(self.data)
        for p in self.protos:  # GALIP's precomputed statistics, when the dataset has them, are the reference
            if npz is not None and p.name in LEGACY_NPZ_PROTOCOLS:
                p.settings = dataclasses.replace(p.settings, reference=f"npz:{npz}")
        self.extractors = {}
        self.references = {}
        self.save_images = Path(save_images) if save_images else None
        self.provenance = {"commit": git_commit(Path(__file__).parent), "versions": library_versions()}

    def _extractor(self, proto, galip):
        if proto.name not in self.extractors:
            if proto.kind == "features":
                extractor = TinyExtractor() if self.tiny else proto.make_extractor(self.resolver, self.device)
            elif self.tiny:  # CLIP protocols on the model's own frozen CLIP, with the protocol's preprocessing
                preprocess = "official" if proto.name == "clip_score_galip" else "standard"
                extractor = FrozenCLIP(galip.clip.model, preprocess=preprocess, taps=galip.clip.taps)
            else:
                extractor = proto.make_extractor(self.resolver, self.device)
            self.extractors[proto.name] = extractor
        return self.extractors[proto.name]

    def _reference(self, proto, extractor):
        if proto.name in self.references:
            return self.references[proto.name]
        if proto.settings.reference.startswith("npz:"):
            ref = load_stats_npz(proto.settings.reference[len("npz:"):])
        else:
            def compute():
                acc = proto.new_accumulator()
                for images in reference_images(self.data):
                    acc.update(extractor(images.to(self.device)))
                return acc.state()
            ref = self.cache.get_or_compute(proto.reference_settings(dataset_id(self.data), extractor), compute)
        self.references[proto.name] = ref
        return ref

    def _save(self, fake, start: int) -> None:
        self.save_images.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(fake.clamp(-1, 1).add(1).div(2).cpu()):
            to_pil_image(image).save(self.save_images / f"{start + i:06d}.png")

    @torch.no_grad()
    def measure_speed(self, galip) -> list:
        """Records of the `speed` protocols: latency and throughput of text encoding + generator."""
        records = []
        for p in self.speed:
            tokens = torch.stack([self.dataset[i % len(self.dataset)]["tokens"] for i in range(4)]).to(self.device)
            encode = lambda t: galip.clip.encode_text(t)[0].float()  # noqa: E731
            for metric, value in p.measure(encode, galip.netG, tokens, galip.cfg.z_dim, self.device).items():
                if isinstance(value, (int, float)):
                    records.append({"step": None, "protocol": p.name, "metric": metric, "value": float(value),
                                    "settings": p.settings_dict(), "time": time.time(), **self.provenance})
        return records

    def _clip_embeddings(self, proto, extractor, fake, sent, captions):
        if isinstance(extractor, FrozenCLIP):
            return extractor.encode_image(fake)[1].float(), sent.float()
        return extractor.encode_image(fake), extractor.encode_text(captions)

    @torch.no_grad()
    def __call__(self, galip, step: int = None) -> list:
        if not self.protos:
            return []
        t0 = time.time()
        galip.eval()
        extractors = {p.name: self._extractor(p, galip) for p in self.protos}
        accs = {p.name: p.new_accumulator() for p in self.protos}
        seen = {p.name: 0 for p in self.protos}
        total = max(p.settings.num_samples for p in self.protos)
        batch = self.cfg.eval.batch_size
        gen = torch.Generator().manual_seed(self.cfg.eval.seed)
        bar = tqdm(total=total, desc=f"eval step {step}", disable=not self.progress, leave=False)
        for start in range(0, total, batch):
            samples = [self.dataset[i % len(self.dataset)] for i in range(start, min(start + batch, total))]
            tokens = torch.stack([s["tokens"] for s in samples]).to(self.device)
            captions = [s["caption"] for s in samples]
            noise = torch.randn(len(samples), galip.cfg.z_dim, generator=gen).to(self.device)
            sent = galip.clip.encode_text(tokens)[0].float()
            fake = galip.netG(noise, sent).float()
            if self.save_images is not None:
                self._save(fake, start)
            for p in self.protos:
                take = min(len(samples), p.settings.num_samples - seen[p.name])
                if take <= 0:
                    continue
                if p.kind == "features":
                    accs[p.name].update(extractors[p.name](fake[:take]))
                else:
                    img, txt = self._clip_embeddings(p, extractors[p.name], fake[:take], sent[:take], captions[:take])
                    accs[p.name].update(img, txt)
                seen[p.name] += take
            bar.update(len(samples))
        bar.close()
        galip.train()
        records = []
        for p in self.protos:
            reference = self._reference(p, extractors[p.name]) if p.kind == "features" else None
            for metric, value in p.compute_all(accs[p.name], reference).items():
                records.append({"step": step, "protocol": p.name, "metric": metric, "value": float(value),
                                "num_samples": seen[p.name], "settings": p.settings_dict(),
                                "dataset": dataset_id(self.data), "time": time.time(), "eval_s": time.time() - t0,
                                **self.provenance})
        return records
