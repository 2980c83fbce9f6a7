"""`galip-bench bench`: the speed of synthesis, training and evaluation, faithful and fast paths side by side.

Full size by default (the paper's GALIP: ViT-B/32, 224 px output, batch 64; about 5 minutes on one H100/H200);
`quick` runs the same code on the smoke model with small batches (a minute on a CPU). Weights are random unless
given: speed does not depend on them, and the quality numbers (FID, CLIP score) serve only to show how far the fast
path moves them on the same samples."""
import dataclasses
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import torch

from galip_bench.benchmark import sections
from galip_bench.config.io import merge_onto, to_object
from galip_bench.config.profiles import SMOKE
from galip_bench.config.schema import SiteConfig
from galip_bench.devices import resolve_device
from galip_bench.errors import UserError
from galip_bench.metrics.weights import WEIGHTS, WeightsResolver
from galip_bench.provenance import git_commit, library_versions
from models import GALIPConfig

FULL = SimpleNamespace(throughput_batch=256, fidelity_batch=16, train_batch=64, repeats=10, warmup=3,
                       e2e_images=1200, e2e_steps=30, eval_n=10_240, eval_batch=256, workers=None,
                       extractor="default", quick=False)
QUICK = SimpleNamespace(throughput_batch=8, fidelity_batch=4, train_batch=4, repeats=2, warmup=1,
                        e2e_images=36, e2e_steps=6, eval_n=72, eval_batch=36, workers=1, extractor="tiny", quick=True)
METRIC_WEIGHTS = ("inception_torchvision", "clip_vit_b32")


def model_config(quick: bool, clip_weights=None) -> GALIPConfig:
    if quick:
        return to_object(merge_onto(GALIPConfig, SMOKE["model"], source="smoke profile"), "smoke profile")
    cfg = GALIPConfig()
    cfg.clip.pretrained = str(clip_weights) if clip_weights else "random"
    return cfg


def metric_weights(site: SiteConfig, work: Path) -> tuple:
    """(site, description): the metric weights found under paths.weights, else random-init files of the same
    architectures written to `work` (the timings are the same; the values mean nothing)."""
    resolver = WeightsResolver(site.paths.weights, allow_download=False)
    try:
        found = [str(resolver(name, "bench")) for name in METRIC_WEIGHTS]
        return site, "local: " + ", ".join(found)
    except UserError:
        pass
    import open_clip
    import torchvision
    folder = work / "weights"
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    inception = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=True)
    torch.save(inception.state_dict(), folder / WEIGHTS["inception_torchvision"].filenames[0])
    torch.save(open_clip.create_model("ViT-B-32-quickgelu").state_dict(), folder / "open_clip_pytorch_model.bin")
    site = dataclasses.replace(site, paths=dataclasses.replace(site.paths, weights=str(folder)))
    return site, "random init (not found under paths.weights)"


def run_bench(device="auto", quick: bool = False, site: SiteConfig = None, clip_weights=None, work=None,
              report=print) -> dict:
    """All rows; `report(text)` gets a line as each group finishes. Returns the JSON-ready result."""
    device = resolve_device(device)
    sizes = QUICK if quick else FULL
    site = site or SiteConfig()
    cfg = model_config(quick, clip_weights)
    with tempfile.TemporaryDirectory(prefix="galip-bench-") as tmp:
        work = Path(work or tmp)
        weights = "tiny stand-ins (quick)"
        if sizes.extractor != "tiny":
            site, weights = metric_weights(site, work)
        galip = sections.build_galip(cfg, device).eval()
        rows, fidelity, why = sections.synthesis(galip, device, sizes)
        report(f"synthesis: done ({len(rows)} rows)")
        eval_rows, quality = sections.evaluation(galip, device, sizes, site, work)
        report("evaluation: done")
        del galip
        rows += eval_rows
        rows += sections.train_step_speed(cfg, device, sizes)
        report("training step: done")
        rows += sections.train_end_to_end(cfg, device, sizes, work)
        report("training end to end: done")
    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "device_type": device.type, "quick": quick, "versions": library_versions(),
            "commit": git_commit(Path(__file__).parent), "settings": vars(sizes),
            "model": dataclasses.asdict(cfg), "metric_weights": weights, "rows": rows, "why_fast_is_slower": why,
            "fast_vs_faithful_images": fidelity, "fast_vs_faithful_metrics": quality}


def table(result: dict) -> str:
    """The rows as text, and under them why the fast path came out slower where it did."""
    frame = pd.DataFrame(result["rows"])
    frame["value"] = frame["value"].map(lambda v: f"{v:,.1f}")
    text = frame[["row", "path", "value", "unit", "note"]].to_string(index=False)
    return text + (f"\n{result['why_fast_is_slower']}" if result.get("why_fast_is_slower") else "")
