"""Protocol registry, weight resolution and the speed measurement."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


import pytest
from torch.utils.data import DataLoader, DistributedSampler
import torch

from galip_bench.errors import UserError
from galip_bench.evaluation import PROTOCOLS, get_protocol
from galip_bench.evaluation.plans import SamplePlan, select_captions
from galip_bench.evaluation.protocols import direction, metric_direction
from galip_bench.evaluation.spec import HIGHER, LOWER
from galip_bench.metrics.speed import measure_speed
from galip_bench.metrics.weights import WEIGHTS, format_weights_report, resolve_weights, weights_report

EXPECTED = {"fid_galip", "fid", "fid_clean", "kid", "clip_score_galip", "clip_score", "fid_clip", "zs_fid_coco",
            "zs_fid_coco_30k", "speed", "is", "fid_blur1", "fid_blur2"}
EXPECTED |= {"fid_dmgan", "fid_dmgan_blur1", "fid_dmgan_blur2", "is_dmgan"}  # DM-GAN / CogView evaluation
EXPECTED |= {"fd_dinov2", "prdc", "prdc_dinov2", "cmmd", "clip_score_heldout"}  # issue 21: the field's newer metrics
EXPECTED |= {"shapes_acc", "fd_shapes"}  # the shapes benchmark's own (galip_bench.shapes)


def test_registry_lists_every_protocol_with_its_settings():
    assert set(PROTOCOLS) == EXPECTED
    for name in EXPECTED - {"speed"}:
        d = get_protocol(name).settings_dict()
        assert d["protocol"] == name and d["matches"]
        for key in ("plan", "passes", "plan_batch", "seed", "prepare", "resize", "extractor", "weights", "precision",
                    "reference", "options"):
            assert key in d, (name, key)
        assert PROTOCOLS[name].metrics, name
    assert get_protocol("fid_galip", plan=SamplePlan("fixed", num_samples=5000)).settings_dict()["plan_num_samples"] == 5000
    with pytest.raises(UserError, match="unknown metric protocol"):
        get_protocol("fid_tf")
    with pytest.raises(UserError, match="num_sample"):
        get_protocol("kid", options={"num_sample": 3})


def test_directions_come_from_the_protocol_specs():
    assert direction("fid_galip", "fid_galip") == LOWER and direction("kid", "kid_std") is None
    assert direction("clip_score_galip", "clip_score_galip") == HIGHER
    assert direction("speed", "latency_ms") == LOWER and direction("speed", "throughput_img_s") == HIGHER
    assert direction("speed", "latency_batch") is None and direction("nope", "x") is None
    assert metric_direction("zs_fid_coco") == LOWER and metric_direction("clip_score") == HIGHER
    assert direction("is", "is") == HIGHER and direction("is", "is_std") is None and metric_direction("is") == HIGHER
    assert direction("fid_blur1", "fid_blur1") == LOWER and metric_direction("fid_blur2") == LOWER


def test_official_plan_is_the_official_test_loop():
    """N = floor(N_test / 64) * 64 * sample_times, one caption per image per pass (COCO 1 pass, CUB 12)."""
    assert SamplePlan().for_dataset("coco").count(40504) == 40448
    assert SamplePlan().for_dataset("cub").count(2933) == 2880 * 12
    assert SamplePlan().for_dataset("synthetic").count(130) == 128
    table = [(f"k{i}", [f"img{i} cap{j}" for j in range(5)]) for i in range(130)]
    resolved = SamplePlan(passes=3).resolve(table)
    # test.sh's loader: DistributedSampler(shuffle=True, seed=0) with its epoch never set, drop_last batches of 64,
    # the same permutation every pass
    sampler = DistributedSampler(range(130), num_replicas=1, rank=0, shuffle=True, seed=0)
    official = [int(i) for b in DataLoader(range(130), batch_size=64, drop_last=True, sampler=sampler) for i in b]
    assert resolved.n == 3 * 128 and resolved.images == official * 3
    assert all(c.startswith(f"img{i} ") for i, c in zip(resolved.images, resolved.captions))
    assert resolved.captions[:128] != resolved.captions[128:256]  # a new random caption per pass
    assert SamplePlan(passes=3).resolve(table).captions == resolved.captions  # seeded
    with pytest.raises(UserError, match="at least one batch of 64"):
        SamplePlan(passes=1).resolve(table[:63])


def test_plan_overrides_and_ranges():
    assert SamplePlan().with_overrides(num_samples=500).kind == "fixed"
    assert SamplePlan("distinct", num_samples=30000).with_overrides(num_samples=500) == SamplePlan("distinct", num_samples=500)
    assert SamplePlan().with_overrides(passes=12).passes == 12
    with pytest.raises(UserError, match="exclusive"):
        SamplePlan().with_overrides(num_samples=5, passes=2)
    with pytest.raises(UserError, match="at least 1"):
        SamplePlan("fixed", num_samples=-3)


def test_zero_shot_caption_choice_is_seeded_and_without_replacement():
    caps = [[f"img{i} cap{j}" for j in range(5)] for i in range(100)]
    a, b = select_captions(caps, 300, seed=0), select_captions(caps, 300, seed=0)
    assert a == b and len(set(a)) == 300 and a != select_captions(caps, 300, seed=1)
    assert all(0 <= i < 100 and 0 <= j < 5 for i, j in a)
    with pytest.raises(UserError):
        select_captions(caps, 501)


def test_weights_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    ckpt = tmp_path / "torch" / "hub" / "checkpoints" / "inception_v3_google-0cc3c7bd.pth"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"x")
    assert resolve_weights("inception_torchvision", tmp_path / "weights") == ckpt  # standard cache
    local = tmp_path / "weights" / "inception_v3_google-0cc3c7bd.pth"
    local.parent.mkdir()
    local.write_bytes(b"y")
    assert resolve_weights("inception_torchvision", tmp_path / "weights") == local  # bench.yaml path first
    rows = weights_report({n: c.weights_needed() for n, c in PROTOCOLS.items()}, tmp_path / "weights")
    assert {r["protocol"] for r in rows} == EXPECTED - {"speed", "shapes_acc", "fd_shapes"}  # those are built here
    assert "MISSING" in format_weights_report(rows) and str(local) in format_weights_report(rows)


def test_missing_weights_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    for name, spec in WEIGHTS.items():
        if name == "inception_cleanfid" and os.path.isfile("/tmp/inception-2015-12-05.pt"):
            continue
        with pytest.raises(UserError) as err:
            resolve_weights(name, tmp_path / "w", protocol="some_protocol")
        msg = str(err.value)
        assert "\n" not in msg and spec.filenames[0] in msg and "some_protocol" in msg and spec.url in msg


def test_measure_speed_with_toy_callables():
    calls = []
    encoder = torch.nn.Embedding(100, 8)
    generator = torch.nn.Linear(8 + 4, 3 * 4 * 4)
    encoder.requires_grad_(False)

    def encode_text(tokens):
        calls.append(len(tokens))
        return encoder(tokens).mean(1)

    def generate(noise, sent):
        return generator(torch.cat([noise, sent], 1)).view(-1, 3, 4, 4)

    out = measure_speed(encode_text, generate, torch.randint(0, 100, (3, 77)), noise_dim=4,
                        batch_sizes=(1, 4, 16), repeats=5, warmup=2)
    assert out["latency_batch"] == 1 and out["throughput_batch"] == 16
    assert out["latency_ms"] > 0 and out["throughput_img_s"] > 0
    assert calls.count(16) == 7 and calls.count(1) == 7  # warm-up + repeats per batch size
    assert out["per_batch"][4]["img_s"] == pytest.approx(4 / out["per_batch"][4]["median_s"])


def test_measure_speed_stops_at_out_of_memory():
    def generate(noise, sent):
        if len(noise) > 4:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return noise

    out = measure_speed(lambda t: t.float(), generate, torch.zeros(1, 77, dtype=torch.long), 4,
                        batch_sizes=(1, 4, 8, 16), repeats=3, warmup=1)
    assert out["throughput_batch"] == 4 and sorted(out["per_batch"]) == [1, 4]
