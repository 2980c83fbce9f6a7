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
    # CLIP-GEN runs: 32 px, 4x down (64 tokens), 64 codes, a 2-layer prior on the tiny CLIP's 64-d embeddings
    "clipgen": {"model": dataclasses.asdict(ClipGenConfig.tiny()), "perceptual": "none"},
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

PROFILES = {"smoke": SMOKE}
# one thread per run (identical numbers on any machine and executor), two runs at a time
SITE_PROFILES = {"smoke": {"executor": "local", "max_local_parallel": 2}}
