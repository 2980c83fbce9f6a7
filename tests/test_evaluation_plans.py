"""The evaluation driver executes each protocol's sample plan: on a miniature captioned COCO-layout dataset, the
captions and the N the generator actually consumed equal what the record says; a failing metric is recorded with its
reason without costing the others; N is checked before any generation."""
import hashlib
import pickle

import numpy as np
import pytest
from helpers import tiny_galip
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler

from galip_bench.config.schema import DataConfig, EvalConfig, SiteConfig
from galip_bench.data.tokens import tokenize
from galip_bench.errors import UserError
from galip_bench.evaluation import PROTOCOLS
from galip_bench.evaluation.driver import Evaluator

N_TEST = 130  # the official plan uses floor(130 / 64) * 64 = 128 of them per pass


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """COCO layout: images/<key>.jpg, text/<key>.txt (5 distinct captions each), {train,test}/filenames.pickle."""
    root = tmp_path_factory.mktemp("coco")
    keys = [f"COCO_val2014_{i:012d}" for i in range(N_TEST)]
    (root / "images").mkdir()
    (root / "text").mkdir()
    rng = np.random.default_rng(0)
    for i, key in enumerate(keys):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / "images" / f"{key}.jpg")
        (root / "text" / f"{key}.txt").write_text("".join(f"image {i} says caption {j}\n" for j in range(5)))
    for split in ("train", "test"):
        (root / split).mkdir()
        (root / split / "filenames.pickle").write_bytes(pickle.dumps(keys))
    return root, keys


def run_protocol(coco, name, **plan):
    root, keys = coco
    data = DataConfig(kind="coco", root=str(root), size=32)
    eval_cfg = EvalConfig(protocols=[name], batch_size=48, extractor="tiny", **plan)
    galip = tiny_galip(seed=1)
    evaluator = Evaluator(eval_cfg, data, SiteConfig(), "cpu", progress=False)
    captions = {c: i for i in range(N_TEST) for c in [f"image {i} says caption {j}" for j in range(5)]}
    lookup = {tuple(tokenize([c])[0].tolist()): c for c in captions}
    seen, encode = [], galip.clip.encode_text

    def spy(tokens):
        seen.extend(lookup[tuple(t.tolist())] for t in tokens.cpu())
        return encode(tokens)
    galip.clip.encode_text = spy
    records = evaluator(galip, step=7)
    return records, seen, captions


# (the shapes benchmark's protocols read shapes captions and train their evaluators: tests/test_shapes*.py)
CASES = [(name, {}) for name, cls in sorted(PROTOCOLS.items()) if cls.kind != "speed" and name != "zs_fid_coco_30k"
         and not getattr(cls, "build_cached", None)]
CASES += [("zs_fid_coco_30k", {"num_samples": 100}), ("fid_galip", {"num_samples": 100}),
          ("clip_score_galip", {"passes": 2})]


@pytest.mark.parametrize("name, plan", CASES, ids=[f"{n}-{'-'.join(map(str, p.values())) or 'default'}"
                                                   for n, p in CASES])
def test_the_record_says_what_the_generator_consumed(coco, name, plan):
    records, seen, image_of = run_protocol(coco, name, **plan)
    assert records and all(r["protocol"] == name and r["value"] is not None for r in records)
    s = records[0]["settings"]
    # the record is what ran: N, the captions (digest of the generation order) and their count
    assert records[0]["num_samples"] == s["num_samples"] == len(seen)
    assert s["captions_sha256"] == hashlib.sha256("\n".join(seen).encode()).hexdigest()
    assert s["distinct_captions"] == len(set(seen))
    # ... and it is the protocol's plan, checked independently of the driver
    images = [image_of[c] for c in seen]
    if s["plan"] == "official":
        passes = plan.get("passes", 1)  # COCO's official sample_times is 1
        assert s["passes"] == passes and len(seen) == 128 * passes and s["plan_ranks"] == 1
        # each pass: the images the official test loader yields (test.sh: one process), torch's own sampler as the
        # reference. This test expected the first 128 images in split order before the official subset was
        # corrected (issue 19): the official loader shuffles with DistributedSampler(seed=0), epoch never set.
        loader = DataLoader(range(N_TEST), batch_size=64, drop_last=True,
                            sampler=DistributedSampler(range(N_TEST), num_replicas=1, rank=0, shuffle=True, seed=0))
        official = [int(i) for b in loader for i in b]
        assert len(official) == 128 and official != list(range(128))
        for p in range(passes):
            assert images[128 * p: 128 * (p + 1)] == official
    elif s["plan"] == "fixed":
        assert len(seen) == plan["num_samples"] and images == [i % N_TEST for i in range(len(seen))]
    else:
        assert s["plan"] == "distinct" and len(seen) == len(set(seen)) == plan["num_samples"]
    assert name != "zs_fid_coco" or (s["plan"] == "official" and len(seen) == 128)  # the official COCO loop
    if PROTOCOLS[name].bootstrap:  # FIDs carry a bootstrap interval from the features the evaluation kept
        assert records[0]["ci_resamples"] == 100 and records[0]["ci_low"] < records[0]["ci_high"]


def test_zero_shot_protocols_need_coco_and_n_is_checked_before_generation(coco):
    data = DataConfig(kind="synthetic", size=32, num_test=130)
    with pytest.raises(UserError, match="zs_fid_coco is defined on coco"):
        Evaluator(EvalConfig(protocols=["zs_fid_coco"]), data, SiteConfig(), "cpu")
    root, _ = coco
    with pytest.raises(UserError, match="fid_galip: 50 samples cannot give a full-rank covariance of its 64-d"):
        Evaluator(EvalConfig(protocols=["fid_galip"], num_samples=50, extractor="tiny"),
                  DataConfig(kind="coco", root=str(root), size=32), SiteConfig(), "cpu")


def test_a_failing_metric_is_recorded_and_the_others_keep_their_results(coco, monkeypatch):
    from galip_bench.evaluation import protocols
    root, _ = coco
    data = DataConfig(kind="coco", root=str(root), size=32)
    evaluator = Evaluator(EvalConfig(protocols=["fid_galip", "clip_score_galip"], extractor="tiny"), data,
                          SiteConfig(), "cpu", progress=False)

    def degenerate(self, acc, reference):
        raise ValueError("sqrtm has a significant imaginary component 3.2")
    monkeypatch.setattr(protocols.FIDGALIP, "compute_all", degenerate)
    records = {r["protocol"]: r for r in evaluator(tiny_galip(seed=1), step=3)}
    assert records["fid_galip"]["value"] is None
    assert records["fid_galip"]["error"] == "ValueError: sqrtm has a significant imaginary component 3.2"
    assert records["clip_score_galip"]["value"] is not None and "error" not in records["clip_score_galip"]


def test_generation_batch_does_not_change_the_numbers(coco):
    """The noise stream and the CLIP score's 64-sample batches are the plan's, not the generation batch's."""
    root, _ = coco
    data = DataConfig(kind="coco", root=str(root), size=32)
    values = []
    for batch in (48, 128):
        evaluator = Evaluator(EvalConfig(protocols=["fid_galip", "clip_score_galip"], batch_size=batch,
                                         extractor="tiny"), data, SiteConfig(), "cpu", progress=False)
        values.append({r["protocol"]: r["value"] for r in evaluator(tiny_galip(seed=1))})
    for name in values[0]:
        assert values[0][name] == pytest.approx(values[1][name], rel=1e-5, abs=1e-6), name
