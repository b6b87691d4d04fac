"""The maintainer's scripts under ``tools/`` (not part of the package), loaded as modules for their tests."""

from __future__ import annotations

import importlib.util

from i2o_utils.paths import REPO_ROOT


def load_tool(name: str):
    """``tools/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
