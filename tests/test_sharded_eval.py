"""Sharded evaluation: 2 gloo processes give the numbers one process gives (1e-9 relative), the merges equal their
closed forms, a missing shard is caught, a plan with fewer batches than processes still works, and `eval --nproc 2`
writes the records `eval` writes."""
import datetime
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_processes, tiny_galip

from galip_bench.checkpoints import save_checkpoint
from galip_bench.cli import main
from galip_bench.config.schema import DataConfig, EvalConfig, PathsConfig, SiteConfig
from galip_bench.evaluation import driver
from galip_bench.evaluation.driver import Evaluator, shard_bounds
from galip_bench.evaluation.planning import evaluation_timeout
from galip_bench.metrics.clip_score import ClipScore, ClipScoreGALIP
from galip_bench.metrics.fid import FeatureBank, StatsAccumulator, feature_stats
from galip_bench import distributed

PROTOCOLS = ["fid_galip", "clip_score_galip", "clip_score", "kid", "is"]
DATA = DataConfig(kind="synthetic", size=32, num_test=130, num_workers=0)  # official plan: 128 images a pass
# 2 official passes: N = 256, 4 batches of 64, 2 per process; generation batches of 32 (one process's batches)
FULL = dict(protocols=PROTOCOLS, passes=2, batch_size=32, extractor="tiny", bootstrap=20)
# one batch (N = 40): process 0 has no share (no FID: the tiny features are 64-d, FID needs N > 64)
ONE_BATCH = dict(protocols=["clip_score_galip", "clip_score", "kid", "is"], num_samples=40, batch_size=16,
                 extractor="tiny", bootstrap=0)


def site(cache) -> SiteConfig:
    return SiteConfig(paths=PathsConfig(cache=str(cache)))


def evaluate(plan: dict, cache, save_images=None) -> list:
    evaluator = Evaluator(EvalConfig(**plan), DATA, site(cache), "cpu", progress=False, save_images=save_images,
                          options={"kid": {"kid_subsets": 5}})  # torch-fidelity's 100 subsets cost seconds here
    return evaluator(tiny_galip(seed=1), step=3)


def values(records) -> dict:
    out = {}
    for r in records:
        out[(r["protocol"], r["metric"])] = r["value"]
        for key in ("ci_low", "ci_high", "ci_std"):
            if key in r:
                out[(r["protocol"], key)] = r[key]
    return out


def worker(rank, world, port, tmp):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    distributed.init(torch.device("cpu"), timeout=datetime.timedelta(minutes=5))
    out = {}
    try:
        out["full"] = evaluate(FULL, Path(tmp) / "cache", save_images=Path(tmp) / "sharded")
        out["one_batch"] = evaluate(ONE_BATCH, Path(tmp) / "cache")
        # negative controls: the FID moments left unmerged (both processes skip that collective alike) ...
        original = StatsAccumulator.sync
        StatsAccumulator.sync = lambda self, comm: None
        try:
            evaluate(FULL, Path(tmp) / "cache")
            out["unmerged_error"] = None
        except RuntimeError as err:  # process 0's check of the merged sample count
            out["unmerged_error"] = str(err)
        counted = driver._merged_count
        driver._merged_count = lambda acc: 256  # ... and with the check silenced: process 0's share alone
        try:
            out["rank0_share"] = evaluate(FULL, Path(tmp) / "cache")
        finally:
            driver._merged_count, StatsAccumulator.sync = counted, original
    finally:
        torch.save(out, Path(tmp) / f"rank{rank}.pt")
        distributed.shutdown()


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sharded")
    run_processes(worker, str(tmp))
    return tmp, [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One process, one thread as the workers (the CPU kernels' sums may depend on the thread count)."""
    tmp = tmp_path_factory.mktemp("single")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return tmp, {"full": evaluate(FULL, tmp / "cache", save_images=tmp / "single"),
                     "one_batch": evaluate(ONE_BATCH, tmp / "cache")}
    finally:
        torch.set_num_threads(threads)


def assert_same(sharded_records, single_records):
    a, b = values(sharded_records), values(single_records)
    assert a.keys() == b.keys() and len(a) >= 4
    for key in a:
        assert a[key] is not None and a[key] == pytest.approx(b[key], rel=1e-9, abs=0), key
    for x, y in zip(sharded_records, single_records):
        assert x["settings"] == y["settings"] and x["num_samples"] == y["num_samples"]
        assert x["eval_processes"] == 2 and y["eval_processes"] == 1


def test_two_processes_give_the_single_process_numbers(sharded, single):
    (tmp, (rank0, rank1)), (single_tmp, one) = sharded, single
    assert rank1["full"] == [] and rank1["one_batch"] == []  # only process 0 returns records
    assert {r["protocol"] for r in rank0["full"]} == set(PROTOCOLS)
    assert rank0["full"][0]["num_samples"] == 256 and "ci_low" in rank0["full"][0]
    assert_same(rank0["full"], one["full"])
    # each sample got the noise and caption it gets in one process: the same images, under the same names
    sharded_pngs, single_pngs = sorted((tmp / "sharded").glob("*.png")), sorted((single_tmp / "single").glob("*.png"))
    assert [p.name for p in sharded_pngs] == [p.name for p in single_pngs] and len(single_pngs) == 256
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(sharded_pngs, single_pngs))


def test_a_process_without_a_share_still_takes_part(sharded, single):
    """N = 40, one batch: process 0 generates nothing but joins every merge and computes the metrics of process
    1's samples; the numbers are one process's."""
    (_, (rank0, _)), (_, one) = sharded, single
    assert rank0["one_batch"][0]["num_samples"] == 40
    assert_same(rank0["one_batch"], one["one_batch"])


def test_a_missing_shard_is_caught(sharded, single):
    """Negative controls: without the FID merge, process 0's count check names the missing samples; silenced, the
    FID of its share alone differs from one process's by far more than the 1e-9 the comparison allows."""
    (_, (rank0, rank1)), (_, one) = sharded, single
    assert rank0["unmerged_error"] == ("fid_galip: the processes' merged accumulators hold 128 samples, the plan "
                                       "256")
    assert rank1["unmerged_error"] is None  # process 1 does not check (it returns no record)
    alone, full = values(rank0["rank0_share"]), values(one["full"])
    fid = ("fid_galip", "fid_galip")
    assert abs(alone[fid] - full[fid]) > 1e-6 * abs(full[fid])
    assert alone[("kid", "kid")] == pytest.approx(full[("kid", "kid")], rel=1e-9)  # the rest still merged


# ---- the merges against their closed forms, W processes as threads ---------------------------------------------

class ThreadComm:
    """galip_bench.distributed's collectives between threads (ranks) of one process: a test stand-in."""

    def __init__(self, rank, world, shared):
        self.rank, self.world, self.shared = rank, world, shared

    def rank_size(self):
        return self.rank, self.world

    def _exchange(self, value):
        self.shared["slots"][self.rank] = value
        self.shared["barrier"].wait()
        everyone = list(self.shared["slots"])
        self.shared["barrier"].wait()
        return everyone

    def all_reduce(self, tensor, op="sum"):
        stacked = torch.stack(self._exchange(tensor.clone()))
        return {"sum": stacked.sum(0), "max": stacked.max(0).values, "min": stacked.min(0).values}[op]

    def broadcast(self, tensor, src=0):
        return self._exchange(tensor.clone())[src].clone()

    def gather_rows(self, tensor, dst=0):
        rows = self._exchange(tensor.clone())
        return torch.cat([r for r in rows if r.shape[0]]) if self.rank == dst else None


def run_ranks(world, fn):
    shared = {"slots": [None] * world, "barrier": threading.Barrier(world)}
    results, errors = [None] * world, []

    def target(rank):
        try:
            results[rank] = fn(ThreadComm(rank, world, shared))
        except Exception as err:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(err)
            shared["barrier"].abort()
    threads = [threading.Thread(target=target, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def test_merged_moments_and_features_equal_the_closed_forms():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(37, 5)) * [1, 2, 3, 4, 5] + 1000.0  # a large mean: the shifts must be merged right
    cos_img, cos_txt = torch.tensor(rng.normal(size=(37, 6))), torch.tensor(rng.normal(size=(37, 6)))
    shares = [(0, 20), (20, 37), (37, 37)]  # whole score batches of 4 (the last partial), the third process empty

    def rank_fn(comm):
        first, last = shares[comm.rank]
        stats, bank, score, common = StatsAccumulator(), FeatureBank(), ClipScoreGALIP(4), ClipScore()
        for s in range(first, last, 7):
            e = min(s + 7, last)
            stats.update(features[s:e])
            bank.update(features[s:e])
            score.update(cos_img[s:e], cos_txt[s:e])
            common.update(cos_img[s:e], cos_txt[s:e])
        for acc in (stats, bank, score, common):
            acc.sync(comm)
        return stats, bank, score, common

    stats, bank, score, common = run_ranks(3, rank_fn)[0]
    mu, sigma = feature_stats(features)
    assert stats.n == 37
    np.testing.assert_allclose(stats.stats()[0], mu, rtol=1e-12)
    np.testing.assert_allclose(stats.stats()[1], sigma, rtol=1e-9)
    assert np.array_equal(bank.state()["features"], features)  # gathered in rank (plan) order
    cos = torch.nn.functional.cosine_similarity(cos_img, cos_txt, dim=1)
    assert score.result() == pytest.approx(np.mean([c.mean().item() for c in cos.split(4)]), rel=1e-12)
    assert score.n == 37 and common.n == 37
    assert common.result() == pytest.approx(float((100 * cos.clamp(min=0)).mean()), rel=1e-12)
    # negative control: one process's unmerged moments are not the whole set's
    alone = StatsAccumulator()
    alone.update(features[:20])
    assert not np.allclose(alone.stats()[1], sigma, rtol=1e-3)


def test_shares_are_whole_balanced_batches():
    for n, world in [(256, 2), (130, 2), (40, 2), (40504, 8), (30720, 3), (1000, 7)]:
        bounds = [shard_bounds(n, 64, r, world) for r in range(world)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # contiguous, in rank order
        assert all(start % 64 == 0 for start, _ in bounds)
        batches = [-(-(e - s) // 64) for s, e in bounds]
        assert max(batches) - min(batches) <= 1 and sum(batches) == -(-n // 64)
    # fewer batches than processes: the lower ranks go without (process 0, which computes the metrics after)
    assert [shard_bounds(40, 64, r, 2) for r in range(2)] == [(0, 0), (0, 40)]


def test_evaluation_timeout_is_sized_to_the_evaluation():
    coco = DataConfig(kind="synthetic", size=32, num_test=40504)
    cfg = EvalConfig(protocols=["fid_galip", "clip_score_galip"])  # one plan of 40,448; one reference of 40,504
    assert evaluation_timeout(cfg, coco, "cuda") == datetime.timedelta(seconds=600 + 0.1 * (40448 + 40504))
    assert evaluation_timeout(cfg, coco, "cpu") == datetime.timedelta(seconds=600 + 2.0 * (40448 + 40504))
    small = EvalConfig(protocols=["clip_score_galip"], num_samples=100)
    assert evaluation_timeout(small, coco, "cuda") == datetime.timedelta(minutes=30)  # the floor


def test_init_passes_the_timeout(monkeypatch):
    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda *a, **k: calls.append((a, k)))
    distributed.init(torch.device("cpu"), timeout=datetime.timedelta(hours=3))
    distributed.init(torch.device("cpu"))
    assert calls == [(("gloo",), {"timeout": datetime.timedelta(hours=3)}), (("gloo",), {})]


# ---- the command ------------------------------------------------------------------------------------------------

def test_eval_nproc_2_writes_the_records_of_one_process(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    checkpoint = save_checkpoint(tmp_path / "tiny.pt", tiny_galip(seed=4), step=5)
    data = tmp_path / "data.yaml"
    data.write_text("data: {kind: synthetic, size: 32, num_test: 24, num_workers: 0}\n")
    # N = 130: batches 64, 64, 2 (the last one partial): process 0 gets one, process 1 two
    common = ["eval", "--checkpoint", str(checkpoint), "--data", str(data), "--protocols",
              "fid_galip,clip_score_galip", "--num", "130", "--batch", "32", "--extractor", "tiny",
              "--bootstrap", "10", "--device", "cpu"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each of the 2 processes on this 2-core machine
    try:
        assert main(common + ["--out", "one.json"]) == 0, capsys.readouterr().err
    finally:
        torch.set_num_threads(threads)
    assert main(common + ["--out", "two.json", "--nproc", "2"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "wrote 2 record(s) to two.json" in out and "fid_galip" in out
    one, two = (json.loads((tmp_path / name).read_text()) for name in ("one.json", "two.json"))
    assert [r["metric"] for r in one] == [r["metric"] for r in two] == ["fid_galip", "clip_score_galip"]
    for a, b in zip(one, two):
        assert b["value"] == pytest.approx(a["value"], rel=1e-9, abs=0) and a["value"] is not None
        assert a["settings"] == b["settings"] and b["num_samples"] == 130
        assert (a["eval_processes"], b["eval_processes"]) == (1, 2)
    assert two[0]["ci_low"] == pytest.approx(one[0]["ci_low"], rel=1e-9)
    # refused with one line: more processes than batches, nothing to share
    assert main(common + ["--nproc", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --nproc 4: fid_galip's plan has 130 samples, 3 batch(es) of 64, which the processes "
                   "share whole: use at most 3 processes"]
    assert main(common[:5] + ["--protocols", "speed", "--nproc", "2"]) == 2
    assert "nothing to share" in capsys.readouterr().err
    # a user error inside the processes (here: no such checkpoint) is one line and exit 2, as with one process
    missing = [a if a != str(checkpoint) else str(tmp_path / "missing.pt") for a in common]
    assert main(missing + ["--nproc", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "missing.pt" in err[0]
