"""The generation benchmark's programs are checked before device time goes to them: one layer of its LLaMA shape,
its prefill and its decode step, in each of its weight formats, compiles for sm_90a and assembles without spills."""

import shutil

import pytest
import torch

import rung
from frontend.causal_lm import CachedCausalLM
from frontend.torch2ir import torch_to_ir
from frontend.transforms import named_format, quantize_linears
from machine_code import assert_assembles_without_spills
from rung import bench_generate
from rung.bench_models import llama


@pytest.fixture(scope="module")
def exported():
    """One layer of each shape (the 8B's with a 1B's vocabulary: only its head's N differs), its prefill and decode
    steps exported once: (module, weights, names) by (shape, tokens)."""
    shapes = {name: {**shape, "layers": 1} for name, shape in bench_generate.SHAPES.items()}
    shapes["8b"]["vocab"] = 32000
    programs = {}
    for name, shape in shapes.items():
        step = CachedCausalLM(llama(**shape), bench_generate.PROMPT + bench_generate.NEW, 1)
        for tokens in (bench_generate.PROMPT, 1):
            programs[name, tokens] = torch_to_ir(step, (torch.zeros((1, tokens), dtype=torch.int64), torch.arange(tokens)))
    return programs


@pytest.mark.parametrize("shape, fmt", [("1b", fmt) for fmt in bench_generate.FORMATS] + [("8b", "w8a8")])
def test_every_benchmarked_step_compiles_without_spills(shape, fmt, exported, tmp_path):
    quantized = {}  # the prefill's quantized weights serve the decode step too
    for tokens in (bench_generate.PROMPT, 1):
        module, weights, names = exported[shape, tokens]
        module = module.clone()
        if fmt != "f16":
            quantize_linears(module, names, weights, named_format(fmt, "--formats"), quantized, keep=("*lm_head*",))
        fn = rung.compile(module, "sm_90a")
        if shutil.which("ptxas"):
            assert_assembles_without_spills(fn.ptx, "sm_90a", tmp_path)


def test_without_a_gpu_or_with_a_bad_format_it_says_so(capsys):
    assert bench_generate.main(["--formats", "int4,int9"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bench_generate: error: --formats: unknown format 'int9'")
    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    assert bench_generate.main(["--formats", "int4"]) == 1 and "no CUDA GPU here" in capsys.readouterr().err


def test_the_dram_floor_counts_every_weight_a_decode_step_reads_and_the_caches_up_to_the_position():
    """rung_footprint on a simulator Generator that has run: the weights whole but the embedding table (a lookup), the
    caches in proportion to the position; held: every weight and table, the whole caches and the largest arena."""
    from rung.generate import Generator

    torch.manual_seed(0)
    lm = llama(layers=2, hidden=64, intermediate=128, heads=4, kv_heads=2, vocab=96).half().eval()
    lm.config.tie_word_embeddings = False
    gen = Generator(lm, 16, device="simulator")
    gen.generate([3, 1, 4], 2)
    read, held = bench_generate.rung_footprint(gen, 8)
    params = {name: p for name, p in lm.named_parameters()}
    weights = sum(p.numel() * 2 for name, p in params.items() if "embed_tokens" not in name)
    caches = 2 * 2 * 1 * 2 * 16 * 16 * 2  # layers x (keys, values) x [batch, kv heads, positions, head dim] f16
    assert read == weights + caches * 8 // 16
    arena = max(p.compiled.memory.arena_bytes for p in gen._programs.values())
    others = [v for name, v in gen._state.items() if "cache" not in name and name.removeprefix("lm.") not in params]  # (rotary tables)
    assert arena > 0 and held == weights + params["model.embed_tokens.weight"].numel() * 2 + caches + arena + bench_generate._bytes(others)
