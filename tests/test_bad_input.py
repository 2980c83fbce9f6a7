"""Bad input through the CLI: one clear line on stderr, exit code 2, and nothing written under runs/."""
import json
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


# ---- issue 20: nothing written or lost, one line, exit 2 ---------------------------------------------------------
# Every case below snapshots the whole working folder (a runs/ folder with an earlier run in it included) before the
# command and compares after: nothing may be created, changed or removed. The snapshot's own negative control is
# test_the_snapshot_sees_every_kind_of_change.

import errno  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import tempfile  # noqa: E402
import zlib  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def snapshot(root) -> dict:
    """{relative path: sha256 of the bytes, or 'dir'} of everything under `root`, hidden files included."""
    root = Path(root)
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def earlier(workdir):
    """An earlier run's folder under runs/ (what a bad command must leave as it is), and the snapshot before."""
    run = workdir / "runs" / "g" / "0123456789"
    run.mkdir(parents=True)
    (run / "status.json").write_text('{"state": "finished", "step": 120}\n')
    (run / "metrics.jsonl").write_text('{"step": 120, "metric": "fid_galip", "value": 1.5}\n')
    (workdir / "reports").mkdir()
    return workdir


def refused(capsys, argv, words, folder) -> str:
    """Run the CLI in-process: exit 2, exactly one stderr line (an `error:` one, no traceback), every word in it,
    and `folder` exactly as it was."""
    before = snapshot(folder)
    assert main(argv) == 2, argv
    captured = capsys.readouterr()
    line = captured.err.strip().splitlines()
    assert len(line) == 1 and line[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    for word in words:
        assert word in line[0], (word, line[0])
    assert snapshot(folder) == before, "nothing may be created, changed or removed"
    return line[0]


def test_the_snapshot_sees_every_kind_of_change(earlier):
    before = snapshot(earlier)
    (earlier / "runs" / "g" / "0123456789" / "metrics.jsonl").write_text("")  # changed
    assert snapshot(earlier) != before
    before = snapshot(earlier)
    (earlier / "runs" / ".lock").write_text("x")  # created (hidden)
    assert snapshot(earlier) != before
    before = snapshot(earlier)
    (earlier / "reports" / "empty").mkdir()  # a folder created
    assert snapshot(earlier) != before


# -- group 1: what would fail every run is found before anything is written ----------------------------------------

def _png(color=(200, 30, 30)) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


def _pictures(folder, n=12) -> list:
    """A captions folder of n tiny PNGs with a caption file each; the keys of its train split (crc32 rule)."""
    folder.mkdir()
    for i in range(n):
        (folder / f"img{i:02d}.png").write_bytes(_png((20 * i, 30, 30)))
        (folder / f"img{i:02d}.txt").write_text(f"a square of shade {i}\n")
    return [f"img{i:02d}" for i in range(n) if zlib.crc32(f"img{i:02d}".encode()) % 10 != 0]


CAPTIONS = ["--set", "data.kind=captions", "--set", "data.root=pics", "--set", "eval.protocols=[]"]
DATA_CASES = {
    # name: (how the first train image or its caption is spoiled, words the error line must contain)
    "zero_byte_image": (lambda key: (Path("pics") / f"{key}.png").write_bytes(b""), ["is empty (0 bytes)"]),
    "corrupt_image": (lambda key: (Path("pics") / f"{key}.png").write_bytes(b"not an image" * 9),
                      ["cannot be read", "does not decode", "data.skip_corrupt=true"]),
    "truncated_image": (lambda key: (Path("pics") / f"{key}.png").write_bytes(_png()[:40]), ["does not decode"]),
    "missing_caption_file": (lambda key: (Path("pics") / f"{key}.txt").unlink(), ["caption file", "not found"]),
    "empty_caption_file": (lambda key: (Path("pics") / f"{key}.txt").write_text(""), ["caption file", "is empty"]),
}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_preflight_finds_unusable_data_files(earlier, capsys, case):
    spoil, words = DATA_CASES[case]
    train_keys = _pictures(earlier / "pics")
    (earlier / "grid.yaml").write_text(SMOKE_GRID)
    assert main(["run", "grid.yaml", "--dry-run"] + CAPTIONS) == 0  # control: the intact folder passes
    out = capsys.readouterr().out
    assert f"checked all {len(train_keys)} images (headers) and their caption files" in out, out
    spoil(train_keys[0])
    for argv in (["run", "grid.yaml", "--dry-run"], ["run", "grid.yaml"], ["train", "grid.yaml"]):
        line = refused(capsys, argv + CAPTIONS, words + ["train split", train_keys[0]], earlier)
        assert f"of the {len(train_keys)} " in line, line


def test_preflight_lets_skip_corrupt_skip_and_samples_large_splits(earlier, capsys, monkeypatch):
    from galip_bench.grids import preflight
    train_keys = _pictures(earlier / "pics")
    (earlier / "pics" / f"{train_keys[0]}.png").write_bytes(b"")
    (earlier / "grid.yaml").write_text(SMOKE_GRID)
    assert main(["run", "grid.yaml", "--dry-run", "--set", "data.skip_corrupt=true"] + CAPTIONS) == 0
    assert "1 unreadable (data.skip_corrupt: skipped)" in capsys.readouterr().out
    monkeypatch.setattr(preflight, "SAMPLE_LIMIT", 4)
    assert main(["run", "grid.yaml", "--dry-run", "--set", "data.skip_corrupt=true"] + CAPTIONS) == 0
    assert f"checked a sample of 4 of {len(train_keys)} images" in capsys.readouterr().out
    # the sample is the same on every check, and another one for another split
    items = list(range(100))
    assert preflight._sample(items, "coco", "train") == preflight._sample(items, "coco", "train")
    assert preflight._sample(items, "coco", "train") != preflight._sample(items, "coco", "test")
    assert len(set(preflight._sample(items, "coco", "test"))) == 4


def test_preflight_refuses_a_plan_of_no_samples(earlier, capsys):
    """6 test images under the official plan (drop_last batches of 64): N=0. A fixed plan of 8 runs (control)."""
    _pictures(earlier / "pics", 16)
    rows = [{"image": f"img{i:02d}.png", "caption": f"shade {i}", "split": "test" if i < 6 else "train"}
            for i in range(16)]
    (earlier / "pics" / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (earlier / "grid.yaml").write_text(SMOKE_GRID)
    argv = ["run", "grid.yaml", "--dry-run", "--set", "data.kind=captions", "--set", "data.manifest=pics/m.jsonl",
            "--set", "eval.protocols=[clip_score_galip]"]
    for command in (argv, argv[:2] + argv[3:]):
        refused(capsys, command, ["clip_score_galip", "N=0", "eval.num_samples"], earlier)
    assert main(argv + ["--set", "eval.num_samples=8"]) == 0
    assert "checked all 6 images (headers)" in capsys.readouterr().out


@pytest.mark.parametrize("device, words", [("tpu", ["train.device=tpu is not a device", "cuda:K"]),
                                           ("cuda:x", ["train.device=cuda:x is not a device"]),
                                           ("cuda", ["train.device=cuda", "this machine has no CUDA GPU"]),
                                           ("cuda:0", ["train.device=cuda:0", "no CUDA GPU"])])
def test_preflight_refuses_a_device_the_machine_lacks(earlier, capsys, monkeypatch, device, words):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without GPUs, whatever runs the test
    (earlier / "grid.yaml").write_text(SMOKE_GRID)
    for argv in (["run", "grid.yaml", "--dry-run"], ["run", "grid.yaml"], ["train", "grid.yaml"]):
        refused(capsys, argv + ["--set", f"train.device={device}"], words, earlier)


def test_slurm_runs_are_checked_against_the_jobs_gpus_not_this_machine(monkeypatch):
    from galip_bench.grids.preflight import Problems, _device_problems, _SlurmPlacement
    from galip_bench.grids.grid import load_grid
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (run,) = load_grid(REPO / "ablations" / "smoke.yaml", overrides=["train.device=cuda:3"]).runs[:1]
    for gpus, expected in ((4, 0), (3, 1), (0, 1)):
        problems = Problems()
        _device_problems(run.config, _SlurmPlacement(gpus, max(gpus, 1)), problems, run)
        assert len(problems) == expected, (gpus, problems.found)
    problems = Problems()
    _device_problems(run.config, None, problems, run)  # local: this machine, which has none
    assert "this machine has no CUDA GPU" in next(iter(problems.found))


# -- group 2: a fresh machine's dry run lists every missing input at once ------------------------------------------

def test_a_fresh_dry_run_of_a_paper_grid_lists_every_missing_input(earlier, capsys):
    grid = str(REPO / "ablations" / "paper_table1_coco.yaml")
    listed = []
    for argv in (["run", grid, "--dry-run"], ["run", grid]):
        before = snapshot(earlier)
        assert main(argv) == 2
        captured = capsys.readouterr()
        err = captured.err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and "6 inputs are missing or unusable" in err[0], err
        assert snapshot(earlier) == before
        listed = [line for line in captured.out.splitlines() if line.startswith("  ") and ". " in line[:6]]
        assert len(listed) == 6, captured.out
        text = "\n".join(listed)
        assert "data root data/coco not found" in text and "--set data.root=" in text
        assert "model.clip.pretrained is not set" in text and "ViT-B-32.pt" in text
        assert "inception_v3_google-0cc3c7bd.pth" in text and "download.pytorch.org" in text and "into weights" in text
        assert "weights-inception-2015-12-05-6726825d.pth" in text
        assert "coco_val256_FIDK0.npz" in text
    # control: what is given is no longer listed
    assert main(["run", grid, "--dry-run", "--set", "model.clip.pretrained=random"]) == 2
    captured = capsys.readouterr()
    assert "5 inputs are missing" in captured.err and "model.clip.pretrained is not set" not in captured.out


# -- group 3: a setting the run does not read is refused ------------------------------------------------------------

def test_a_setting_the_model_does_not_read_is_refused(earlier, capsys):
    grid = str(REPO / "ablations" / "smoke.yaml")
    for command in ("run", "train"):
        args = [command, grid] + (["--variant", "full"] if command == "train" else [])
        refused(capsys, args + ["--set", "model.clip.pretrained=/nonexistent.pt"],
                ["model.clip.pretrained=/nonexistent.pt", "model.clip.model=tiny"], earlier)
    # control: with a CLIP that reads weights the setting applies, and the missing file is what is refused
    refused(capsys, ["run", grid, "--set", "model.clip.pretrained=/nonexistent.pt", "--set",
                     "model.clip.model=ViT-B-32"], ["/nonexistent.pt", "not found"], earlier)


# -- group 4: a grid name never leaves runs/ -----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".hidden", "x..y", "/abs", "sp ace"])
def test_a_grid_name_that_is_not_a_plain_folder_name_is_refused(earlier, capsys, name):
    (earlier / "grid.yaml").write_text(f"name: {json.dumps(name)}\nprofile: smoke\nvariants: [{{name: full}}]\n")
    for argv in (["run", "grid.yaml"], ["run", "grid.yaml", "--dry-run"], ["train", "grid.yaml"],
                 ["status", "grid.yaml"], ["report", "grid.yaml"]):
        refused(capsys, argv, ["grid.yaml", repr(name), "letters, digits"], earlier)
    assert not (earlier.parent / "escape").exists()


def test_a_plain_grid_name_loads_and_a_file_name_is_checked_too(earlier, capsys):
    from galip_bench.grids.grid import load_grid
    (earlier / "grid.yaml").write_text("name: ok-name_1.2\nprofile: smoke\nvariants: [{name: full}]\n")
    assert load_grid(earlier / "grid.yaml").name == "ok-name_1.2"
    (earlier / "my grid.yaml").write_text(SMOKE_GRID.replace("name: g\n", ""))
    refused(capsys, ["run", "my grid.yaml"], ["'my grid'", "give the grid a `name:`"], earlier)


# -- group 5: environment errors -------------------------------------------------------------------------------------

class _FullDisk:
    """A file object of a disk that fills after `room` bytes (ENOSPC), as a full file system's write raises."""

    def __init__(self, f, room=256):
        self.f, self.room = f, room

    def write(self, data):
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def full_disk(monkeypatch):
    real = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: _FullDisk(real(fd, *a, **k)))


def read_only(monkeypatch, folder):
    """mkstemp under `folder` fails as on a read-only mount (the tests run as root, where chmod stops no write)."""
    real, folder = tempfile.mkstemp, Path(folder).resolve()

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and (Path(dir).resolve() == folder or folder in Path(dir).resolve().parents):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real(*args, dir=dir, **kwargs)
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_a_full_disk_is_named_and_leaves_the_earlier_file(earlier, capsys, monkeypatch):
    from galip_bench.checkpoints import save_checkpoint
    from galip_bench.files import atomic_torch_save, atomic_write_text
    from galip_bench.errors import UserError
    from helpers import tiny_galip
    save_checkpoint(earlier / "tiny.pt", tiny_galip(seed=1), step=1)
    (earlier / "old.pth").write_bytes(b"the earlier file")
    full_disk(monkeypatch)
    for out in ("new.pth", "old.pth"):  # a new file, and one whose earlier content must survive
        argv = ["convert", "tiny.pt", out, "--to-official"]
        line = refused(capsys, argv, ["cannot write", ".pth", "no space left on device", "MB free"], earlier)
        assert "inline_container" not in line and "enforce fail" not in line
    with pytest.raises(UserError, match="old.pth: no space left on device"):
        atomic_write_text(earlier / "old.pth", "x" * 1000)
    assert (earlier / "old.pth").read_bytes() == b"the earlier file"
    assert not list(earlier.glob(".*.tmp")), "no temp file is left behind"
    monkeypatch.undo()  # control: with room on the disk the same writes succeed
    atomic_torch_save({"a": torch.arange(3)}, earlier / "new.pth")
    assert torch.load(earlier / "new.pth")["a"].tolist() == [0, 1, 2]


def test_read_only_output_folders_are_one_line_before_the_work(earlier, capsys, monkeypatch):
    import galip_bench.commands.report as report_command
    monkeypatch.setattr(report_command, "build_report", lambda *a, **k: pytest.fail("the report was built"))
    read_only(monkeypatch, earlier / "reports")
    refused(capsys, ["report", "g"], ["reports/g", "read-only file system"], earlier)
    read_only(monkeypatch, earlier / "runs")
    (earlier / "grid.yaml").write_text(SMOKE_GRID)
    refused(capsys, ["run", "grid.yaml"], ["runs", "read-only file system"], earlier)
    refused(capsys, ["train", "grid.yaml"], ["runs", "read-only file system"], earlier)


@pytest.mark.parametrize("device, words", [("cuda", ["--device cuda", "no CUDA GPU", "--device cpu"]),
                                           ("cuda:1", ["--device cuda:1", "no CUDA GPU"]),
                                           ("gpu0", ["--device gpu0 is not a device", "cuda:K"])])
def test_a_device_the_machine_lacks_is_refused_before_the_work(tiny_ckpt, earlier, capsys, monkeypatch, device, words):
    import galip_bench.commands.bench as bench_command
    import galip_bench.commands.eval as eval_command
    import galip_bench.commands.speed as speed_command
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    never = lambda *a, **k: pytest.fail("the work started")  # noqa: E731
    monkeypatch.setattr(bench_command, "run_bench", never)
    monkeypatch.setattr(eval_command, "prepare_evaluation", never)
    monkeypatch.setattr(eval_command, "evaluate_sharded", never)
    monkeypatch.setattr(speed_command, "evaluate_checkpoint", never)
    for argv in (EVAL + ["--device", device], ["speed", "--checkpoint", "tiny.pt", "--device", device],
                 ["bench", "--quick", "--device", device], ["regress", "--baseline", "b.json", "--checkpoint",
                                                            "tiny.pt", "--device", device]):
        refused(capsys, argv, words, earlier)


def _fake_tool(folder, name, script):
    folder.mkdir(exist_ok=True)
    (folder / name).write_text("#!/bin/sh\n" + script + "\n")
    (folder / name).chmod(0o755)


def test_the_slurm_executor_without_a_cluster_is_one_line_before_anything(earlier, capsys, monkeypatch):
    from galip_bench.grids.preflight import cluster_problem
    (earlier / "grid.yaml").write_text(SMOKE_GRID)
    monkeypatch.setenv("PATH", str(earlier / "nobin"))
    refused(capsys, ["run", "grid.yaml", "--executor", "slurm"], ["no SLURM cluster", "sbatch and sinfo not on PATH",
                                                                 "--executor local"], earlier)
    bin_dir = earlier.parent / f"{earlier.name}-bin"  # outside the snapshot
    _fake_tool(bin_dir, "sbatch", "exit 0")
    _fake_tool(bin_dir, "sinfo", "echo 'slurm_load_partitions: Unable to contact slurm controller' >&2; exit 1")
    monkeypatch.setenv("PATH", str(bin_dir))
    refused(capsys, ["run", "grid.yaml", "--executor", "slurm"], ["sinfo failed: slurm_load_partitions"], earlier)
    # a dry run only notes it (control: exit 0, nothing written); a cluster that answers is no problem
    assert main(["run", "grid.yaml", "--executor", "slurm", "--dry-run"]) == 0
    assert "note: executor slurm, but no SLURM cluster answers" in capsys.readouterr().out
    _fake_tool(bin_dir, "sinfo", "echo gpu; exit 0")
    assert cluster_problem() is None


def test_output_and_input_paths_of_the_wrong_kind_are_one_line(tiny_ckpt, earlier, capsys, monkeypatch):
    import galip_bench.commands.bench as bench_command
    import galip_bench.commands.eval as eval_command
    never = lambda *a, **k: pytest.fail("the work started")  # noqa: E731
    monkeypatch.setattr(bench_command, "run_bench", never)
    monkeypatch.setattr(eval_command, "prepare_evaluation", never)
    monkeypatch.setattr(eval_command, "evaluate_sharded", never)
    (earlier / "adir").mkdir()
    (earlier / "afile").write_text("x")
    (earlier / "dir.yaml").mkdir()
    cases = [
        (EVAL + ["--out", "adir"], ["--out adir is a directory, expected a file"]),
        (EVAL + ["--save-images", "afile"], ["--save-images afile is an existing file"]),
        (EVAL + ["--out", "afile/records.json"], ["afile is a file, not a folder"]),
        (["regress", "--write-baseline", "adir", "--checkpoint", "tiny.pt", "--data", "data.yaml"],
         ["--write-baseline adir is a directory"]),
        (["regress", "--baseline", "adir", "--checkpoint", "tiny.pt"], ["adir is a directory, expected a file"]),
        (["bench", "--quick", "--out", "adir"], ["--out adir is a directory"]),
        (["report", "g", "--out", "afile"], ["--out afile is an existing file"]),
        (["report", "g", "--references", "adir"], ["adir is a directory, expected a file"]),
        (["convert", "tiny.pt", "adir"], ["OUTPUT adir is a directory"]),
        (["data", "check", "data.yaml", "--out", "afile"], ["--out afile is an existing file"]),
        (["run", "dir.yaml"], ["dir.yaml is a directory, expected a YAML file"]),
        (["eval", "--checkpoint", "tiny.pt", "--data", "adir"], ["adir is a directory"]),
    ]
    for argv, words in cases:
        refused(capsys, argv, words, earlier)
