import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # any hub call fails at once: tests never download


def pytest_collection_modifyitems(config, items):
    """Tests marked `slurm` need a reachable cluster (scripts/slurm-local.sh up DIR); skip them, saying why, without."""
    slurm_items = [item for item in items if item.get_closest_marker("slurm")]
    if not slurm_items:
        return
    import pytest
    from slurm_cluster import cluster_available

    ok, why = cluster_available()
    if not ok and os.environ.get("GALIP_BENCH_REQUIRE_SLURM") == "1":  # CI: a missing cluster is a failure
        raise pytest.UsageError(f"GALIP_BENCH_REQUIRE_SLURM=1 but no SLURM cluster: {why}")
    if not ok:
        for item in slurm_items:
            item.add_marker(pytest.mark.skip(reason=f"no SLURM cluster: {why}"))
