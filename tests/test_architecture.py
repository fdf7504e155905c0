"""The package map of docs/design.md, kept: imports run one way, rung -> frontend -> backend ->
lowering -> dialects -> ir, and no source file grows past what a reader takes in at once."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
LEVELS = ["ir", "dialects", "lowering", "backend", "frontend", "rung"]  # each may import only those before it
MAX_LINES = 800


def _imports(path: Path):
    """(line, top-level package) of every import in a file, module-level or inside a function."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name.split(".")[0]) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


def _sources(package: str):
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", LEVELS)
def test_imports_run_one_way(package):
    allowed = set(LEVELS[: LEVELS.index(package) + 1])
    against = [f"{path.relative_to(ROOT)}:{line} imports {top}" for path in _sources(package)
               for line, top in _imports(path) if top in LEVELS and top not in allowed]
    assert not against, "imports against the direction in docs/design.md:\n" + "\n".join(against)


def test_the_check_sees_function_local_imports(tmp_path):
    """A late import is still an import: the scan must not miss one inside a function."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from backend.jit import Kernel\n")
    assert list(_imports(f)) == [(2, "backend")]



def test_no_source_file_is_too_long():
    long = [f"{p.relative_to(ROOT)}: {n} lines" for pkg in LEVELS for p in _sources(pkg)
            if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not long, f"split these (at most {MAX_LINES} lines a file):\n" + "\n".join(long)
