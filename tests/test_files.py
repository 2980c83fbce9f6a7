"""Atomic writes respect the umask (mkstemp's 0600 is not kept) and leave no temp file behind."""
import os
import stat

import numpy as np

from galip_bench.checkpoints import save_checkpoint
from galip_bench.files import atomic_write_json, atomic_write_text
from galip_bench.metrics.stats_cache import StatsCache
from helpers import tiny_galip


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        paths = [save_checkpoint(tmp_path / "ckpt.pt", tiny_galip(), step=1),
                 atomic_write_json(tmp_path / "r.json", {"a": 1}), atomic_write_text(tmp_path / "report.md", "# r\n"),
                 StatsCache(tmp_path / "cache").save({"protocol": "fid"}, mu=np.zeros(2), sigma=np.eye(2), n=3)]
        assert {stat.S_IMODE(p.stat().st_mode) for p in paths} == {0o644}
        os.umask(0o077)
        assert stat.S_IMODE(atomic_write_text(tmp_path / "private.txt", "x").stat().st_mode) == 0o600
    finally:
        os.umask(old)
    assert not list(tmp_path.rglob("*.tmp"))
