"""Checks made before a grid writes anything or submits a job: what would make every run fail is found here, and all
of it at once, so a mistake costs one listing and one clear line, not a failed job array.

Per run: the device exists where the run executes (this machine for the local and debug executors and `train`; the
job's GPUs, per the slurm settings, on SLURM); the data's folders and file lists exist and its files are usable (every
image file's header and every caption file on splits of up to SAMPLE_LIMIT images, a fixed sample seeded by the
split on larger ones: the output says which); the CLIP and metric weights and GALIP's statistics are where the
config says; and every evaluation plan has samples (N > 0, and enough for FID). `galip-bench data check` decodes a
few samples for a look; this checks what every run would read first."""
import random
import shutil
import subprocess
import tarfile
from dataclasses import astuple
from pathlib import Path

from galip_bench.checkpoints.clip import check_clip_weights
from galip_bench.config.schema import DataConfig
from galip_bench.data import official_stats_path, require_root, shard_pattern
from galip_bench.data.layouts import (CAPTION_FOLDER, coco_folder, coco_image_path, cub_entries, cub_folders,
                                      folder_entries, manifest_entries, read_captions, read_split, require_dir,
                                      split_file)
from galip_bench.devices import check_device
from galip_bench.errors import UserError
from galip_bench.evaluation.planning import build_protocols, preview, reference_of
from galip_bench.evaluation.protocols import protocol_class
from galip_bench.files import check_output_dir
from galip_bench.metrics.weights import WEIGHTS, resolve_weights

SAMPLE_LIMIT = 2000  # files checked per split: all of a split up to this size, else a fixed sample of this many
ROOT_HINT = {"cub": "the CUB data root (CUB_200_2011/, text/, train/, test/)",
             "coco": "the COCO data root (images/, text/, train/, test/)", "captions": CAPTION_FOLDER}


class Problems:
    """The inputs that would fail, each once: {message: (short label, [runs])}, in the order found."""

    def __init__(self):
        self.found = {}

    def add(self, label: str, message: str, run=None) -> None:
        entry = self.found.setdefault(message, (label, []))
        if run is not None and run not in entry[1]:
            entry[1].append(run)

    def attempt(self, label: str, check, *args, run=None):
        """check(*args), recording its UserError (its message) instead of raising it; its value, or None."""
        try:
            return check(*args)
        except UserError as err:
            self.add(label, str(err), run)
            return None

    def __len__(self) -> int:
        return len(self.found)


# ---- data --------------------------------------------------------------------------------------------------------

def _sample(items: list, kind: str, split: str) -> list:
    """All of `items` when there are at most SAMPLE_LIMIT, else SAMPLE_LIMIT of them drawn with a seed of the
    kind and split (the same files on every check), in their order."""
    if len(items) <= SAMPLE_LIMIT:
        return items
    picked = random.Random(f"galip-bench preflight {kind} {split}").sample(range(len(items)), SAMPLE_LIMIT)
    return [items[i] for i in sorted(picked)]


def image_problem(path):
    """Why an image file cannot be read ('not found', 'is empty (0 bytes)', ...), or None when its header reads.
    PIL's open parses the header; verify() checks the structure where the format allows (a PNG's chunks)."""
    from PIL import Image
    path = Path(path)
    if path.is_dir():
        return "is a directory, expected an image file"
    if not path.is_file():
        return "not found"
    if path.stat().st_size == 0:
        return "is empty (0 bytes)"
    try:
        with Image.open(path) as img:
            img.verify()
    except Exception as err:  # PIL raises many types for a bad file: any of them means it does not decode
        return f"does not decode as an image ({type(err).__name__})"
    return None


def _split_items(cfg: DataConfig, split: str, captions: bool) -> list:
    """[(key, image path, caption file or None)] of a split, without reading any image or caption file (a
    manifest's captions are checked as it is read)."""
    if cfg.kind == "cub":
        entries = cub_entries(cfg.root, split, captions=False)
        return [(e.key, e.path, Path(cfg.root) / "text" / f"{e.key}.txt") for e in entries]
    if cfg.kind == "coco":
        root = coco_folder(cfg.root)
        return [(key, None, root / "text" / f"{key}.txt") for key in read_split(root, split)]
    if cfg.manifest:
        return [(e.key, e.path, None) for e in manifest_entries(cfg.manifest, cfg.root, split, captions)]
    return [(e.key, e.path, Path(e.path).with_suffix(".txt")) for e in folder_entries(cfg.root, split, False)]


def _where(cfg: DataConfig) -> str:
    return f"data.kind={cfg.kind} at {cfg.root or cfg.manifest}"


def _require_layout(cfg: DataConfig, split: str) -> None:
    """The folders and file lists of a split (the layouts' own checks), a missing root said with how to point
    elsewhere."""
    require_root(cfg)
    if cfg.manifest:
        return
    if not Path(cfg.root).is_dir():
        what = "is a file, expected a folder" if Path(cfg.root).exists() else "not found"
        raise UserError(f"data root {cfg.root} {what}: expected {ROOT_HINT[cfg.kind]}; point the grid at it with "
                        f"--set data.root=/path/to/{cfg.kind} (or the grid's `data:` section)")
    if cfg.kind == "captions":
        require_dir(cfg.root, CAPTION_FOLDER)
        return
    split_file(cub_folders(cfg.root)[0] if cfg.kind == "cub" else coco_folder(cfg.root), split)


def check_files(cfg: DataConfig, split: str, captions: bool) -> str:
    """Check the image files (headers) and, with `captions`, the caption files of a split: all of them up to
    SAMPLE_LIMIT, else a fixed sample. The line saying what was checked; a UserError naming what is unusable."""
    if cfg.kind == "webdataset":
        return _check_shards(cfg, split)
    if cfg.kind not in ("cub", "coco", "captions"):
        return None  # synthetic: nothing on disk (build_dataset names the valid kinds)
    _require_layout(cfg, split)
    items = _split_items(cfg, split, captions)
    if not items:
        raise UserError(f"{_where(cfg)}: the {split} split is empty")
    checked = _sample(items, cfg.kind, split)
    if cfg.kind == "coco":  # the image path depends on which layout holds the key: found for the sample only
        root = Path(cfg.root)
        checked = [(key, str(coco_image_path(root, key)), text) for key, _, text in checked]
    bad_images, bad_captions = [], []
    for key, image, text in checked:
        why = image_problem(image)
        if why is not None:
            bad_images.append((image, why))
        if captions and text is not None:
            try:
                read_captions(Path(text))
            except UserError as err:
                bad_captions.append(str(err))
    which = (f"all {len(items):,}" if len(checked) == len(items)
             else f"a sample of {len(checked):,} of {len(items):,}")
    sampled = "" if len(checked) == len(items) else " sampled"
    if bad_captions:
        raise UserError(f"{_where(cfg)}, {split} split: {len(bad_captions):,} of the {len(checked):,}{sampled} "
                        f"caption files are missing or empty, e.g. {bad_captions[0]}")
    missing = [(p, w) for p, w in bad_images if w == "not found"]
    corrupt = [(p, w) for p, w in bad_images if w != "not found"]
    if missing:
        raise UserError(f"{_where(cfg)}, {split} split: {len(missing):,} of the {len(checked):,}{sampled} image "
                        f"files are missing, e.g. {missing[0][0]}")
    if corrupt and (not cfg.skip_corrupt or len(corrupt) == len(checked)):
        how = ("every one is: check the copy of the dataset" if cfg.skip_corrupt else
               "replace them, or set data.skip_corrupt=true to skip such files")
        raise UserError(f"{_where(cfg)}, {split} split: {len(corrupt):,} of the {len(checked):,}{sampled} image "
                        f"files cannot be read, e.g. {corrupt[0][0]} {corrupt[0][1]}: {how}")
    skipped = f", {len(corrupt):,} unreadable (data.skip_corrupt: skipped)" if corrupt else ""
    text = " and their caption files" if captions and checked[0][2] is not None else ""
    return f"{_where(cfg)}, {split} split: checked {which} images (headers){text}{skipped}"


def _check_shards(cfg: DataConfig, split: str) -> str:
    from galip_bench.data.shards import expand_shards
    urls = expand_shards(shard_pattern(cfg, split))
    local = [u for u in urls if "://" not in u and not u.startswith("pipe:")]
    checked = _sample(local, "webdataset", split)
    bad = []
    for url in checked:
        size = Path(url).stat().st_size
        if size == 0:
            bad.append(f"{url} is empty (0 bytes)")
        elif not tarfile.is_tarfile(url):
            bad.append(f"{url} is not a tar file")
    if bad:
        raise UserError(f"data.kind=webdataset, {split} shards: {len(bad)} of {len(checked):,} checked are unusable, "
                        f"e.g. {bad[0]}")
    which = f"all {len(local):,}" if len(checked) == len(local) else f"a sample of {len(checked):,} of {len(local):,}"
    return f"data.kind=webdataset, {split} shards: checked {which} shards (tar headers)"


# ---- one run -----------------------------------------------------------------------------------------------------

def _device_problems(cfg, placement, problems: Problems, run) -> None:
    """train.device exists where the run executes: the SLURM job's GPUs (gpus_per_node), else this machine."""
    if placement is not None and placement.executor == "slurm":
        gpus = getattr(placement, "gpus_per_node", None)
        gpus = placement.tasks if gpus is None else gpus
        problems.attempt("train.device", check_device, cfg.train.device, "train.device", gpus,
                         "the SLURM job", "its slurm gpus_per_node", run=run)
    else:
        problems.attempt("train.device", check_device, cfg.train.device, "train.device", None, "this machine",
                         run=run)


def _eval_problems(cfg, site, allow_download, problems: Problems, run, data_ok: bool) -> None:
    data = cfg.eval.data or cfg.data
    if cfg.eval.extractor != "tiny" and not allow_download:
        needed = {}
        for name in cfg.eval.protocols:
            cls = problems.attempt("evaluation plan", protocol_class, name, run=run)
            for weights in (cls.weights_needed() if cls is not None else []):
                needed.setdefault(weights, []).append(name)
        for weights, names in needed.items():
            label = f"{WEIGHTS[weights].filenames[0]} (for {', '.join(names)})"
            problems.attempt(label, resolve_weights, weights, site.paths.weights, ", ".join(names), run=run)
    protos = problems.attempt("evaluation plan", build_protocols, cfg.eval, data.kind, run=run) or []
    for proto in protos:  # GALIP's released statistics, when the plan requires them: found whatever the data
        if proto.has_reference:
            problems.attempt(f"statistics {official_stats_path(data) or 'npz'}", reference_of, proto, data,
                             cfg.eval.reference, run=run)
    if not data_ok:
        return  # the plan's N needs the test split's size
    for row in problems.attempt("evaluation plan", preview, cfg.eval, data, run=run) or []:
        if row["n"] == 0:
            problems.add("evaluation plan", f"eval: {row['protocol']}'s plan gives N=0 samples ({row['plan']}): set "
                         "eval.num_samples for a fixed plan, or evaluate on a larger test split", run)


def run_problems(cfg, site, allow_download: bool = False, placement=None, problems: Problems = None, run=None,
                 seen: dict = None, report=print) -> Problems:
    """Every input of one run (a RunConfig) that would fail it, added to `problems`. `seen` caches the file checks
    of a data split across the runs of a grid (each split is checked once: None, or what is wrong); `report` gets
    the line saying what was checked of each split."""
    problems = Problems() if problems is None else problems
    seen = {} if seen is None else seen
    _device_problems(cfg, placement, problems, run)
    captions = cfg.system == "galip" and cfg.model.condition == "text"
    splits = [(cfg.data, "train", captions)]
    quality = [p for p in cfg.eval.protocols if p != "speed"]
    if quality:
        splits.append((cfg.eval.data or cfg.data, "test", True))  # evaluation generates from the test captions
    test_ok = True
    for data, split, with_captions in splits:
        key = (astuple(data), split, with_captions)
        if key not in seen:
            try:
                line, seen[key] = check_files(data, split, with_captions), None
                if line and report is not None:
                    report(f"data: {line}")
            except UserError as err:
                seen[key] = str(err)
        if seen[key] is not None:
            problems.add(f"data {data.root or data.manifest or data.shards} ({split})", seen[key], run)
        test_ok = seen[key] is None if split == "test" else test_ok
    clip = cfg.model.clip
    if clip.model != "tiny" and clip.pretrained not in (None, "random") and Path(clip.pretrained).is_dir():
        problems.add("CLIP weights (model.clip.pretrained)", f"CLIP weights {clip.pretrained} "
                     "(model.clip.pretrained) is a directory, expected a file", run)
    else:
        problems.attempt("CLIP weights (model.clip.pretrained)", check_clip_weights, clip, run=run)
    if cfg.system == "clipgen" and cfg.clipgen.stage == "vqgan" and cfg.clipgen.perceptual == "lpips":
        problems.attempt("vgg16-397923af.pth (for clipgen.perceptual=lpips)", resolve_weights, "vgg16",
                         site.paths.weights, "clipgen.perceptual=lpips", allow_download, run=run)
    if cfg.eval.protocols:
        _eval_problems(cfg, site, allow_download, problems, run, test_ok)
    return problems


def check_run(cfg, site, allow_download: bool = False, placement=None, report=print) -> None:
    """Raise a UserError naming what would fail one run (all of it: listed through `report` when more than one),
    the runs folder it writes into included."""
    problems = run_problems(cfg, site, allow_download, placement, report=report)
    problems.attempt("the runs folder", check_output_dir, site.paths.runs, "bench.yaml paths.runs")
    raise_problems(problems, "", report)


def raise_problems(problems: Problems, where: str, report=print, runs: int = 1) -> None:
    """Nothing when there is no problem; one as its own error line; several listed through `report`, each with how
    to fix it, then one error line with their count."""
    if not problems.found:
        return
    items = list(problems.found.items())
    if len(items) == 1:
        message, (_, on) = items[0]
        prefix = f"run '{on[0].name}' (seed {on[0].seed}): " if on and runs > 1 else ""
        raise UserError(f"{where}{prefix}{message}")
    if report is not None:
        report(f"inputs missing or unusable ({len(items)}):")
        for i, (message, (_, on)) in enumerate(items, 1):
            only = ("" if not on or len(on) >= runs else
                    " [run(s) " + ", ".join(f"'{r.name}' (seed {r.seed})" for r in on) + "]")
            report(f"  {i}. {message}{only}")
    labels = ", ".join(dict.fromkeys(label for _, (label, _) in items))
    raise UserError(f"{where}{len(items)} inputs are missing or unusable ({labels}): each is listed above with how "
                    "to fix it")


# ---- the grid ----------------------------------------------------------------------------------------------------

def cluster_problem():
    """Why no SLURM cluster can take jobs from here (None when `sinfo` answers)."""
    missing = [tool for tool in ("sbatch", "sinfo") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not on PATH"
    try:
        p = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"sinfo failed ({type(err).__name__})"
    if p.returncode != 0:
        first = (p.stderr.strip().splitlines() or [f"exit code {p.returncode}"])[0]
        return f"sinfo failed: {first[:160]}"
    return None


def check_cluster(site) -> None:
    if site.executor != "slurm":
        return
    why = cluster_problem()
    if why is not None:
        raise UserError(f"executor slurm, but no SLURM cluster answers from this machine ({why}): run from a "
                        "cluster's login node (or set SLURM_CONF to the cluster's slurm.conf), or use --executor "
                        "local (bench.yaml: executor: local)")


class _SlurmPlacement:
    executor = "slurm"

    def __init__(self, gpus_per_node: int, tasks: int):
        self.gpus_per_node, self.tasks = gpus_per_node, tasks


def _placement(grid, site):
    if site.executor == "slurm":
        gpus = int({"gpus_per_node": site.slurm.gpus_per_node, **(grid.slurm or {})}["gpus_per_node"])
        return _SlurmPlacement(gpus, max(gpus, 1))
    return None  # local and debug: this machine


def check_grid(grid, site, allow_download: bool = False, dry_run: bool = False, report=print) -> None:
    """Every input of every run of a grid, and (SLURM) the cluster: what would fail is listed at once, then one
    UserError. A dry run (`run --dry-run`, which describes the grid first) only notes a missing cluster."""
    problems, seen = Problems(), {}
    if site.executor == "slurm":
        try:
            check_cluster(site)
        except UserError as err:
            if not dry_run:
                problems.add("SLURM cluster", str(err))
            elif report is not None:
                report(f"note: {err}")
    if not dry_run:  # a dry run writes nothing
        problems.attempt("the runs folder", check_output_dir, site.paths.runs, "bench.yaml paths.runs")
    placement = _placement(grid, site)
    for run in grid.runs:
        run_problems(run.config, site, allow_download, placement, problems, run, seen, report)
    raise_problems(problems, f"{grid.path}: ", report, len(grid.runs))
