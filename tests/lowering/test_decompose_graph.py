"""decompose-graph keeps each program's meaning and leaves no composite op behind."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from dialects import graph as g
from rung.context import make_context, verify
from ir.interpreter import run
from rung.passes import run_pipeline
from strategies import graph_programs, inputs_for

COMPOSITE = (g.LinearOp, g.SiluOp, g.SigmoidOp, g.GeluOp, g.SoftmaxOp, g.RmsNormOp, g.LayerNormOp)


@given(graph_programs(max_ops=8), st.integers(0, 2**31))
def test_decompose_graph_keeps_the_meaning(module, seed):
    inputs = inputs_for(module, seed)
    before = run(module, inputs)
    run_pipeline(module, "decompose-graph", make_context())
    verify(module)
    assert not any(isinstance(op, COMPOSITE) for op in module.walk())
    after = run(module, inputs)
    for a, b in zip(before, after):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
