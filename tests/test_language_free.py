"""Language-free GALIP (model.condition=clip_image): trained on the real images' CLIP image embeddings without
reading a caption, sampled and evaluated from the captions' CLIP text embeddings."""
import tarfile

import pytest
import torch
from PIL import Image

from galip_bench.config.schema import DataConfig
from galip_bench.data import build_dataset
from galip_bench.data.captioned import CaptionedImages
from galip_bench.evaluation.synthesis import Synthesizer
from galip_bench.grids.grid import load_grid
from galip_bench.runs.rundir import RunDir, read_jsonl
from galip_bench.train import loop
from galip_bench.train.loop import train_run
from helpers import tiny_galip
from models.config import GALIPConfig

SIZE = 32


def image_folder(root, n: int = 40, captions: bool = False):
    root.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    for i in range(n):
        pixels = (torch.rand(40, 48, 3, generator=gen) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(root / f"img{i:03d}.png")
        if captions:
            (root / f"img{i:03d}.txt").write_text(f"a picture number {i}\n")
    return root


def language_free_run(tmp_path, data_root, extra=()):
    grid = tmp_path / "grid.yaml"
    grid.write_text("name: lf\nprofile: smoke\nvariants: [{name: lf}]\neval: {protocols: []}\n")
    overrides = ["model.condition=clip_image", "model.condition_norm=l2", "model.condition_noise=0.1",
                 "data.kind=captions", f"data.root={data_root}", f"data.size={SIZE}",
                 "eval.data.kind=synthetic", "eval.data.num_test=16", "train.steps=3", "train.batch_size=4",
                 "train.ckpt_every=3", "train.log_every=1", "train.sample_every=3", "train.eval_every=0",
                 "data.num_workers=0", *extra]
    return load_grid(grid, overrides=overrides).runs[0].config


def test_config_rejects_unknown_conditions_and_noise_without_clip_image():
    with pytest.raises(ValueError, match="condition must be one of"):
        GALIPConfig(condition="words").validate()
    with pytest.raises(ValueError, match="needs condition=clip_image"):
        GALIPConfig(condition_noise=0.1).validate()
    with pytest.raises(ValueError, match="condition_norm"):
        GALIPConfig(condition_norm="l1").validate()


def test_training_reads_no_caption_and_conditions_on_image_embeddings(tmp_path, monkeypatch):
    cfg = language_free_run(tmp_path, image_folder(tmp_path / "images"))  # no .txt file anywhere

    def no_caption(self, entry):
        raise AssertionError("language-free training read a caption")
    monkeypatch.setattr(CaptionedImages, "_caption", no_caption)

    seen = []
    real_step = loop.train_step

    def spy(galip, opt_d, opt_g, images, tokens, noise, **kw):
        with torch.no_grad():
            emb = galip.clip.encode_image(images, preprocess="standard")[1].float()
        seen.append((tokens, kw["sent"].clone(), emb))
        return real_step(galip, opt_d, opt_g, images, tokens, noise, **kw)
    monkeypatch.setattr(loop, "train_step", spy)

    run_dir = RunDir(tmp_path / "run")
    assert train_run(cfg, run_dir, progress=False)["step"] == 3
    assert [r["step"] for r in read_jsonl(run_dir.train_log)] == [1, 2, 3]
    assert run_dir.status()["state"] == "finished"
    for tokens, sent, emb in seen:
        assert tokens is None
        assert torch.allclose(sent.norm(dim=-1), torch.ones(len(sent)), atol=1e-5)  # l2-normalised
        unit = emb / emb.norm(dim=-1, keepdim=True)
        cos = (sent * unit).sum(-1)
        # noise of 0.1 x the norm tilts each embedding by at most asin(0.1) ~ 5.7 degrees
        assert bool((cos > 0.99).all()) and bool((cos < 1 - 1e-6).all()), cos


def test_condition_noise_has_the_stated_relative_norm_and_follows_the_seed():
    galip = tiny_galip(seed=1, condition="clip_image", condition_noise=0.25)
    images = torch.rand(6, 3, SIZE, SIZE) * 2 - 1
    with torch.no_grad():
        emb = galip.clip.encode_image(images, preprocess="standard")[1]
        torch.manual_seed(7)
        noisy = galip.image_condition(images)
        torch.manual_seed(7)
        again = galip.image_condition(images)
    relative = (noisy - emb).norm(dim=-1) / emb.norm(dim=-1)
    assert torch.allclose(relative, torch.full((6,), 0.25), atol=1e-5)
    assert torch.equal(noisy, again)
    with torch.no_grad():  # CLIP's own input path, not the double-mapped one GALIP's D keeps
        official = galip.clip.encode_image(images, preprocess="official")[1]
    # control: the two maps give different embeddings here, and the noise is not 0.25 x the double-mapped one
    # (holds only when the condition was built on the standard map; fails when the two maps are equal)
    assert bool(((official - emb).norm(dim=-1) / emb.norm(dim=-1) > 0.05).all())
    assert not torch.allclose((noisy - official).norm(dim=-1) / official.norm(dim=-1), relative, atol=1e-3)


def test_lafite_condition_noise_mixes_unit_vectors_and_renormalises():
    """LAFITE's released language-free code: normalise((1 - 0.75) * e/|e| + 0.75 * n/|n|), n ~ N(0, I)."""
    galip = tiny_galip(seed=1, condition="clip_image", condition_noise=0.75, condition_noise_form="lafite")
    images = torch.rand(6, 3, SIZE, SIZE) * 2 - 1
    with torch.no_grad():
        emb = galip.clip.encode_image(images, preprocess="standard")[1].float()
        torch.manual_seed(7)
        noisy = galip.image_condition(images)
    torch.manual_seed(7)
    n = torch.randn(emb.shape)
    mixed = 0.25 * emb / emb.norm(dim=-1, keepdim=True) + 0.75 * n / n.norm(dim=-1, keepdim=True)
    assert torch.allclose(noisy, mixed / mixed.norm(dim=-1, keepdim=True), atol=1e-6)
    assert torch.allclose(noisy.norm(dim=-1), torch.ones(6), atol=1e-6)  # unit length whatever condition_norm
    with pytest.raises(ValueError, match="at most 1"):
        GALIPConfig(condition="clip_image", condition_noise=1.5, condition_noise_form="lafite").validate()


def test_evaluation_and_sampling_use_the_text_embedding_normalised_as_in_training():
    galip = tiny_galip(seed=2, condition="clip_image", condition_norm="l2")
    tokens = torch.randint(1, 400, (5, 77))
    tokens[:, 10] = 49407  # the end-of-text token is the argmax position CLIP reads
    with torch.no_grad():
        text = galip.clip.encode_text(tokens)[0]
    with Synthesizer(galip, "faithful") as synth:
        sent = synth.encode(tokens)
    assert torch.allclose(sent, text / text.norm(dim=-1, keepdim=True), atol=1e-6)
    unnormalised = tiny_galip(seed=2)
    with Synthesizer(unnormalised, "faithful") as synth:
        assert torch.allclose(synth.encode(tokens), text, atol=1e-6)  # the paper's text condition is unchanged


def test_caption_free_sources_load_only_when_captions_are_not_needed(tmp_path):
    folder = DataConfig(kind="captions", root=str(image_folder(tmp_path / "images", n=12)), size=SIZE)
    sample = build_dataset(folder, "train", train=True, captions=False)[0]
    assert set(sample) == {"image", "key"} and sample["image"].shape == (3, SIZE, SIZE)
    from galip_bench.errors import UserError
    with pytest.raises(UserError, match="caption file .* not found"):
        build_dataset(folder, "train", train=True)

    with tarfile.open(tmp_path / "shard-0.tar", "w") as tar:  # webdataset shards of images alone
        for i in range(3):
            path = tmp_path / "images" / f"img{i:03d}.png"
            tar.add(path, arcname=f"{i:05d}.png")
    shards = DataConfig(kind="webdataset", shards=str(tmp_path / "shard-{0..0}.tar"), size=SIZE)
    assert [s["key"] for s in build_dataset(shards, "train", train=True, captions=False)] == ["00000", "00001",
                                                                                              "00002"]
    assert list(build_dataset(shards, "train", train=True)) == []  # text training skips samples without text
