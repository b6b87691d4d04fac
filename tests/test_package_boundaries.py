"""The package ships no test helpers and imports nothing from the tests."""

from __future__ import annotations

import ast
from pathlib import Path

import i2o_utils

PACKAGE = Path(i2o_utils.__file__).parent


def test_package_imports_nothing_from_the_tests_and_holds_no_test_servers():
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.split(".")[0] == "tests", f"{path} imports {node.module}"
            elif isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] != "tests" for a in node.names), path
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                assert node.name not in ("synthetic_tiles", "s3_server", "FaultyHTTPServer"), f"{path}: {node.name}"
    assert not (PACKAGE / "data" / "loopback.py").exists()
