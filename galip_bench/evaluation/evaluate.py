"""Evaluating a checkpoint file (ours, official, or a random init of a config): the one entry point that `eval`,
`regress` and `speed` call. Load with `checkpoint.load_model`, settle the plans (N and captions checked before any
generation), run the driver, and stamp every record with the checkpoint's hash, format, device and timings."""
import time

from galip_bench.checkpoints import load_model
from galip_bench.config.resolve import resolve_data_size
from galip_bench.devices import resolve_device
from galip_bench.errors import UserError
from galip_bench.evaluation.driver import Evaluator
from galip_bench.evaluation.planning import build_protocols


def evaluate_checkpoint(checkpoint, data_cfg, eval_cfg, site, *, device="auto", model_config=None, overrides=(),
                        clip_weights=None, allow_clip_mismatch=False, allow_download=False, progress=True,
                        save_images=None, options=None, announce=None) -> list:
    """Records of `checkpoint` (None: a random init of `model_config`) under `eval_cfg` on `data_cfg` (None is
    allowed when only `speed` is asked for). `options`: {protocol: {option: value}}. `announce(lines)` is called
    with the evaluation plan before the work starts."""
    device = resolve_device(device)
    build_protocols(eval_cfg, data_cfg.kind if data_cfg else "synthetic", options)  # names and plans, before loading
    loaded = load_model(checkpoint, model_config=model_config, overrides=overrides, clip_weights=clip_weights,
                        device=device, allow_clip_mismatch=allow_clip_mismatch)
    if data_cfg is not None:
        resolve_data_size(data_cfg, loaded.img_size, "data", canvas=loaded.system == "galip")
    elif any(name != "speed" for name in eval_cfg.protocols):
        raise UserError("evaluating quality protocols needs a dataset (--data DATA.yaml with a `data:` section)")
    evaluator = Evaluator(eval_cfg, data_cfg, site, device, allow_download, progress=progress,
                          save_images=save_images, options=options)
    if announce is not None:
        announce(evaluator.plan_lines())
    t0 = time.time()
    records = evaluator(loaded.galip, loaded.step)
    context = {**loaded.provenance(), "device": str(device), "wall_s": time.time() - t0}
    return [{**r, **context} for r in records]
