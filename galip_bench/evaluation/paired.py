"""Paired comparisons between runs: the difference (variant - baseline) of a metric with a paired bootstrap 95%
interval, from the per-sample data each run's final evaluation keeps (`eval.keep_samples: final`).

Why paired: runs of one grid (and a checkpoint `regress` re-evaluates against its baseline) are evaluated on the same
plan: sample i of both runs comes from the same caption and the same noise row (`evaluation.driver`: one noise
stream seeded with the plan's seed, the plan's captions in order). Much of the sampling noise of a metric is shared
by the two runs, so the difference is far less noisy than either number. The bootstrap resamples sample indices
jointly: resample b draws one index set (with replacement) and applies it to both runs, recomputes each run's
metric on it, and takes the difference; the 95% interval is the 2.5 / 97.5 percentiles of the B differences. A
difference is significant when its interval excludes 0.

What is kept (by rank 0, after the merge, in plan order), per protocol whose metric can be recomputed from it:
- `frechet` (FID-type protocols: a StatsAccumulator of features against reference statistics): the generated
  features, float16 (float32 where a value overflows float16; rounding to float16 moves an Inception FID by ~1e-4),
  and the reference statistics mu / sigma (float64) beside them. A resample recomputes mu and sigma of the
  resampled generated features against the fixed reference (the reference is not resampled, as in
  `evaluation.bootstrap`).
- `clip_batch_mean` (`clip_score_galip`): the per-sample cosines, float64. The official score averages per batch
  of 64 in plan order, then over batches. We resample samples (not batches) and apply exactly that formula to the
  resampled sequence (position j of the resample falls in batch j // 64): the samples are independent draws of
  (caption, noise), the batches only group them, so the batch formula is a fixed weighting of positions (with a
  partial last batch of a fixed plan weighted as the protocol weights it); resampling batches would leave only
  N / 64 units and could not pair a fixed plan's partial batch with anything.
- `clip_score` (100 * max(cos, 0), averaged over samples): the per-sample cosines, float64.
- `mmd` (`cmmd`, `cmmd_unbiased`): the generated embeddings (float32, as the CLIP gives them), and, against the fixed
  reference embeddings, each generated sample's mean kernel value over the reference (`cross`) and the
  reference-reference terms (`params`). A resample with counts w recomputes the generated-generated sum w'Kw in
  blocks (K never held whole: N^2 kernel values per run, all B resamples in one pass); the record of each metric
  names its own statistic (`mmd_biased`, `mmd_unbiased`: `for_metric`).
- `inception_score` (`is`, `is_dmgan`): the logits (float32 where that is exact), resampled and put through the
  protocol's own Inception Score (torch-fidelity's shuffled splits, or CogView's consecutive ones): the same
  positions land in the same splits, so the identity resample gives the recorded value.

Resamples (B): 1,000 for per-sample means (0.3 s at N = 40,448); 100 for Frechet distances, each a weighted
covariance and a symmetric eigendecomposition per run and resample (`evaluation.bootstrap`'s formulation, in
float64): at 40,448 x 2048, measured on 2 shared CPU cores, ~9 s of set-up per run (the centred features times
sqrt(R)) and ~5 s per resample, so ~8 min per run for B = 100 (a grid report resamples each run once, caches the
values in the report folder and pairs runs by subtraction); a GPU does it in seconds. Fewer FID resamples would
leave the 2.5% / 97.5% percentiles resting on two or three draws. CMMD: 100 resamples in one pass over the N^2
kernel, 3.4 s at N = 8,000 x 768 on the same cores (so ~1.5 min at 40,448); an Inception Score: 0.17 s per resample
at 8,000 x 1008 (~1.5 min per run for B = 100 at 40,448).
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from galip_bench.files import atomic_write, file_sha256

ALPHA = 0.05
SEED = 0
RESAMPLES = {"frechet": 100, "clip_batch_mean": 1000, "clip_score": 1000, "mmd_biased": 100, "mmd_unbiased": 100,
             "inception_score": 100, "column_mean": 1000}
FEATURE_DTYPE = np.float16
# how closely the kept samples must reproduce the recorded value (float16 features move an FID by ~1e-4)
REPRODUCE = {"frechet": (1e-3, 1e-3), "clip_batch_mean": (1e-9, 1e-12), "clip_score": (1e-9, 1e-9),
             "mmd_biased": (1e-6, 1e-9), "mmd_unbiased": (1e-6, 1e-9), "inception_score": (1e-9, 1e-9),
             "column_mean": (1e-12, 1e-12)}
MMD_BLOCK_BYTES = 256 * 2 ** 20  # one block of kernel rows (float64) at a time
# the plan and settings two records must share to be paired (beyond each protocol's gated settings)
PLAN = ("captions_sha256", "num_samples", "seed")


class SamplesUnavailable(Exception):
    """A record's kept samples cannot be used (not kept, file missing, changed): the message says which."""


def statistic_of(protocol) -> str | None:
    """How a protocol's metric is recomputed from per-sample data: 'frechet', 'clip_batch_mean', 'clip_score', 'mmd'
    (per metric: `for_metric`), 'inception_score', or None (no paired test: KID, PRDC, speed). Decided by the
    accumulator the protocol fills, which is its formula, or declared by the protocol (`paired_statistic`)."""
    from galip_bench.metrics import clip_score as cs
    from galip_bench.metrics.fid import StatsAccumulator
    if getattr(protocol, "paired_statistic", None):
        return protocol.paired_statistic
    if protocol.kind not in ("features", "clip") or len(protocol.metrics) != 1:
        return None
    acc = protocol.new_accumulator()
    if protocol.kind == "features":
        return "frechet" if type(acc) is StatsAccumulator and protocol.has_reference else None
    return {cs.ClipScoreGALIP: "clip_batch_mean", cs.ClipScore: "clip_score"}.get(type(acc))


def for_metric(kept, metric: str):
    """The statistic of one metric of kept samples (Samples or a record's `kept_samples` field): `mmd` samples
    serve `cmmd` (the biased V-statistic, 'mmd_biased') and `cmmd_unbiased` ('mmd_unbiased'); the others serve
    their protocol's one gated metric as they are."""
    statistic = kept.statistic if isinstance(kept, Samples) else kept.get("statistic")
    params = (kept.params if isinstance(kept, Samples) else kept.get("params")) or {}
    if statistic == "mmd":
        change = {"statistic": "mmd_unbiased" if metric.endswith("_unbiased") else "mmd_biased"}
    elif statistic == "columns":  # one metric per column (shapes_acc): its mean over the samples it applies to
        change = {"statistic": "column_mean", "params": {**params, "column": params["metrics"].index(metric)}}
    else:
        return kept
    return dataclasses.replace(kept, **change) if isinstance(kept, Samples) else {**kept, **change}


def statistic_kind(samples) -> str:
    """The kind of kept data whatever metric it serves: 'columns' for column_mean (NaN there: not applicable)."""
    return "columns" if samples.statistic in ("columns", "column_mean") else samples.statistic


def name_kept(record: dict, field) -> dict:
    """`record` naming its kept samples (`field`, with the record's metric's statistic), where the metric is gated
    and has a finite value: an informational metric (is_std, kid_std) or a NaN one gets no paired test."""
    from galip_bench.evaluation.protocols import direction
    value = record.get("value")
    if field is None or direction(record["protocol"], record["metric"]) is None or value is None or \
            not np.isfinite(float(value)):
        return record
    return {**record, "kept_samples": for_metric(field, record["metric"])}


def cosines(img_emb, txt_emb) -> torch.Tensor:
    """[B] float64 cosines of image and text embeddings, as `metrics.clip_score` computes them."""
    return F.cosine_similarity(torch.as_tensor(img_emb).double(), torch.as_tensor(txt_emb).double(), dim=1)


@dataclass
class Samples:
    """One run's per-sample data of one protocol, in plan order."""
    statistic: str
    values: np.ndarray                 # frechet: [N, D] features; clip_*: [N] cosines
    ref_mu: np.ndarray | None = None   # frechet: the reference statistics
    ref_sigma: np.ndarray | None = None
    batch: int | None = None           # clip_batch_mean: the score batch (the plan's, 64)
    cross: np.ndarray | None = None    # mmd: each sample's mean kernel value over the reference embeddings
    params: dict | None = None         # mmd: sigma, scale, the reference terms and digest; inception_score: splits

    @property
    def n(self) -> int:
        return len(self.values)

    def reference_sha256(self) -> str | None:
        if self.ref_mu is None:
            return (self.params or {}).get("reference_sha256")
        h = hashlib.sha256(np.ascontiguousarray(self.ref_mu, np.float64).tobytes())
        h.update(np.ascontiguousarray(self.ref_sigma, np.float64).tobytes())
        return h.hexdigest()

    def value(self, device="cpu") -> float:
        """The metric on all kept samples (the identity resample)."""
        return float(resampled_values(self, [np.arange(self.n)], device)[0])


# ---- resampling ----------------------------------------------------------------------------------------------------

def resample_indices(n: int, b: int, seed: int = SEED, stream: int = 0) -> np.ndarray:
    """Resample `b`'s N indices drawn with replacement, from numpy's generator seeded (seed, b, stream): the same
    indices whatever B, the chunking or the statistic; another `stream` gives independent draws (unpaired)."""
    return np.random.default_rng([seed, b, stream]).integers(0, n, size=n)


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(matrix)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def _frechet(samples: Samples, index_sets, device) -> np.ndarray:
    """FID of each resample: with counts w (sum N), mu = m0 + d and, as (x - mu) = (xc - d) with xc = x - m0,
    S = (xc' W xc - N d d') / (N - 1); Tr sqrt(S R) = Tr sqrt(A S A), A = sqrt(R), from z = xc A computed once."""
    x = torch.as_tensor(np.asarray(samples.values), device=device).double()
    n = len(x)
    mu_r = torch.as_tensor(samples.ref_mu, dtype=torch.float64, device=device)
    sigma_r = torch.as_tensor(samples.ref_sigma, dtype=torch.float64, device=device)
    root, trace_r = _sqrt_psd(sigma_r), torch.trace(sigma_r)
    m0 = x.mean(0)
    xc = x - m0
    del x
    z, sq = xc @ root, xc.square().sum(1)
    out = []
    for idx in index_sets:
        w = torch.bincount(torch.as_tensor(idx, device=device), minlength=n).double()
        d, za = (w @ xc) / n, (w @ z) / n
        used = w > 0
        zk = z[used] * w[used].sqrt()[:, None]
        cov = (zk.T @ zk - n * torch.outer(za, za)) / (n - 1)
        cross = torch.linalg.eigvalsh((cov + cov.T) / 2).clamp(min=0).sqrt().sum()
        trace_s = ((w * sq).sum() - n * d.dot(d)) / (n - 1)
        out.append(((m0 + d - mu_r).square().sum() + trace_s + trace_r - 2 * cross).item())
    return np.array(out)


def _mmd(samples: Samples, index_sets, device) -> np.ndarray:
    """CMMD of each resample against the fixed reference, as `metrics.cmmd.mmd` (x `scale`): with counts w (sum
    N), the generated-generated sum w'Kw (K in blocks of rows, every resample per block), the cross term
    2 w.cross / N and the reference's own term, biased (V) or unbiased (U: the resample's N positions paired with
    each other, the diagonal k(x_i, x_i) left out w_i times)."""
    p = samples.params
    x = torch.as_tensor(np.asarray(samples.values), device=device).double()
    n = len(x)
    w = torch.stack([torch.bincount(torch.as_tensor(np.asarray(idx), device=device), minlength=n)
                     for idx in index_sets]).double() if len(index_sets) else \
        torch.zeros(0, n, dtype=torch.float64, device=device)
    gamma, sq = 1.0 / (2.0 * float(p["sigma"]) ** 2), (x * x).sum(1)
    total, diag = torch.zeros(len(w), dtype=torch.float64, device=device), torch.zeros(n, dtype=torch.float64,
                                                                                       device=device)
    rows = max(1, MMD_BLOCK_BYTES // (8 * n))
    for i in range(0, n, rows):
        k = torch.exp(-gamma * (-2 * x[i:i + rows] @ x.T + sq[i:i + rows, None] + sq[None, :]))
        total += ((k @ w.T) * w[:, i:i + rows].T).sum(0)
        diag[i:i + rows] = torch.diagonal(k[:, i:i + rows])
    cross = 2.0 * (w @ torch.as_tensor(samples.cross, dtype=torch.float64, device=device)) / n
    if samples.statistic == "mmd_biased":
        value = p["reference_biased"] + total / (n * n) - cross
    else:
        value = p["reference_unbiased"] + (total - w @ diag) / (n * (n - 1)) - cross
    return (float(p["scale"]) * value).cpu().numpy()


def _inception_score(samples: Samples, index_sets) -> np.ndarray:
    """The protocol's Inception Score of each resampled logit set (its splits over positions, as recorded)."""
    p, logits = samples.params, np.asarray(samples.values)
    if p["flavour"] == "cogview":
        from galip_bench.metrics.dmgan import inception_score_cogview
        return np.array([inception_score_cogview(logits[idx], p["splits"])[0] for idx in index_sets])
    from galip_bench.metrics.standard import inception_score
    return np.array([inception_score(np.ascontiguousarray(logits[idx], np.float64), p["splits"], p["shuffle"],
                                     p["rng_seed"])[0] for idx in index_sets])


def _position_weights(samples: Samples) -> tuple:
    """(per-sample values, per-position weights) of the mean statistics: clip_score's 100 * max(cos, 0) averaged
    over samples; clip_batch_mean's cosines weighted 1 / (batches * batch length) (the mean of batch means)."""
    cos = np.asarray(samples.values, np.float64).reshape(-1)
    n = len(cos)
    if samples.statistic == "clip_score":
        return 100.0 * np.clip(cos, 0, None), np.full(n, 1.0 / n)
    batch = samples.batch or n
    sizes = np.diff(np.append(np.arange(0, n, batch), n))
    return cos, np.repeat(1.0 / (len(sizes) * sizes), sizes)


def resampled_values(samples: Samples, index_sets, device="cpu") -> np.ndarray:
    """The metric recomputed on each index set ([B] values)."""
    if samples.statistic == "frechet":
        return _frechet(samples, index_sets, device)
    if samples.statistic in ("mmd_biased", "mmd_unbiased"):
        return _mmd(samples, list(index_sets), device)
    if samples.statistic == "inception_score":
        return _inception_score(samples, index_sets)
    if samples.statistic == "column_mean":  # NaN: the metric does not apply to the sample (left out of the mean)
        col = np.asarray(samples.values, np.float64)[:, samples.params["column"]]
        with np.errstate(all="ignore"):
            return np.array([np.nanmean(col[np.asarray(idx)]) for idx in index_sets])
    if samples.statistic not in ("clip_batch_mean", "clip_score"):
        raise ValueError(f"no resampled formula for the statistic {samples.statistic!r} (mmd samples serve a "
                         "metric through for_metric)")
    values, weights = _position_weights(samples)
    return values[np.stack(list(index_sets))] @ weights if len(index_sets) else np.zeros(0)


def bootstrap_values(samples: Samples, resamples: int, seed: int = SEED, stream: int = 0, device="cpu",
                     full: bool = False):
    """The metric on resamples 0..B-1 of `samples` (resample_indices); with `full`, (the metric on all samples,
    those values), from one set-up (FID: the centred features times sqrt(R), computed once per call)."""
    sets = itertools.chain([np.arange(samples.n)] if full else [],
                           (resample_indices(samples.n, b, seed, stream) for b in range(resamples)))
    if samples.statistic == "frechet":  # index sets drawn as they are used
        out = _frechet(samples, sets, device)
    elif samples.statistic in ("mmd_biased", "mmd_unbiased"):  # every resample in one pass over the kernel
        out = _mmd(samples, list(sets), device)
    else:  # 100 resamples at a time: a [100, N] gather
        chunks = []
        while chunk := list(itertools.islice(sets, 100)):
            chunks.append(resampled_values(samples, chunk, device))
        out = np.concatenate(chunks) if chunks else np.zeros(0)
    return (float(out[0]), out[1:]) if full else out


def interval(diffs, alpha: float = ALPHA) -> tuple:
    """(low, high) percentile interval of bootstrap differences."""
    lo, hi = np.percentile(np.asarray(diffs, np.float64), [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def summary(diffs, resamples: int, seed: int, n: int, alpha: float = ALPHA) -> dict:
    lo, hi = interval(diffs, alpha)
    return {"ci_low": lo, "ci_high": hi, "significant": bool(lo > 0 or hi < 0), "resamples": int(resamples),
            "seed": int(seed), "alpha": alpha, "n": int(n)}


def paired_difference(base: Samples, new: Samples, resamples: int | None = None, seed: int = SEED, device="cpu",
                      alpha: float = ALPHA, paired: bool = True) -> dict:
    """{'diff' (new - base on all kept samples), 'ci_low', 'ci_high', 'significant', 'resamples', 'seed', 'alpha',
    'n'}. `paired=False` draws the new run's indices independently of the baseline's (the unpaired bootstrap, for
    contrast only). ValueError where the two cannot be paired (`samples_problem`)."""
    problem = samples_problem(base, new)
    if problem:
        raise ValueError(f"cannot pair: {problem}")
    b = RESAMPLES[base.statistic] if resamples is None else resamples
    old_full, old_v = bootstrap_values(base, b, seed, 0, device, full=True)
    new_full, new_v = bootstrap_values(new, b, seed, 0 if paired else 1, device, full=True)
    return {"diff": new_full - old_full, "base_value": old_full, "new_value": new_full,
            **summary(new_v - old_v, b, seed, base.n, alpha)}


def _meta(side) -> tuple:
    """(statistic, N, feature size, score batch, reference statistics' digest) of Samples or a `kept_samples`
    record field (what pairing needs, known before the data is read)."""
    if isinstance(side, Samples):
        return (side.statistic, side.n, tuple(np.shape(side.values)[1:]), side.batch, side.reference_sha256(),
                _pairing_params(side.params))
    return (side.get("statistic"), side.get("n"), tuple((side.get("shape") or [])[1:]), side.get("batch"),
            side.get("reference_stats_sha256"), _pairing_params(side.get("params")))


def _pairing_params(params) -> dict:
    """The parameters two runs' statistics must share (the reference terms are the reference digest's)."""
    return {k: v for k, v in (params or {}).items() if k not in ("reference_biased", "reference_unbiased")}


def samples_problem(base, new) -> str | None:
    """None when two runs' kept samples (Samples, or their records' `kept_samples` fields) can be paired, else
    why not."""
    names = ("statistic", "N", "feature size", "score batch")
    for name, a, b in zip(names, _meta(base), _meta(new)):
        if a != b:
            return f"{name} {a} vs {b}"
    if _meta(base)[4] != _meta(new)[4]:
        return "the reference statistics differ"
    if _meta(base)[5] != _meta(new)[5]:
        return f"the metric's parameters differ ({_meta(base)[5]} vs {_meta(new)[5]})"
    return None


def records_problem(base: dict, new: dict, ignore=()) -> str | None:
    """None when two records' plans (captions, N, seed), gated protocol settings and datasets agree, so that
    sample i of both came from the same caption and noise; else the first difference. `ignore`: settings allowed
    to differ (a re-drawn evaluation's seed and captions, tested unpaired)."""
    from galip_bench.evaluation.regress import settings_differences
    if base.get("protocol") != new.get("protocol") or base.get("metric") != new.get("metric"):
        return f"{base.get('protocol')}/{base.get('metric')} vs {new.get('protocol')}/{new.get('metric')}"
    so, sn = base.get("settings") or {}, new.get("settings") or {}
    for key in PLAN:
        if key not in ignore and so.get(key) != sn.get(key):
            return f"{key} {so.get(key)!r} vs {sn.get(key)!r}"
    diffs = settings_differences(base, new, ignore)
    return diffs[0].replace("baseline ", "").replace(" vs new ", " vs ") if diffs else None


# ---- files ---------------------------------------------------------------------------------------------------------

def stored(values, statistic: str) -> np.ndarray:
    """Per-sample data as it is kept (in memory as on disk, so that a run paired with a file of itself gives 0):
    features float16 (float32 where float16 overflows, past 65,504), cosines float64."""
    values = np.asarray(values)
    if statistic in ("columns", "column_mean"):  # per-sample correctness (0, 0.5, 1, NaN): as it is
        return values.astype(np.float64)
    if statistic in ("mmd", "mmd_biased", "mmd_unbiased", "inception_score"):  # float32 only where exact
        low = values.astype(np.float32)
        return low if np.array_equal(low.astype(values.dtype), values) else values.astype(np.float64)
    if statistic != "frechet":
        return values.astype(np.float64).reshape(-1)
    low = values.astype(FEATURE_DTYPE)
    return low if np.isfinite(low).all() else values.astype(np.float32)


def kept_field(samples: Samples, root, stem) -> dict:
    """Write `samples` under folder `root` as `<stem>.npy` (and the reference as `<stem>.reference.npz`),
    atomically, and return the record field that says where they are (paths relative to `root`)."""
    root, stem = Path(root), Path(stem)
    values = stored(samples.values, samples.statistic)
    file = stem.with_name(stem.name + ".npy")
    atomic_write(root / file, lambda f: np.save(f, values, allow_pickle=False))
    field = {"file": file.as_posix(), "statistic": samples.statistic, "n": int(len(values)),
             "shape": list(values.shape), "dtype": str(values.dtype), "sha256": file_sha256(root / file)}
    if samples.batch is not None:
        field["batch"] = int(samples.batch)
    if samples.params is not None:
        field["params"] = dict(samples.params)
    if samples.cross is not None:
        cross, cross_file = np.asarray(samples.cross, np.float64), stem.with_name(stem.name + ".cross.npy")
        atomic_write(root / cross_file, lambda f: np.save(f, cross, allow_pickle=False))
        field.update(cross=cross_file.as_posix(), cross_sha256=file_sha256(root / cross_file),
                     reference_stats_sha256=samples.reference_sha256())
    if samples.ref_mu is not None:
        ref = stem.with_name(stem.name + ".reference.npz")
        mu, sigma = np.asarray(samples.ref_mu, np.float64), np.asarray(samples.ref_sigma, np.float64)
        atomic_write(root / ref, lambda f: np.savez(f, mu=mu, sigma=sigma))
        field.update(reference=ref.as_posix(), reference_stats_sha256=samples.reference_sha256())
    return field


def load_kept(field, root) -> Samples:
    """The Samples a record's `kept_samples` field points at (paths relative to `root`); SamplesUnavailable when
    the field is absent, a file is missing, or its content is not what was recorded (`verify_kept`)."""
    verify_kept(field, root)
    if not all(np.isfinite(v) for v in (field.get("params") or {}).values() if isinstance(v, float)):
        raise SamplesUnavailable("the kept reference terms are not finite")
    samples = Samples(field["statistic"], np.load(Path(root) / field["file"], allow_pickle=False),
                      batch=field.get("batch"), params=field.get("params"))
    if field.get("cross"):
        samples.cross = np.load(Path(root) / field["cross"], allow_pickle=False)
    if field.get("reference"):
        with np.load(Path(root) / field["reference"], allow_pickle=False) as data:
            samples.ref_mu, samples.ref_sigma = data["mu"], data["sigma"]
    if statistic_kind(samples) != "columns" and not np.isfinite(samples.values).all():  # a diverged run
        raise SamplesUnavailable("the kept samples are not finite (the metric is NaN)")
    return samples


def check_value(statistic: str, mine: float, record: dict) -> None:
    """SamplesUnavailable unless `mine` (the metric on all kept samples) is the record's value: a file that belongs
    to another record would not give it."""
    value = record.get("value")
    if value is None or not np.isfinite(float(value)):
        raise SamplesUnavailable("the metric failed (no finite value)")
    rel, absolute = REPRODUCE[statistic]
    if not abs(mine - float(value)) <= absolute + rel * abs(float(value)):
        raise SamplesUnavailable(f"kept samples give {mine:.6g}, the record {float(value):.6g}")


def check_reproduces(samples: Samples, record: dict, device="cpu") -> None:
    check_value(samples.statistic, samples.value(device), record)


def verify_kept(field, root) -> None:
    """SamplesUnavailable unless a record's kept files are present and unchanged (their sha256 as recorded),
    without reading the features into memory."""
    if not isinstance(field, dict) or "file" not in field:
        raise SamplesUnavailable("samples not kept")
    for key, what in (("file", "samples"), ("cross", "kernel terms")):
        if field.get(key):
            path = Path(root) / field[key]
            if not path.is_file():
                raise SamplesUnavailable(f"kept {what} missing: {path}")
            if file_sha256(path) != field.get("sha256" if key == "file" else "cross_sha256"):
                raise SamplesUnavailable(f"kept {what} changed since recorded: {path}")
    if field.get("reference"):
        ref = Path(root) / field["reference"]
        if not ref.is_file():
            raise SamplesUnavailable(f"kept reference statistics missing: {ref}")
        with np.load(ref, allow_pickle=False) as data:
            digest = Samples("frechet", np.zeros((0, 0)), data["mu"], data["sigma"]).reference_sha256()
        if digest != field.get("reference_stats_sha256"):
            raise SamplesUnavailable(f"kept reference statistics changed since recorded: {ref}")


def cache_key(field: dict, resamples: int, seed: int) -> str:
    """What a run's resampled values depend on: its samples' content, statistic, reference, B and the seed."""
    keys = ("sha256", "statistic", "n", "batch", "reference_stats_sha256", "cross_sha256", "params")
    return hashlib.sha256(json.dumps({**{k: field.get(k) for k in keys}, "resamples": resamples, "seed": seed},
                                     sort_keys=True).encode()).hexdigest()[:24]


def kept_bytes(protocol, n: int) -> int:
    """Disk one run's final evaluation keeps for a protocol of N samples (0: none kept): features at float16 plus the
    reference mu / sigma at float64 (FID-type), or N float64 cosines (CLIP scores)."""
    statistic = statistic_of(protocol)
    if statistic is None or not n:
        return 0
    if statistic == "columns":
        return 8 * n * len(protocol.metrics)
    if statistic in ("inception_score", "mmd"):  # float32 logits / embeddings (+ float64 cross terms)
        width = (16 if statistic == "inception_score" else 64) if protocol.smoke else protocol.kept_width
        return n * 4 * width + (8 * n if statistic == "mmd" else 0)
    if statistic != "frechet":
        return 8 * n
    dim = protocol.dim() or 0
    return n * dim * np.dtype(FEATURE_DTYPE).itemsize + 8 * dim * (dim + 1)


def kept_line(eval_cfg, data_kind: str, counts: dict):
    """The dry run's line on what `eval.keep_samples: final` keeps per run ({protocol: N}), or None."""
    if getattr(eval_cfg, "keep_samples", "final") != "final":
        return "kept samples: none (eval.keep_samples: none): no paired comparisons between runs"
    from galip_bench.evaluation.planning import build_protocols
    sizes = {p.name: kept_bytes(p, counts.get(p.name)) for p in build_protocols(eval_cfg, data_kind)}
    sizes = {name: size for name, size in sizes.items() if size}
    if not sizes:
        return None
    parts = ", ".join(f"{name} {_size(size)}" for name, size in sizes.items())
    return (f"kept samples (eval.keep_samples: final, for paired comparisons): {_size(sum(sizes.values()))} "
            f"per run under eval/step_*/ ({parts})")


def _size(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 1e5 else f"{n / 1e3:,.1f} kB"


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def fmt_difference(diff: float, result: dict, digits=None) -> str:
    """'-1.23 [-1.80, -0.66] *' (a star where the interval excludes 0)."""
    def show(v):
        a = abs(v)
        spec = digits or (".1f" if a >= 1000 else ".3f" if a >= 1 else ".4f" if a >= 0.01 or a == 0 else ".3g")
        return format(v, "+" + spec).replace("-", "−")
    star = " *" if result["significant"] else ""
    return f"{show(diff)} [{show(result['ci_low'])}, {show(result['ci_high'])}]{star}"
