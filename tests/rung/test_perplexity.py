"""The perplexity script: its measure against cases with a known answer, and a real model's formats."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ir.errors import RungError
from ir.numerics import quant_format
from rung.perplexity import bits_per_weight, evaluate, perplexity, table


@given(st.integers(2, 50), st.integers(2, 20), st.integers(0, 2**31))
def test_uniform_logits_have_the_vocabulary_as_perplexity(vocab, tokens, seed):
    ids = np.random.default_rng(seed).integers(0, vocab, tokens)
    assert perplexity(np.full((tokens, vocab), 3.0), ids) == pytest.approx(vocab)


@given(st.integers(2, 50), st.integers(2, 20), st.integers(0, 2**31))
def test_confident_right_guesses_approach_one_and_wrong_ones_grow(vocab, tokens, seed):
    ids = np.random.default_rng(seed).integers(0, vocab, tokens)
    logits = np.zeros((tokens, vocab))
    logits[np.arange(tokens - 1), ids[1:]] = 30.0
    assert perplexity(logits, ids) == pytest.approx(1.0, abs=1e-6)
    logits[np.arange(tokens - 1), ids[1:]] = -30.0
    assert perplexity(logits, ids) > vocab


def test_bits_per_weight_count_codes_scales_and_zeros():
    assert bits_per_weight(quant_format("int4")) == 4 + 16 / 128
    assert bits_per_weight(quant_format("uint4")) == 4 + (16 + 4) / 128
    assert bits_per_weight(quant_format("mxfp4")) == 4 + 8 / 32


def test_smollm2_int8_keeps_the_float_perplexity(smollm2):
    rows = evaluate("smollm2", ["float", "int8"], 48, loaded=smollm2)
    (_, _, base, _), (_, bits, int8, _) = rows
    assert 1 < base < 1000 and bits == 8 and abs(int8 / base - 1) < 0.05
    assert "| int8 | 8.00 |" in table("smollm2", 48, rows)


def test_an_unknown_format_is_named_before_the_model_loads():
    with pytest.raises(RungError, match="--formats: unknown format 'int9'"):
        evaluate("no-such-model", ["float", "int9"], 8)
