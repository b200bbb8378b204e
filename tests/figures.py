"""Shared check of the PNG figures that runs and `dabo_tf.report` write."""

import os

import numpy as np
from PIL import Image


def assert_png(path, min_width=200, min_height=100, min_bytes=0):
    """A valid PNG of at least the given size, with drawn content (not a blank canvas)."""
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.width >= min_width and img.height >= min_height
        assert np.asarray(img.convert("L")).std() > 5
    assert os.path.getsize(path) > min_bytes
