"""The folder of one run: resolved config, status, JSONL logs, checkpoints and samples.

runs/<grid>/<run_id>/
  config.yaml        the resolved RunConfig
  status.json        state (pending|running|finished|failed), step, error line, host, times
  train_log.jsonl    one record per logged step
  metrics.jsonl      one record per (step, protocol): settings, value, time
  checkpoints/       step_XXXXXXXX.pt, the last `keep` kept
  samples/           sample grids of fixed noise and captions
"""
import json
import os
import socket
import time
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from galip_bench.files import atomic_write_json, atomic_write_text

STATES = ("pending", "running", "finished", "failed")


def read_jsonl(path) -> list:
    """Records of a JSONL file; a torn last line (killed writer) is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class RunDir:
    def __init__(self, path):
        self.path = Path(path)
        self.ckpt_dir = self.path / "checkpoints"
        self.samples_dir = self.path / "samples"
        self.train_log = self.path / "train_log.jsonl"
        self.metrics = self.path / "metrics.jsonl"

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

    def status(self) -> dict:
        try:
            return json.loads((self.path / "status.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {"state": "pending", "step": 0}

    def set_status(self, state: str, **fields) -> None:
        assert state in STATES, state
        current = self.status()
        current.update(fields, state=state, updated=time.time(), host=socket.gethostname(), pid=os.getpid())
        atomic_write_json(self.path / "status.json", current)

    @property
    def finished(self) -> bool:
        return self.status().get("state") == "finished"

    # logs ---------------------------------------------------------------------------------------------------
    def append(self, path: Path, record: dict) -> None:
        with open(path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def truncate_after(self, step: int) -> None:
        """On resume: drop log and metric records past the restored step, so replayed steps are not duplicated."""
        for path in (self.train_log, self.metrics):
            if path.exists():
                kept = [r for r in read_jsonl(path) if (r.get("step") or 0) <= step]
                atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))

    # checkpoints --------------------------------------------------------------------------------------------
    def checkpoints(self) -> list:
        return sorted(self.ckpt_dir.glob("step_*.pt"))

    def checkpoint_path(self, step: int) -> Path:
        return self.ckpt_dir / f"step_{step:08d}.pt"

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
