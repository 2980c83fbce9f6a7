"""What `galip-bench run` says before it starts: which of the grid's own settings a profile replaces (a profile
rewrites the data, model, training and evaluation sections; the grid's values would otherwise vanish silently)."""
from pathlib import Path

from galip_bench.cli import main
from galip_bench.commands.run import profile_replacements

ABLATIONS = Path(__file__).resolve().parents[1] / "ablations"


def test_profile_replacements_name_each_replaced_setting_with_both_values(tmp_path):
    lines = profile_replacements(ABLATIONS / "mate_g.yaml", "smoke")
    text = "\n".join(lines)
    assert "note: profile smoke replaces the grid's own data settings: kind coco -> synthetic, root data/coco -> none" \
        in lines
    assert "steps 160000 -> 120" in text and "batch_size 64 -> 8" in text and "precision fp16 -> fp32" in text
    assert "replaces the grid's recipe (global_batch 64, batch_size 64, precision fp16)" in text
    # a variant's override and a grid axis the profile rewrites count too; what it keeps is not listed
    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\nbase: {model: {prompts: false}}\nvariants:\n  - {name: a, overrides: {model.ngf: 32}}\n"
                    "grid: {train.steps: [10, 500]}\n")
    lines = profile_replacements(grid, "smoke")
    assert lines == ["note: profile smoke replaces the grid's own model settings: ngf 32 -> 8",
                     "note: profile smoke replaces the grid's own train settings: steps 10/500 -> 120"]
    # negative controls: the smoke grid sets nothing the profile replaces; no profile, nothing replaced
    assert profile_replacements(ABLATIONS / "smoke.yaml", "smoke") == []
    assert profile_replacements(ABLATIONS / "mate_g.yaml", None) == []


def test_dry_run_says_what_the_profile_replaces_before_the_plan(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(ABLATIONS / "mate_g.yaml"), "--profile", "smoke", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("note: profile smoke replaces the grid's own data settings: kind coco -> synthetic")
    header = next(i for i, line in enumerate(out) if line.startswith("grid mate_g:"))
    assert all(line.startswith("note: profile smoke") for line in out[:header]) and header >= 2
