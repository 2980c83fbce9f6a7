"""SIGINT / SIGTERM as requests to stop at a safe point: the training loop checks `Interrupt.signal` at each step
boundary (and stops after a checkpoint); the `run` launcher, on one, stops its local jobs the way a scheduler would.
Local job controllers are started ignoring SIGINT (`children_ignore_sigint`), so a terminal's Ctrl-C reaches the
training processes (which stop cleanly) and the launcher, not submitit's controllers (which would print
KeyboardInterrupt tracebacks and SIGKILL their task a second later)."""
import signal
from contextlib import contextmanager


class Interrupt:
    """`with Interrupt() as stop:` ... `stop.signal` is the name of the first SIGINT/SIGTERM received, or None."""

    def __init__(self):
        self.signal, self.previous = None, {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread: signals stay with whoever owns them
                pass
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handler(self, signum, frame):
        self.signal = self.signal or signal.Signals(signum).name

    @property
    def exit_code(self) -> int:
        return 128 + int(getattr(signal, self.signal)) if self.signal else 0


@contextmanager
def children_ignore_sigint(enabled: bool = True):
    """Processes started inside inherit SIGINT ignored (our training loop installs its own handler)."""
    if not enabled:
        yield
        return
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
