"""`run --force` without losing a finished result: a run's old files are moved aside inside its folder, kept until
the new run writes its first regular checkpoint, and put back if it never gets there.

    <run>/.replaced/      the old files (config, status, logs, checkpoints, samples) and .replacement.json (whose)

Every step is a rename inside the run folder (one filesystem, atomic), and a step a killed process left half done
is finished by the next owner of the folder (`recover`, called by `lock.acquire`), from the folder it was in:

    .replacing/     moving the old files aside (nothing new written yet): they are moved back
    .replaced/      the new run is under way: its first checkpoint commits (`commit`), else the old files return
    .restoring/     putting them back, step 1: the new run's files are being deleted
    .restoring-2/   step 2: the old files are being moved back
    .discarding/    committed: the old files are being deleted

The lock (`owner.lock`, `.owner.guard` and its temp files) stays where it is throughout: the folder keeps its owner."""
import json
import os
import shutil
import time
from pathlib import Path

from galip_bench.files import atomic_write_json

REPLACING, REPLACED, RESTORING, RESTORING_2, DISCARDING = (".replacing", ".replaced", ".restoring", ".restoring-2",
                                                           ".discarding")
STATES = (REPLACING, REPLACED, RESTORING, RESTORING_2, DISCARDING)
MARK = ".replacement.json"


def content(folder) -> list:
    """The run's own files: everything but the lock and the replacement folders."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.name not in STATES and p.name != "owner.lock" and not p.name.startswith(".owner"))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _move_all(src: Path, dst: Path) -> None:
    for entry in sorted(src.iterdir()):
        if entry.name != MARK:
            os.rename(entry, dst / entry.name)


def move_aside(folder, token: str) -> bool:
    """Move the run's files to .replaced/ (False: there were none). The caller holds the lock."""
    folder = Path(folder)
    entries = content(folder)
    if not entries:
        return False
    staging = folder / REPLACING
    staging.mkdir()
    atomic_write_json(staging / MARK, {"token": token, "time": time.time()})
    for entry in entries:
        os.rename(entry, staging / entry.name)
    os.rename(staging, folder / REPLACED)
    return True


def pending_token(folder):
    """The token of the owner whose replacement is under way (None: none is)."""
    mark = Path(folder) / REPLACED / MARK
    try:
        return json.loads(mark.read_text()).get("token")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return ""  # unreadable mark: nobody's, so the next owner restores it


def restore(folder) -> None:
    """Put the old files back: delete the new run's files, then move the old ones in."""
    folder = Path(folder)
    os.rename(folder / REPLACED, folder / RESTORING)
    _finish_restore(folder)


def _finish_restore(folder: Path) -> None:
    if (folder / RESTORING).exists():
        for entry in content(folder):
            _remove(entry)
        os.rename(folder / RESTORING, folder / RESTORING_2)
    _move_all(folder / RESTORING_2, folder)
    shutil.rmtree(folder / RESTORING_2)


def commit(folder) -> bool:
    """The new run is under way (its first checkpoint): the old files go. True if there were any."""
    folder = Path(folder)
    if not (folder / REPLACED).exists():
        return False
    os.rename(folder / REPLACED, folder / DISCARDING)
    shutil.rmtree(folder / DISCARDING)
    return True


def recover(folder, token: str, own: bool = False) -> None:
    """Finish what a killed owner left half done. A replacement begun by another owner (who is gone: the caller
    holds the lock now), or with `own` by this one (which is leaving), never reached its first checkpoint: the old
    files return."""
    folder = Path(folder)
    if (folder / REPLACING).exists():
        _move_all(folder / REPLACING, folder)
        shutil.rmtree(folder / REPLACING)
    if (folder / RESTORING).exists() or (folder / RESTORING_2).exists():
        _finish_restore(folder)
    if (folder / DISCARDING).exists():
        shutil.rmtree(folder / DISCARDING)
    if (folder / REPLACED).exists() and (own or pending_token(folder) != token):
        restore(folder)
