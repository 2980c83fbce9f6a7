"""The evaluation driver shared by training (periodic evaluation), `eval`, `regress` and `speed`. It executes the
protocol specs (``evaluation.protocols``): resolves each one's sample plan against the test split's captions (no
image is decoded on the generated side), checks N before any generation, generates once per distinct plan with a
seeded noise stream, feeds each protocol its prepared images, and returns one record per metric serialised from the
protocol that ran. One metric's failure is recorded with its reason; it does not cost the others their results.

Sharded: with torch.distributed initialised over W > 1 processes, every process calls the evaluator. Each generates
a contiguous share of every resolved plan, whole plan batches of 64 (balanced as evenly as whole batches allow), with
the noise rows one process would give those samples; the accumulators are then merged (float64 moments and sums,
features gathered in plan order: `sync` of each accumulator) and process 0 alone computes references and metrics and
returns the records (the others return []). The speed protocols run on process 0 alone, with no collective.

Kept samples (`eval.keep_samples: final`): at a final evaluation process 0 keeps, in plan order, the per-sample data
of each protocol with a paired test (`evaluation.paired`: generated features of FID-type protocols, per-sample CLIP
cosines, gathered like the features; CMMD's embeddings and the Inception Scores' logits from their FeatureBanks); with a `keep_dir` (a run folder) it writes them there and names them in the
records (`kept_samples`)."""
import contextlib
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.functional import to_pil_image
from tqdm import tqdm

from galip_bench.data import auto_workers, dataset_id, reference_images
from galip_bench.data.tokens import tokenize
from galip_bench.evaluation import paired
from galip_bench.evaluation.bootstrap import fid_interval
from galip_bench.evaluation.protocols import direction
from galip_bench.evaluation.planning import build_protocols, caption_table, check_sample_count, reference_of
from galip_bench.evaluation.smoke import smoke_extractor
from galip_bench.evaluation.spec import prepare_official
from galip_bench.evaluation.synthesis import Synthesizer
from galip_bench.files import file_sha256
from galip_bench.metrics.fid import FeatureBank, load_stats_npz
from galip_bench.metrics.stats_cache import StatsCache
from galip_bench.metrics.weights import WeightsResolver
from galip_bench.progress import progress_options
from galip_bench.errors import UserError
from galip_bench.runs.rundir import RunDir
from galip_bench.provenance import git_commit, library_versions
from galip_bench import distributed
from models.clip import FrozenCLIP

REPEAT_WARNING = 4  # warn when N exceeds this many samples per distinct caption
SPEED_CAPTIONS = ["a small red circle above a large blue square on a white background",
                  "a bird with a red head and a short beak", "a plate of food next to a glass of water"]


def shard_bounds(n: int, unit: int, rank: int, world: int) -> tuple:
    """[start, end) of process `rank`'s share of `n` samples: whole batches of `unit` (the plan's batch; the last
    may be partial), contiguous and in rank order, ranks differing by at most one batch (empty where W > batches)."""
    batches = -(-n // unit)
    first, last = batches * rank // world, batches * (rank + 1) // world
    return min(first * unit, n), min(last * unit, n)


def _merged_count(acc) -> int:
    return len(acc.state()["features"]) if isinstance(acc, FeatureBank) else acc.n


class Evaluator:
    """evaluator(galip, step) -> records. Plans, N checks, references and extractors are settled up front. Inside
    a process group every process calls it (see the module docstring); process 0 gets the records."""

    def __init__(self, eval_cfg, data_cfg, site, device, allow_download: bool = False, progress: bool = True,
                 save_images=None, options=None, keep_dir=None):
        self.cfg, self.data, self.device, self.progress = eval_cfg, data_cfg, torch.device(device), progress
        protos = build_protocols(eval_cfg, data_cfg.kind if data_cfg is not None else "synthetic", options)
        self.protos = [p for p in protos if p.kind != "speed"]
        self.speed = [p for p in protos if p.kind == "speed"]
        # metric -> LOWER / HIGHER is better (None: informational): what training's keep_best ranks checkpoints by
        self.directions = {m: sign for p in protos for m, sign in p.metrics.items()}
        self.resolver = WeightsResolver(site.paths.weights, allow_download)
        self.cache = StatsCache(site.paths.cache)
        self.save_images = Path(save_images) if save_images else None
        # eval.keep_samples: the final evaluation's per-sample data of each protocol with a paired test
        # (evaluation.paired), held in `kept_samples` {protocol: Samples} and, with `keep_dir` (a run folder),
        # written under it and named in the records (`kept_samples`)
        self.keep_dir, self.kept_samples = (Path(keep_dir) if keep_dir else None), {}
        self.statistics = {p.name: paired.statistic_of(p) for p in self.protos}
        self.provenance = {"commit": git_commit(Path(__file__).parent), "versions": library_versions()}
        for p in self.protos:  # a missing weight file fails before anything is generated or announced
            if not p.smoke and p.weights:
                self.resolver(p.weights, p.name)
        self.groups = {}  # plan -> (resolved plan, [protocols])
        if self.protos:
            table = caption_table(data_cfg)
            for p in self.protos:
                if p.plan not in self.groups:
                    self.groups[p.plan] = (p.plan.resolve(table), [])
                resolved, members = self.groups[p.plan]
                members.append(p)
                p.ran = resolved.summary()
                check_sample_count(p, resolved.n)
                if p.has_reference:
                    source, where = reference_of(p, data_cfg, eval_cfg.reference)
                    p.reference = f"npz:{Path(where).name}" if source == "npz" else "split:test"
                    p.reference_path = where if source == "npz" else None
                    p.reference_sha256 = file_sha256(where) if source == "npz" else None
        self.extractors, self.references = {}, {}
        self.workers = (data_cfg.num_workers if data_cfg is not None and data_cfg.num_workers is not None
                        else auto_workers())

    def plan_lines(self) -> list:
        """One line per protocol: N, captions and reference (printed before the work starts), and a warning where
        N far exceeds the distinct captions (most images then repeat a caption)."""
        lines = []
        for resolved, members in self.groups.values():
            distinct = members[0].ran["distinct_captions"]
            for p in members:
                lines.append(f"{p.name}: N={resolved.n:,} ({distinct:,} distinct captions); "
                             f"{resolved.description}; reference {p.reference}")
            if resolved.n > REPEAT_WARNING * distinct:
                lines.append(f"warning: {resolved.n:,} samples from {distinct:,} distinct captions: each caption is "
                             f"used ~{resolved.n // distinct} times (a small test split, or --num far above it)")
        return lines

    def _extractor(self, proto, galip):
        if proto.name not in self.extractors:
            if getattr(proto, "build_cached", None):  # an evaluator the project trains and caches (shapes_acc)
                self.extractors[proto.name] = proto.build_cached(self.cache.folder, self.device)
            else:
                self.extractors[proto.name] = (smoke_extractor(proto, galip) if proto.smoke
                                               else proto.make_extractor(self.resolver, self.device))
        # on every evaluation (an evaluator may see several models): self_referential, the model's sampling
        proto.observe_model(galip, self.extractors[proto.name])
        return self.extractors[proto.name]

    def _reference(self, proto, extractor):
        if proto.name not in self.references:
            if proto.reference_path is not None:
                ref = load_stats_npz(proto.reference_path)
            else:
                def compute():
                    acc = proto.new_accumulator()
                    for images in reference_images(self.data, num_workers=self.workers):
                        acc.update(extractor(images.to(self.device)))
                    return acc.state()
                weights = getattr(extractor, "weights_path", None)
                settings = proto.reference_settings(dataset_id(self.data), file_sha256(weights) if weights else None)
                ref = self.cache.get_or_compute(settings, compute)
            self.references[proto.name] = ref
        return self.references[proto.name]

    def _save(self, fake, start: int) -> None:
        self.save_images.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(fake.add(1).div(2).cpu()):
            to_pil_image(image).save(self.save_images / f"{start + i:06d}.png")

    @staticmethod
    def _clip_embeddings(extractor, images, sent, captions):
        if isinstance(extractor, FrozenCLIP):  # smoke: the model's own CLIP and sentence embeddings
            return extractor.encode_image(images)[1].float(), sent.float()
        return extractor.encode_image(images), extractor.encode_text(captions)

    def _generate(self, synth, resolved, members, extractors, step, keep=False):
        rank, world = distributed.rank_size()
        accs = {p.name: p.new_accumulator() for p in members}
        # (the FeatureBank protocols' own features serve their paired tests: nothing extra kept for mmd / IS)
        kept = {p.name: [] for p in members if (p.bootstrap and self.cfg.bootstrap)
                or (keep and self.statistics.get(p.name) in ("frechet", "clip_batch_mean", "clip_score"))}
        # the whole stream, then this process's rows: every sample gets the noise it gets in one process
        noise = torch.randn(resolved.n, synth.galip.noise_dim,
                            generator=torch.Generator().manual_seed(members[0].plan.seed))
        first, last = shard_bounds(resolved.n, members[0].plan.batch, rank, world)
        batch = self.cfg.batch_size
        desc = f"eval step {step}" + (f" (process 0 of {world})" if world > 1 else "")
        bar = tqdm(total=last - first, desc=desc, disable=not self.progress or rank != 0, leave=False,
                   **progress_options())
        start = first
        while start < last:
            end = min((start // batch + 1) * batch, last)  # one process's generation batches, cut at the share's ends
            captions = resolved.captions[start:end]
            sent = synth.encode(tokenize(captions))
            images = prepare_official(synth.generate(noise[start:end], sent))
            if self.save_images is not None:
                self._save(images, start)
            for p in members:
                if p.kind == "features":
                    features = extractors[p.name](images)
                    accs[p.name].update(features)
                    if p.name in kept:
                        kept[p.name].append(features.float())  # on the device, as the sums
                else:
                    img_emb, txt_emb = self._clip_embeddings(extractors[p.name], images, sent, captions)
                    accs[p.name].update(img_emb, txt_emb)
                    if p.name in kept:  # the per-sample cosines, [B, 1] float64 (gathered like features)
                        kept[p.name].append(paired.cosines(img_emb, txt_emb)[:, None])
            bar.update(len(captions))
            start = end
        bar.close()
        kinds = {p.name: p.kind for p in members}  # an empty share in the dtype of the others' (one for the gather)
        kept = {name: torch.cat(chunks) if chunks else
                torch.zeros(0, 0, dtype=torch.float64 if kinds[name] == "clip" else torch.float32)
                for name, chunks in kept.items()}
        if world > 1:
            kept = self._merge(resolved, accs, kept, rank)
        return accs, kept

    def _merge(self, resolved, accs, kept, rank):
        """Every process's accumulators merged (process 0 holds the full features), in one order on every process;
        process 0 checks that the merge holds the plan's N samples."""
        cuda = self.device.type == "cuda"
        with torch.cuda.device(self.device) if cuda else contextlib.nullcontext():  # NCCL's current device
            for acc in accs.values():
                acc.sync(distributed)
            kept = {name: distributed.gather_rows(features) for name, features in kept.items()}
        if rank == 0:
            for name, count in [*((n, _merged_count(a)) for n, a in accs.items()),
                                *((n, len(f)) for n, f in kept.items())]:
                if count != resolved.n:
                    raise RuntimeError(f"{name}: the processes' merged accumulators hold {count:,} samples, the "
                                       f"plan {resolved.n:,}")
        return kept

    def _records(self, p, acc, extractor, features, step, t0) -> list:
        base = {"step": step, "protocol": p.name, "num_samples": p.ran["num_samples"], "dataset": dataset_id(self.data),
                "eval_processes": distributed.rank_size()[1], **self.provenance}
        extra = {}
        try:
            reference = self._reference(p, extractor) if p.has_reference else None
            values, error = p.compute_all(acc, reference), None
            if features is not None and p.bootstrap and self.cfg.bootstrap:
                extra = fid_interval(features, reference["mu"], reference["sigma"], self.cfg.bootstrap,
                                     p.plan.seed, device=self.device)
        except Exception as err:  # noqa: BLE001 - recorded with its reason; the other protocols keep their results
            values = {m: None for m in p.metrics}
            error = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
            print(f"warning: {p.name} failed: {error}", file=sys.stderr)
        return [{**base, "metric": m, "value": None if v is None else float(v), "settings": p.settings_dict(),
                 "time": time.time(), "eval_s": time.time() - t0, **(extra if m == p.name else {}),
                 **(p.metric_extras().get(m, {}) if not error else {}),
                 **({"error": error} if error else {})} for m, v in values.items()]

    def _keep(self, p, kept, acc, step, records) -> list:
        """Hold a protocol's per-sample data (features, cosines, embeddings or logits, plan order) in
        `kept_samples`, and with a `keep_dir` write it there (rank 0, atomically) and name it in the protocol's
        records (`kept_samples`, each with its metric's statistic: `paired.for_metric`). A failed protocol keeps
        nothing; a write the file system refuses is a warning, the records stay."""
        statistic = self.statistics.get(p.name)
        if statistic in ("mmd", "inception_score"):  # the protocol's FeatureBank: all N, merged, in plan order
            kept = acc.state()["features"]
        elif statistic == "columns":  # per-sample correctness rows (shapes_acc), merged, in plan order
            kept = p.paired_rows(acc)
        gated = [r for r in records if direction(r["protocol"], r["metric"]) is not None]
        if statistic is None or kept is None or any(r.get("error") for r in records) or \
                not any(r["value"] is not None and np.isfinite(r["value"]) for r in gated):
            return records  # a failed or NaN metric: nothing to resample (name_kept skips each NaN metric)
        values = kept.detach().cpu().numpy() if torch.is_tensor(kept) else kept
        samples = paired.Samples(statistic, paired.stored(values, statistic),
                                 batch=p.plan.batch if statistic == "clip_batch_mean" else None)
        reference = self.references.get(p.name)
        if statistic == "frechet":
            samples.ref_mu, samples.ref_sigma = reference["mu"], reference["sigma"]
        elif statistic == "columns":
            samples.params = {"metrics": list(p.metrics)}
        elif statistic in ("mmd", "inception_score"):
            samples.params = p.paired_params(reference)
            samples.cross = p.paired_cross() if statistic == "mmd" else None
        self.kept_samples[p.name] = samples
        if self.keep_dir is None:
            return records
        try:
            field = paired.kept_field(samples, self.keep_dir, RunDir.kept_samples_stem(step, p.name))
        except UserError as err:
            print(f"warning: {p.name}: per-sample data not kept ({err})", file=sys.stderr)
            return records
        return [paired.name_kept(r, field) for r in records]

    @torch.no_grad()
    def prepare(self, galip) -> None:
        """Build every extractor and load or compute every reference now (else the first call does it); the
        references on process 0 only (the only one that uses them)."""
        for p in self.protos:
            extractor = self._extractor(p, galip)
            if p.has_reference and distributed.rank_size()[0] == 0:
                self._reference(p, extractor)

    @torch.no_grad()
    def __call__(self, galip, step: int = None, final: bool = True) -> list:
        """Records of every quality protocol at `step`; with `final`, the speed protocols' too (timed once, on
        process 0). In a process group every process must call it; the others return []. With `final` and
        `eval.keep_samples: final`, process 0 keeps each paired-testable protocol's per-sample data (`_keep`)."""
        rank = distributed.rank_size()[0]
        speed = self.measure_speed(galip) if final and rank == 0 else []
        if not self.protos:
            return speed
        keep = final and getattr(self.cfg, "keep_samples", "final") == "final"
        if keep:
            self.kept_samples = {}
        t0 = time.time()
        was_training = galip.training
        galip.eval()
        records = []
        try:
            with Synthesizer(galip, self.cfg.synthesis) as synth:
                for resolved, members in self.groups.values():
                    extractors = {p.name: self._extractor(p, galip) for p in members}
                    accs, kept = self._generate(synth, resolved, members, extractors, step, keep)
                    if rank != 0:
                        continue
                    for p in members:
                        mine = self._records(p, accs[p.name], extractors[p.name], kept.get(p.name), step, t0)
                        records += self._keep(p, kept.get(p.name), accs[p.name], step, mine) if keep else mine
        finally:
            galip.train(was_training)
        return records + speed

    @torch.no_grad()
    def measure_speed(self, galip) -> list:
        """Records of the `speed` protocols: latency and throughput of text encoding + generator."""
        records = []
        tokens = tokenize(SPEED_CAPTIONS).to(self.device)
        for p in self.speed:
            p.observe_model(galip, None)  # a sampling model's sampling (CLIP-GEN: candidates multiply the time)
            report = (lambda b, r: print(f"speed: batch {b}: {r['median_s'] * 1000:.1f} ms, {r['img_s']:.1f} img/s",
                                         file=sys.stderr, flush=True)) if self.progress else None
            with Synthesizer(galip, self.cfg.synthesis) as synth:
                result = p.measure(synth.encode, synth.generate, tokens, galip.noise_dim, self.device, report=report)
            values = {k: v for k, v in result.items() if isinstance(v, (int, float))}
            values.update({f"img_s_b{b}": v["img_s"] for b, v in result["per_batch"].items()})
            values.update({f"params_{net}_{kind}": n for net, counts in galip.parameter_counts().items()
                           for kind, n in counts.items()})
            records += [{"step": None, "protocol": p.name, "metric": metric, "value": float(value),
                         "settings": p.settings_dict(), "time": time.time(), **self.provenance}
                        for metric, value in values.items()]
        return records
