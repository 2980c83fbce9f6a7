"""A training process for the fault tests: `galip-bench train` on a small smoke run, optionally stopping in the
middle of a checkpoint write so the test can SIGKILL it there.

    python fault_worker.py GRID.yaml [--steps N] [--pause-in-checkpoint K]
    python fault_worker.py --hold-lock RUN_FOLDER [TOKEN]

With --pause-in-checkpoint K, the K-th checkpoint this process writes stops after half of its bytes reached the
temp file: the worker creates `paused_in_checkpoint` in the working folder and sleeps until it is killed.
With --hold-lock, the worker takes the run folder's lock (under TOKEN, as a job of the launcher that has it), prints
`held` and sleeps until it is killed: a live owner in another process, or (SIGKILLed) a dead one's stale lock."""
import io
import sys
import time
from pathlib import Path


def overrides(steps: int) -> list:
    """A run of `steps` steps: a checkpoint every 4, an evaluation and a sample sheet half-way and at the end."""
    return [f"train.steps={steps}", "train.batch_size=4", "train.ckpt_every=4", "train.keep_ckpts=2",
            "train.log_every=1", f"train.eval_every={steps // 2}", f"train.sample_every={steps // 2}",
            "data.num_train=48", "data.num_test=16", "eval.num_samples=72", "eval.batch_size=24"]


GRID = "name: fault\nprofile: smoke\nvariants: [{name: full}]\neval: {protocols: [clip_score_galip, fid_galip]}\n"
MARKER = "paused_in_checkpoint"


def pause_in_checkpoint(k: int) -> None:
    import torch
    real_save, count = torch.save, [0]

    def half_then_sleep(obj, f, *args, **kwargs):
        if not _writes_checkpoint(obj):
            return real_save(obj, f, *args, **kwargs)
        count[0] += 1
        if count[0] < k:
            return real_save(obj, f, *args, **kwargs)
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        Path(MARKER).write_text(str(count[0]))
        while True:
            time.sleep(1)

    torch.save = half_then_sleep


def _writes_checkpoint(obj) -> bool:
    return isinstance(obj, dict) and obj.get("format") == "galip-bench"


def hold_lock(folder: str, token: str = None) -> int:
    from galip_bench.runs import lock
    lock.acquire(folder, token or lock.new_token(), role="train")
    print("held", flush=True)
    while True:
        time.sleep(1)


def main(argv) -> int:
    if argv[0] == "--hold-lock":
        return hold_lock(*argv[1:3])
    grid = argv[0]
    if "--pause-in-checkpoint" in argv:
        pause_in_checkpoint(int(argv[argv.index("--pause-in-checkpoint") + 1]))
    from galip_bench.cli import main as cli
    steps = int(argv[argv.index("--steps") + 1]) if "--steps" in argv else 40
    return cli(["train", grid] + [a for o in overrides(steps) for a in ("--set", o)])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
