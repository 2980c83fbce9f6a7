import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # any hub call fails at once: tests never download
# oneDNN picks its convolution kernels by the CPU's instruction set, and their fp32 rounding differs (AVX-512 vs
# AVX2). One official training step is sensitive to it: Adam moves each weight by about +-lr, so a gradient that
# rounds across zero flips a move, and errG after the D step drifts by 5e-4 (tests/test_train_step.py). Capping the
# kernels at AVX2, which every x86-64 CI machine has, makes the suite's numbers the same on every such machine.
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")


def pytest_collection_modifyitems(config, items):
    """Tests marked `slurm` need a reachable cluster (scripts/slurm-local.sh up DIR); skip them, saying why, without."""
    slurm_items = [item for item in items if item.get_closest_marker("slurm")]
    if not slurm_items:
        return
    from slurm_cluster import cluster_available

    ok, why = cluster_available()
    if not ok and os.environ.get("GALIP_BENCH_REQUIRE_SLURM") == "1":  # CI: a missing cluster is a failure
        raise pytest.UsageError(f"GALIP_BENCH_REQUIRE_SLURM=1 but no SLURM cluster: {why}")
    if not ok:
        for item in slurm_items:
            item.add_marker(pytest.mark.skip(reason=f"no SLURM cluster: {why}"))



@pytest.fixture(scope="session")
def shapes_small(tmp_path_factory):
    """The shapes CLIP and scene reader built with small recipes into one cache folder for the whole session (the
    recipes stay patched while it lasts, so every build and load in the session finds these)."""
    from galip_bench.shapes import cache
    from galip_bench.shapes.clip import ClipRecipe
    from galip_bench.shapes.reader import ReaderRecipe

    patch = pytest.MonkeyPatch()
    patch.setattr(cache, "CLIP_RECIPE", ClipRecipe(train_scenes=3000, steps=120))
    patch.setattr(cache, "READER_RECIPE", ReaderRecipe(train_scenes=4000, test_scenes=1000, epochs=6, batch=64))
    folder = tmp_path_factory.mktemp("shapes-cache")
    reader, info = cache.load_reader(folder, progress=False)
    yield folder, reader, info
    patch.undo()
