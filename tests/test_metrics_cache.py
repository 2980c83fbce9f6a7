"""Reference-statistics cache: every setting changes the key; a killed or corrupt write is never trusted."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import hashlib
import json
import subprocess
import sys
import textwrap

import numpy as np

from galip_bench.evaluation import PROTOCOLS, get_protocol
from galip_bench.evaluation.plans import SamplePlan
from galip_bench.files import file_sha256
from galip_bench.metrics.stats_cache import StatsCache, cache_key


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, tuple):
        return value + (("extra", 1),)
    return f"{value}-changed"


def test_key_is_sha256_of_canonical_json():
    settings = {"b": 1, "a": [1, 2], "protocol": "fid"}
    expected = hashlib.sha256(json.dumps(settings, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert cache_key(settings) == expected == cache_key(dict(reversed(list(settings.items()))))


REFERENCE_KEYS = {"protocol", "prepare", "resize", "extractor", "weights", "precision", "options", "smoke", "dataset",
                  "weights_sha256"}


def test_every_reference_setting_changes_the_key():
    for name, cls in PROTOCOLS.items():
        if cls.kind != "features":
            continue
        base = get_protocol(name).reference_settings("coco:test:abc", "0" * 64)
        assert REFERENCE_KEYS <= set(base), name
        keys = {cache_key(base)} | {cache_key({**base, k: _changed(v)}) for k, v in base.items()}
        assert len(keys) == len(base) + 1, name
    features = [n for n, c in PROTOCOLS.items() if c.kind == "features"]
    assert len({cache_key(get_protocol(n).reference_settings("d")) for n in features}) == len(features)
    # an option and the smoke substitute change the key; the generated side's plan does not (the reference
    # statistics of a split are shared by every plan)
    kid = get_protocol("kid").reference_settings("d")
    assert cache_key(get_protocol("kid", options={"kid_subsets": 7}).reference_settings("d")) != cache_key(kid)
    assert cache_key(get_protocol("kid", smoke=True).reference_settings("d")) != cache_key(kid)
    fixed = get_protocol("kid", plan=SamplePlan("fixed", num_samples=5000)).reference_settings("d")
    assert cache_key(fixed) == cache_key(kid)


def test_weights_hash_enters_the_key(tmp_path):
    (tmp_path / "w.pth").write_bytes(b"weights-a")
    proto = get_protocol("fid_galip")
    key_a = cache_key(proto.reference_settings("d", file_sha256(tmp_path / "w.pth")))
    (tmp_path / "w.pth").write_bytes(b"weights-bb")
    assert cache_key(proto.reference_settings("d", file_sha256(tmp_path / "w.pth"))) != key_a


def test_round_trip_and_validation(tmp_path):
    cache = StatsCache(tmp_path)
    settings = get_protocol("fid").reference_settings("cub:test")
    rng = np.random.default_rng(0)
    mu, sigma = rng.standard_normal(4), np.eye(4)
    assert cache.load(settings) is None
    path = cache.save(settings, mu=mu, sigma=sigma, n=np.array(10))
    assert path.parent == tmp_path and path.name.startswith("fid-")
    loaded = cache.load(settings)
    np.testing.assert_array_equal(loaded["mu"], mu)
    np.testing.assert_array_equal(loaded["sigma"], sigma)
    assert int(loaded["n"]) == 10
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated under the final name
    assert cache.load(settings) is None
    cache.save(settings, mu=mu, sigma=np.full((4, 4), np.nan), n=np.array(10))  # non-finite
    assert cache.load(settings) is None
    calls = []
    arrays = cache.get_or_compute(settings, lambda: calls.append(1) or {"mu": mu, "sigma": sigma, "n": 3})
    arrays = cache.get_or_compute(settings, lambda: calls.append(1) or {"mu": mu, "sigma": sigma, "n": 3})
    assert calls == [1] and int(arrays["n"]) == 3


def test_killed_write_leaves_no_trusted_file(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, numpy as np
        from galip_bench.metrics.stats_cache import StatsCache
        os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # die after writing, before the rename
        StatsCache({str(tmp_path)!r}).save({{"protocol": "fid"}}, mu=np.zeros(3), sigma=np.eye(3), n=np.array(5))
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", script], cwd=root, env={**os.environ, "PYTHONPATH": root})
    assert proc.returncode == -9
    cache = StatsCache(tmp_path)
    assert not cache.path({"protocol": "fid"}).exists()
    assert cache.load({"protocol": "fid"}) is None
    assert all(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # only the abandoned temp file


def test_stale_settings_are_a_miss(tmp_path):
    cache = StatsCache(tmp_path)
    settings = {"protocol": "fid", "num_samples": 10}
    path = cache.save(settings, mu=np.zeros(2), sigma=np.eye(2), n=np.array(10))
    other = {"protocol": "fid", "num_samples": 11}
    os.replace(path, cache.path(other))  # a file whose stored settings differ from its name
    assert cache.load(other) is None
