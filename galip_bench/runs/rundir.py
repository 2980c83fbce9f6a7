"""The folder of one run: resolved config, status, JSONL logs, checkpoints and samples.

runs/<grid>/<run_id>/
  config.yaml        the resolved RunConfig
  status.json        state (pending|running|finished|failed), step, error line, host, times
  train_log.jsonl    one record per logged step
  metrics.jsonl      one record per (step, protocol): settings, value, time
  checkpoints/       step_XXXXXXXX.pt, the last `keep` kept
  samples/           sample grids of fixed noise and captions
  eval/step_XXXXXXXX/<protocol>.npy   the final evaluation's per-sample data (generated features, CLIP cosines,
                     CMMD embeddings, Inception logits) for paired comparisons, with <protocol>.reference.npz
                     (FID-type) or <protocol>.cross.npy (CMMD); `eval.keep_samples`
  owner.lock         who trains the run now (`runs.lock`); .replaced/: results `run --force` replaces (`runs.replace`)

Readers never trust a torn record (a line cut short): they leave it out and warn, and `run`/`train` redo the run
from its last checkpoint before it (`trusted_step`).
"""
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from galip_bench.files import atomic_write_json, atomic_write_text

STATES = ("pending", "running", "finished", "failed")


_SCANS: dict = {}    # (path, inode, size, mtime) -> (records, line numbers of torn records)
_WARNED: set = set()  # the torn files already reported by this process


def scan_jsonl(path) -> tuple:
    """(records, torn): the records of a JSONL file and the 1-based line numbers of the lines that are not a whole
    record (a write cut short: a crash, a full disk, a copy interrupted). Memoised per file version."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        return [], []
    key = (str(path.absolute()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _SCANS:
        records, torn = [], []
        for number, line in enumerate(path.read_bytes().decode(errors="replace").splitlines(), 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if isinstance(record, dict):
                records.append(record)
            elif line.strip():
                torn.append(number)
        if len(_SCANS) > 256:
            _SCANS.clear()
        _SCANS[key] = (records, torn)
    records, torn = _SCANS[key]
    return list(records), list(torn)


def warn_once(path, message: str) -> None:
    """One `warning:` line on stderr per damaged file version."""
    try:
        st = Path(path).stat()
        key = (str(Path(path).absolute()), st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        key = (str(Path(path).absolute()), None, None, None)
    if key not in _WARNED:
        _WARNED.add(key)
        print(f"warning: {path}: {message}", file=sys.stderr)


def read_jsonl(path, warn: bool = True) -> list:
    """Records of a JSONL file. A torn record is left out, with a warning naming the file (`warn`)."""
    records, torn = scan_jsonl(path)
    if torn and warn:
        warn_once(path, f"line {torn[0]} is a torn record (a write cut short); it is left out here, and the next "
                        "`galip-bench run` (or `train`) redoes this run from its last checkpoint before it")
    return records


class RunDir:
    def __init__(self, path):
        self.path = Path(path)
        self.ckpt_dir = self.path / "checkpoints"
        self.samples_dir = self.path / "samples"
        self.train_log = self.path / "train_log.jsonl"
        self.metrics = self.path / "metrics.jsonl"
        self.status_file = self.path / "status.json"
        self._upto = None  # `trusting`: the newest checkpoint step resume may use

    # config and status --------------------------------------------------------------------------------------
    def write_config(self, conf) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / "config.yaml", OmegaConf.to_yaml(conf, resolve=True))

    def read_config(self) -> dict:
        """The resolved config as plain containers ({} when the file is missing or unreadable)."""
        try:
            return OmegaConf.to_container(OmegaConf.load(self.path / "config.yaml")) or {}
        except (OSError, ValueError, yaml.YAMLError):
            return {}

    def _load_status(self) -> tuple:
        """(status or None when absent, torn): an unreadable status.json is torn (its writes are atomic, so only
        damage after the fact cuts it)."""
        try:
            status = json.loads(self.status_file.read_text())
        except FileNotFoundError:
            return None, False
        except (OSError, ValueError):
            return None, True
        return (status, False) if isinstance(status, dict) else (None, True)

    def status(self) -> dict:
        status, torn = self._load_status()
        if torn:
            warn_once(self.status_file, "torn (a write cut short): the run is shown as failed, and the next "
                                        "`galip-bench run` (or `train`) rebuilds it")
            return {"state": "failed", "step": 0, "torn": True,
                    "error": "status.json is torn; the next `run` rebuilds it from the last checkpoint"}
        return status if status is not None else {"state": "pending", "step": 0}

    def set_status(self, state: str, **fields) -> None:
        assert state in STATES, state
        current = self._load_status()[0] or {"step": 0}  # a torn status is rebuilt from the fields given now
        current.update(fields, state=state, updated=time.time(), host=socket.gethostname(), pid=os.getpid())
        atomic_write_json(self.status_file, current)

    def torn(self) -> dict:
        """{file name: first torn line (0: the whole file)} of the run's files that hold a torn record."""
        out = {path.name: scan_jsonl(path)[1][0] for path in (self.train_log, self.metrics) if scan_jsonl(path)[1]}
        if self._load_status()[1]:
            out[self.status_file.name] = 0
        return out

    def trusted_step(self):
        """None when no log holds a torn record; else the last step whose records are all whole: a torn record's
        step is at least that of the whole record before it (records are appended in step order), so the steps
        before that one are complete. Resume from a checkpoint at or before it and replay the rest."""
        limits = []
        for path in (self.train_log, self.metrics):
            records, torn = scan_jsonl(path)
            if torn:
                lines = path.read_bytes().decode(errors="replace").splitlines()[:torn[0] - 1]
                # records without a step (speed, measured at the end) say nothing about where the tear is
                before = [r for r in (json.loads(line) for line in lines if line.strip()) if r.get("step") is not None]
                limits.append(max(int(before[-1]["step"]) - 1, 0) if before else 0)
        return min(limits) if limits else None

    @property
    def finished(self) -> bool:
        """Finished, and every record of it whole (a torn one makes `run` redo it from a checkpoint before it)."""
        status, torn = self._load_status()
        return not torn and (status or {}).get("state") == "finished" and self.trusted_step() is None

    def commit_replacement(self) -> None:
        """The run is under way (a checkpoint): the results it replaces (`run --force`) go."""
        from galip_bench.runs import replace
        replace.commit(self.path)

    # logs ---------------------------------------------------------------------------------------------------
    def append(self, path: Path, record: dict) -> None:
        with open(path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def truncate_after(self, step: int, end: int = None, checkpoints: bool = False) -> None:
        """On resume at `step` of a run of `end` steps: drop log and metric records past it (and torn ones), so
        replayed steps are neither duplicated nor missing; records without a step (speed: measured at the end) go
        too while the end is still to come. `checkpoints`: the checkpoints past it go as well (a repair resumed
        before them, as records after them were torn: a later stop must not resume from them, nor pruning keep them
        over the replayed ones)."""
        for path in (self.train_log, self.metrics):
            if path.exists():
                kept = [r for r in read_jsonl(path, warn=False)
                        if (r.get("step") is None and (end is None or step >= end))
                        or (r.get("step") is not None and r["step"] <= step)]
                atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
        for path in sorted(self.ckpt_dir.glob("step_*.pt")) if checkpoints else []:
            if int(path.stem.split("_")[1]) > step:
                path.unlink(missing_ok=True)

    # checkpoints --------------------------------------------------------------------------------------------
    def checkpoints(self) -> list:
        found = sorted(self.ckpt_dir.glob("step_*.pt"))
        return found if self._upto is None else [p for p in found if int(p.stem.split("_")[1]) <= self._upto]

    @contextmanager
    def trusting(self, step):
        """Within the block, `checkpoints()` lists only those up to `step` (None: all): resume from one whose
        records are whole."""
        self._upto = step
        try:
            yield self
        finally:
            self._upto = None

    def checkpoint_path(self, step: int) -> Path:
        return self.ckpt_dir / f"step_{step:08d}.pt"

    @staticmethod
    def kept_samples_stem(step, protocol: str) -> str:
        """Where an evaluation at `step` keeps a protocol's per-sample data, relative to the run folder (without
        the suffix: evaluation.paired writes `<stem>.npy` and, FID-type, `<stem>.reference.npz`)."""
        return f"eval/step_{step:08d}/{protocol}" if step is not None else f"eval/no_step/{protocol}"

    def prune(self, keep: int, protect=()) -> None:
        """Delete all but the last `keep` checkpoints (0: keep all) and those of the steps in `protect`."""
        for old in self.checkpoints()[:-keep] if keep > 0 else []:
            if int(old.stem.split("_")[1]) not in protect:
                old.unlink(missing_ok=True)

    def best_steps(self, directions: dict) -> set:
        """The step of the best value so far of each metric in `directions` ({metric: -1 lower | +1 higher is
        better}); the earliest step on ties."""
        best = {}
        for r in read_jsonl(self.metrics):
            sign, value = directions.get(r.get("metric")), r.get("value")
            if sign is None or value is None or r.get("step") is None:
                continue
            if r["metric"] not in best or sign * value > sign * best[r["metric"]][0]:
                best[r["metric"]] = (value, r["step"])
        return {step for _, step in best.values()}
