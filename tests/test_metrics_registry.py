"""Protocol registry, weight resolution and the speed measurement."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


import pytest
import torch

from galip_bench.errors import UserError
from galip_bench.metrics import PROTOCOLS, get_protocol
from galip_bench.metrics.registry import select_captions
from galip_bench.metrics.speed import count_parameters, measure_speed
from galip_bench.metrics.weights import WEIGHTS, format_weights_report, resolve_weights, weights_report

EXPECTED = {"fid_galip", "fid", "fid_clean", "kid", "clip_score_galip", "clip_score", "fid_clip", "zs_fid_coco",
            "speed"}


def test_registry_lists_every_protocol_with_its_settings():
    assert set(PROTOCOLS) == EXPECTED
    for name in EXPECTED:
        d = get_protocol(name).settings_dict()
        assert d["protocol"] == name and d["matches"]
        for key in ("num_samples", "seed", "captions_per_image", "resize", "extractor", "weights", "reference"):
            assert key in d
    assert get_protocol("fid_galip", num_samples=5000).settings.num_samples == 5000
    with pytest.raises(UserError, match="unknown metric protocol"):
        get_protocol("fid_tf")
    with pytest.raises(UserError, match="num_sample"):
        get_protocol("fid", num_sample=3)


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
    rows = weights_report(tmp_path / "weights")
    assert {r["protocol"] for r in rows} == EXPECTED - {"speed"}
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
    counts = count_parameters(encoder, generator, generator)
    assert counts == {"trainable": 12 * 48 + 48, "frozen": 800, "total": 12 * 48 + 48 + 800}


def test_measure_speed_stops_at_out_of_memory():
    def generate(noise, sent):
        if len(noise) > 4:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return noise

    out = measure_speed(lambda t: t.float(), generate, torch.zeros(1, 77, dtype=torch.long), 4,
                        batch_sizes=(1, 4, 8, 16), repeats=3, warmup=1)
    assert out["throughput_batch"] == 4 and sorted(out["per_batch"]) == [1, 4]
