"""Ablation grids: a YAML file of base overrides, a cartesian `grid`, named `variants` and `seeds`, expanded into
one resolved RunConfig per run. Run ids hash the resolved config, so the same run always lands in the same folder."""
import hashlib
import itertools
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List

from omegaconf import OmegaConf

from galip_bench.config.io import dotlist, merge_onto, read_yaml, to_object
from galip_bench.config.profiles import PROFILES
from galip_bench.config.recipe import Placement, recipe_changes
from galip_bench.config.resolve import resolve_run_config
from galip_bench.config.schema import RunConfig
from galip_bench.errors import UserError
from galip_bench.evaluation.protocols import PROTOCOLS
from galip_bench.grids.applicable import check_applicable

GRID_KEYS = {"name", "description", "base", "grid", "variants", "seeds", "eval", "slurm", "executor", "profile",
             "recipe", "schedules", "schedule", "baseline_variant"}


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
    recipe: dict = field(default_factory=dict)      # the train settings the grid declares as its recipe
    schedules: dict = field(default_factory=dict)   # name -> {steps or epochs, source}: the lengths it offers
    schedule: str = None                            # the one its runs follow


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


# settings results do not depend on: a run keeps its id (and resumes) across them
EXECUTION_ONLY = ("data.num_workers", "eval.data.num_workers", "train.keep_best", "eval.keep_samples")
# settings added after run folders existed, with the value that does what the code did before them: at that value
# they stay out of the id, so a run made by an earlier version keeps its folder (and resumes) under a later one
ADDED_LATER = {"data.decode": "pil", "eval.data.decode": "pil", "train.channels_last": False,
               "eval.synthesis": "faithful", "model.condition": "text", "model.condition_norm": "none",
               "model.condition_noise": 0.0, "model.condition_noise_form": "additive", "after": None,
               "train.processes": 1, "train.noise": "per_rank",
               "train.tf32": False, "train.recipe_change": None, "eval.official_ranks": 1}


def _clipgen_id_settings(conf) -> None:
    """Leave out what a CLIP-GEN stage does not use, so that changing it neither retrains the stage nor, through
    `after`, the stages built on it: GALIP's model fields (the CLIP is used), the other stage's settings, and stage
    1's evaluation (it has none)."""
    conf.model = {"clip": conf.model.clip}
    cg = conf.clipgen
    if cg.stage == "vqgan":
        for key in ("lr_prior", "betas_prior", "weight_decay_prior", "prior_schedule", "prior_warmup_epochs",
                    "prior_min_lr", "weight_decay_scope"):
            cg.pop(key, None)
        for key in ("prior", "sampling"):
            cg.model.pop(key, None)
        conf.pop("eval", None)
    else:
        for key in ("lr_vqgan", "betas_vqgan", "perceptual", "adversarial_start_epochs"):
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
    train = conf.get("train") or {}
    if train.get("grad_accum", 1) == 1:
        # global_batch = batch_size x processes, both hashed. Before 4b45fbb's successor, grad_accum split batch_size
        # into micro-batches; it now multiplies it: with grad_accum > 1 the global batch stays in the id, so a run
        # of either meaning never takes the other's folder
        leave_out.append(("train.global_batch", always))
    for key, neutral in leave_out:
        section, _, name = key.rpartition(".")
        node = OmegaConf.select(conf, section) if section else conf
        if node is not None and name in node and (neutral is always or node[name] == neutral):
            del node[name]
    return hashlib.sha256(OmegaConf.to_yaml(conf, sort_keys=True).encode()).hexdigest()[:10]


# the ids galip-bench 29b718f..ffc5502 gave GALIP runs: every setting but data.num_workers hashed, before the
# settings of `system`, `after`, `clipgen` and `model.condition*` existed (`launch` adopts such a folder)
_NEW_SINCE_FFC5502 = ("system", "after", "clipgen", "model.condition", "model.condition_norm", "model.condition_noise",
                      "model.condition_noise_form")
_NEW_SINCE_4B45FBB = ("train.processes", "train.noise", "train.tf32", "train.recipe_change", "eval.official_ranks")


def legacy_run_id_of(conf):
    """The id an earlier version gave this run, or None where no earlier version could have made it."""
    conf = OmegaConf.create(OmegaConf.to_container(conf, resolve=True))
    if any(OmegaConf.select(conf, key) != neutral for key, neutral in ADDED_LATER.items()
           if key.startswith(("model.condition", "after")) or key in _NEW_SINCE_4B45FBB) \
            or conf.get("system", "galip") != "galip" or OmegaConf.select(conf, "train.grad_accum") not in (None, 1):
        return None  # (grad_accum > 1 meant something else then)
    for key in _NEW_SINCE_FFC5502 + _NEW_SINCE_4B45FBB + ("data.num_workers", "train.keep_best", "train.global_batch",
                                                          "eval.keep_samples"):
        section, _, name = key.rpartition(".")
        node = OmegaConf.select(conf, section) if section else conf
        if node is not None and name in node:
            del node[name]
    return hashlib.sha256(OmegaConf.to_yaml(conf, sort_keys=True).encode()).hexdigest()[:10]


def _check_same_vqgan(config, before, source: str) -> None:
    """A CLIP-GEN prior run trains on the VQGAN of the run it starts after, and refuses (when that run has finished,
    possibly days later) a stage-1 checkpoint whose clipgen.model.vqgan differs from its own: say so now."""
    if config.system != "clipgen" or before.system != "clipgen":
        return
    mine, theirs = asdict(config.clipgen.model.vqgan), asdict(before.clipgen.model.vqgan)
    differ = [k for k in mine if mine[k] != theirs.get(k)]
    if differ:
        raise UserError(f"{source}: its clipgen.model.vqgan differs from the run it starts after in "
                        f"{', '.join(f'{k} ({mine[k]} vs {theirs.get(k)})' for k in differ)}: the prior needs the "
                        "VQGAN its stage-1 run trains; give VQGAN settings in the grid's base (both stages read them)")


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


def _schedules(raw: dict, path: Path, chosen) -> tuple:
    """(schedules, the chosen name, its train settings): a grid's named training lengths."""
    schedules = raw.get("schedules") or {}
    if not isinstance(schedules, dict):
        raise UserError(f"{path}: `schedules` maps a name to {{epochs: N or steps: N, source: ...}}")
    for name, entry in schedules.items():
        if not isinstance(entry, dict) or set(entry) - {"epochs", "steps", "source"} or \
                (entry.get("epochs") is None) == (entry.get("steps") is None):
            raise UserError(f"{path}: schedule '{name}' needs exactly one of epochs or steps (and a source)")
    chosen = chosen or raw.get("schedule")
    if chosen is None:
        return schedules, None, {}
    if chosen not in schedules:
        raise UserError(f"{path}: no schedule named '{chosen}' (have: {', '.join(schedules) or 'none'})")
    entry = schedules[chosen]
    return schedules, chosen, {"epochs": entry.get("epochs"), "steps": entry.get("steps")}


def _base(raw: dict, path: Path, schedule_train: dict) -> tuple:
    """The grid's base overrides with its eval section, recipe and schedule merged in; and the recipe."""
    base = nest(dict(raw.get("base") or {}))
    if raw.get("eval"):
        base.setdefault("eval", {}).update(nest(dict(raw["eval"])))
    recipe = dict(raw.get("recipe") or {})
    clash = {k for k in recipe if k in base.get("train", {}) and base["train"][k] != recipe[k]}
    if clash:
        raise UserError(f"{path}: train.{sorted(clash)[0]} is set differently in `base` and in `recipe`")
    base.setdefault("train", {}).update({**recipe, **schedule_train})
    return base, recipe


def load_grid(path, profile: str = None, overrides=None, placement=None, schedule: str = None,
              allow_recipe_change: bool = False) -> Grid:
    """Expand a grid YAML into resolved runs. `placement` (config.recipe.placement_of) says where they execute,
    which decides their processes and micro-batches; `schedule` picks one of the grid's `schedules`. A grid with a
    `recipe:` has every run checked against it after the command line and the placement: a run that departs from
    it is refused, or with `allow_recipe_change` labelled (train.recipe_change). Profiles replace the recipe."""
    path = Path(path)
    raw = OmegaConf.to_container(read_yaml(path), resolve=False)
    if not raw:
        raise UserError(f"{path}: the grid is empty (expected name, base, variants, grid, seeds, ...)")
    unknown = set(raw) - GRID_KEYS
    if unknown:
        raise UserError(f"{path}: unknown top-level key '{sorted(unknown)[0]}' (allowed: {', '.join(sorted(GRID_KEYS))})")
    name = check_grid_name(raw.get("name") or path.stem, path, "name" in raw)
    profile = profile or raw.get("profile")
    if profile is not None and profile not in PROFILES:
        raise UserError(f"unknown profile '{profile}' (available: {', '.join(PROFILES)})")
    schedules, schedule, schedule_train = _schedules(raw, path, schedule)
    names = [str(v.get("name")) for v in (raw.get("variants") or []) if isinstance(v, dict)] or ["default"]
    if raw.get("baseline_variant") is not None and str(raw["baseline_variant"]) not in names:
        raise UserError(f"{path}: baseline_variant '{raw['baseline_variant']}' is not one of the variants "
                        f"({', '.join(names)}); the report compares every variant with it")
    base, recipe = _base(raw, path, schedule_train)
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds:
        raise UserError(f"{path}: `seeds` must be a non-empty list of integers")
    cli = dotlist(overrides)
    if OmegaConf.select(cli, "train.recipe_change") is not None:
        raise UserError("train.recipe_change is written by `run --allow-recipe-change`, not set by hand")
    runs, seen, ids, configs = [], {}, {}, {}
    for (vname, vover, after), (index, point) in itertools.product(_variants(raw, path),
                                                                   enumerate(_grid_points(raw, path))):
        run_name = ",".join([vname] + [f"{k}={_label(v)}" for k, v in point.items()])
        for seed in seeds:
            source = f"{path}: variant '{run_name}'"
            declared = merge_onto(RunConfig, base, vover, nest(point), source=source)
            conf = merge_onto(RunConfig, declared, PROFILES[profile] if profile else None, source=source)
            # a dependent run starts from its `after` variant's run of the same grid point and seed
            start = {"after": ids[(after, index, int(seed))]} if after else {}
            conf = merge_onto(RunConfig, conf, cli, {"grid": name, "variant": run_name, "seed": int(seed), **start},
                              source=f"{source} (command-line overrides)")
            check_applicable(conf, source, PROFILES[profile] if profile else None, cli)
            config = to_object(conf, source)
            try:
                config.model.validate()
            except ValueError as err:
                raise UserError(f"{source}: {err}") from None
            config = resolve_run_config(config, source, placement, allow_recipe_change)
            try:
                check_keep_best(config)
            except UserError as err:
                raise UserError(f"{source}: {err}") from None
            if recipe and not profile:
                _check_recipe(config, OmegaConf.to_container(declared.train), source, allow_recipe_change)
            if after:
                _check_same_vqgan(config, configs[(after, index, int(seed))], source)
            conf = OmegaConf.structured(config)  # what follows from other settings (data sizes) is written out
            rid = run_id_of(conf)
            if rid in seen:
                raise UserError(f"{path}: runs '{seen[rid]}' and '{run_name}' (seed {seed}) resolve to the same config")
            seen[rid] = run_name
            ids[(vname, index, int(seed))] = rid
            configs[(vname, index, int(seed))] = config
            runs.append(Run(rid, run_name, int(seed), config, conf))
    if not runs:
        raise UserError(f"{path}: the grid expands to no runs")
    return Grid(name, path, runs, dict(raw.get("slurm") or {}), raw.get("executor"), profile, recipe, schedules,
                schedule)


GRID_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_grid_name(name, path=None, declared: bool = True) -> str:
    """A grid name becomes the folders runs/<name>/ and reports/<name>/: letters, digits, '.', '_' and '-' only,
    starting with a letter or digit (no path separator, no '..', nothing hidden)."""
    name = str(name)
    if GRID_NAME.fullmatch(name) and ".." not in name:
        return name
    where = f"{path}: " if path is not None else ""
    what = "grid name" if declared else "grid name (the file's name, as it sets no `name:`)"
    raise UserError(f"{where}{what} {name!r} cannot name a folder under runs/: use letters, digits, '.', '_' and '-' "
                    "(starting with a letter or digit; no '/', no '..')" + ("" if declared else ", or give the grid "
                                                                           "a `name:`"))


def check_keep_best(cfg) -> None:
    """train.keep_best names metrics the run's protocols give, with a direction, measured at checkpoint steps."""
    tc = cfg.train
    if not tc.keep_best:
        return
    given = {m: sign for p in cfg.eval.protocols if p in PROTOCOLS for m, sign in PROTOCOLS[p].metrics.items()}
    for metric in tc.keep_best:
        if given.get(metric) is None:
            raise UserError(f"train.keep_best: {metric!r} is not a better-or-worse metric of eval.protocols "
                            f"({', '.join(m for m, s in given.items() if s) or 'none'})")
    if tc.eval_every % tc.ckpt_every:
        raise UserError(f"train.keep_best keeps the checkpoint of the best evaluation: evaluations every "
                        f"{tc.eval_every} steps must fall on checkpoints every {tc.ckpt_every} (make eval_every a "
                        "multiple of ckpt_every)")


def _check_recipe(config, declared: dict, source: str, allow: bool) -> None:
    """Refuse a run that departs from its grid's declared recipe, or (allowed) record how in train.recipe_change."""
    changes = [c for c in recipe_changes(declared, config.train)
               if not (c.startswith("train.global_batch") and config.train.recipe_change)]
    if not changes:
        return
    if not allow:
        raise UserError(f"{source}: departs from the grid's recipe: {'; '.join(changes)}. Published numbers and "
                        "the other runs of the grid compare only with runs of its recipe: undo the override, or "
                        "pass --allow-recipe-change (the run is then labelled in every table)")
    config.train.recipe_change = "; ".join(c for c in (config.train.recipe_change, *changes) if c)


def grid_folder(grid_arg: str, site) -> Path:
    """runs/<grid>/ of a grid given by name or by its YAML file; a UserError when it has no runs yet."""
    name = grid_arg
    if str(grid_arg).endswith((".yaml", ".yml")):  # its name only: no need to resolve its runs here
        name = grid_info(grid_arg).get("name") or load_grid(grid_arg).name
    name = check_grid_name(name, grid_arg if str(grid_arg).endswith((".yaml", ".yml")) else None)
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
    slurm = OmegaConf.to_container(raw["slurm"]) if OmegaConf.is_dict(raw.get("slurm")) else {}
    return {"path": str(path), "name": str(raw.get("name") or path.stem), "description": raw.get("description"),
            "profile": raw.get("profile"), "executor": raw.get("executor"), "slurm": slurm,
            "variants": [str(v.get("name")) for v in (raw.get("variants") or []) if hasattr(v, "get")],
            "baseline_variant": None if raw.get("baseline_variant") is None else str(raw["baseline_variant"])}


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
            runs = len(load_grid(path, placement=Placement("local")).runs)  # any placement: only counted
        except UserError as err:
            runs = f"does not load: {err}"
        rows.append({"file": str(path), "name": info.get("name"), "description": info.get("description") or "",
                     "profile": info.get("profile"), "variants": info.get("variants") or [], "runs": runs})
    return rows
