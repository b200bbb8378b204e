import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = pathlib.Path(__file__).resolve().parents[1]
"""The repository (`run.py`, `benchmarks/`). The package is imported as installed, never
from a path: every test finds it the same way."""
sys.path.insert(0, str(ROOT / "benchmarks"))  # the benchmarks' tests import them by name

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def free_ports(n=1):
    """`n` TCP ports free on 127.0.0.1 now (for servers a test starts: TensorBoard, workers)."""
    import socket

    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(0)
    np.random.seed(0)
    yield


@pytest.fixture
def cli(capsys):
    """Runs the command line in-process: `cli("--flag=value", ...)` -> (exit code, out, err)."""
    from dabo_tf import cli as cli_module

    def call(*args):
        cli_module.FLAGS.unparse_flags()
        cli_module._parse_flags(["run.py", *args])
        try:
            cli_module._main(["run.py"])
            code = 0
        except SystemExit as e:
            code = e.code
        out, err = capsys.readouterr()
        return code, out, err

    yield call
    cli_module.FLAGS.unparse_flags()
