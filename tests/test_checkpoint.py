"""Checkpoint format, official <-> ours conversion through the CLI, and clear errors for bad checkpoints."""
import torch
from helpers import tiny_galip

from galip_bench.checkpoints import config_of, load_nets, read_checkpoint, save_checkpoint
from galip_bench.cli import main
from models import GALIP


def test_save_and_load_round_trip(tmp_path):
    galip = tiny_galip(seed=1, prompts=False)
    path = save_checkpoint(tmp_path / "a.pt", galip, step=7)
    kind, ckpt = read_checkpoint(path)
    assert kind == "ours" and ckpt["step"] == 7 and ckpt["format_version"] == 1
    cfg = config_of(ckpt)
    assert cfg == galip.cfg and cfg.prompts is False
    other = tiny_galip(seed=2, prompts=False, clip=galip.clip)
    load_nets(other, ckpt)
    for name in ("netG", "netD", "netC"):
        for (k, a), b in zip(getattr(galip, name).state_dict().items(), getattr(other, name).state_dict().values()):
            assert torch.equal(a, b), f"{name}.{k}"


def write_official(tmp_path, galip):
    path = tmp_path / "official.pth"
    torch.save({"model": galip.export_official()["model"], "epoch": 3}, path)
    return path


def test_convert_official_to_ours_and_back(tmp_path, capsys):
    galip = tiny_galip(seed=3)
    official = write_official(tmp_path, galip)
    cfg_file = tmp_path / "model.yaml"
    cfg_file.write_text("model:\n  cond_dim: 64\n  ngf: 8\n  img_size: 32\n  d_out_ch: 32\n  ndf: 8\n"
                        "  bridge_ch: 16\n  bridge_mid_ch: 8\n  c_hidden: 16\n  clip: {model: tiny}\n")
    ours = tmp_path / "ours.pt"
    assert main(["convert", str(official), str(ours), "--config", str(cfg_file)]) == 0
    kind, ckpt = read_checkpoint(ours)
    assert kind == "ours" and ckpt["extra"]["epoch"] == 3
    ref = galip.export_official()["model"]
    for key, value in ckpt["nets"]["netG"].items():
        assert torch.equal(value, ref["netG"][key]), key
    back = tmp_path / "back.pth"
    assert main(["convert", str(ours), str(back), "--to-official"]) == 0
    kind, again = read_checkpoint(back)
    assert kind == "official"
    restored = GALIP(config_of(ckpt), clip=galip.clip)
    restored.load_official(again, check_clip=False)  # our format stores no CLIP: the way back used another one
    assert set(again["model"]["netG"]) == set(ref["netG"])  # CLIP_ViT keys included
    assert torch.equal(restored.netD.main.conv_r[0].weight, galip.netD.main.conv_r[0].weight)


def test_mismatching_config_is_a_clear_error(tmp_path, capsys):
    official = write_official(tmp_path, tiny_galip(seed=3))
    code = main(["convert", str(official), str(tmp_path / "x.pt"), "--set", "model.clip.model=tiny",
                 "--set", "model.cond_dim=64", "--set", "model.img_size=32", "--set", "model.ngf=16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "netG: key 'fc_code.weight' has shape (784, 100) in the checkpoint, the config expects (3136, 100)" in err[0]
    assert not (tmp_path / "x.pt").exists()


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, capsys):
    path = save_checkpoint(tmp_path / "a.pt", tiny_galip())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated as by a killed copy
    assert main(["convert", str(path), str(tmp_path / "b.pt"), "--to-official"]) == 2
    err = capsys.readouterr().err
    assert "could not be read" in err and "Traceback" not in err
    assert main(["convert", str(tmp_path / "missing.pt"), str(tmp_path / "b.pt")]) == 2
    assert "not found" in capsys.readouterr().err


def test_a_checkpoint_loads_with_the_random_init_clip_its_run_trained_with(tmp_path):
    """The tiny (and `random`) CLIP is not saved: its seed is, so eval and regress see the training run's CLIP."""
    from galip_bench.checkpoints.clip import build_clip
    from galip_bench.checkpoints.loader import load_model
    galip = tiny_galip(seed=1)
    run_clip = build_clip(galip.cfg.clip, taps=galip.cfg.d_taps, seed=123)
    galip = tiny_galip(seed=1, clip=run_clip)
    loaded = load_model(save_checkpoint(tmp_path / "a.pt", galip, step=3, clip_seed=123))
    for (k, a), b in zip(run_clip.state_dict().items(), loaded.galip.clip.state_dict().values()):
        assert torch.equal(a, b), k
    seed0 = build_clip(galip.cfg.clip, taps=galip.cfg.d_taps, seed=0)
    assert not torch.equal(next(iter(seed0.state_dict().values())), next(iter(run_clip.state_dict().values())))
