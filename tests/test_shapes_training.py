"""The shapes benchmark measures learning: a short `shapes` run (the profile as it is, fewer steps, small evaluator
builds) reads colours significantly above chance and above the untrained generator on the same plan (paired), and
`regress` on its checkpoint fails an earlier checkpoint and a copy whose text condition is a fixed embedding, both
on `shapes_acc` with a significant difference, while the checkpoint passes against itself, also re-drawn with
another evaluation seed (tested unpaired)."""
import json
import os
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from galip_bench.checkpoints.clip import build_clip
from galip_bench.cli import main
from galip_bench.config.schema import PathsConfig, SiteConfig
from galip_bench.evaluation import paired
from galip_bench.evaluation.driver import Evaluator
from galip_bench.evaluation.synthesis import Synthesizer
from galip_bench.grids.grid import load_grid
from galip_bench.grids.launch import evaluator_factory
from galip_bench.runs.rundir import RunDir, read_jsonl
from galip_bench.train.loop import train_run
from models import GALIP

GRID = "name: s\nprofile: shapes\nvariants: [{name: full}]\nseeds: [0]\n"
STEPS = 250
SHORT = [f"train.steps={STEPS}", "train.ckpt_every=50", "train.eval_every=0", "train.sample_every=0", "train.threads=2",
         "data.num_train=2048"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shapes_small):
    """One short shapes run, trained in this process (~2 min on 2 cores), with the session's small CLIP and reader
    (conftest's `shapes_small`: their recipes stay patched for the session)."""
    tmp, cache_dir = tmp_path_factory.mktemp("shapes"), shapes_small[0]
    (tmp / "g.yaml").write_text(GRID)
    (tmp / "bench.yaml").write_text(f"paths: {{cache: {cache_dir}}}\n")
    run = load_grid(tmp / "g.yaml", overrides=SHORT).runs[0]
    site = SiteConfig(paths=PathsConfig(cache=str(cache_dir)))
    run_dir = RunDir(tmp / "run")
    train_run(run.config, run_dir, evaluator_factory(run.config, site, keep_dir=run_dir.path),
              cache_dir=site.paths.cache, progress=False)
    return SimpleNamespace(cfg=run.config, run_dir=run_dir, site=site, tmp=tmp)


def final(records) -> dict:
    return {r["metric"]: r for r in records if r["protocol"] == "shapes_acc"}


def test_a_short_run_reads_colours_above_chance_and_above_the_untrained_generator(trained):
    cfg, run_dir = trained.cfg, trained.run_dir
    assert run_dir.status()["clip_weights"]["recipe_hash"]  # the run records which CLIP it trained with
    done = final(r for r in read_jsonl(run_dir.metrics) if r["step"] == STEPS)
    colour = done["shapes_colour"]
    assert colour["ci_low"] > colour["chance"], colour  # significantly above chance
    # the untrained generator (the run's seed, before step 1) on the same plan, captions and noise
    torch.manual_seed(cfg.train.seed + cfg.seed)
    untrained = GALIP(cfg.model, clip=build_clip(cfg.model.clip, taps=cfg.model.d_taps, seed=cfg.train.seed + cfg.seed,
                                                 cache_dir=trained.site.paths.cache))
    evaluator = Evaluator(cfg.eval, cfg.data, trained.site, "cpu", progress=False, keep_dir=trained.tmp / "untrained")
    before = final(evaluator(untrained, step=0))["shapes_colour"]
    assert before["ci_low"] <= before["chance"] * 2 <= colour["value"]
    base = paired.load_kept(before["kept_samples"], trained.tmp / "untrained")
    after = paired.load_kept(colour["kept_samples"], run_dir.path)
    test = paired.paired_difference(base, after)
    assert test["diff"] > 0 and test["ci_low"] > 0, test


def test_regress_fails_an_early_checkpoint_and_a_fixed_text_condition(trained, monkeypatch, capsys):
    monkeypatch.chdir(trained.tmp)
    (trained.tmp / "data.yaml").write_text("data: {kind: synthetic, size: 32, num_test: 256}\n")
    ckpts = {int(p.stem.split("_")[1]): p for p in trained.run_dir.checkpoints()}
    last, early = str(ckpts[STEPS]), str(ckpts[50])
    gate = ["--protocols", "shapes_acc"]
    assert main(["regress", "--checkpoint", last, "--data", "data.yaml", "--write-baseline", "base.json"] + gate) == 0
    capsys.readouterr()
    assert main(["regress", "--checkpoint", last, "--baseline", "base.json"]) == 0  # itself: exactly equal
    # itself with another evaluation seed (other captions and noise): different numbers, tested unpaired, no failure
    assert main(["regress", "--checkpoint", last, "--baseline", "base.json", "--seed", "1"]) == 0
    assert "re-drawn: the baseline's plan with --seed 1" in capsys.readouterr().out
    rows = json.loads((trained.tmp / "regress.json").read_text())["rows"]
    assert any(r["delta"] != 0 for r in rows) and all(r["paired"].startswith("unpaired [") for r in rows)
    assert {r["verdict"] for r in rows} <= {"ok", "improved", "worse, within noise"}

    def verdicts():
        return {r["metric"]: r["verdict"] for r in json.loads((trained.tmp / "regress.json").read_text())["rows"]}

    assert main(["regress", "--checkpoint", early, "--baseline", "base.json"]) == 1
    assert "worse, significant" in verdicts().values()
    assert "significantly" in capsys.readouterr().out
    # the same checkpoint with its text condition replaced by one fixed embedding (the first caption's)
    encode = Synthesizer.encode
    monkeypatch.setattr(Synthesizer, "encode", lambda self, tokens: encode(self, tokens[:1]).expand(len(tokens), -1))
    assert main(["regress", "--checkpoint", last, "--baseline", "base.json"]) == 1
    assert verdicts()["shapes_colour"] == "worse, significant"
