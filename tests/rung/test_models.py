"""Transformers families compiled whole (`rung-run model.py --sim`): every op of each becomes Rung's kernels,
and the kernels on the CPU lane simulator compute what the model computes in PyTorch."""

from pathlib import Path

import pytest

pytest.importorskip("transformers")

from rung.models import run_model  # noqa: E402

FAMILY = '''import torch
from transformers import {config}, {model}


def model():
    torch.manual_seed(0)
    return {model}({config}(vocab_size=256, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=128{extra}))


def example_inputs():
    return (torch.randint(0, 256, ({batch}, 16)),)
'''
FAMILIES = {
    "qwen2": dict(config="Qwen2Config", model="Qwen2ForCausalLM", extra=", num_key_value_heads=2", batch=1),  # biases on q, k, v
    "mistral": dict(config="MistralConfig", model="MistralForCausalLM", extra=", num_key_value_heads=2, sliding_window=None", batch=1),
    "gemma": dict(config="GemmaConfig", model="GemmaForCausalLM", extra=", num_key_value_heads=1, head_dim=16", batch=1),  # (1 + w) norms
    "bert": dict(config="BertConfig", model="BertModel", extra="", batch=2),  # layer norms, unmasked attention, the pooler's [CLS] slice
}
VIT = '''import torch
from transformers import ViTConfig, ViTModel


def model():
    torch.manual_seed(0)
    return ViTModel(ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=160, image_size=32,
                              patch_size=8, num_channels=3))


def example_inputs():
    return (torch.randn(2, 3, 32, 32),)
'''
MODEL_FILES = {**{name: FAMILY.format(**params) for name, params in FAMILIES.items()},
               "vit": VIT}  # patches by a strided convolution, the class token broadcast and concatenated before them


@pytest.mark.parametrize("family", sorted(MODEL_FILES))
def test_a_transformers_family_compiles_whole_and_computes_as_pytorch(family, tmp_path, capsys):
    path = tmp_path / f"{family}.py"
    path.write_text(MODEL_FILES[family])
    assert run_model(str(path), "f16", gpu=False, progress=lambda msg: None) == 0
    assert "within 0.01" in capsys.readouterr().out


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["f16", "bf16"])
@pytest.mark.parametrize("family", sorted(MODEL_FILES))
def test_a_transformers_family_runs_whole_on_the_gpu_as_torch_does(family, dtype, tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU")
    from torch_checks import assert_model_runs_as_torch

    path = tmp_path / f"{family}.py"
    path.write_text(MODEL_FILES[family])
    assert_model_runs_as_torch(path, dtype)


@pytest.mark.parametrize("device", ["sim", pytest.param("gpu", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("example", ["mlp", "cnn", "encoder"])
def test_an_onnx_model_runs_compiled_against_onnxruntime(example, device, tmp_path, capsys):
    """`rung-run model.onnx --sim|--gpu`: an example (or torch's transformer encoder, its attention exported as
    MatMul and Softmax) exported by torch.onnx, compiled whole in f16, on random inputs against onnxruntime on the
    same (f16-rounded) inputs."""
    import warnings

    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    if device == "gpu" and not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU")
    from frontend.loading import load_model_file
    from rung.cli import run_main

    if example == "encoder":
        torch.manual_seed(0)
        layer = torch.nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, batch_first=True, activation="gelu")
        model, args = torch.nn.TransformerEncoder(layer, 1, enable_nested_tensor=False).eval(), (torch.randn(1, 16, 64),)
    else:
        model, args, _ = load_model_file(Path(__file__).parents[2] / "examples" / f"{example}.py")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(tmp_path / "m.onnx"), dynamo=False, opset_version=17)
    assert run_main([str(tmp_path / "m.onnx"), f"--{device}"]) == 0
    assert "vs onnxruntime" in capsys.readouterr().out
