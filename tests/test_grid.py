"""Grid expansion: products, variants, seeds, profiles, and errors that stop the whole grid naming file/variant/key."""
from pathlib import Path

import pytest

from galip_bench.cli import main
from galip_bench.errors import UserError
from galip_bench.grids.grid import load_grid

ABLATIONS = Path(__file__).resolve().parent.parent / "ablations"


def write(tmp_path, text, name="g.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_product_times_variants_times_seeds(tmp_path):
    path = write(tmp_path, """
name: demo
base: {train: {steps: 7}}
grid: {model.bridge: [true, false], model.prompts: [true, false]}
variants:
  - {name: a}
  - {name: b, overrides: {model.mate_d: false, train.batch_size: 3}}
seeds: [0, 1]
""")
    grid = load_grid(path)
    assert grid.name == "demo" and len(grid.runs) == 2 * 4 * 2
    combos = {(r.name, r.seed) for r in grid.runs}
    assert ("b,model.bridge=False,model.prompts=True", 1) in combos
    for run in grid.runs:
        assert run.config.train.steps == 7
        assert run.config.model.mate_d == (not run.name.startswith("b"))
        assert run.config.train.batch_size == (3 if run.name.startswith("b") else 64)
        assert run.config.model.bridge == ("model.bridge=True" in run.name)
    assert len({r.run_id for r in grid.runs}) == len(grid.runs)


def test_run_ids_are_stable_and_config_sensitive(tmp_path):
    path = write(tmp_path, "name: x\nvariants: [{name: a}, {name: b, overrides: {model.prompts: false}}]\n")
    first, again = load_grid(path), load_grid(path)
    assert [r.run_id for r in first.runs] == [r.run_id for r in again.runs]
    changed = load_grid(path, overrides=["train.steps=5"])
    assert not {r.run_id for r in first.runs} & {r.run_id for r in changed.runs}


# the ids version c9cfe7b (before data.decode, train.channels_last, eval.synthesis and model.condition*) gave
MATE_G_IDS = {None: ["dc6b71e3a7", "df11adff23", "017ed48ebf", "00df58016f"],
              "smoke": ["d734e3c2ed", "16ec75b4a8", "0bfcaa5c82", "bd9036e321"]}


@pytest.mark.parametrize("profile", [None, "smoke"])
def test_settings_added_later_keep_earlier_run_ids_at_their_neutral_value(profile):
    grid = load_grid(ABLATIONS / "mate_g.yaml", profile=profile)
    assert [r.run_id for r in grid.runs] == MATE_G_IDS[profile]
    changed = load_grid(ABLATIONS / "mate_g.yaml", profile=profile, overrides=["train.channels_last=true"])
    assert not set(r.run_id for r in changed.runs) & set(MATE_G_IDS[profile])


def test_smoke_profile_shrinks_everything_but_keeps_switches(tmp_path):
    path = write(tmp_path, "name: x\nvariants: [{name: a, overrides: {model.g_clip_vit: false}}]\n")
    run = load_grid(path, profile="smoke").runs[0]
    assert run.config.model.clip.model == "tiny" and run.config.data.kind == "synthetic"
    assert run.config.train.device == "cpu" and run.config.train.steps <= 500
    assert run.config.model.g_clip_vit is False


@pytest.mark.parametrize("text, message", [
    ("name: x\nvariants: [{name: a, overrides: {model.promts: false}}]\n", "variant 'a': key 'model.promts'"),
    ("name: x\nvariants: [{name: a, overrides: {model.prompts: maybe}}]\n", "variant 'a': key 'model.prompts'"),
    ("name: x\ngrid: {train.steps: [1, oops]}\n", "key 'train.steps'"),
    ("name: x\nbogus: 1\n", "unknown top-level key 'bogus'"),
    ("name: x\ngrid: {model.bridge: []}\n", "non-empty list"),
    ("name: x\nseeds: []\n", "non-empty list"),
    ("name: x\nvariants: [{name: a}, {name: a}]\n", "unique"),
    ("name: x\nvariants: [{overrides: {}}]\n", "needs a `name`"),
    ("name: x\nvariants: [{name: a, overrides: {model.d_backbone: cnn}}]\n", "d_backbone must be one of"),
])
def test_bad_grids_name_file_variant_and_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(UserError) as err:
        load_grid(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_bad_grid_through_the_cli_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, "name: x\nvariants: [{name: a, overrides: {model.promts: false}}]\n")
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "promts" in err[0]
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name", ["mate_g", "mate_d", "paper_table3", "paper_table1_cub", "paper_table1_coco",
                                  "paper_table2_zeroshot", "smoke"])
def test_shipped_grids_expand(name):
    grid = load_grid(ABLATIONS / f"{name}.yaml", profile="smoke")
    assert grid.runs and grid.name == name


STAGED = """name: staged
profile: smoke
seeds: [0, 1]
variants:
  - {name: tok, overrides: {system: clipgen, clipgen.stage: vqgan}}
  - {name: gen, after: tok, overrides: {system: clipgen, clipgen.stage: prior}}
"""


def test_a_variant_after_another_starts_from_its_run_of_the_same_seed(tmp_path):
    from galip_bench.grids.launch import dependency_waves
    grid = load_grid(write(tmp_path, STAGED))
    ids = {(r.name, r.seed): r.run_id for r in grid.runs}
    for seed in (0, 1):
        gen = next(r for r in grid.runs if r.name == "gen" and r.seed == seed)
        assert gen.config.after == ids[("tok", seed)] and gen.config.clipgen.stage == "prior"
    assert [sorted(r.name for r in wave) for wave in dependency_waves(grid.runs)] == [["tok", "tok"], ["gen", "gen"]]
    # stage 1 finished already (not among the runs to launch): stage 2 starts at once
    assert [[r.name for r in wave] for wave in dependency_waves([r for r in grid.runs if r.name == "gen"])] == [
        ["gen", "gen"]]
    # another stage 1 is another starting point: the dependent run gets another id
    changed = load_grid(write(tmp_path, STAGED.replace("clipgen.stage: vqgan}", "clipgen.stage: vqgan, "
                                                       "clipgen.betas_vqgan: [0.5, 0.99]}")))
    new = {(r.name, r.seed): r.run_id for r in changed.runs}
    assert new[("gen", 0)] != ids[("gen", 0)] and new[("tok", 0)] != ids[("tok", 0)]


def test_a_prior_whose_vqgan_differs_from_its_stage_one_is_refused_when_the_grid_loads(tmp_path):
    """Not days later, when stage 1 has finished and the prior reads its checkpoint."""
    staged = STAGED.replace("profile: smoke\n", "")  # (the smoke profile replaces clipgen.model altogether)
    text = staged.replace("clipgen.stage: vqgan}", "clipgen.stage: vqgan, clipgen.model.vqgan.adversarial_weight: 0.5}")
    with pytest.raises(UserError, match=r"variant 'gen'.*differs from the run it starts after in adversarial_weight "
                                        r"\(0.8 vs 0.5\).*grid's base"):
        load_grid(write(tmp_path, text))
    based = staged.replace("seeds:", "base: {clipgen: {model: {vqgan: {adversarial_weight: 0.5}}}}\nseeds:")
    assert {r.config.clipgen.model.vqgan.adversarial_weight for r in load_grid(write(tmp_path, based)).runs} == {0.5}


@pytest.mark.parametrize("text, message", [
    ("name: x\nvariants: [{name: a, after: b}, {name: b}]\n", "runs after 'b', which is not a variant listed before"),
    ("name: x\nvariants: [{name: a, overrides: {system: clipgen, clipgen.stage: prior}}]\n",
     "clipgen.stage=prior starts from a stage-1"),
    ("name: x\nvariants: [{name: a, overrides: {system: dalle}}]\n", "system must be one of"),
    ("name: x\nvariants: [{name: a, overrides: {system: clipgen, train.precision: fp16}}]\n",
     "CLIP-GEN runs train in fp32 or bf16, not train.precision=fp16: fp16 needs loss scaling"),
    ("name: x\nvariants: [{name: a, overrides: {system: clipgen, data.size: 512}}]\n",
     "data.size=512: the VQGAN takes 256 px images"),
])
def test_bad_dependencies_and_systems_name_the_problem(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        load_grid(write(tmp_path, text))


def test_after_follows_the_grid_point_even_when_points_share_a_label(tmp_path):
    text = STAGED.replace("seeds: [0, 1]\n", "seeds: [0]\ngrid: {data: [{kind: synthetic, seed: 1}, "
                                                "{kind: synthetic, seed: 2}]}\n")  # both labelled "synthetic"
    grid = load_grid(write(tmp_path, text))
    tok = [r for r in grid.runs if r.name.startswith("tok")]
    gen = [r for r in grid.runs if r.name.startswith("gen")]
    assert [r.config.data.seed for r in tok] == [r.config.data.seed for r in gen] == [1, 2]
    assert [r.config.after for r in gen] == [r.run_id for r in tok]


def test_clip_gen_stages_keep_their_ids_when_settings_they_do_not_use_change(tmp_path):
    base = {(r.name, r.seed): r.run_id for r in load_grid(write(tmp_path, STAGED)).runs}
    # GALIP's generator width: no stage uses it, so setting it is an error, not a silent no-op
    with pytest.raises(UserError, match=r"model.ngf=32 with system=clipgen"):
        load_grid(write(tmp_path, STAGED), overrides=["model.ngf=32"])
    for override, changed in (
            ("clipgen.model.prior.depth=3", {"gen"}),         # the prior: stage 2 only
            ("clipgen.lr_vqgan=0.001", {"tok", "gen"}),       # stage 1, hence stage 2's starting point (`after`)
    ):
        runs = load_grid(write(tmp_path, STAGED), overrides=[override]).runs
        assert {r.name for r in runs if r.run_id != base[(r.name, r.seed)]} == changed, override


def test_a_run_folder_of_the_previous_id_scheme_is_adopted(tmp_path, monkeypatch, capsys):
    """Versions 29b718f..ffc5502 hashed settings that today stay out of the id at their neutral value: `run` moves
    such a folder to today's id, and a finished run stays finished."""
    from galip_bench.config.site import load_site
    from galip_bench.grids.grid import legacy_run_id_of
    from galip_bench.grids.launch import prepare
    from galip_bench.runs.rundir import RunDir
    monkeypatch.chdir(tmp_path)
    grid = load_grid(ABLATIONS / "mate_g.yaml", profile="smoke")
    assert legacy_run_id_of(grid.runs[0].conf) == "75b19b38fe"  # what ffc5502 printed for this run
    site = load_site(None, "smoke", "local")
    old = RunDir(tmp_path / site.paths.runs / "mate_g" / "75b19b38fe")
    old.path.mkdir(parents=True)
    old.set_status("finished", step=120)
    todo, done = prepare(grid, site)
    assert [r.run_id for r in done] == [grid.runs[0].run_id] and len(todo) == 3
    assert not old.path.exists() and RunDir(tmp_path / site.paths.runs / "mate_g" / grid.runs[0].run_id).finished
    assert "earlier version's id" in capsys.readouterr().err
    assert legacy_run_id_of(load_grid(ABLATIONS / "clip_gen.yaml", profile="smoke").runs[2].conf) is None
