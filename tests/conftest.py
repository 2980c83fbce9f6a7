import os

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
    import pytest
    from slurm_cluster import cluster_available

    ok, why = cluster_available()
    if not ok and os.environ.get("GALIP_BENCH_REQUIRE_SLURM") == "1":  # CI: a missing cluster is a failure
        raise pytest.UsageError(f"GALIP_BENCH_REQUIRE_SLURM=1 but no SLURM cluster: {why}")
    if not ok:
        for item in slurm_items:
            item.add_marker(pytest.mark.skip(reason=f"no SLURM cluster: {why}"))
