"""The `graph` dialect: whole-tensor ops, as traced from PyTorch.

Every op prints as `%r = graph.op %a, %b {attrs} : (operand types) -> result type`.
Each op knows its result type (`infer`, which is also its verifier: the result type must be
the inferred one) and its meaning on numpy (`execute`, over values that `ir.dtypes.compute_view`
widened; the interpreter rounds results to their element type). Ops whose result shape is not
a function of the operands (reshape, broadcast, cast, constant, arange, full) take the result
type as given and check it.

Semantics follow PyTorch's ops of the same name unless said otherwise: binary ops broadcast
as numpy does; `dim` attributes may be negative.
"""

from dialects.graph.base import (  # noqa: F401
    int_attr, ints_attr, float_attr, make_attr, attr_value, shape_of, broadcast_shapes, GraphOp, GivenResultOp,
    UnaryOp, BinaryOp
)
from dialects.graph.elementwise import (  # noqa: F401
    erf, NegOp, AbsOp, ExpOp, LogOp, SqrtOp, RsqrtOp, SinOp, CosOp, TanhOp, ErfOp, SigmoidOp, ReluOp, SiluOp,
    GeluOp, LogicalNotOp, AddOp, SubOp, MulOp, DivOp, PowOp, MaximumOp, MinimumOp, RemOp, LogicalBinaryOp,
    LogicalAndOp, LogicalOrOp, CompareOp, WhereOp, CastOp
)
from dialects.graph.linalg import (  # noqa: F401
    MatmulOp, LinearOp, QLinearOp, QLinear8Op, SparseLinearOp, DimOp, SoftmaxOp, CumsumOp, RmsNormOp, LayerNormOp, BatchNormOp, EmbeddingOp,
    RopeOp, SdpaOp
)
from dialects.graph.shape import (  # noqa: F401
    ReshapeOp, BroadcastOp, PermuteOp, SliceOp, CatOp, ReduceOp, GatherOp, IndexSelectOp, IndexOp, IndexCopyOp
)
from dialects.graph.conv import (  # noqa: F401
    Conv2dOp, Im2colOp, Pool2dOp, MaxPool2dOp, AvgPool2dOp, SourceOp, ConstantOp, ArangeOp, FullOp
)

from xdsl.ir import Dialect


GRAPH = Dialect("graph", [
    NegOp, AbsOp, ExpOp, LogOp, SqrtOp, RsqrtOp, SinOp, CosOp, TanhOp, ErfOp, SigmoidOp, ReluOp, SiluOp,
    GeluOp, LogicalNotOp, AddOp, SubOp, MulOp, DivOp, PowOp, MaximumOp, MinimumOp, RemOp,
    LogicalAndOp, LogicalOrOp, CompareOp, WhereOp, CastOp, MatmulOp, LinearOp, QLinearOp, QLinear8Op, SparseLinearOp,
    SoftmaxOp, CumsumOp, RmsNormOp, LayerNormOp, BatchNormOp, EmbeddingOp, RopeOp, SdpaOp,
    ReshapeOp, BroadcastOp, PermuteOp, SliceOp, CatOp, ReduceOp, GatherOp, IndexSelectOp, IndexOp, IndexCopyOp,
    Conv2dOp, Im2colOp, MaxPool2dOp, AvgPool2dOp, ConstantOp, ArangeOp, FullOp,
], [])
