"""Bad input through the CLI: one clear line on stderr, exit code 2, and nothing written under runs/."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from galip_bench.cli import main

SMOKE_GRID = "name: g\nprofile: smoke\nvariants: [{name: full}]\n"
CASES = {
    # name: (grid file text, extra arguments, words the error line must contain)
    "malformed_yaml": ("name: g\nvariants: [{name: full\n", [], ["not valid YAML", "line 3, column 1"]),
    "negative_steps": (SMOKE_GRID, ["--set", "train.steps=-5"], ["train.steps must be at least 1, got -5"]),
    "zero_steps": (SMOKE_GRID, ["--set", "train.steps=0"], ["train.steps must be at least 1, got 0"]),
    "negative_lr": (SMOKE_GRID, ["--set", "train.lr_g=-1e-4"], ["train.lr_g must be positive"]),
    "negative_num_samples": (SMOKE_GRID, ["--set", "eval.num_samples=-1"], ["eval.num_samples must be at least 2"]),
    "unparsable_override": (SMOKE_GRID, ["--set", "train.steps=[[["], ["train.steps=[[[", "not valid YAML"]),
    "unknown_key": ("name: g\nprofile: smoke\nbase: {train: {stepz: 5}}\n", [], ["stepz"]),
    "unknown_top_level_key": ("name: g\nvariant: [{name: full}]\n", [], ["unknown top-level key 'variant'"]),
    "wrong_type": ("name: g\nprofile: smoke\nbase: {train: {steps: many}}\n", [], ["train.steps", "many"]),
    "wrong_type_on_command_line": (SMOKE_GRID, ["--set", "train.batch_size=big"], ["train.batch_size"]),
    "missing_data_root": (SMOKE_GRID, ["--set", "data.kind=cub", "--set", "data.root=/nonexistent/birds"],
                          ["/nonexistent/birds", "not found"]),
    "missing_clip_weights": (SMOKE_GRID, ["--set", "model.clip.model=ViT-B-32",
                                          "--set", "model.clip.pretrained=/nonexistent/ViT-B-32.pt"],
                             ["/nonexistent/ViT-B-32.pt", "not found"]),
    "missing_metric_weights": (SMOKE_GRID + "eval: {protocols: [fid_galip]}\n", ["--set", "eval.extractor=default"],
                               ["inception_v3_google-0cc3c7bd.pth", "fid_galip"]),
    "empty_grid_file": ("", [], ["empty"]),
    "empty_variants": ("name: g\nprofile: smoke\nvariants: []\n", [], ["variants", "empty"]),
    "empty_seeds": (SMOKE_GRID + "seeds: []\n", [], ["seeds"]),
    "empty_grid_axis": (SMOKE_GRID + "grid: {model.bridge: []}\n", [], ["model.bridge", "non-empty"]),
    "steps_and_epochs": (SMOKE_GRID, ["--set", "train.epochs=3"], ["train.steps=120", "train.epochs=3"]),
    "data_smaller_than_generator": (SMOKE_GRID, ["--set", "data.size=16"], ["data.size=16", "model.img_size=32"]),
}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no cached metric weights are found
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    (tmp_path / "bench.yaml").write_text("paths: {weights: weights, runs: runs, cache: cache}\n")
    return tmp_path


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    return err[0]


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("command", ["run", "train"])
def test_bad_grid_input_is_one_line_and_exit_2(workdir, capsys, case, command):
    text, extra, words = CASES[case]
    (workdir / "grid.yaml").write_text(text)
    assert main([command, "grid.yaml"] + extra) == 2
    line = one_error_line(capsys)
    for word in words:
        assert word in line, line
    assert not (workdir / "runs").exists(), "nothing may be written under runs/"


def test_corrupt_checkpoint_is_one_line_and_exit_2(workdir, capsys):
    good = {"format": "galip-bench", "format_version": 1, "nets": {}, "step": 3}
    torch.save(good, workdir / "full.pt")
    data = (workdir / "full.pt").read_bytes()
    (workdir / "corrupt.pt").write_bytes(data[: len(data) // 2])  # a copy cut off mid-transfer
    (workdir / "data.yaml").write_text("data: {kind: synthetic, size: 32, num_test: 8}\n")
    for argv in (["eval", "--checkpoint", "corrupt.pt", "--data", "data.yaml", "--extractor", "tiny"],
                 ["convert", "corrupt.pt", "out.pth"]):
        assert main(argv) == 2, argv
        line = one_error_line(capsys)
        assert "corrupt.pt" in line and "corrupt or incomplete" in line, line
    assert not (workdir / "runs").exists() and not (workdir / "out.pth").exists()


def test_the_installed_entry_point_exits_2_with_one_line(workdir):
    (workdir / "grid.yaml").write_text(CASES["unknown_key"][0])
    p = subprocess.run([sys.executable, "-m", "galip_bench", "run", "grid.yaml"], cwd=workdir, capture_output=True,
                       text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0 and "stepz" in p.stderr, p.stderr
    assert not (workdir / "runs").exists()


def test_eval_refuses_too_few_samples_for_fid_before_generating(workdir, capsys):
    from helpers import tiny_galip

    from galip_bench.checkpoints import save_checkpoint
    save_checkpoint(workdir / "tiny.pt", tiny_galip(seed=1), step=1)
    (workdir / "weights").mkdir()
    for name in ("inception_v3_google-0cc3c7bd.pth", "ViT-B-32.pt"):
        (workdir / "weights" / name).write_bytes(b"x")  # found; never loaded
    (workdir / "data.yaml").write_text("data: {kind: synthetic, size: 32, num_test: 200}\n")
    assert main(["eval", "--checkpoint", "tiny.pt", "--data", "data.yaml", "--protocols", "fid_galip,clip_score_galip",
                 "--num", "100", "--save-images", "imgs"]) == 2
    line = one_error_line(capsys)
    assert "fid_galip: 100 samples" in line and "2048-d" in line, line
    assert not (workdir / "imgs").exists()


def _tiny_clip_file(path, seed):
    from models.clip import FrozenCLIP
    torch.manual_seed(seed)
    clip = FrozenCLIP.from_open_clip("tiny")
    torch.save(clip.model.state_dict(), path)  # an OpenAI-format state_dict (tiny architecture)
    return clip


def test_official_checkpoint_with_other_clip_weights_is_refused(workdir, capsys):
    from helpers import tiny_config

    from models import GALIP
    trained_with = _tiny_clip_file(workdir / "clip_a.pt", seed=1)
    _tiny_clip_file(workdir / "clip_b.pt", seed=2)
    torch.manual_seed(0)
    torch.save(GALIP(tiny_config(), clip=trained_with).export_official(), workdir / "official.pth")
    (workdir / "model.yaml").write_text("model: {cond_dim: 64, ngf: 8, img_size: 32, d_out_ch: 32, ndf: 8, "
                                        "bridge_ch: 16, bridge_mid_ch: 8, c_hidden: 16, clip: {model: ViT-B-32}}\n")
    (workdir / "data.yaml").write_text("data: {kind: synthetic, size: 32, num_test: 8}\n")
    argv = ["eval", "--checkpoint", "official.pth", "--model-config", "model.yaml", "--data", "data.yaml",
            "--protocols", "clip_score_galip", "--extractor", "tiny", "--num", "8", "--save-images", "imgs"]
    assert main(argv + ["--clip-weights", "clip_b.pt"]) == 2
    line = one_error_line(capsys)
    assert "mapping.CLIP_ViT." in line and "differs from the CLIP weights in use by up to" in line, line
    assert "--allow-clip-mismatch" in line and not (workdir / "imgs").exists()
    assert main(argv + ["--clip-weights", "clip_a.pt"]) == 0  # the CLIP it was trained with
    assert main(argv + ["--clip-weights", "clip_b.pt", "--allow-clip-mismatch", "--save-images", "imgs2"]) == 0
    assert len(list((workdir / "imgs2").glob("*.png"))) == 8


@pytest.fixture
def tiny_ckpt(workdir):
    from galip_bench.checkpoints import save_checkpoint
    from helpers import tiny_galip
    save_checkpoint(workdir / "tiny.pt", tiny_galip(seed=1), step=1)
    (workdir / "data.yaml").write_text("data: {kind: synthetic, size: 32, num_test: 130}\n")
    (workdir / "nodata.yaml").write_text("model: {ngf: 8}\n")
    (workdir / "binary.json").write_bytes(bytes(range(256)) * 4)
    (workdir / "ckptdir").mkdir()
    return workdir


EVAL = ["eval", "--checkpoint", "tiny.pt", "--data", "data.yaml", "--extractor", "tiny"]
COMMAND_CASES = {
    # name: (argv, words the error line must contain)
    "eval_negative_num": (EVAL + ["--num", "-3"], ["num_samples must be at least 1, got -3"]),
    "eval_empty_protocols": (EVAL + ["--protocols", ""], ["no metric protocol given"]),
    "eval_data_without_section": (["eval", "--checkpoint", "tiny.pt", "--data", "nodata.yaml"],
                                  ["nodata.yaml has no `data:` section"]),
    "eval_directory_checkpoint": (["eval", "--checkpoint", "ckptdir", "--data", "data.yaml"],
                                  ["ckptdir is a directory"]),
    "eval_zero_batch": (EVAL + ["--batch", "0"], ["batch size must be at least 1"]),
    "regress_binary_baseline": (["regress", "--records", "data.yaml", "--baseline", "binary.json"],
                                ["binary.json is not a text file"]),
    "speed_bad_batch_sizes": (["speed", "--checkpoint", "tiny.pt", "--batch-sizes", "abc"],
                              ["--batch-sizes 'abc'", "comma-separated integers"]),
}


@pytest.mark.parametrize("case", sorted(COMMAND_CASES))
def test_bad_command_line_values_are_one_line_and_exit_2(tiny_ckpt, capsys, case):
    argv, words = COMMAND_CASES[case]
    assert main(argv) == 2
    line = one_error_line(capsys)
    for word in words:
        assert word in line, line
    assert not (tiny_ckpt / "runs").exists()
