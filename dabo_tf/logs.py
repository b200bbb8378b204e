"""Quiet C++ logging: TensorFlow's start-up and profiler lines kept away from user messages.

No TensorFlow here: the command line uses it to import TensorFlow quietly.
"""

from __future__ import annotations

import contextlib
import os
import sys


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
