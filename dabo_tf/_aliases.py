"""Old module paths, kept importable after the package moved into `augment/` and `train/`.

`import dabo_tf.policy` (or `from dabo_tf import policy`) gives `dabo_tf.augment.policy`, the
same module object, loaded on first use only (so `import dabo_tf` stays light).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

OLD_PATHS = {
    "dabo_tf.warp": "dabo_tf.augment.warp",
    "dabo_tf.policy": "dabo_tf.augment.policy",
    "dabo_tf.trivial_augment": "dabo_tf.augment.trivial_augment",
    "dabo_tf.recipe": "dabo_tf.train.recipe",
    "dabo_tf.baselines": "dabo_tf.train.modes",
    "dabo_tf.policy_search": "dabo_tf.train.search",
    "dabo_tf.compare": "dabo_tf.train.compare",
    "dabo_tf.rundir": "dabo_tf.train.rundir",
    "dabo_tf.callbacks": "dabo_tf.train.callbacks",
    "dabo_tf.report": "dabo_tf.train.report",
}
"""Old module path -> where it lives now."""


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module):
        pass  # the target module is already executed


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname not in OLD_PATHS:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(OLD_PATHS[fullname]))


def install():
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
