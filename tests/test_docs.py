"""Every command the README and docs/ show a user is run here, as written (GPU ones on a GPU only):
a command in the docs that fails, fails the tests."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOOLS = ("rung-opt ", "rung-run ", "python3 -m frontend.", "python3 -m rung.", "python3 -m backend.")


def commands() -> list[tuple[str, str]]:
    """(doc, command) for each indented command line; a line `A && B` that installs first runs B. Lines
    that stand for a form rather than a command (uppercase placeholders) and transcripts ($) are left out."""
    found = []
    for doc in DOCS:
        for line in doc.read_text().splitlines():
            if not line.startswith("    ") or line.lstrip().startswith("$"):
                continue
            command = line.strip().split(" && ")[-1]
            command = re.sub(r"\s+#.*$", "", command)
            if command.startswith(TOOLS) and not re.search(r"\b[A-Z]{2,}\b(?![.'])", command.replace("--", "")):
                found.append((doc.name, command))
    return found


def _gpu(command: str) -> bool:
    return "--gpu" in command.split() or "backend.bench" in command


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Where the commands run: the examples beside them, anything they write kept apart from the checkout."""
    d = tmp_path_factory.mktemp("docs")
    (d / "examples").symlink_to(ROOT / "examples")
    return d


def test_the_docs_show_commands():
    found = {c for _, c in commands()}
    assert any(c.startswith("rung-opt") for c in found) and any(c.startswith("python3 -m frontend.torch2ir") for c in found)


@pytest.mark.parametrize("doc, command", [pytest.param(d, c, id=c[:60], marks=[pytest.mark.gpu] if _gpu(c) else [])
                                          for d, c in commands()])
def test_a_documented_command_runs(doc, command, workdir):
    if _gpu(command):
        torch = pytest.importorskip("torch")
        if not torch.cuda.is_available():
            pytest.skip("a GPU command: runs on a GPU")
    argv = shlex.split(command)
    if argv[0] in ("rung-opt", "rung-run"):  # the console scripts, through this interpreter
        tool = {"rung-opt": "opt_main", "rung-run": "run_main"}[argv[0]]
        argv = [sys.executable, "-c", f"import sys; from rung.cli import {tool}; sys.exit({tool}(sys.argv[1:]))", *argv[1:]]
    else:
        argv[0] = sys.executable
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{doc}: `{command}` exited {r.returncode}:\n{r.stderr[-2000:]}"
