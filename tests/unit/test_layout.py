"""The codebase keeps its shape: one direction of imports, small modules, small functions.

The import direction is Import Linter's layers contract in pyproject.toml
(flows -> bentos -> monitoring -> pipelines); the size limits are issue 16's: every library module
at most 300 lines, every function at most 60.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("pipelines", "monitoring", "bentos", "flows")
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(cwd)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_imports_go_one_direction() -> None:
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_the_layers_contract_fails_on_an_upward_import(tmp_path: Path) -> None:
    """The same contract, on a tree where a pipelines module imports monitoring, is broken."""
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "monitoring" / "drift.py").write_text("import pipelines.low\n")
    (tmp_path / "pipelines" / "low.py").write_text("X = 1\n")
    assert _lint_imports(tmp_path).returncode == 0
    (tmp_path / "pipelines" / "upward.py").write_text("from monitoring import drift\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "pipelines is not allowed to import monitoring" in result.stdout
    assert "pipelines.upward -> monitoring.drift" in result.stdout


def _sizes(root: Path) -> list[str]:
    too_big = []
    for path in sorted(root.rglob("*.py")):
        source = path.read_text()
        name = path.relative_to(REPO)
        if (lines := len(source.splitlines())) > MAX_MODULE_LINES:
            too_big.append(f"{name}: {lines} lines > {MAX_MODULE_LINES}")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_big.append(f"{name}:{node.lineno} {node.name}: {length} lines")
    return too_big


def test_modules_and_functions_stay_small() -> None:
    too_big = [line for package in PACKAGES for line in _sizes(REPO / package)]
    assert not too_big, "split these:\n" + "\n".join(too_big)
