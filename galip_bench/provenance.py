"""What produced a number: library versions and the git commit (file hashes: metrics.weights.file_sha256)."""
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("galip-bench", "torch", "torchvision", "open_clip_torch", "torch-fidelity", "clean-fid", "numpy", "scipy")


def library_versions() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(path=".") -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(path).resolve(), capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None

