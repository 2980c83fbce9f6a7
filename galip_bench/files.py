"""Files: atomic writes (a temp file in the destination folder, fsync, then os.replace: a killed process leaves
either the old file or the new one, never a half-written file under the final name), content hashes, and the checks
of input and output paths. A write the environment refuses (disk full, read-only file system, no permission) is a
UserError naming the file and the cause, not a traceback from deep inside torch.save."""
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from galip_bench.errors import UserError

# what the environment says, in words a user can act on
_CAUSES = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
           errno.EROFS: "read-only file system", errno.EACCES: "permission denied", errno.EPERM: "permission denied",
           errno.EISDIR: "is a directory", errno.ENOTDIR: "a part of the path is a file, not a folder",
           errno.ENAMETOOLONG: "file name too long"}


def _cause(err: OSError) -> str:
    return _CAUSES.get(err.errno) or err.strerror or type(err).__name__


def _free_space(folder: Path) -> str:
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    try:
        return f"; {existing} has {shutil.disk_usage(existing).free / 1e6:,.0f} MB free" if existing else ""
    except OSError:
        return ""


def write_error(path, err: OSError) -> UserError:
    """The one-line error of a failed write of `path`: the cause and what to do about it."""
    path, cause = Path(path), _cause(err)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        how = f"{_free_space(path.parent)}: free some space, or write elsewhere"
    elif err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        how = f": {path.parent} is not writable; choose a writable folder"
    else:
        how = ""
    return UserError(f"cannot write {path}: {cause}{how}")


class _Recording:
    """A file object that remembers the OSError its write raised: torch.save turns that error into a RuntimeError
    ('enforce fail at inline_container.cc ... file write failed') that no longer says why."""

    def __init__(self, f):
        self._f, self.error = f, None

    def write(self, data):
        try:
            return self._f.write(data)
        except OSError as err:
            self.error = err
            raise

    def __getattr__(self, name):
        return getattr(self._f, name)


def atomic_write(path, write) -> Path:
    """Call write(file_object) on a temp file beside `path`, then move it into place. An OSError of the file
    system (or torch.save's RuntimeError wrapping one) is a UserError naming `path` and the cause; the temp file is
    removed and an earlier file at `path` is left as it was."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a directory, expected a file")
    tmp, recording = None, None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600: give the file the mode a plain open() would
        with os.fdopen(fd, "wb") as f:
            recording = _Recording(f)
            write(recording)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        _remove(tmp)
        if err.errno not in _CAUSES:  # not the environment refusing the write: a bug, or a race, with its traceback
            raise
        raise write_error(path, err) from None
    except RuntimeError as err:  # torch.save: the file object's OSError, or its own writer's failure
        _remove(tmp)
        if recording is not None and recording.error is not None and recording.error.errno in _CAUSES:
            raise write_error(path, recording.error) from None
        if "inline_container" in str(err) or "file write failed" in str(err):
            raise UserError(f"cannot write {path}: the write failed ({str(err).splitlines()[0][:120]})"
                            f"{_free_space(path.parent)}") from None
        raise
    except BaseException:
        _remove(tmp)
        raise
    return path


def _remove(tmp) -> None:
    if tmp is not None:
        try:
            Path(tmp).unlink(missing_ok=True)
        except OSError:
            pass


def require_file(path, what: str) -> Path:
    """`path` as a Path when it is a file; a UserError saying it is missing or a directory, and what was expected."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory, expected a file: {what}")
    if not path.is_file():
        raise UserError(f"{path} not found: expected {what}")
    return path


def _probe(folder: Path, name) -> None:
    """Create and remove a temp file in `folder` (the honest test: os.access says yes to root on a read-only mount)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".galip-bench-probe.", suffix=".tmp")
    except OSError as err:
        raise UserError(f"cannot write {name} in {folder}: {_cause(err)}; choose a writable folder") from None
    os.close(fd)
    _remove(tmp)


def _nearest_folder(path: Path, option: str, name) -> Path:
    """The nearest existing ancestor of `path`, which must be a folder (a file in the way is an error)."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{option} {name}: {parent} is a file, not a folder")
            return parent
    return Path(".")


def check_output_file(path, option: str) -> Path:
    """Before the work: `path` can be written as a file (it is not a directory, and its folder, or the nearest
    existing one, is a writable folder). Nothing is created."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path} is a directory, expected a file name")
    _probe(_nearest_folder(path, option, path), path)
    return path


def check_output_dir(path, option: str) -> Path:
    """Before the work: `path` can hold output files (it is not an existing file, and it or its nearest existing
    ancestor is a writable folder). Nothing is created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} is an existing file, expected a folder")
    _probe(path if path.is_dir() else _nearest_folder(path, option, path), path)
    return path


def _umask() -> int:
    """The process umask, read without changing it (Linux /proc), else by the set-and-restore idiom."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0)
        os.umask(mask)
        return mask


def atomic_torch_save(obj, path) -> Path:
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_json(path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


_HASHES: dict = {}


def file_sha256(path) -> str:
    """sha256 of a file's bytes (memoised per path, size and mtime): checkpoints, weights, statistics."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]
