"""torch2ir on models nobody here wrote, and on bad model files."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from frontend.torch2ir import check, load_model_file, main, torch_to_ir
from rung.context import parse_ir, print_ir, verify
from ir.errors import RungError

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.mark.parametrize("name", ["mlp", "cnn", "llama", "gpt2"])
def test_example_models_convert_and_match_pytorch(name):
    model, args, kwargs = load_model_file(EXAMPLES / f"{name}.py")
    module, weights, names = torch_to_ir(model, args, kwargs)
    verify(module)
    text = print_ir(module)
    assert print_ir(parse_ir(text)) == text  # the IR a user saves parses back unchanged
    assert check(module, names, weights, model, args, kwargs) < 1e-4


def test_transformers_models_export_without_cache():
    model, args, kwargs = load_model_file(EXAMPLES / "llama.py")
    assert kwargs == {"use_cache": False}
    module, weights, names = torch_to_ir(model, args, kwargs)
    assert len(module.ops.first.function_type.outputs) == 1  # logits only, no cache object
    assert "model.embed_tokens.weight" in names and names[-1] == "input_ids"


def write(tmp_path, body: str) -> str:
    f = tmp_path / "model.py"
    f.write_text("import torch\nfrom torch import nn\n" + body)
    return str(f)


def test_unsupported_op_names_the_op_and_the_source_line(tmp_path, capsys):
    path = write(tmp_path, """
class Sorter(nn.Module):
    def forward(self, x):
        return torch.sort(x).values * 2


def model():
    return Sorter()


def example_inputs():
    return (torch.randn(4, 5),)
""")
    assert main([path]) == 1
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.count("error") == 1
    assert f"torch2ir: error: {path}:6 (return torch.sort(x).values * 2): unsupported op aten.sort.default" in err


@pytest.mark.parametrize("body, message", [
    ("def example_inputs():\n    return (torch.randn(2),)\n", "defines no model()"),
    ("def model():\n    return nn.ReLU()\n", "defines no example_inputs()"),
    ("def model():\n    return 3\n\ndef example_inputs():\n    return ()\n", "model() returned int, not a torch.nn.Module"),
    ("def model():\n    return nn.ReLU()\n\ndef example_inputs():\n    return [torch.randn(2)]\n", "example_inputs() returned list, not a tuple"),
    ("raise ValueError('boom')\n", "import failed: ValueError: boom"),
    ("import sys\nsys.exit(3)\n", "import failed: SystemExit: 3"),
    ("def model():\n    raise RuntimeError('no weights')\n\ndef example_inputs():\n    return ()\n", "model() failed: RuntimeError: no weights"),
    ("def model():\n    return nn.ReLU()\n\ndef example_inputs():\n    raise KeyError('x')\n", "example_inputs() failed: KeyError: 'x'"),
    ("def model():\n    return nn.ReLU()\n\ndef example_inputs():\n    return (torch.randn(2),)\n\ndef example_kwargs():\n    return [1]\n",
     "example_kwargs() returned list, not a dict"),
    ("def model():\n    return nn.Linear(3, 4)\n\ndef example_inputs():\n    return (torch.randn(2, 5),)\n", "torch.export failed"),
    ("class M(nn.Module):\n    def forward(self, x):\n        return None\n\ndef model():\n    return M()\n\n"
     "def example_inputs():\n    return (torch.randn(2),)\n", "the model's forward returns no tensor"),
    ("class M(nn.Module):\n    def forward(self, x):\n        return torch.linalg.inv(x)\n\ndef model():\n    return M()\n\n"
     "def example_inputs():\n    return (torch.randn(3, 3),)\n", "model.py:5 (return torch.linalg.inv(x)): unsupported op aten.linalg_inv_ex"),  # an effect token
])
def test_bad_model_files_are_one_line_errors(tmp_path, capsys, body, message):
    assert main([write(tmp_path, body)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and len([line for line in err if "error" in line]) == 1


def test_files_in_the_current_directory_do_not_shadow_installed_modules(tmp_path):
    for name in ("ml_dtypes", "xdsl"):
        (tmp_path / f"{name}.py").write_text(f"open({str(tmp_path / 'RAN')!r}, 'w').close()\nraise SystemExit('shadowed')\n")
    r = subprocess.run([sys.executable, "-m", "frontend.torch2ir", str(EXAMPLES / "mlp.py"), "--summary"], capture_output=True, text=True,
                       cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert r.returncode == 0 and not (tmp_path / "RAN").exists(), r.stderr


def test_missing_model_file(tmp_path):
    with pytest.raises(RungError, match="no such model file"):
        load_model_file("/nonexistent/model.py")
    (tmp_path / "model.txt").write_text("x")
    with pytest.raises(RungError, match="a model file is a Python file"):
        load_model_file(tmp_path / "model.txt")


def test_command_writes_ir_and_weights(tmp_path):
    out = tmp_path / "mlp.mlir"
    r = subprocess.run([sys.executable, "-m", "frontend.torch2ir", str(EXAMPLES / "mlp.py"), "-o", str(out), "--check"],
                       capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert r.returncode == 0, r.stderr
    assert "check: max relative error vs PyTorch" in r.stdout and "graph.linear" in r.stdout
    weights = np.load(out.with_suffix(".npz"))
    assert weights["0.weight"].shape == (128, 64)
    assert "graph.linear" in out.read_text()



def test_output_into_a_missing_directory_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "missing" / "mlp.mlir"
    assert main([str(EXAMPLES / "mlp.py"), "-o", str(out)]) == 1
    assert f"torch2ir: error: cannot write {out}: No such file or directory" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists()
