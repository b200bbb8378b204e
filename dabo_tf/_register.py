"""dabo-tf's Keras layers registered as soon as TensorFlow and Keras are loaded.

`import dabo_tf` does not import TensorFlow (the command line answers before it loads), yet a
`.keras` file holding a dabo-tf layer (a frozen policy, a learned augmenter, a `DaboModel`)
must load with `keras.saving.load_model` after `import dabo_tf`, whatever the import order.
Keras only finds classes registered with it, and it imports no module named in a file
outside its own packages. So, when they are not loaded yet, a finder watches the imports of
`tensorflow` and `keras` (each imports the other) and registers the layers once both have
finished initialising; with both loaded already, registration happens at once. When TF is
first loaded by a dabo-tf module (`from dabo_tf import augment` before anything else), the
layers' modules are still half-imported then: registration waits until that dabo-tf module
has finished (the finder also watches `dabo_tf.*` until registration is done).
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
import warnings

WATCHED = ("tensorflow", "keras")
_state = {"registered": False}


def _initializing(module) -> bool:
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def _loaded(name) -> bool:
    module = sys.modules.get(name)
    return module is not None and not _initializing(module)


def _dabo_tf_import_under_way() -> bool:
    return any(name.startswith("dabo_tf.") and _initializing(module)
               for name, module in list(sys.modules.items()))


def _watched(fullname) -> bool:
    return fullname in WATCHED or fullname.startswith("dabo_tf.")


def register_now_if_ready() -> None:
    """Imports the modules that register dabo-tf's layers, once TF and Keras are loaded
    and no dabo-tf module is half-imported."""
    if (_state["registered"] or not all(_loaded(name) for name in WATCHED)
            or _dabo_tf_import_under_way()):
        return
    _state["registered"] = True
    try:
        importlib.import_module("dabo_tf.augment")
        importlib.import_module("dabo_tf.dabo_model")
    except Exception as e:  # never break the user's own `import keras`
        warnings.warn(f"dabo-tf could not register its Keras layers ({e}); "
                      "use dabo_tf.load_model(path) to load models that contain them.",
                      stacklevel=2)


class _Loader(importlib.abc.Loader):
    """Wraps a watched module's loader: run it, then register if TF and Keras are loaded."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        module.__spec__._initializing = False  # as importlib will set it after this returns
        register_now_if_ready()

    def __getattr__(self, name):  # e.g. get_resource_reader, is_package
        return getattr(self.loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if not _watched(fullname) or _state["registered"]:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _Loader(spec.loader)
                return spec
        return None


def install() -> None:
    """Registers now if TF and Keras are loaded, else when they are."""
    register_now_if_ready()
    if not _state["registered"] and not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
