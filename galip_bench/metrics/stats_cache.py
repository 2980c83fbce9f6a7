"""Reference-statistics cache (the stylegan3 ``metric_utils`` idea): the key hashes every setting.

A file is named ``<protocol>-<sha256>.npz`` under the cache folder, written with ``files.atomic_write`` (a temp file
in the same folder, fsynced, moved into place), so a killed write never leaves a file under the final name.
Loading validates the contents (arrays present, shapes consistent, finite, settings equal to the requested ones);
anything else is treated as a miss.
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from galip_bench.files import atomic_write


def canonical_json(settings: dict) -> str:
    """Deterministic JSON of the settings (sorted keys, no whitespace, non-JSON values as str)."""
    return json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)


def cache_key(settings: dict) -> str:
    """sha256 of the canonical JSON of every setting (protocol settings + dataset identity + weights hash)."""
    return hashlib.sha256(canonical_json(settings).encode()).hexdigest()


def _valid(arrays: dict) -> bool:
    if "n" not in arrays or int(arrays["n"]) < 1:
        return False
    if "mu" in arrays or "sigma" in arrays:
        mu, sigma = arrays.get("mu"), arrays.get("sigma")
        if mu is None or sigma is None or mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            return False
    if "features" in arrays and (arrays["features"].ndim != 2 or arrays["features"].shape[0] != int(arrays["n"])):
        return False
    return all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f")


class StatsCache:
    """``cache.load(settings)`` -> dict of arrays or None; ``cache.save(settings, mu=..., sigma=..., n=...)``."""

    def __init__(self, folder):
        self.folder = Path(folder).expanduser()

    def path(self, settings: dict) -> Path:
        prefix = str(settings.get("protocol", "stats")).replace(os.sep, "_")
        return self.folder / f"{prefix}-{cache_key(settings)}.npz"

    def load(self, settings: dict) -> dict | None:
        path = self.path(settings)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError):
            return None
        stored = arrays.pop("settings_json", None)
        if stored is None or str(stored) != canonical_json(settings) or not _valid(arrays):
            return None
        return arrays

    def save(self, settings: dict, **arrays) -> Path:
        payload = {"settings_json": np.array(canonical_json(settings)), **{k: np.asarray(v) for k, v in arrays.items()}}
        return atomic_write(self.path(settings), lambda f: np.savez(f, **payload))

    def get_or_compute(self, settings: dict, compute) -> dict:
        """Load the entry for ``settings`` or call ``compute() -> dict of arrays`` and store it."""
        arrays = self.load(settings)
        if arrays is None:
            arrays = {k: np.asarray(v) for k, v in compute().items()}
            self.save(settings, **arrays)
        return arrays
