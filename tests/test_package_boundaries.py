"""The package ships no test helpers, imports nothing from the tests, and its rooms import only downwards."""

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


ROOMS = {"data": 0, "cache": 0.5, "locks": 0.5, "omics": 1, "imaging": 1, "model": 2, "evaluation": 3, "analysis": 4,
         "plotting": 5}
"""data <- omics, imaging <- model <- evaluation <- analysis, plotting (the plots draw the analyses' results);
the input caches and locks write through the data room and serve the rooms above it."""
FOUNDATION = ("paths", "config")
"""Top-level modules every room may use; they import no room."""


def _imports(path: Path) -> list[str]:
    """Every ``i2o_utils`` module a file imports, at any depth (lazy imports inside functions too)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "i2o_utils":
            out += [f"{node.module}.{a.name}" for a in node.names] if node.module == "i2o_utils" else [node.module]
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.split(".")[0] == "i2o_utils"]
    return out


def test_rooms_import_only_from_rooms_below():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).parts
        room = parts[0] if len(parts) > 1 else path.stem
        for module in _imports(path):
            target = module.split(".")[1] if "." in module else ""
            if room in ROOMS and target in ROOMS and target != room and ROOMS[target] >= ROOMS[room]:
                bad.append(f"{path.relative_to(PACKAGE)} imports {module} (room {target} is not below {room})")
            elif room in ROOMS and target not in ROOMS and target not in FOUNDATION:
                bad.append(f"{path.relative_to(PACKAGE)} imports {module} (only {FOUNDATION} outside the rooms)")
            elif room in FOUNDATION and target in ROOMS:
                bad.append(f"{path.relative_to(PACKAGE)} imports {module} (the foundation imports no room)")
    assert not bad, "\n".join(bad)


def test_the_room_check_sees_an_upward_import(tmp_path):
    fake = tmp_path / "m.py"
    fake.write_text("def f():\n    from i2o_utils.evaluation.metrics import smape\n")
    assert _imports(fake) == ["i2o_utils.evaluation.metrics"]
