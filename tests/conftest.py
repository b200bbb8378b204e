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
    """`n` TCP ports free on 127.0.0.1 now (for servers a test starts: TensorBoard, workers).

    Taken below the kernel's ephemeral range: a port the kernel hands out (`bind(0)`) can be
    taken again by any outgoing connection (one worker dialling another) before the server
    meant for it binds it.
    """
    import random
    import socket

    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    rng, ports = random.Random(), []
    while len(ports) < n:
        port = rng.randrange(10000, max(ephemeral, 10001))
        if port in ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    return ports


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
