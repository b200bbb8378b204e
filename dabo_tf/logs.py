"""What long work tells its user: progress lines, and TensorFlow's C++ logging kept quiet.

- `Progress`: which run of how many, elapsed and estimated remaining time (a comparison, the
  quality suite, the benchmarks);
- `quiet_stderr`: TensorFlow's start-up and profiler lines kept away from user messages.

No TensorFlow here: the command line uses it to import TensorFlow quietly.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time


def duration(seconds):
    """`"12m05s"`: a duration in whole minutes and seconds."""
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """Progress of a sequence of runs: `[label] i/n message | elapsed ..., remaining ~...`.

    The remaining time is estimated per kind of run (e.g. per method of a suite, whose runs
    differ in cost): each run left counts the mean time of the finished runs of its kind, or
    of all finished runs while its kind has none; a run of kind `Progress.REUSED` (known to
    be finished by an earlier invocation) counts nothing. A run that took under
    `min_seconds` says nothing about the others and is not counted either.

    Args:
        kinds: the kind of every run, in order (its length is the number of runs); None:
            `total` runs of one kind.
        label: the prefix of every line.
        total: the number of runs when `kinds` is None.
        log: where lines go (`print`-like, called with `flush=True`).
        clock: seconds, monotonic (`time.perf_counter`; tests pass their own).
    """

    REUSED = "reused"
    """The kind of a run whose result an earlier invocation left (it takes no time)."""

    def __init__(self, kinds=None, *, label, total=None, log=print, min_seconds=1.0,
                 clock=time.perf_counter):
        self.kinds = list(kinds) if kinds is not None else [None] * int(total)
        self.label, self.log, self.min_seconds, self.clock = label, log, min_seconds, clock
        self.start = self.began = clock()
        self.done = 0
        self.spent = {}

    def __len__(self):
        return len(self.kinds)

    def begin(self):
        """Marks the start of the next run (by default a run starts when the last ended)."""
        self.began = self.clock()

    def remaining(self):
        """Estimated seconds for the runs not finished yet (0 before any was timed)."""
        timed = [t for times in self.spent.values() for t in times]
        if not timed:
            return 0.0
        overall = sum(timed) / len(timed)
        return sum(0.0 if k == self.REUSED else
                   sum(self.spent[k]) / len(self.spent[k]) if k in self.spent else overall
                   for k in self.kinds[self.done:])

    def end(self, message="", *, timed=False):
        """Records the current run as finished and logs its line; returns its seconds.

        `timed`: the line says how long the run took (`"<message> in 35 s"`), or
        `"<message> (reused)"` for a run of kind `REUSED`."""
        now = self.clock()
        took, kind = now - self.began, self.kinds[self.done]
        if timed:
            message += " (reused)" if kind == self.REUSED else f" in {took:.0f} s"
        self.done += 1
        if took >= self.min_seconds and kind != self.REUSED:
            self.spent.setdefault(kind, []).append(took)
        self.began = now
        self.log(f"[{self.label}] {self.done}/{len(self)} {message} | elapsed "
                 f"{duration(now - self.start)}, remaining ~{duration(self.remaining())}",
                 flush=True)
        return took


@contextlib.contextmanager
def quiet_stderr():
    """Discards what C++ code writes to file descriptor 2 inside the block.

    TensorFlow's start-up and its profiler log INFO lines there (`I0000 ... Profiler session
    started`) whatever `TF_CPP_MIN_LOG_LEVEL` says from Python. Nothing is hidden when the
    environment sets `TF_CPP_MIN_LOG_LEVEL` (e.g. to 0, to see them).
    """
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
