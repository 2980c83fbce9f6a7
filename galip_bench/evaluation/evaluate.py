"""Evaluating a checkpoint file (ours, official, or a random init of a config): the one entry point that `eval`,
`regress` and `speed` call. Load with `checkpoint.load_model`, settle the plans (N and captions checked before any
generation), run the driver, and stamp every record with the checkpoint's hash, format, device and timings.

In a process group (`eval --nproc N`) every process calls it and gets the same sharded evaluation
(`evaluation.driver`); process 0 gets the records, the others []. `prepare_evaluation` and `run_evaluation` are its
two halves, for a caller that must agree across processes that every one of them could load and plan before any
generates (a user error on one process must not leave the others waiting at a collective)."""
import time
from types import SimpleNamespace

from galip_bench.checkpoints import load_model
from galip_bench.config.resolve import resolve_data_size
from galip_bench.devices import resolve_device
from galip_bench.errors import UserError
from galip_bench.evaluation.driver import Evaluator
from galip_bench.evaluation.planning import build_protocols


def prepare_evaluation(checkpoint, data_cfg, eval_cfg, site, *, device="auto", model_config=None, overrides=(),
                       clip_weights=None, allow_clip_mismatch=False, allow_download=False, progress=True,
                       save_images=None, options=None, announce=None) -> SimpleNamespace:
    """The loaded model and its settled Evaluator (every UserError an evaluation can raise is raised here)."""
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
    return SimpleNamespace(loaded=loaded, evaluator=evaluator, device=device)


def run_evaluation(prepared) -> list:
    """The records of a prepared evaluation, stamped with the checkpoint's provenance, device and wall time."""
    t0 = time.time()
    records = prepared.evaluator(prepared.loaded.galip, prepared.loaded.step)
    context = {**prepared.loaded.provenance(), "device": str(prepared.device), "wall_s": time.time() - t0}
    return [{**r, **context} for r in records]


def evaluate_checkpoint(checkpoint, data_cfg, eval_cfg, site, **kwargs) -> list:
    """Records of `checkpoint` (None: a random init of `model_config`) under `eval_cfg` on `data_cfg` (None is
    allowed when only `speed` is asked for); the keyword arguments are `prepare_evaluation`'s: device,
    model_config, overrides, clip_weights, allow_clip_mismatch, allow_download, progress, save_images, options
    ({protocol: {option: value}}) and announce (called with the evaluation plan's lines before the work starts)."""
    return run_evaluation(prepare_evaluation(checkpoint, data_cfg, eval_cfg, site, **kwargs))

