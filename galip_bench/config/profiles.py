"""Profiles rewrite any grid for another setting while keeping its switches. `smoke` is the embedded default:
synthetic data, the tiny random CLIP, small images and channels, a few hundred CPU steps and small metric
extractors, so a grid runs on a 2-core laptop in minutes through exactly the code path of a cluster run."""
import dataclasses

from models.clipgen.config import ClipGenConfig

SMOKE = {
    "model": {
        "clip": {"model": "tiny", "pretrained": None},
        "cond_dim": 64, "ngf": 8, "img_size": 32, "d_out_ch": 32, "ndf": 8,
        "bridge_ch": 16, "bridge_mid_ch": 8, "c_hidden": 16,
    },
    # CLIP-GEN runs: 32 px, 4x down (64 tokens), 64 codes, a 2-layer prior on the tiny CLIP's 64-d embeddings, at
    # fixed rates with a short warm-up: the reference's per-image rates at batch 8 (3.6e-5, 1.6e-5 after a 20-epoch
    # = 1,280-step warm-up) would leave the tiny models where they started in 120 steps
    "clipgen": {"model": dataclasses.asdict(ClipGenConfig.tiny()), "perceptual": "none", "lr_scaling": "fixed",
                "lr_vqgan": 2.88e-4, "lr_prior": 3e-4, "prior_warmup_epochs": 0.25},
    # the grid's own data source goes (a value recorded in config.yaml would read as used)
    "data": {"kind": "synthetic", "size": 32, "num_train": 512, "num_test": 128, "root": None, "manifest": None,
             "shards": None, "test_shards": None},
    "train": {
        # one process, no declared global batch: the profile replaces the grid's recipe
        "steps": 120, "epochs": None, "batch_size": 8, "global_batch": None, "processes": None, "grad_accum": 1,
        "device": "cpu", "precision": "fp32", "threads": 1,
        "ckpt_every": 40, "keep_ckpts": 2, "keep_best": [], "log_every": 20, "sample_every": 60, "eval_every": 60,
        "num_sample_images": 8,
    },
    # the official test-loop plan (one pass over the 128 test scenes in batches of 64) with the tiny extractors
    "eval": {"num_samples": None, "passes": None, "batch_size": 64, "extractor": "tiny", "reference": "auto",
             "data": None},
}

# `shapes`: the synthetic-shapes benchmark, runs that learn on a laptop: the smoke profile's sizes with the tiny CLIP
# trained on the shapes (model.clip.pretrained: shapes, built into paths.cache on first use), more steps, and the
# benchmark's own metrics (the trained scene reader's exact check and FD in the trained CLIP's space)
SHAPES = {
    **SMOKE,
    "model": {**SMOKE["model"], "clip": {"model": "tiny", "pretrained": "shapes", "preprocess": "official"}},
    "data": {**SMOKE["data"], "num_train": 4096, "num_test": 256},
    # 800 steps of 16 at lr G 4e-4 / D+C 1.6e-3 (4x GALIP's): about 4 min per run on one thread; measured on the
    # 2-core machine, full GALIP then reads colour 0.57 (chance 0.11) and background 0.98 (chance 0.33); at GALIP's
    # own rates the background stayed at chance for 800 steps
    "train": {**SMOKE["train"], "steps": 800, "batch_size": 16, "lr_g": 0.0004, "lr_d": 0.0016, "ckpt_every": 400,
              "keep_ckpts": 0, "log_every": 50, "sample_every": 400, "eval_every": 400},
    "eval": {**SMOKE["eval"], "protocols": ["shapes_acc", "fd_shapes"], "extractor": "default"},
}

PROFILES = {"smoke": SMOKE, "shapes": SHAPES}
# one thread per run (identical numbers on any machine and executor), two runs at a time
SITE_PROFILES = {"smoke": {"executor": "local", "max_local_parallel": 2},
                 "shapes": {"executor": "local", "max_local_parallel": 2}}
