"""rung-opt and rung-run as users run them: real processes, exit codes, one-line errors."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rung.passes import LOWER_TO_PTX, PASSES

GEMM = """func.func @main(%x: tensor<4x8xf32>, %w: tensor<16x8xf32>, %b: tensor<16xf32>) -> tensor<4x16xf32> {
  %y = graph.linear %x, %w, %b : (tensor<4x8xf32>, tensor<16x8xf32>, tensor<16xf32>) -> tensor<4x16xf32>
  %z = graph.silu %y : (tensor<4x16xf32>) -> tensor<4x16xf32>
  func.return %z : tensor<4x16xf32>
}
"""


def cli(tool, *args, stdin=None):
    code = f"import sys; from rung.cli import {tool}; sys.exit({tool}(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], input=stdin, capture_output=True, text=True)


def test_opt_runs_a_pipeline_and_prints_every_level(tmp_path):
    f = tmp_path / "gemm.mlir"
    f.write_text(GEMM)
    r = cli("opt_main", str(f), "-p", "decompose-graph,cse", "--print-ir-after-all")
    assert r.returncode == 0, r.stderr
    assert "graph.matmul" in r.stdout and "graph.linear" not in r.stdout
    assert "IR after decompose-graph" in r.stderr and "IR after cse" in r.stderr


def test_opt_reads_stdin_and_round_trips():
    r = cli("opt_main", stdin=GEMM)
    assert r.returncode == 0 and r.stdout == "builtin.module {\n" + "".join("  " + line + "\n" for line in GEMM.splitlines()) + "}\n"


def test_opt_lists():
    assert all(name in cli("opt_main", "--list-passes").stdout for name in PASSES)
    assert "graph" in cli("opt_main", "--list-dialects").stdout


@pytest.mark.parametrize("text, args, message", [
    (GEMM.replace("tensor<4x16xf32> {", "tensor<4x16xf32> {\n  %q = graph.nope %x : (tensor<4x8xf32>) -> tensor<4x8xf32>"), [],
     "x.mlir:2:"),
    (GEMM.replace("-> tensor<4x16xf32>\n  %z", "-> tensor<4x15xf32>\n  %z").replace("%y : (tensor<4x16xf32>) -> tensor<4x16xf32>", "%y : (tensor<4x15xf32>) -> tensor<4x16xf32>"),
     [], "x.mlir:2:3: 'graph.linear' op result type must be tensor<4x16xf32>, got tensor<4x15xf32>"),
    (GEMM, ["-p", "no-such-pass"], "unknown pass 'no-such-pass'"),
    (GEMM, ["-p", "decompose-graph{"], "bad pass pipeline"),
    (GEMM, ["-p", "decompose-graph{bogus=1}"], "pass 'decompose-graph'"),
])
def test_opt_errors_are_one_line_with_exit_1(tmp_path, text, args, message):
    f = tmp_path / "x.mlir"
    f.write_text(text)
    r = cli("opt_main", str(f), *args)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert message in r.stderr, r.stderr


def test_opt_missing_file():
    r = cli("opt_main", "/nonexistent.mlir")
    assert r.returncode == 1 and "cannot read /nonexistent.mlir" in r.stderr


def test_run_with_npy_inputs_and_outputs(tmp_path):
    f = tmp_path / "gemm.mlir"
    f.write_text(GEMM)
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in ((4, 8), (16, 8), (16,))]
    paths = []
    for i, a in enumerate(arrays):
        paths.append(str(tmp_path / f"in{i}.npy"))
        np.save(paths[-1], a)
    r = cli("run_main", str(f), "-i", *paths, "-o", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    y = arrays[0] @ arrays[1].T + arrays[2]
    np.testing.assert_allclose(np.load(tmp_path / "out" / "result0.npy"), y / (1 + np.exp(-y)), rtol=1e-5, atol=1e-6)


def test_run_random_inputs_and_errors(tmp_path):
    f = tmp_path / "gemm.mlir"
    f.write_text(GEMM)
    r = cli("run_main", str(f), "--seed", "3")
    assert r.returncode == 0 and "result 0: [4, 16] float32" in r.stdout
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((2, 2), np.float32))
    r = cli("run_main", str(f), "-i", str(bad), str(bad), str(bad))
    assert r.returncode == 1 and "argument 0: expected shape [4, 8]" in r.stderr and "Traceback" not in r.stderr
    r = cli("run_main", str(f), "-f", "other")
    assert r.returncode == 1 and "no function @other" in r.stderr


def test_opt_lowers_a_linear_to_ptx(tmp_path):
    f = tmp_path / "lin.mlir"
    f.write_text(GEMM.replace("f32", "f16").replace(", %b: tensor<16xf16>", "").replace(", %b :", " :").replace(
        ", tensor<16xf16>) -> tensor<4x16xf16>\n  %z", ") -> tensor<4x16xf16>\n  %z"))
    r = cli("opt_main", str(f), "-p", LOWER_TO_PTX, "--emit", "ptx", "--target", "sm_90a")
    assert r.returncode == 0, r.stderr
    assert ".target sm_90a" in r.stdout and "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32" in r.stdout
    r = cli("opt_main", str(f), "--emit", "ptx")
    assert r.returncode == 1 and "holds no ptx.kernel" in r.stderr


def test_lower_to_ptx_is_one_pass_and_names_what_it_cannot_lower(tmp_path):
    f = tmp_path / "gemm.mlir"
    f.write_text(GEMM)
    r = cli("opt_main", str(f), "-p", "lower-to-ptx")
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert "lower-to-ptx: 'graph.linear' (%y) in @main has no GPU kernel yet: its operands are f32: Rung's kernels take f16 or bf16" in r.stderr
    r = cli("opt_main", str(f), "--emit", "ptx")
    assert r.returncode == 1 and "lower it first (-p lower-to-ptx" in r.stderr
    f16 = tmp_path / "f16.mlir"
    f16.write_text(GEMM.replace("f32", "f16"))
    r = cli("opt_main", str(f16), "-p", "lower-to-ptx{target=sm_90a}", "--emit", "ptx", "--target", "sm_90a")
    assert r.returncode == 0 and ".entry rung_gemm_f16" in r.stdout and "_bias_silu" in r.stdout


def test_list_passes_gives_whole_descriptions_and_options():
    out = cli("opt_main", "--list-passes").stdout
    assert "graph-to-tile{target='' bm=0 bn=0 bk=0 warps_m=0 warps_n=0 stages=0 split_k=0 raster=0 programmatic=true}" in out
    assert "lower-to-ptx{target=''}" in out
    assert "the other options override the GEMMs' schedules." in out  # the description's last words, not cut


@pytest.mark.parametrize("tool", ["opt_main", "run_main"])
@pytest.mark.parametrize("data, message", [
    (b"\xca", "x.mlir:1: not UTF-8 text (byte 0xca at offset 0)"),
    (b"func.func @main() {\n  func.return\n}\n\xff", "x.mlir:4: not UTF-8 text (byte 0xff at offset"),
])
def test_input_that_is_not_text_is_one_line(tool, tmp_path, data, message):
    f = tmp_path / "x.mlir"
    f.write_bytes(data)
    r = cli(tool, str(f))
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and message in r.stderr and "Traceback" not in r.stderr


def test_run_sim_runs_the_compiled_kernels_on_the_cpu(tmp_path):
    f = tmp_path / "norm.mlir"
    f.write_text("func.func @main(%x: tensor<3x40xf16>, %w: tensor<40xf16>) -> tensor<3x40xf16> {\n"
                 "  %y = graph.rms_norm %x, %w {eps = 1.0e-05 : f64} : (tensor<3x40xf16>, tensor<40xf16>) -> tensor<3x40xf16>\n"
                 "  func.return %y : tensor<3x40xf16>\n}\n")
    sim = cli("run_main", str(f), "--sim", "--seed", "4", "-o", str(tmp_path / "sim"))
    ref = cli("run_main", str(f), "--seed", "4", "-o", str(tmp_path / "ref"))
    assert sim.returncode == 0 and ref.returncode == 0, sim.stderr + ref.stderr
    assert "running on the CPU lane simulator: rung_rms_norm_f16_n40" in sim.stdout
    got, want = (np.load(tmp_path / d / "result0.npy").astype(np.float32) for d in ("sim", "ref"))
    assert np.abs(got - want).max() <= 4e-3 * np.abs(want).max()


def test_docgen_help_prints_help_and_writes_nothing():
    r = subprocess.run([sys.executable, "-m", "rung.docgen", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "usage: python -m rung.docgen" in r.stdout and "wrote" not in r.stdout


def test_run_takes_torch2irs_weights_by_name(tmp_path):
    """`-i model.npz` binds the arguments its keys name (torch2ir's weights); .npy files or random inputs the rest."""
    f = tmp_path / "m.mlir"
    f.write_text(GEMM.replace("%w", "%_0.weight").replace("%b", "%_0.bias"))
    rng = np.random.default_rng(2)
    w, b, x = rng.standard_normal((16, 8)).astype(np.float32), rng.standard_normal(16).astype(np.float32), rng.standard_normal((4, 8)).astype(np.float32)
    np.savez(tmp_path / "m.npz", **{"0.weight": w, "0.bias": b})
    np.save(tmp_path / "x.npy", x)
    r = cli("run_main", str(f), "-i", str(tmp_path / "m.npz"), str(tmp_path / "x.npy"), "-o", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    y = x @ w.T + b
    np.testing.assert_allclose(np.load(tmp_path / "out" / "result0.npy"), y / (1 + np.exp(-y)), rtol=1e-5, atol=1e-6)
    r = cli("run_main", str(f), "-i", str(tmp_path / "m.npz"))
    assert r.returncode == 0 and "random inputs for %x" in r.stderr
    np.savez(tmp_path / "other.npz", **{"9.weight": w})
    r = cli("run_main", str(f), "-i", str(tmp_path / "other.npz"))
    assert r.returncode == 1 and "_9.weight: in the .npz but not arguments of the function" in r.stderr
    (tmp_path / "t.npy").write_text("just text")
    r = cli("run_main", str(f), "-i", str(tmp_path / "t.npy"))
    assert r.returncode == 1 and "not a .npy or .npz file" in r.stderr


@pytest.mark.parametrize("tool, flag, target", [("opt_main", "-o", "missing/y.mlir"), ("run_main", "-o", "file.txt/out")])
def test_output_that_cannot_be_written_is_one_line(tool, flag, target, tmp_path):
    (tmp_path / "file.txt").write_text("a file, not a folder")
    f = tmp_path / "gemm.mlir"
    f.write_text(GEMM)
    r = cli(tool, str(f), flag, str(tmp_path / target))
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "cannot write" in r.stderr and "Traceback" not in r.stderr


TWO_INPUTS = """func.func @main(%x: tensor<4xsi4>, %y: tensor<2x3xf32>) -> (tensor<4xsi4>, tensor<2x3xf32>) {
  func.return %x, %y : tensor<4xsi4>, tensor<2x3xf32>
}
"""


@pytest.mark.parametrize("x, y, message", [
    (np.array([1, 2, 100, -3], np.int8), np.zeros((2, 3), np.float32), "argument 0 (%x): 100 at index [2] is outside si4's range -8..7"),
    (np.zeros(4, np.int8), np.ones((2, 3), bool), "argument 1 (%y): got numpy bool, which f32 elements do not hold exactly"),
    (np.zeros(4, np.int8), np.ones((2, 3), np.int64), "argument 1 (%y): got numpy int64"),
    (np.zeros(4, np.float32), np.ones((2, 3), np.float32), "argument 0 (%x): got numpy float32, which si4"),
])
def test_run_refuses_input_files_that_would_change_values(tmp_path, capsys, x, y, message):
    from rung.cli import run_main

    (tmp_path / "f.mlir").write_text(TWO_INPUTS)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    assert run_main([str(tmp_path / "f.mlir"), "-i", str(tmp_path / "x.npy"), str(tmp_path / "y.npy")]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


@pytest.mark.parametrize("y, note", [(np.arange(6, dtype=">f4").reshape(2, 3), ""),  # big-endian: the same values
                                     (np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)), ""),
                                     (np.arange(6, dtype=np.float16).reshape(2, 3), ""),  # widened exactly
                                     (np.arange(6, dtype=np.float64).reshape(2, 3) + 1e-9, "numpy float64 rounded to f32")])
def test_run_takes_input_files_by_value(tmp_path, capsys, y, note):
    from rung.cli import run_main

    (tmp_path / "f.mlir").write_text(TWO_INPUTS)
    np.save(tmp_path / "x.npy", np.array([-8, 0, 3, 7], np.int8))
    np.save(tmp_path / "y.npy", y)
    assert run_main([str(tmp_path / "f.mlir"), "-i", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "-o", str(tmp_path / "o")]) == 0
    assert note in capsys.readouterr().err
    np.testing.assert_array_equal(np.load(tmp_path / "o" / "result0.npy"), [-8, 0, 3, 7])
    out = np.load(tmp_path / "o" / "result1.npy")
    assert out.dtype == np.float32 and out.flags.c_contiguous and np.array_equal(out, (np.arange(6).reshape(2, 3) + (1e-9 if note else 0)).astype(np.float32))


EXAMPLES = __import__("pathlib").Path(__file__).parents[2] / "examples"


def test_run_compiles_a_model_file_whole_and_compares_with_pytorch(capsys):
    from rung.cli import run_main

    assert run_main([str(EXAMPLES / "mlp.py"), "--sim"]) == 0
    out, err = capsys.readouterr()
    assert "5 kernel launches" in err and "max relative error vs PyTorch" in out and "on the CPU lane simulator (f16; within 0.01)" in out


def test_run_gpu_without_a_gpu_says_so_and_simulates(capsys, monkeypatch):
    import torch

    from rung.cli import run_main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert run_main([str(EXAMPLES / "mlp.py"), "--gpu"]) == 0
    out, err = capsys.readouterr()
    assert "no CUDA GPU here: running the compiled kernels on the CPU lane simulator instead" in err
    assert "on the CPU lane simulator (f16; within 0.01)" in out


@pytest.mark.parametrize("args, message", [
    (["sine.py", "--sim"], "sine.py:6 (return torch.sin(x)): rung.compile: 'graph.sin' (%sin) in @main has no GPU kernel yet"),
    (["mlp.py"], "a model file runs compiled, with --gpu or --sim"),
    (["mlp.py", "--sim", "-i", "x.npy"], "a model file runs compiled, with --gpu or --sim, on its own example inputs"),
])
def test_a_model_file_that_cannot_run_compiled_is_one_line(capsys, tmp_path, args, message):
    from rung.cli import run_main

    (tmp_path / "sine.py").write_text("import torch\n\n\nclass Sine(torch.nn.Module):\n    def forward(self, x):\n        return torch.sin(x)\n\n\n"
                                      "def model():\n    return Sine()\n\n\ndef example_inputs():\n    return (torch.randn(4, 8),)\n")
    assert run_main([str(EXAMPLES / args[0] if args[0] != "sine.py" else tmp_path / "sine.py"), *args[1:]]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("rung-run: error") == 1


LLAMA_FILE = str(Path(__file__).parents[2] / "examples" / "llama.py")


def test_generate_prints_the_new_ids_of_a_model_file():
    r = cli("generate_main", "--model", LLAMA_FILE, "--prompt-ids", "1,2,3", "--max-new-tokens", "4", "--print-ids")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip().rstrip(",").split(",")) == 4
    assert "generating on the IR interpreter" in r.stderr and "tokens/s" in r.stderr


def test_generate_speculates_with_a_quantized_copy_as_its_draft():
    plain = cli("generate_main", "--model", LLAMA_FILE, "--prompt-ids", "1,2,3", "--max-new-tokens", "9", "--print-ids")
    drafted = cli("generate_main", "--model", LLAMA_FILE, "--prompt-ids", "1,2,3", "--max-new-tokens", "9", "--print-ids",
                  "--draft", "int8", "--speculate-k", "3")
    assert drafted.returncode == 0 and drafted.stdout == plain.stdout
    assert "the draft's tokens kept:" in drafted.stderr


@pytest.mark.parametrize("args, message", [
    (["--prompt", "hello"], "comes with no tokenizer: give the prompt as --prompt-ids"),
    (["--prompt-ids", "1,x"], "--prompt-ids takes comma-separated integers"),
    (["--prompt-ids", "1", "--top-p", "2"], "top-p must lie in"),
    (["--prompt-ids", "1", "--quantize", "int5"], "--quantize:"),
    (["--prompt-ids", "1", "--draft", "int4", "--speculate-k", "0"], "the draft proposes k >= 1 tokens at a time"),
])
def test_generate_errors_are_one_line_and_exit_1(args, message):
    r = cli("generate_main", "--model", LLAMA_FILE, *args)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert message in r.stderr.strip().splitlines()[-1]
