"""Site defaults (bench.yaml): paths, executor, SLURM parameters."""
import os
from pathlib import Path

from galip_bench.config.io import merge_onto, read_yaml, to_object
from galip_bench.config.profiles import SITE_PROFILES
from galip_bench.config.resolve import check_site
from galip_bench.config.schema import SiteConfig
from galip_bench.errors import UserError


def load_site(path=None, profile: str = None, executor: str = None) -> SiteConfig:
    """bench.yaml from `path`, $GALIP_BENCH_CONFIG or ./bench.yaml (defaults when absent), then the profile's and
    the command line's executor."""
    path = path or os.environ.get("GALIP_BENCH_CONFIG") or ("bench.yaml" if Path("bench.yaml").is_file() else None)
    layers = [read_yaml(path) if path else None, SITE_PROFILES.get(profile)]
    if executor:
        layers.append({"executor": executor})
    site = to_object(merge_onto(SiteConfig, *layers, source=str(path or "bench defaults")))
    if site.executor not in ("local", "slurm", "debug"):
        raise UserError(f"{path}: executor must be local, slurm or debug, got {site.executor!r}")
    return check_site(site, str(path or "bench defaults"))
