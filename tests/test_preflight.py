"""Settings that do not apply (issue 20, group 3): every pair of config.resolve's rules is refused with both settings
named, and the same setting where it applies loads (the control). Defaults and profiles are no error. The CLI-level
cases, and the preflight's file, plan and device checks, are in test_bad_input.py."""
from pathlib import Path

import pytest

from galip_bench.config.recipe import Placement
from galip_bench.errors import UserError
from galip_bench.grids.grid import load_grid

ABLATIONS = Path(__file__).resolve().parent.parent / "ablations"
GRID = "name: g\nvariants: [{name: v}]\n"            # the paper's model, synthetic data, the default evaluation
CLIPGEN = ["system=clipgen", "clipgen.stage=vqgan"]
PAIRS = {
    # name: (overrides, the setting as shown, its condition as shown, overrides under which the setting applies)
    "pretrained_with_tiny_clip": (["model.clip.model=tiny", "model.clip.pretrained=/x.pt"],
                                  "model.clip.pretrained=/x.pt", "model.clip.model=tiny",
                                  ["model.clip.model=ViT-B-32", "model.clip.pretrained=/x.pt"]),
    "clipgen_setting_on_galip": (["clipgen.lr_prior=0.1"], "clipgen.lr_prior=0.1", "system=galip",
                                 CLIPGEN + ["clipgen.lr_prior=0.1"]),
    "clipgen_model_on_galip": (["clipgen.model.vqgan.codebook_size=8", "clipgen.model.prior.vocab_size=8"],
                               "clipgen.model.vqgan.codebook_size=8", "system=galip",
                               CLIPGEN + ["clipgen.model.vqgan.codebook_size=8", "clipgen.model.prior.vocab_size=8"]),
    "galip_model_on_clipgen": (CLIPGEN + ["model.ngf=32"], "model.ngf=32", "system=clipgen", ["model.ngf=32"]),
    "galip_switch_on_clipgen": (CLIPGEN + ["model.prompts=false"], "model.prompts=False", "system=clipgen",
                                ["model.prompts=false"]),
    "galip_optimiser_on_clipgen": (CLIPGEN + ["train.lr_g=0.001"], "train.lr_g=0.001", "system=clipgen",
                                   ["train.lr_g=0.001"]),
    "embedding_cache_on_clipgen": (CLIPGEN + ["data.embedding_cache=true"], "data.embedding_cache=True",
                                   "system=clipgen", ["data.embedding_cache=true"]),
    "perceptual_weight_without_perceptual": (
        CLIPGEN + ["clipgen.perceptual=none", "clipgen.model.vqgan.perceptual_weight=0.5"],
        "clipgen.model.vqgan.perceptual_weight=0.5", "clipgen.perceptual=none",
        CLIPGEN + ["clipgen.model.vqgan.perceptual_weight=0.5"]),
    "mate_d_with_scratch_d": (["model.d_backbone=scratch", "model.mate_d=false"], "model.mate_d=False",
                              "model.d_backbone=scratch", ["model.mate_d=false"]),
    "d_taps_with_scratch_d": (["model.d_backbone=scratch", "model.d_taps=[2,5]"], "model.d_taps=[2, 5]",
                              "model.d_backbone=scratch", ["model.d_taps=[2,5]"]),
    "ndf_with_clip_d": (["model.ndf=32"], "model.ndf=32", "model.d_backbone=clip",
                        ["model.d_backbone=scratch", "model.ndf=32"]),
    "mapper_scale_without_mapper": (["model.g_clip_vit=false", "model.mapper_scale=0.2"], "model.mapper_scale=0.2",
                                    "model.g_clip_vit=false", ["model.mapper_scale=0.2"]),
    "prompt_layers_without_mapper": (["model.g_clip_vit=false", "model.prompt_layers=[1,2]"],
                                     "model.prompt_layers=[1, 2]", "model.g_clip_vit=false",
                                     ["model.prompt_layers=[1,2]"]),
    "prompt_layers_without_prompts": (["model.prompts=false", "model.prompt_layers=[1,2]"],
                                      "model.prompt_layers=[1, 2]", "model.prompts=false",
                                      ["model.prompt_layers=[1,2]"]),
    "bridge_blocks_without_bridge": (["model.bridge=false", "model.bridge_blocks=2"], "model.bridge_blocks=2",
                                     "model.bridge=false", ["model.bridge_blocks=2"]),
    "bridge_mid_ch_without_bridge": (["model.bridge=false", "model.bridge_mid_ch=16"], "model.bridge_mid_ch=16",
                                     "model.bridge=false", ["model.bridge_mid_ch=16"]),
    "condition_noise_with_text": (["model.condition_noise=0.1"], "model.condition_noise=0.1", "model.condition=text",
                                  ["model.condition=clip_image", "model.condition_noise=0.1"]),
    "embedding_cache_language_free": (["model.condition=clip_image", "data.embedding_cache=true"],
                                      "data.embedding_cache=True", "model.condition=clip_image",
                                      ["data.embedding_cache=true"]),
    "root_with_synthetic": (["data.root=somewhere"], "data.root=somewhere", "data.kind=synthetic",
                            ["data.kind=coco", "data.root=somewhere"]),
    "manifest_with_coco": (["data.kind=coco", "data.root=r", "data.manifest=m.jsonl"], "data.manifest=m.jsonl",
                           "data.kind=coco", ["data.kind=captions", "data.manifest=m.jsonl"]),
    "shards_with_coco": (["data.kind=coco", "data.root=r", "data.shards=a.tar"], "data.shards=a.tar",
                         "data.kind=coco", ["data.kind=webdataset", "data.shards=a.tar", "eval.data.kind=synthetic"]),
    "split_sizes_with_coco": (["data.kind=coco", "data.root=r", "data.num_train=10"], "data.num_train=10",
                              "data.kind=coco", ["data.num_train=10"]),
    "skip_corrupt_with_synthetic": (["data.skip_corrupt=true"], "data.skip_corrupt=True", "data.kind=synthetic",
                                    ["data.kind=coco", "data.root=r", "data.skip_corrupt=true"]),
    "eval_data_without_test_split": (["eval.data.kind=webdataset", "eval.data.shards=a.tar"],
                                     "eval.data.kind=webdataset", "eval.protocols=[fid_galip, clip_score_galip]",
                                     ["eval.data.kind=coco", "eval.data.root=r"]),
    "eval_data_train_size": (["eval.data.kind=synthetic", "eval.data.num_train=10"], "eval.data.num_train=10",
                             "eval.data", ["eval.data.kind=synthetic", "eval.data.num_test=10"]),
    "passes_with_distinct_plan": (["eval.protocols=[zs_fid_coco_30k]", "eval.passes=2"], "eval.passes=2",
                                  "eval.protocols=[zs_fid_coco_30k]", ["eval.protocols=[fid_galip]", "eval.passes=2"]),
    "official_ranks_with_fixed_plan": (["eval.num_samples=100", "eval.official_ranks=8"], "eval.official_ranks=8",
                                       "eval.num_samples=100", ["eval.official_ranks=8"]),
    "reference_without_galip_fid": (["eval.protocols=[fid]", "eval.reference=npz"], "eval.reference=npz",
                                    "eval.protocols=[fid]", ["eval.protocols=[fid_galip]", "eval.reference=npz"]),
    "reference_with_tiny_extractor": (["eval.extractor=tiny", "eval.reference=npz"], "eval.reference=npz",
                                      "eval.extractor=tiny", ["eval.reference=npz"]),
    "bootstrap_without_fid": (["eval.protocols=[clip_score]", "eval.bootstrap=10"], "eval.bootstrap=10",
                              "eval.protocols=[clip_score]", ["eval.protocols=[fid]", "eval.bootstrap=10"]),
    "plan_with_speed_only": (["eval.protocols=[speed]", "eval.num_samples=100"], "eval.num_samples=100",
                             "eval.protocols=[speed]", ["eval.protocols=[fid]", "eval.num_samples=100"]),
}


def _load(tmp_path, overrides, text=GRID, profile=None):
    (tmp_path / "g.yaml").write_text(text)
    return load_grid(tmp_path / "g.yaml", profile, overrides, placement=Placement("local", 1, 0))


@pytest.mark.parametrize("case", sorted(PAIRS))
def test_a_setting_that_does_not_apply_is_refused_naming_both(tmp_path, case):
    overrides, setting, condition, applies = PAIRS[case]
    with pytest.raises(UserError) as err:
        _load(tmp_path, overrides)
    assert f"{setting} with {condition} (" in str(err.value), str(err.value)
    assert "do not apply" in str(err.value) and "g.yaml: variant 'v'" in str(err.value)
    _load(tmp_path, applies)  # control: where it applies, the same setting loads


def test_every_such_setting_is_listed_in_one_error(tmp_path):
    with pytest.raises(UserError) as err:
        _load(tmp_path, ["model.clip.model=tiny", "model.clip.pretrained=/x.pt", "data.root=r", "model.ndf=9"])
    assert "3 setting(s) do not apply" in str(err.value)
    for setting in ("model.clip.pretrained=/x.pt", "data.root=r", "model.ndf=9"):
        assert setting in str(err.value)


def test_defaults_and_profiles_are_no_error(tmp_path):
    # a value equal to the schema default was not set by the user
    _load(tmp_path, ["model.ndf=64", "data.num_train=2000", "eval.reference=auto", "clipgen.lr_prior=1.953125e-06"])
    # the smoke profile's own values (ndf, tiny clipgen model, ...) are its defaults; it drops a grid's data source
    # when it moves the data to synthetic, and a source the command line gives is refused
    # (test_grid.py loads the other shipped grids under the smoke profile)
    loads = [(path, None) for path in sorted(ABLATIONS.glob("*.yaml"))] + [(ABLATIONS / "clip_gen.yaml", "smoke")]
    for path, profile in loads:
        official = profile is None and path.stem in ("paper_table1_coco", "paper_table1_cub", "paper_table2_zeroshot")
        load_grid(path, profile, placement=Placement("slurm", 8) if official else Placement("local", 1, 0))
    zeroshot = ABLATIONS / "paper_table2_zeroshot.yaml"
    assert load_grid(zeroshot, "smoke").runs[0].config.data.shards is None  # the profile drops the grid's source
    with pytest.raises(UserError, match=r"data.shards=x.tar with data.kind=synthetic"):
        load_grid(zeroshot, "smoke", ["data.shards=x.tar"])
    with pytest.raises(UserError, match=r"model.ndf=9 with model.d_backbone=clip"):
        load_grid(ABLATIONS / "smoke.yaml", overrides=["model.ndf=9"])  # the profile's value is 8: 9 is the user's


def test_passes_apply_to_the_official_plans_of_a_mixed_list(tmp_path):
    """eval.passes is read by the protocols of the official loop in a list that also has a distinct-pairs plan
    (zs_fid_coco_30k), which keeps its 30,000 distinct pairs."""
    from galip_bench.evaluation.planning import build_protocols
    cfg = _load(tmp_path, ["eval.protocols=[fid_galip, zs_fid_coco_30k]", "eval.passes=2"]).runs[0].config
    plans = {p.name: p.plan for p in build_protocols(cfg.eval, "coco")}
    assert (plans["fid_galip"].kind, plans["fid_galip"].passes) == ("official", 2)
    assert (plans["zs_fid_coco_30k"].kind, plans["zs_fid_coco_30k"].num_samples) == ("distinct", 30000)
