"""The `ptx` dialect: one op per PTX instruction, over typed virtual registers.

Values are `!ptx.reg<kind>` (kind: pred, b16, b32, u32, s32, f32, b64, u64). A kernel is a
`ptx.kernel` whose entry block arguments are its parameters; `ptx.for` is a uniform counted
loop with loop-carried registers (printed as a branch back, with moves for the carried values).
`backend.ptx_text` prints a module; each op's `execute` gives its meaning for all threads of a
thread block at once (numpy arrays over threads), which the lane simulator (ir.simulator) drives.
"""

from dialects.ptx.base import (  # noqa: F401
    KINDS, RegType, reg, kind_of, PtxOp, SourceOp, SinkOp, MarkerOp, unpack_halves
)
from dialects.ptx.arith import (  # noqa: F401
    ImmOp, SPECIAL, SpecialRegOp, SharedBaseOp, BinaryOp, AddOp, SubOp, MulOp, AndOp, OrOp, XorOp, ShlOp, ShrOp,
    MinOp, MaxOp, DivOp, RemOp, MadOp, CvtOp, SetpOp, AndPredOp, SelpOp
)
from dialects.ptx.memory import (  # noqa: F401
    LoadOp, StoreOp, CpAsyncOp, cp_async_lanes, CpAsyncCommitOp, CpAsyncWaitOp, BarSyncOp, TrapOp, GridDepLaunchOp,
    GridDepWaitOp, ShflBflyOp
)
from dialects.ptx.mma import (  # noqa: F401
    LdmatrixOp, ldmatrix_lanes, EIGHT_BIT, MmaOp, SWIZZLE_128B, smem_descriptor, wgmma_operand, packed_values,
    eight_bit_values, WgmmaOp, WgmmaFenceOp, WgmmaCommitOp, WgmmaWaitOp, FenceProxyAsyncOp
)
from dialects.ptx.convert import (  # noqa: F401
    CvtPackOp, CvtHalfOp, CvtEightBitOp, CvtWidenOp, ApproxOp, Ex2Op, RcpOp, RsqrtOp, Lop3Op, PrmtOp, PackHalvesOp, UnpackHalvesOp, Fma2Op
)
from dialects.ptx.kernel import (  # noqa: F401
    YieldOp, ForOp, STATIC_SHARED_LIMIT, dynamic_shared, KernelOp, LaunchOp, run_kernel
)

from xdsl.ir import Dialect


PTX = Dialect("ptx", [
    ImmOp, SpecialRegOp, SharedBaseOp, AddOp, SubOp, MulOp, AndOp, OrOp, XorOp, ShlOp, ShrOp, MinOp, MaxOp, DivOp, RemOp, MadOp,
    CvtOp, SetpOp, AndPredOp, SelpOp, LoadOp, StoreOp, CpAsyncOp, CpAsyncCommitOp, CpAsyncWaitOp, BarSyncOp, TrapOp, GridDepLaunchOp,
    GridDepWaitOp, LdmatrixOp, MmaOp,
    CvtPackOp, CvtHalfOp, CvtEightBitOp, CvtWidenOp, Ex2Op, RcpOp, RsqrtOp, ShflBflyOp, Lop3Op, PrmtOp, PackHalvesOp, UnpackHalvesOp, Fma2Op, YieldOp, ForOp, KernelOp, LaunchOp,
    WgmmaOp, WgmmaFenceOp, WgmmaCommitOp, WgmmaWaitOp, FenceProxyAsyncOp,
], [RegType])
