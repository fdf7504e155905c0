"""ONNX models to graph IR: the examples and transformers exported by torch.onnx, and onnx's own operator test
cases (models and expected outputs nobody here wrote; their integer inputs, axes, shapes and indices, made
constants as a static-shape compiler needs them), run on the interpreter against onnxruntime or the expected
outputs; bad files and unsupported operators are one clear error each."""

import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from frontend.onnx2ir import main, onnx_to_ir, relative_error  # noqa: E402
from ir.errors import RungError  # noqa: E402
from ir.interpreter import run  # noqa: E402

EXAMPLES = Path(__file__).parents[2] / "examples"

# onnx's operator tests whose operators Rung reads (their shapes, axes and bounds attributes or constants)
NODE_CASES = [
    "test_relu", "test_matmul_2d", "test_matmul_3d", "test_gemm_transposeA", "test_gemm_transposeB", "test_gemm_alpha",
    "test_gemm_beta", "test_softmax_axis_1", "test_softmax_default_axis", "test_logsoftmax_axis_1",
    "test_layer_normalization_2d_axis1", "test_layer_normalization_4d_axis_negative_1", "test_conv_with_strides_padding",
    "test_conv_with_strides_no_padding", "test_maxpool_2d_default", "test_maxpool_2d_pads", "test_averagepool_2d_default",
    "test_globalaveragepool", "test_batchnorm_example", "test_transpose_default", "test_transpose_all_permutations_1",
    "test_reshape_reordered_all_dims", "test_reshape_negative_dim", "test_concat_2d_axis_0", "test_slice",
    "test_slice_negative_axes", "test_gather_0", "test_gather_1", "test_gather_elements_0", "test_unsqueeze_axis_0",
    "test_squeeze", "test_reduce_mean_default_axes_keepdims_random", "test_reduce_sum_keepdims_random", "test_erf",
    "test_sigmoid", "test_tanh", "test_gelu_default_1", "test_gelu_tanh_1", "test_where_example",
    "test_split_equal_parts_1d_opset18", "test_flatten_axis1", "test_add_bcast", "test_mul_bcast", "test_div_bcast",
    "test_sub_bcast", "test_pow", "test_sqrt", "test_exp", "test_log", "test_neg", "test_abs", "test_reciprocal",
    "test_leakyrelu", "test_clip", "test_max_two_inputs", "test_min_two_inputs", "test_less", "test_greater", "test_equal",
    "test_shape", "test_sin", "test_cos", "test_identity", "test_dropout_default",
]


@lru_cache(maxsize=None)
def _node_cases() -> dict:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return {c.name: c for c in collect_testcases() if c.name in NODE_CASES}


def _export(model, args, path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(path), dynamo=False, opset_version=17, **kw)
    return path


@pytest.mark.parametrize("name", NODE_CASES)
def test_onnx_operator_cases_run_as_their_expected_outputs(name, tmp_path):
    from onnx import version_converter

    case = _node_cases()[name]
    model = case.model
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if not 13 <= opset <= 21:  # (the cases use each operator's newest opset: brought into the range Rung reads)
        model = version_converter.convert_version(model, min(max(opset, 13), 21))
    inputs, outputs = case.data_sets[0]
    for value, data in zip(list(model.graph.input), list(inputs)):  # integer inputs (axes, shapes, indices): constants
        if data.dtype.kind in "iu":
            model.graph.initializer.append(onnx.numpy_helper.from_array(data, value.name))
    onnx.save(model, tmp_path / "m.onnx")
    inputs = [a for a in inputs if a.dtype.kind not in "iu"]
    given = [v.name for v in model.graph.input if v.name not in {i.name for i in model.graph.initializer}]
    ir, weights, names, _, _ = onnx_to_ir(tmp_path / "m.onnx", {n: list(a.shape) for n, a in zip(given, inputs)})
    feed = dict(zip(given, inputs))
    got = run(ir, [weights[n] if n in weights else feed[n] for n in names])
    assert [np.shape(g) for g in got] == [np.shape(w) for w in outputs]
    assert relative_error(got, outputs) < 1e-5


@pytest.mark.parametrize("example", ["mlp", "cnn"])
def test_an_exported_example_converts_and_checks_against_onnxruntime(example, tmp_path, capsys):
    from frontend.loading import load_model_file

    model, args, _ = load_model_file(EXAMPLES / f"{example}.py")
    path = _export(model, args, tmp_path / f"{example}.onnx")
    assert main([str(path), "--check", "--summary", "-o", str(tmp_path / f"{example}.mlir")]) == 0
    out = capsys.readouterr().out
    assert "check: max relative error vs onnxruntime" in out and "within" in out
    assert (tmp_path / f"{example}.mlir").is_file() and (tmp_path / f"{example}.npz").is_file()


def test_an_exported_transformers_bert_with_a_symbolic_length_converts_once_bound(tmp_path, capsys):
    from transformers import BertConfig, BertModel

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            cfg = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=100)
            self.bert = BertModel(cfg).eval()

        def forward(self, ids):
            return self.bert(input_ids=ids).last_hidden_state

    torch.manual_seed(0)
    path = _export(Encoder().eval(), (torch.randint(0, 100, (1, 12)),), tmp_path / "bert.onnx", input_names=["input_ids"],
                   dynamic_axes={"input_ids": {1: "seq"}})
    assert main([str(path), "--summary"]) == 1
    assert "input 'input_ids' has shape [1, seq]: give its static shape with --shape input_ids=1xN" in capsys.readouterr().err
    assert main([str(path), "--check", "--summary", "--shape", "input_ids=1x9"]) == 0
    assert "within" in capsys.readouterr().out
    ir, weights, _, _, model = onnx_to_ir(path, {"input_ids": [1, 9]})
    ops = [op.name for op in ir.walk()]
    # the weights MatMul multiplies by become linears on [N, K] copies (attention's two matmuls a layer stay)
    assert ops.count("graph.linear") == 12 and ops.count("graph.matmul") == 4
    matmul_weights = {n.input[1] for n in model.graph.node if n.op_type == "MatMul"} & set(weights)
    initial = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    assert len(matmul_weights) == 12 and all(np.array_equal(weights[n], initial[n].T) for n in matmul_weights)
    from rung.context import make_context
    from rung.passes import run_pipeline

    run_pipeline(ir, "raise-attention", make_context())  # (what rung.compile runs first: the attention kernel's op)
    ops = [op.name for op in ir.walk()]
    assert ops.count("graph.sdpa") == 2 and "graph.matmul" not in ops
    # quantized like torch2ir's models: the same error as onnxruntime with the dequantized weights, its own error beside
    assert main([str(path), "--check", "--summary", "--shape", "input_ids=1x9", "--quantize", "int4", "--group", "32"]) == 0
    out = capsys.readouterr().out
    assert "graph.qlinear            12" in out and "within" in out and "the transform's own error" in out


def _one_node(path, node, shape=(2, 3), initializers=(), opset=17):
    """An ONNX file of one node from float input x to float output y."""
    from onnx import TensorProto, helper

    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, list(shape)) for n in ("x", "y"))
    onnx.save(helper.make_model(helper.make_graph([node], "g", [x], [y], list(initializers)),
                                opset_imports=[helper.make_opsetid("", opset)]), path)
    return path


def test_bad_files_and_unsupported_operators_are_one_error_each(tmp_path, capsys):
    from onnx import TensorProto, helper

    (tmp_path / "truncated.onnx").write_bytes(b"\x08\x07\x12\x05hello world")
    assert main([str(tmp_path / "truncated.onnx")]) == 1
    assert "not a valid ONNX model" in capsys.readouterr().err
    assert main([str(tmp_path / "none.onnx")]) == 1
    assert f"{tmp_path / 'none.onnx'}: no such ONNX file" in capsys.readouterr().err

    with pytest.raises(RungError, match="node 'activation' \\(Selu, opset 17\\): no conversion for this operator"):
        onnx_to_ir(_one_node(tmp_path / "selu.onnx", helper.make_node("Selu", ["x"], ["y"], name="activation")))

    weight = helper.make_tensor("w", TensorProto.FLOAT, [4096], np.zeros(4096, np.float32).tobytes(), raw=True)
    weight.data_location = onnx.TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="missing.bin")
    _one_node(tmp_path / "external.onnx", helper.make_node("Relu", ["x"], ["y"]), initializers=[weight])
    (tmp_path / "missing.bin").unlink(missing_ok=True)  # (the weights' file the model points to, gone)
    assert main([str(tmp_path / "external.onnx")]) == 1
    assert "missing.bin" in capsys.readouterr().err

    with pytest.raises(RungError, match="opset 11; Rung reads opsets 13 to 21"):
        onnx_to_ir(_one_node(tmp_path / "old.onnx", helper.make_node("Relu", ["x"], ["y"]), opset=11))


def test_an_op_the_converter_lacks_names_the_onnx_node(tmp_path, monkeypatch):
    """A node whose torch ops torch2ir cannot convert is named by the ONNX node, not by Python source."""
    from onnx import helper

    from frontend import onnx2ir

    monkeypatch.setitem(onnx2ir.OPS, "Relu", torch.atan)  # (an ATen op with no conversion)
    with pytest.raises(RungError, match="relu.onnx: node 'act' \\(Relu, opset 17\\): unsupported op aten.atan"):
        onnx_to_ir(_one_node(tmp_path / "relu.onnx", helper.make_node("Relu", ["x"], ["y"], name="act"), shape=(4, 4)))
