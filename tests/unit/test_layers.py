"""The folders are layers: the import-linter contract in ``.importlinter`` holds, and no module hides an import of
the package inside a function body (the way cycles used to be dodged). Two modules import lazily, each for a reason
other than a cycle, named in ``LAZY_ALLOWED``."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAZY_ALLOWED = {
    "cli.py": "each command loads its stage when it runs: `condi-pipe --help` loads no dask, zarr or optuna",
    "methods/catalogue.py": "each loss imports torch when it first trains: the registry reads without torch",
}


def test_the_layer_contract_holds():
    linter = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(linter).exists():
        pytest.fail("lint-imports is not installed: pip install '.[test]'")
    done = subprocess.run([linter, "--config", str(ROOT / ".importlinter")], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 kept, 0 broken" in done.stdout


def _function_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("condi_pipe"):
                found.append(f"{path.relative_to(ROOT)}:{inner.lineno} from {inner.module}")
            if isinstance(inner, ast.Import) and any(a.name.startswith("condi_pipe") for a in inner.names):
                found.append(f"{path.relative_to(ROOT)}:{inner.lineno} import {inner.names[0].name}")
    return found


def test_no_module_imports_the_package_inside_a_function():
    modules = [p for p in ROOT.glob("**/*.py")
               if not {".venv", "tests", "bench", "build", "docs"} & set(p.relative_to(ROOT).parts)
               and p.relative_to(ROOT).as_posix() not in LAZY_ALLOWED]
    assert len(modules) > 50
    hidden = [hit for path in sorted(modules) for hit in _function_imports(path)]
    assert hidden == []
