"""Checkpoint retention: the last `train.keep_ckpts` (0: every one, as the official code) plus the best by each
metric of `train.keep_best`."""
import json

import pytest

from galip_bench.errors import UserError
from galip_bench.grids.grid import load_grid
from galip_bench.runs.rundir import RunDir, read_jsonl
from galip_bench.train.loop import train_run

GRID = "name: k\nprofile: smoke\nvariants: [{name: full}]\neval: {protocols: [fid_galip, clip_score_galip]}\n"
SMALL = ["train.steps=8", "train.batch_size=4", "train.ckpt_every=2", "train.eval_every=2", "train.log_every=2",
         "train.sample_every=0", "data.num_train=32", "data.num_test=128"]


def _fake_run(tmp_path, steps, fids):
    run_dir = RunDir(tmp_path / "r")
    run_dir.ckpt_dir.mkdir(parents=True)
    for step in steps:
        run_dir.checkpoint_path(step).write_bytes(b"x")
    run_dir.metrics.write_text("".join(json.dumps({"step": s, "metric": "fid_galip", "value": v}) + "\n"
                                       for s, v in zip(steps, fids)))
    return run_dir


def test_prune_keeps_the_last_and_the_best(tmp_path):
    run_dir = _fake_run(tmp_path, [2, 4, 6, 8, 10], [9.0, 3.0, 5.0, 3.0, 7.0])
    best = run_dir.best_steps({"fid_galip": -1})
    assert best == {4}  # lowest FID, the earliest of a tie
    assert run_dir.best_steps({"fid_galip": +1}) == {2}
    run_dir.prune(1, protect=best)
    assert [p.name for p in run_dir.checkpoints()] == ["step_00000004.pt", "step_00000010.pt"]
    run_dir.prune(1)  # without protection only the last stays
    assert [p.name for p in run_dir.checkpoints()] == ["step_00000010.pt"]
    keep_all = _fake_run(tmp_path / "all", [2, 4, 6], [1.0, 2.0, 3.0])
    keep_all.prune(0)
    assert len(keep_all.checkpoints()) == 3


class PlannedFID:
    """An evaluator whose FID at each step is fixed in advance (lower is better), as the driver's records."""
    directions = {"fid_galip": -1, "clip_score_galip": +1}
    planned = {2: 5.0, 4: 1.0, 6: 3.0, 8: 4.0}

    def __call__(self, galip, step, final=False):
        return [{"step": step, "protocol": "fid_galip", "metric": "fid_galip", "value": self.planned[step]}]


def test_a_run_keeps_the_last_and_its_best_fid_checkpoint(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(GRID)
    run = load_grid(path, overrides=SMALL + ["train.keep_ckpts=1", "train.keep_best=[fid_galip]"]).runs[0]
    run_dir = RunDir(tmp_path / "run")
    train_run(run.config, run_dir, lambda device: PlannedFID(), progress=False)
    assert [r["value"] for r in read_jsonl(run_dir.metrics)] == [5.0, 1.0, 3.0, 4.0]
    assert [p.name for p in run_dir.checkpoints()] == ["step_00000004.pt", "step_00000008.pt"]
    plain = load_grid(path, overrides=SMALL + ["train.keep_ckpts=1"]).runs[0]  # without keep_best: the last only
    train_run(plain.config, RunDir(tmp_path / "plain"), lambda device: PlannedFID(), progress=False)
    assert [p.name for p in RunDir(tmp_path / "plain").checkpoints()] == ["step_00000008.pt"]


def test_the_evaluator_tells_training_which_way_each_metric_is_better(tmp_path, monkeypatch):
    """What the loop ranks checkpoints by (PlannedFID above stands in for it)."""
    from galip_bench.config.site import load_site
    from galip_bench.evaluation.driver import Evaluator
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "g.yaml"
    path.write_text(GRID)
    cfg = load_grid(path, overrides=SMALL).runs[0].config
    evaluator = Evaluator(cfg.eval, cfg.data, load_site(None, "smoke"), "cpu", progress=False)
    assert evaluator.directions == {"fid_galip": -1, "clip_score_galip": +1}


@pytest.mark.parametrize("override, message", [
    (["train.keep_best=[fid]"], "not a better-or-worse metric of eval.protocols"),
    (["train.keep_best=[fid_galip]", "train.eval_every=3"], "multiple of ckpt_every"),
])
def test_keep_best_needs_a_measured_metric_at_checkpoint_steps(tmp_path, override, message):
    path = tmp_path / "g.yaml"
    path.write_text(GRID)
    with pytest.raises(UserError, match=message):
        load_grid(path, overrides=SMALL + override)
