"""Ablation grids: a YAML file of base overrides, a cartesian `grid`, named `variants` and `seeds`, expanded into
one resolved RunConfig per run. Run ids hash the resolved config, so the same run always lands in the same folder."""
import hashlib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import List

from omegaconf import OmegaConf

from galip_bench.config.io import dotlist, merge_onto, read_yaml, to_object
from galip_bench.config.profiles import PROFILES
from galip_bench.config.resolve import resolve_run_config
from galip_bench.config.schema import RunConfig
from galip_bench.errors import UserError

GRID_KEYS = {"name", "description", "base", "grid", "variants", "seeds", "eval", "slurm", "executor", "profile"}


@dataclass
class Run:
    run_id: str
    name: str          # variant name plus grid values, e.g. "full" or "full,model.bridge=false"
    seed: int
    config: RunConfig
    conf: object       # the resolved DictConfig (what gets written next to the outputs)


@dataclass
class Grid:
    name: str
    path: Path
    runs: List[Run]
    slurm: dict
    executor: str = None
    profile: str = None


def nest(flat: dict) -> dict:
    """{'model.prompts': False} -> {'model': {'prompts': False}} (nested dicts pass through)."""
    out = {}
    for key, value in flat.items():
        node = out
        parts = str(key).split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]].update(value)
        else:
            node[parts[-1]] = value
    return out


def _label(value) -> str:
    if isinstance(value, dict):
        return str(value.get("name") or value.get("kind") or value)
    return str(value)


EXECUTION_ONLY = ("data.num_workers", "eval.data.num_workers")  # settings results do not depend on: a run keeps its id (and resumes) across them
# settings added after run folders existed, with the value that does what the code did before them: at that value
# they stay out of the id, so a run made by an earlier version keeps its folder (and resumes) under a later one
ADDED_LATER = {"data.decode": "pil", "eval.data.decode": "pil", "train.channels_last": False,
               "eval.synthesis": "faithful", "model.condition": "text", "model.condition_norm": "none",
               "model.condition_noise": 0.0, "after": None}


def _clipgen_id_settings(conf) -> None:
    """Leave out what a CLIP-GEN stage does not use, so that changing it neither retrains the stage nor, through
    `after`, the stages built on it: GALIP's model fields (the CLIP is used), the other stage's settings, and stage
    1's evaluation (it has none)."""
    conf.model = {"clip": conf.model.clip}
    cg = conf.clipgen
    if cg.stage == "vqgan":
        for key in ("lr_prior", "betas_prior", "weight_decay_prior"):
            cg.pop(key, None)
        for key in ("prior", "sampling"):
            cg.model.pop(key, None)
        conf.pop("eval", None)
    else:
        for key in ("lr_vqgan", "betas_vqgan", "perceptual"):
            cg.pop(key, None)


def run_id_of(conf) -> str:
    conf = OmegaConf.create(OmegaConf.to_container(conf, resolve=True))
    if conf.get("system", "galip") == "galip":  # the CLIP-GEN settings do not apply to a GALIP run
        for key in ("system", "clipgen"):
            conf.pop(key, None)
    else:
        _clipgen_id_settings(conf)
    always = object()
    leave_out = [(key, always) for key in EXECUTION_ONLY] + list(ADDED_LATER.items())
    for key, neutral in leave_out:
        section, _, name = key.rpartition(".")
        node = OmegaConf.select(conf, section) if section else conf
        if node is not None and name in node and (neutral is always or node[name] == neutral):
            del node[name]
    return hashlib.sha256(OmegaConf.to_yaml(conf, sort_keys=True).encode()).hexdigest()[:10]


# the ids galip-bench 29b718f..ffc5502 gave GALIP runs: every setting but data.num_workers hashed, before the
# settings of `system`, `after`, `clipgen` and `model.condition*` existed (`launch` adopts such a folder)
_NEW_SINCE_FFC5502 = ("system", "after", "clipgen", "model.condition", "model.condition_norm", "model.condition_noise")


def legacy_run_id_of(conf):
    """The id an earlier version gave this run, or None where no earlier version could have made it."""
    conf = OmegaConf.create(OmegaConf.to_container(conf, resolve=True))
    if any(OmegaConf.select(conf, key) != neutral for key, neutral in ADDED_LATER.items()
           if key.startswith(("model.condition", "after"))) or conf.get("system", "galip") != "galip":
        return None
    for key in _NEW_SINCE_FFC5502 + ("data.num_workers",):
        section, _, name = key.rpartition(".")
        node = OmegaConf.select(conf, section) if section else conf
        if node is not None and name in node:
            del node[name]
    return hashlib.sha256(OmegaConf.to_yaml(conf, sort_keys=True).encode()).hexdigest()[:10]


def _variants(raw: dict, path: Path) -> list:
    if "variants" in raw and not raw["variants"]:
        raise UserError(f"{path}: `variants` is empty: list at least one, or leave the key out for a single run")
    variants = raw.get("variants") or [{"name": "default", "overrides": {}}]
    out = []
    for i, v in enumerate(variants):
        if not isinstance(v, dict) or "name" not in v:
            raise UserError(f"{path}: variants[{i}] needs a `name` (and optional `overrides`)")
        extra = set(v) - {"name", "overrides", "after"}
        if extra:
            raise UserError(f"{path}: variant '{v['name']}': unknown field '{sorted(extra)[0]}' (name, overrides, "
                            "after)")
        after = v.get("after")
        if after is not None and str(after) not in [n for n, _, _ in out]:
            raise UserError(f"{path}: variant '{v['name']}' runs after '{after}', which is not a variant listed "
                            "before it")
        out.append((str(v["name"]), nest(dict(v.get("overrides") or {})), None if after is None else str(after)))
    names = [n for n, _, _ in out]
    if len(set(names)) != len(names):
        raise UserError(f"{path}: variant names must be unique, got {names}")
    return out


def _grid_points(raw: dict, path: Path) -> list:
    grid = raw.get("grid") or {}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"{path}: grid key '{key}' needs a non-empty list of values")
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def load_grid(path, profile: str = None, overrides=None) -> Grid:
    path = Path(path)
    raw = OmegaConf.to_container(read_yaml(path), resolve=False)
    if not raw:
        raise UserError(f"{path}: the grid is empty (expected name, base, variants, grid, seeds, ...)")
    unknown = set(raw) - GRID_KEYS
    if unknown:
        raise UserError(f"{path}: unknown top-level key '{sorted(unknown)[0]}' (allowed: {', '.join(sorted(GRID_KEYS))})")
    name = str(raw.get("name") or path.stem)
    profile = profile or raw.get("profile")
    if profile is not None and profile not in PROFILES:
        raise UserError(f"unknown profile '{profile}' (available: {', '.join(PROFILES)})")
    base = nest(dict(raw.get("base") or {}))
    if raw.get("eval"):
        base.setdefault("eval", {}).update(nest(dict(raw["eval"])))
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds:
        raise UserError(f"{path}: `seeds` must be a non-empty list of integers")
    cli = dotlist(overrides)
    runs, seen, ids = [], {}, {}
    for (vname, vover, after), (index, point) in itertools.product(_variants(raw, path),
                                                                   enumerate(_grid_points(raw, path))):
        run_name = ",".join([vname] + [f"{k}={_label(v)}" for k, v in point.items()])
        for seed in seeds:
            source = f"{path}: variant '{run_name}'"
            layers = [base, vover, nest(point), PROFILES[profile] if profile else None]
            conf = merge_onto(RunConfig, *layers, source=source)
            # a dependent run starts from its `after` variant's run of the same grid point and seed
            start = {"after": ids[(after, index, int(seed))]} if after else {}
            conf = merge_onto(RunConfig, conf, cli, {"grid": name, "variant": run_name, "seed": int(seed), **start},
                              source=f"{source} (command-line overrides)")
            config = to_object(conf, source)
            try:
                config.model.validate()
            except ValueError as err:
                raise UserError(f"{source}: {err}") from None
            config = resolve_run_config(config, source)
            conf = OmegaConf.structured(config)  # what follows from other settings (data sizes) is written out
            rid = run_id_of(conf)
            if rid in seen:
                raise UserError(f"{path}: runs '{seen[rid]}' and '{run_name}' (seed {seed}) resolve to the same config")
            seen[rid] = run_name
            ids[(vname, index, int(seed))] = rid
            runs.append(Run(rid, run_name, int(seed), config, conf))
    if not runs:
        raise UserError(f"{path}: the grid expands to no runs")
    return Grid(name, path, runs, dict(raw.get("slurm") or {}), raw.get("executor"), profile)


def grid_folder(grid_arg: str, site) -> Path:
    """runs/<grid>/ of a grid given by name or by its YAML file; a UserError when it has no runs yet."""
    name = load_grid(grid_arg).name if str(grid_arg).endswith((".yaml", ".yml")) else grid_arg
    root = Path(site.paths.runs) / name
    if not root.exists():
        raise UserError(f"no runs for grid '{name}' under {root}: run `galip-bench run` first")
    return root


def grid_info(grid_arg: str) -> dict:
    """Name, description, profile and executor from the grid YAML (given, or ablations/<name>.yaml if present)."""
    path = Path(grid_arg) if grid_arg.endswith((".yaml", ".yml")) else Path("ablations") / f"{grid_arg}.yaml"
    if not path.is_file():
        return {}
    raw = read_yaml(path)
    return {"path": str(path), "name": str(raw.get("name") or path.stem), "description": raw.get("description"),
            "profile": raw.get("profile"), "executor": raw.get("executor"),
            "variants": [str(v.get("name")) for v in (raw.get("variants") or []) if hasattr(v, "get")]}


def select_run(grid: Grid, variant=None, seed=None) -> Run:
    """The run of a grid named by `variant` (as `run --dry-run` lists it) and grid `seed`; the only run by default."""
    runs = [r for r in grid.runs if (variant is None or r.name == variant) and (seed is None or r.seed == seed)]
    if variant is None and seed is None and len(grid.runs) > 1:
        raise UserError(f"{grid.path} has {len(grid.runs)} runs: pick one with --variant "
                        f"({', '.join(sorted({r.name for r in grid.runs}))})")
    if not runs:
        raise UserError(f"{grid.path}: no run named {variant!r} (have: {', '.join(r.name for r in grid.runs)})")
    return runs[0]


def shipped_grids_folder() -> Path:
    """./ablations when there is one, else the ablations/ folder beside the package (a source checkout)."""
    local = Path("ablations")
    return local if local.is_dir() else Path(__file__).resolve().parents[2] / "ablations"


def describe_grids(folder) -> list:
    """One dict per grid YAML of `folder`: file, name, description, profile, variants and the number of runs."""
    rows = []
    for path in sorted(Path(folder).glob("*.yaml")):
        info = grid_info(str(path))
        try:
            runs = len(load_grid(path).runs)
        except UserError as err:
            runs = f"does not load: {err}"
        rows.append({"file": str(path), "name": info.get("name"), "description": info.get("description") or "",
                     "profile": info.get("profile"), "variants": info.get("variants") or [], "runs": runs})
    return rows
