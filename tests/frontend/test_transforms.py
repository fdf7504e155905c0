"""Transforms over traced programs: quantize_linears and sparsify_linears keep the program's meaning for the
quantized and pruned weights, and say what they leave in float; fold_batch_norms keeps it exactly (up to rounding)."""

from pathlib import Path

import numpy as np
import pytest

from dialects import graph as g
from frontend.torch2ir import inputs_for, load_model_file, main, torch_to_ir
from frontend.transforms import fold_batch_norms, quantize_linears
from rung.context import parse_ir, print_ir, verify
from ir.errors import RungError
from ir.interpreter import find_function, run
from ir.numerics import QuantFormat

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.mark.parametrize("fmt", [QuantFormat("int4", 32, "f16"), QuantFormat("uint4", 64, "bf16", "original"),
                                 QuantFormat("nf4", 64, "f32"), QuantFormat("e2m1", 32, "e8m0"), QuantFormat("int8", None, "f16")],
                         ids=lambda f: f"{f.element}-g{f.group}-{f.zero}")
def test_quantized_program_is_the_float_program_on_dequantized_weights(fmt):
    model, args, kwargs = load_model_file(EXAMPLES / "mlp.py")
    module, weights, names = torch_to_ir(model, args, kwargs)
    float_module = module.clone()
    q_names, q_weights, kept = quantize_linears(module, names, weights, fmt)
    verify(module)
    assert kept == [] and print_ir(parse_ir(print_ir(module))) == print_ir(module)
    ops = [op.name for op in module.walk() if op.name.startswith("graph.")]
    assert ops.count("graph.qlinear") == 3 and "graph.linear" not in ops and ops.count("graph.add") == 3  # biases kept
    dequantized = dict(weights)
    for name in [n for n in names if n.endswith("weight")]:
        z = q_weights.get(f"{name}.zeros")
        dequantized[name] = fmt.dequantize(q_weights[f"{name}.qweight"], q_weights[f"{name}.scales"], z)
    got = run(module, inputs_for(q_names, q_weights, args, kwargs))[0]
    want = run(float_module, inputs_for(names, dequantized, args, kwargs))[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("preset", ["w8a8", "fp8"])
def test_eight_bit_activations_quantize_each_row_of_each_linear_at_every_call(preset):
    """W8A8 and FP8: graph.qlinear8 on the 8-bit weight and its per-channel scales; the program is the float program with
    each linear's input rounded per row (ir.numerics.quantize_rows) and its weight dequantized; a K that is not a
    multiple of 16 stays float with the reason."""
    from frontend.transforms import named_format
    from ir.numerics import EIGHT_BIT_PRESETS, quantize_rows

    model, args, kwargs = load_model_file(EXAMPLES / "llama.py")
    module, weights, names = torch_to_ir(model, args, kwargs)
    fmt = named_format(preset, "--quantize")
    assert fmt is EIGHT_BIT_PRESETS[preset]
    q_names, q_weights, kept = quantize_linears(module, names, weights, fmt)
    verify(module)
    assert sum(isinstance(op, g.QLinear8Op) for op in module.walk()) == 13 and not any(isinstance(op, g.QLinearOp) for op in module.walk())
    assert [r.split(":")[0] for r in kept] == [f"model.layers.{i}.mlp.down_proj.weight" for i in range(2)]
    assert all("K must be a multiple of 16, got 172" in r for r in kept)
    assert print_ir(parse_ir(print_ir(module))) == print_ir(module)
    op = next(op for op in module.walk() if isinstance(op, g.QLinear8Op))
    rng = np.random.default_rng(0)
    x, (n, k) = rng.standard_normal((3, op.x.type.get_shape()[-1])).astype(np.float32), op.qweight.type.get_shape()
    q, s = rng.integers(-127, 128, (n, k)).astype(np.float64), rng.random(n).astype(np.float32)
    if preset == "fp8":
        q = fmt.weight.fmt.round(q)
    xq, xs = quantize_rows(x, fmt.element)
    np.testing.assert_allclose(op.execute(x, q, s), (xq * xs[:, None]) @ (q * s[:, None]).T, rtol=1e-6, atol=1e-6)
    with pytest.raises(RungError, match="w8a8 scales each output channel and each token: it takes no group"):
        named_format("w8a8", "--quantize", 32)


def test_weights_that_cannot_be_quantized_stay_float_with_the_reason():
    model, args, kwargs = load_model_file(EXAMPLES / "llama.py")
    module, weights, names = torch_to_ir(model, args, kwargs)
    names, weights, kept = quantize_linears(module, names, weights, QuantFormat("int4", 32, "f16"))
    verify(module)
    assert sum(isinstance(op, g.QLinearOp) for op in module.walk()) == 13
    assert [r.split(":")[0] for r in kept] == [f"model.layers.{i}.mlp.down_proj.weight" for i in range(2)]
    assert all("does not divide the reduction axis of length 172" in r for r in kept)


def test_weights_named_to_keep_stay_float():
    model, args, kwargs = load_model_file(EXAMPLES / "llama.py")
    module, weights, names = torch_to_ir(model, args, kwargs)
    names, weights, kept = quantize_linears(module, names, weights, QuantFormat("int4", 32, "f16"), keep=("*lm_head*", "*.q_proj.*"))
    assert sum(isinstance(op, g.QLinearOp) for op in module.walk()) == 10 and "lm_head.weight" in names
    assert "lm_head.weight: kept as asked (*lm_head*)" in kept and "model.layers.1.self_attn.q_proj.weight: kept as asked (*.q_proj.*)" in kept


def test_tied_weights_stay_float():
    import torch
    from torch import nn

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(32, 64)
            self.head = nn.Linear(64, 32, bias=False)
            self.head.weight = self.embed.weight

        def forward(self, ids):
            return self.head(self.embed(ids))

    module, weights, names = torch_to_ir(Tied(), (torch.randint(0, 32, (1, 5)),))
    _, _, kept = quantize_linears(module, names, weights, QuantFormat("int4", 32, "f16"))
    assert len(kept) == 1 and "also used by graph.embedding" in kept[0]


def test_cli_quantizes_and_checks(capsys):
    """--check under --quantize holds the program to PyTorch running the same dequantized weights
    (the default tight bound), and reports the quantization's own error against the float model beside it."""
    assert main([str(EXAMPLES / "mlp.py"), "--quantize", "int4", "--group", "32", "--check", "--summary"]) == 0
    out, err = capsys.readouterr()
    assert "quantized 3 of 3 linears to int4, group 32, scale f16" in err and "graph.qlinear            3" in out
    assert "within 0.0001" in out
    same = float(out.split("same weights (dequantized, pruned) ")[1].split()[0])
    own = float(out.split("vs the float model ")[1].split()[0])
    assert same <= 1e-4 < own, out
    assert main([str(EXAMPLES / "mlp.py"), "--quantize", "int9"]) == 1
    assert "torch2ir: error: --quantize: unknown format 'int9'" in capsys.readouterr().err


@pytest.mark.parametrize("per", ["row", "tensor"])
@pytest.mark.parametrize("quantize", [None, QuantFormat("int4", 32, "f16"), QuantFormat("e4m3", 32, "bf16")], ids=str)
def test_sparse_program_is_the_float_program_on_pruned_weights(per, quantize):
    """sparsify_linears: each linear becomes graph.sparse_linear in Tiled-CSL, computing what the float program computes
    on the pruned (and quantized) weights, which dense_weights gives back by name."""
    from frontend.transforms import dense_weights, sparsify_linears
    from ir.sparse import prune

    model, args, kwargs = load_model_file(EXAMPLES / "mlp.py")
    module, weights, names = torch_to_ir(model, args, kwargs)
    float_module = module.clone()
    s_names, s_weights, kept = sparsify_linears(module, names, weights, 0.75, per, quantize=quantize)
    verify(module)
    assert kept == [] and print_ir(parse_ir(print_ir(module))) == print_ir(module)
    ops = [op.name for op in module.walk() if op.name.startswith("graph.")]
    assert ops.count("graph.sparse_linear") == 3 and "graph.linear" not in ops
    by_arg = dict(zip(find_function(module, "main").body.block.args, s_names))
    for op in [op for op in module.walk() if op.name == "graph.sparse_linear"]:  # each states its fullest tile, kernels' bound
        assert op.sparse.max_nnz.data == max(1, np.diff(s_weights[by_arg[op.offsets]]).max())
    pruned = dict(weights)
    for name in [n for n in names if n.endswith("weight")]:
        pruned[name] = prune(weights[name], 0.75, per)
        if quantize is not None:
            pruned[name] = quantize.dequantize(*quantize.quantize(pruned[name])[:2])
        assert s_weights[f"{name}.values"].size == np.count_nonzero(pruned[name])  # only the kept values are stored
    assert all(np.array_equal(dense, pruned[name]) for name, dense in dense_weights(module, s_names, s_weights).items())
    got = run(module, inputs_for(s_names, s_weights, args, kwargs))[0]
    want = run(float_module, inputs_for(names, pruned, args, kwargs))[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_sparsify_says_what_is_wrong(capsys):
    from frontend.transforms import sparsify_linears

    model, args, kwargs = load_model_file(EXAMPLES / "mlp.py")
    module, weights, names = torch_to_ir(model, args, kwargs)
    for call, message in ((lambda: sparsify_linears(module, names, weights, 1.0), r"sparsify: sparsity is a fraction in \[0, 1\)"),
                          (lambda: sparsify_linears(module, names, weights, 0.5, "col"), "pruning is per row or per tensor"),
                          (lambda: sparsify_linears(module, names, weights, 0.5, quantize=QuantFormat("uint4", 32, "f16", "quantized")),
                           "quantized sparse values take no zero point")):
        with pytest.raises(RungError, match=message):
            call()
    assert main([str(EXAMPLES / "mlp.py"), "--sparsify", "0.8", "--check", "--summary"]) == 0
    out, err = capsys.readouterr()
    assert "pruned 3 of 3 linears to 80% sparsity per row, stored in Tiled-CSL" in err and "graph.sparse_linear      3" in out
    assert "within 0.0001" in out
    assert main([str(EXAMPLES / "mlp.py"), "--sparsify", "0.5", "--quantize", "w8a8"]) == 1
    assert "the values of a sparse weight are quantized alone, not its activations" in capsys.readouterr().err


def test_batch_norms_fold_into_the_convolutions_before_them():
    """The CNN example (trained-like statistics): the program has no batch norm left, folded weights replace the
    convolutions' and the norms' parameters, and it computes what the unfolded program computes."""
    from frontend.torch2ir import Converter, export

    model, args, kwargs = load_model_file(EXAMPLES / "cnn.py")
    module, weights, names = Converter(export(model, args, kwargs)).convert()
    want = run(module, inputs_for(names, weights, args, kwargs))[0]
    names, weights = fold_batch_norms(module, names, weights)
    verify(module)
    ops = [op.name for op in module.walk() if op.name.startswith("graph.")]
    assert "graph.batch_norm" not in ops and ops.count("graph.conv2d") == 2
    assert [n for n in names if "folded" in n] == ["0.weight.folded", "0.weight.folded_bias", "4.weight.folded", "4.weight.folded_bias"]
    assert not any(n.startswith(("1.", "5.")) or n in ("0.weight", "4.weight") for n in names)  # the unfolded parameters are gone
    assert set(weights) == set(names) - {"input"}
    np.testing.assert_allclose(run(module, inputs_for(names, weights, args, kwargs))[0], want, rtol=1e-5, atol=1e-6)
