"""Progress bars that suit where they are written: live on a terminal; in a log file or a pipe (SLURM output, CI)
one update every 30 s instead of every 0.1 s, so a log holds progress lines, not thousands of redraws."""
import sys

LOG_INTERVAL_S = 30.0


def progress_options(stream=None) -> dict:
    """tqdm keyword arguments for `stream` (stderr by default)."""
    stream = stream or sys.stderr
    interactive = hasattr(stream, "isatty") and stream.isatty()
    return {"mininterval": 0.1} if interactive else {"mininterval": LOG_INTERVAL_S, "maxinterval": LOG_INTERVAL_S * 4}
