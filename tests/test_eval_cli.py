"""`galip-bench eval` end to end on the CPU: tiny model, synthetic data, small extractors; the JSON records carry
every protocol setting, the checkpoint hash and the library versions."""
import json

import pytest
from helpers import tiny_galip

from galip_bench.checkpoints import save_checkpoint
from galip_bench.cli import main
from galip_bench.files import file_sha256

SETTINGS = {"protocol", "matches", "plan", "passes", "plan_num_samples", "plan_batch", "plan_ranks", "plan_subset",
            "seed", "num_samples", "distinct_captions", "captions_sha256", "plan_description", "prepare", "resize",
            "extractor", "weights", "precision", "reference", "options", "smoke"}


@pytest.fixture
def tiny_checkpoint(tmp_path):
    return save_checkpoint(tmp_path / "tiny.pt", tiny_galip(seed=4), step=5)


def test_eval_writes_one_record_per_metric_with_all_settings(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data.yaml"
    data.write_text("data: {kind: synthetic, size: 32, num_test: 24}\n")
    out = tmp_path / "eval.json"
    code = main(["eval", "--checkpoint", str(tiny_checkpoint), "--data", str(data), "--protocols",
                 "fid_galip,fid,clip_score_galip,clip_score", "--num", "80", "--batch", "16", "--extractor", "tiny",
                 "--out", str(out), "--save-images", str(tmp_path / "imgs")])
    assert code == 0, capsys.readouterr().err
    records = json.loads(out.read_text())
    assert [r["protocol"] for r in records] == ["fid_galip", "fid", "clip_score_galip", "clip_score"]
    for r in records:
        assert SETTINGS <= set(r["settings"]) and r["settings"]["num_samples"] == 80 and r["num_samples"] == 80
        assert r["settings"]["plan"] == "fixed" and r["settings"]["smoke"] is True
        assert r["checkpoint_sha256"] == file_sha256(tiny_checkpoint) and r["step"] == 5
        assert r["versions"]["torch"] and r["value"] == r["value"]  # not NaN
    clip_scores = {r["protocol"]: r["value"] for r in records if "clip" in r["protocol"]}
    assert -1 <= clip_scores["clip_score_galip"] <= 1 and 0 <= clip_scores["clip_score"] <= 100
    assert len(list((tmp_path / "imgs").glob("*.png"))) == 80
    # a second run reuses the cached reference statistics and reproduces the numbers exactly
    out2 = tmp_path / "eval2.json"
    assert main(["eval", "--checkpoint", str(tiny_checkpoint), "--data", str(data), "--protocols",
                 "fid_galip,fid,clip_score_galip,clip_score", "--num", "80", "--batch", "16", "--extractor", "tiny",
                 "--out", str(out2)]) == 0
    assert [r["value"] for r in json.loads(out2.read_text())] == [r["value"] for r in records]


def test_eval_rejects_unknown_protocol_and_missing_weights(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data.yaml"
    data.write_text("data: {kind: synthetic, size: 32, num_test: 8}\n")
    assert main(["eval", "--checkpoint", str(tiny_checkpoint), "--data", str(data), "--protocols", "fdi"]) == 2
    assert "unknown metric protocol 'fdi'" in capsys.readouterr().err
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert main(["eval", "--checkpoint", str(tiny_checkpoint), "--data", str(data), "--protocols", "fid_galip",
                 "--num", "3000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fid_galip" in err[0] and "inception" in err[0].lower()
