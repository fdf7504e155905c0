"""ptx-to-text: print `ptx.kernel`s as a PTX module (.version, .target, .entry) for ptxas and the driver."""

from __future__ import annotations

from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue

from dialects.ptx import ForOp, KernelOp, YieldOp, kind_of
from ir.targets import PTX_VERSION, check_target

_CLASSES = {"pred": ("%p", ".pred"), "b16": ("%h", ".b16"), "b32": ("%r", ".b32"), "u32": ("%r", ".b32"),
            "s32": ("%r", ".b32"), "f32": ("%f", ".f32"), "b64": ("%rd", ".b64"), "u64": ("%rd", ".b64")}


class _Registers:
    def __init__(self):
        self.names: dict[SSAValue, str] = {}
        self.counts: dict[str, int] = {}

    def fresh(self, kind: str) -> str:
        prefix = _CLASSES[kind][0]
        n = self.counts.get(prefix, 0)
        self.counts[prefix] = n + 1
        return f"{prefix}{n}"

    def __call__(self, v: SSAValue) -> str:
        if v not in self.names:
            self.names[v] = self.fresh(kind_of(v))
        return self.names[v]

    def declarations(self) -> list[str]:
        decl = {p: t for p, t in _CLASSES.values()}
        return [f"    .reg {decl[p]} {p}<{n}>;" for p, n in sorted(self.counts.items())]


def kernel_text(kernel: KernelOp) -> str:
    r = _Registers()
    name = kernel.sym_name.data
    args = kernel.body.block.args
    params = ", ".join(f".param .{kind_of(a)} {name}_param_{i}" for i, a in enumerate(args))
    body = [f"    ld.param.{kind_of(a)} {r(a)}, [{name}_param_{i}];" for i, a in enumerate(args)]
    labels = [0]

    def emit_block(block, indent="    "):
        for op in block.ops:
            if isinstance(op, ForOp):
                emit_for(op, indent)
            elif isinstance(op, YieldOp):
                continue
            else:
                for result, operand in op.tied():  # updated in place: the operand's register
                    r.names[result] = r(operand)
                body.append(indent + op.text(r))

    def emit_for(op: ForOp, indent):
        n = labels[0]
        labels[0] += 1
        iv, *carried = op.body.block.args
        p = r.fresh("pred")
        body.append(f"{indent}mov.u32 {r(iv)}, {r(op.lb)};")
        for arg, init in zip(carried, op.inits):
            body.append(f"{indent}mov.{_mov(arg)} {r(arg)}, {r(init)};")
        body.append(f"{indent}setp.ge.u32 {p}, {r(iv)}, {r(op.ub)};")
        body.append(f"{indent}@{p} bra $L_end{n};")
        body.append(f"$L_loop{n}:")
        emit_block(op.body.block, indent)
        yielded = list(op.body.block.last_op.values)
        carried_names = {r(a) for a in carried}
        moves = [(a, v) for a, v in zip(carried, yielded) if r(a) != r(v)]
        if any(r(v) in carried_names for _, v in moves):  # a parallel copy: go through temporaries
            temps = [(a, r.fresh(kind_of(a))) for a, _ in moves]
            body.extend(f"{indent}mov.{_mov(a)} {t}, {r(v)};" for (a, t), (_, v) in zip(temps, moves))
            body.extend(f"{indent}mov.{_mov(a)} {r(a)}, {t};" for a, t in temps)
        else:
            body.extend(f"{indent}mov.{_mov(a)} {r(a)}, {r(v)};" for a, v in moves)
        body.append(f"{indent}add.u32 {r(iv)}, {r(iv)}, {r(op.step)};")
        body.append(f"{indent}setp.lt.u32 {p}, {r(iv)}, {r(op.ub)};")
        body.append(f"{indent}@{p} bra $L_loop{n};")
        body.append(f"$L_end{n}:")
        for res, arg in zip(op.results_, carried):
            r.names[res] = r(arg)

    emit_block(kernel.body.block)
    shared = kernel.shared_bytes.value.data
    head = [f".visible .entry {name}({params})", f".reqntid {kernel.threads.value.data}", "{"]
    if kernel.min_blocks is not None:
        head.insert(2, f".minnctapersm {kernel.min_blocks.value.data}")
    decls = r.declarations()
    if kernel.dynamic_shared_bytes:  # dynamic shared memory is declared at module scope
        head.insert(0, f".extern .shared .align 128 .b8 {name}_smem[];")
    elif shared:
        decls.append(f"    .shared .align 128 .b8 {name}_smem[{shared}];")
    return "\n".join(head + decls + body + ["    ret;", "}"])


def _mov(v: SSAValue) -> str:
    return {"pred": "pred", "b16": "b16", "f32": "f32", "b64": "b64", "u64": "b64"}.get(kind_of(v), "b32")


def module_text(module: ModuleOp | KernelOp, target: str = "sm_80") -> str:
    """The PTX module of every ptx.kernel in `module`."""
    check_target(target)
    kernels = [module] if isinstance(module, KernelOp) else [op for op in module.walk() if isinstance(op, KernelOp)]
    head = [f".version {PTX_VERSION}", f".target {target}", ".address_size 64", ""]
    return "\n".join(head + [kernel_text(k) + "\n" for k in kernels])
