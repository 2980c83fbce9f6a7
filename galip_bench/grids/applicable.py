"""Settings that do not apply: a setting the chosen model, data kind or evaluation never reads is refused, instead
of being recorded in the run's config.yaml (and hashed into its id) as if it had been used. Applied to every grid
run as it loads (`grids.grid.load_grid`)."""
from omegaconf import OmegaConf

from galip_bench.config.schema import DataConfig, RunConfig
from galip_bench.errors import UserError
from galip_bench.evaluation.protocols import PROTOCOLS

# A setting the chosen model, data kind or evaluation never reads would be recorded in the run's config.yaml (and
# hashed into its id) as if it had been used. Each rule below names such a pair: the setting, and the setting that
# makes it inert. Only a value the user gave is refused: one that differs from the schema default, or from the
# profile's value where a profile is in use (profiles set many values on purpose).

GALIP_TRAIN_ONLY = ("lr_g", "lr_d", "beta1", "beta2", "sim_w", "channels_last", "tf32", "noise", "keep_best")


def _inert_pairs(conf):
    """(setting, condition key, condition text, why) for every setting `conf` (a RunConfig DictConfig) does not
    read, whatever its value. A setting may name a section: each of its leaves is then one setting."""
    sel = lambda key: OmegaConf.select(conf, key)  # noqa: E731
    galip = sel("system") != "clipgen"
    if galip:
        yield "clipgen", "system", "system=galip", "CLIP-GEN's settings are read by system=clipgen runs only"
    else:
        why = "a CLIP-GEN run reads model.clip only (its model is clipgen.model)"
        for key in conf.model:
            if key != "clip":
                yield f"model.{key}", "system", "system=clipgen", why
        for key in GALIP_TRAIN_ONLY:
            yield (f"train.{key}", "system", "system=clipgen",
                   "a GALIP training setting (CLIP-GEN's optimisers: clipgen.lr_vqgan, betas_vqgan, lr_prior, ...)")
        yield "data.embedding_cache", "system", "system=clipgen", "CLIP-GEN reads no caption in training"
        # the two stages share the clipgen section: a stage's settings given to both are read by their stage (and
        # reach the other through `after`), and the run ids leave out what a stage does not read
        if sel("clipgen.stage") == "vqgan" and sel("clipgen.perceptual") == "none":
            yield ("clipgen.model.vqgan.perceptual_weight", "clipgen.perceptual", "clipgen.perceptual=none",
                   "there is no perceptual term to weigh")
        yield from _clipgen_pairs(sel)
    if sel("model.clip.model") == "tiny":
        yield ("model.clip.pretrained", "model.clip.model", "model.clip.model=tiny",
               "the tiny CLIP is random-init and reads no weights")
    if galip:
        yield from _galip_model_pairs(sel)
    for section in ("data", "eval.data"):
        if sel(section) is not None:
            yield from _data_pairs(section, sel(f"{section}.kind"))
    yield from _eval_pairs(conf, sel)


def _clipgen_pairs(sel):
    """CLIP-GEN settings made inert by another CLIP-GEN setting (whichever stage: both read the clipgen section)."""
    vq = "clipgen.model.vqgan"
    codebook = sel(f"{vq}.codebook")
    if codebook == "gradient":
        for key in ("codebook_decay", "dead_code_threshold", "rotation_trick"):
            yield (f"{vq}.{key}", f"{vq}.codebook", f"{vq}.codebook=gradient",
                   "a setting of the EMA codebook (codebook=ema)")
    elif codebook == "ema":
        yield (f"{vq}.codebook_weight", f"{vq}.codebook", f"{vq}.codebook=ema",
               "the EMA codebook is not learned by gradient: it has no codebook term to weigh")
    if sel("clipgen.adversarial_start_epochs") is not None:
        yield (f"{vq}.adversarial_start", "clipgen.adversarial_start_epochs",
               f"clipgen.adversarial_start_epochs={sel('clipgen.adversarial_start_epochs')}",
               "the start is counted in epochs: set clipgen.adversarial_start_epochs=null to count it in steps")
    if sel("clipgen.prior_schedule") == "constant":
        for key in ("prior_warmup_epochs", "prior_min_lr"):
            yield (f"clipgen.{key}", "clipgen.prior_schedule", "clipgen.prior_schedule=constant",
                   "the constant schedule has no warm-up and no cosine floor")
    if sel("clipgen.weight_decay_prior") == 0:
        yield ("clipgen.weight_decay_scope", "clipgen.weight_decay_prior", "clipgen.weight_decay_prior=0",
               "no parameter is decayed")
    prior = "clipgen.model.prior"
    if not sel(f"{prior}.emb_rec_weight"):
        for key in ("emb_rec_form", "relaxation", "relax_temperature"):
            yield (f"{prior}.{key}", f"{prior}.emb_rec_weight", f"{prior}.emb_rec_weight=0",
                   "the embedding-reconstruction term is not computed")
    elif sel(f"{prior}.emb_rec_form") != "cos_relaxed":
        for key in ("relaxation", "relax_temperature"):
            yield (f"{prior}.{key}", f"{prior}.emb_rec_form", f"{prior}.emb_rec_form={sel(f'{prior}.emb_rec_form')}",
                   "the straight-through form relaxes nothing (cos_relaxed reads it)")


def _galip_model_pairs(sel):
    if sel("model.d_backbone") == "scratch":
        for key in ("mate_d", "d_taps"):
            yield (f"model.{key}", "model.d_backbone", "model.d_backbone=scratch",
                   "the scratch discriminator reads pixels, not CLIP maps")
    else:
        yield ("model.ndf", "model.d_backbone", f"model.d_backbone={sel('model.d_backbone')}",
               "the width of the scratch discriminator only")
    if not sel("model.g_clip_vit"):
        for key in ("mapper_scale", "prompt_layers"):
            yield (f"model.{key}", "model.g_clip_vit", "model.g_clip_vit=false",
                   "the generator has no CLIP-ViT mapper")
    elif not sel("model.prompts"):
        yield "model.prompt_layers", "model.prompts", "model.prompts=false", "there are no prompts to place"
    if not sel("model.bridge"):
        for key in ("bridge_blocks", "bridge_mid_ch"):
            yield (f"model.{key}", "model.bridge", "model.bridge=false",
                   "the bridge predictor's M_Blocks are removed")
    if sel("model.condition") == "text":
        for key in ("condition_noise", "condition_noise_form"):
            yield (f"model.{key}", "model.condition", "model.condition=text",
                   "it perturbs the language-free training's image embedding")
    else:
        if not sel("model.condition_noise"):
            yield ("model.condition_noise_form", "model.condition_noise", "model.condition_noise=0",
                   "there is no noise to form")
        yield ("data.embedding_cache", "model.condition", f"model.condition={sel('model.condition')}",
               "language-free training reads no caption")


def _data_pairs(section: str, kind: str):
    cond, text = f"{section}.kind", f"{section}.kind={kind}"
    if kind in ("synthetic", "webdataset"):
        yield f"{section}.root", cond, text, "no dataset folder is read"
        yield f"{section}.skip_corrupt", cond, text, "no image file is read through the skipping loader"
    if kind != "captions":
        yield f"{section}.manifest", cond, text, "a manifest is read by data.kind=captions only"
    if kind != "webdataset":
        for key in ("shards", "test_shards"):
            yield f"{section}.{key}", cond, text, "shards are read by data.kind=webdataset only"
    if kind != "synthetic":
        for key in ("num_train", "num_test"):
            yield f"{section}.{key}", cond, text, "the split sizes of synthetic data only"
    if kind == "webdataset" and section == "data":
        yield f"{section}.embedding_cache", cond, text, "streamed shards have no caption table to cache"
    if section == "eval.data":
        for key in ("num_train", "embedding_cache", "decode"):
            yield (f"eval.data.{key}", "eval.data", "eval.data",
                   "evaluation reads the test split, decoded by PIL, and caches no caption embedding")


def _eval_pairs(conf, sel):
    names = list(sel("eval.protocols") or [])
    protos = [PROTOCOLS[n] for n in names if n in PROTOCOLS]  # unknown names are refused where plans are built
    listed = f"eval.protocols=[{', '.join(names)}]"
    if not names:  # (eval.data still feeds the sample sheets of language-free and CLIP-GEN runs)
        return
    quality = [p for p in protos if p.kind != "speed"]
    if protos and not quality:
        for key in ("num_samples", "passes", "official_ranks", "reference", "bootstrap"):
            yield f"eval.{key}", "eval.protocols", listed, "the speed protocol draws no test sample"
        return
    if quality and sel("eval.data.kind") == "webdataset":
        yield "eval.data.kind", "eval.protocols", listed, "streamed shards have no fixed test split to evaluate on"
    if quality and all(p.plan.kind == "distinct" for p in quality):
        yield ("eval.passes", "eval.protocols", listed,
               "these protocols draw a fixed number of distinct pairs, not passes of the official loop")
    if sel("eval.num_samples") is not None:
        yield ("eval.official_ranks", "eval.num_samples", f"eval.num_samples={sel('eval.num_samples')}",
               "a fixed plan has no official sampler processes")
    elif quality and not any(p.plan.kind == "official" for p in quality):
        yield "eval.official_ranks", "eval.protocols", listed, "no protocol follows the official test loop"
    if quality and not any(p.reference_source == "galip" for p in quality):
        yield "eval.reference", "eval.protocols", listed, "only GALIP's FID protocols read GALIP's statistics"
    elif sel("eval.extractor") == "tiny":
        yield ("eval.reference", "eval.extractor", "eval.extractor=tiny",
               "the tiny stand-in extractors always use the test split")
    if quality and not any(getattr(p, "bootstrap", False) for p in quality):
        yield "eval.bootstrap", "eval.protocols", listed, "no protocol has a bootstrap interval"


def _leaves(node, prefix: str) -> dict:
    """{dotted key: value} of every leaf of a config node (lists are leaves)."""
    if OmegaConf.is_dict(node) or isinstance(node, dict):
        out = {}
        for key in node:
            out.update(_leaves(node[key], f"{prefix}.{key}"))
        return out
    return {prefix: OmegaConf.to_container(node) if OmegaConf.is_list(node) else node}


_UNSET = object()


def _value(conf, key):
    value = OmegaConf.select(conf, key, default=_UNSET)
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def check_applicable(conf, source: str = "config", profile=None, given=None) -> None:
    """Refuse the settings a run does not read (see the rules above), all of them in one error. `conf`: the merged
    RunConfig DictConfig; `profile`: the profile's layer, whose values count as defaults; `given`: the command-line
    layer. A setting made inert by the profile itself (a grid's data.root when the profile switches to synthetic
    data) is the profile's rewrite, not the user's mistake, unless it is given on the command line."""
    profile = OmegaConf.create(profile or {}) if profile is not None else None
    given = given if given is not None else OmegaConf.create({})
    defaults = OmegaConf.merge(OmegaConf.structured(RunConfig), profile or {})
    if OmegaConf.select(defaults, "eval.data") is None:  # the default of each eval.data field is DataConfig's
        defaults.eval.data = OmegaConf.structured(DataConfig)
    found = {}
    for setting, cond_key, cond_text, why in _inert_pairs(conf):
        node = OmegaConf.select(conf, setting, default=None)
        leaves = {key: value for key, value in _leaves(node, setting).items() if value != _value(defaults, key)}
        for key, value in leaves.items():
            by_profile = profile is not None and _value(profile, cond_key) not in (_UNSET, None) and \
                _value(profile, cond_key) == _value(conf, cond_key)
            if key in found or (by_profile and _value(given, key) is _UNSET):
                continue
            found[key] = f"{key}={value} with {cond_text} ({why})"
    if found:
        raise UserError(f"{source}: {len(found)} setting(s) do not apply to this run and would be recorded as used: "
                        + "; ".join(found.values()) + ". Remove them, or set them only in the variants they apply to")
