"""Row and elementwise kernel benchmark: Rung's compiled rms_norm, layer_norm, softmax and fused SwiGLU
(silu(gate) * up) against torch eager and torch.compile in one run.

    python -m rung.bench_rows [--out DIR] [--quick]

Each op is one `rung.compile`d program, called on CUDA tensors; GPU time per call comes from CUDA graphs
(backend.bench_gemm.gpu_time_us). These kernels move memory, so each is judged by the bytes it must read
and write against the copy bandwidth measured in the same run. Writes bench_rows.md into --out.
"""

from __future__ import annotations


from backend.bench_gemm import bench_arguments, gpu_time_us, warm_up_clocks, write_report
from backend.bench_quant import copy_bandwidth

SHAPES = [(4096, 4096), (16384, 4096), (4096, 8192), (32768, 8192)]  # rows x columns
PROGRAMS = {
    "rms_norm": ("%y = graph.rms_norm %x, %w {{eps = 1.0e-05 : f64}} : ({t}, {v}) -> {t}", "%x: {t}, %w: {v}", 2),
    "layer_norm": ("%y = graph.layer_norm %x, %w, %b {{eps = 1.0e-05 : f64}} : ({t}, {v}, {v}) -> {t}", "%x: {t}, %w: {v}, %b: {v}", 2),
    "softmax": ("%y = graph.softmax %x {{dim = -1 : i64}} : ({t}) -> {t}", "%x: {t}", 2),
    "swiglu": ("%s = graph.silu %x : ({t}) -> {t}\n  %y = graph.mul %s, %u : ({t}, {t}) -> {t}", "%x: {t}, %u: {t}", 3),
}


def program(op: str, rows: int, cols: int, dtype: str) -> str:
    body, params, _ = PROGRAMS[op]
    t, v = f"tensor<{rows}x{cols}x{dtype}>", f"tensor<{cols}x{dtype}>"
    return f"func.func @main({params.format(t=t, v=v)}) -> {t} {{\n  {body.format(t=t, v=v)}\n  func.return %y : {t}\n}}\n"


def torch_op(op: str):
    import torch
    import torch.nn.functional as F

    return {"rms_norm": lambda x, w: F.rms_norm(x, x.shape[-1:], w, 1e-5),
            "layer_norm": lambda x, w, b: F.layer_norm(x, x.shape[-1:], w, b, 1e-5),
            "softmax": lambda x: torch.softmax(x, -1),
            "swiglu": lambda x, u: F.silu(x) * u}[op]


def bench(op: str, rows: int, cols: int, dtype) -> dict:
    import torch

    import rung

    name = {torch.float16: "f16", torch.bfloat16: "bf16"}[dtype]
    fn = rung.compile(program(op, rows, cols, name))
    n_args = PROGRAMS[op][1].count("%")
    args = [torch.randn(rows, cols, device="cuda", dtype=dtype) if i == 0 or op == "swiglu" else
            torch.randn(cols, device="cuda", dtype=dtype) for i in range(n_args)]
    ref = torch_op(op)
    out = fn(*args)
    err = (out.float() - ref(*args).float()).abs().max().item()
    compiled = torch.compile(ref)
    times = {"rung": gpu_time_us(lambda i: fn(*args), 1), "eager": gpu_time_us(lambda i: ref(*args), 1),
             "compile": gpu_time_us(lambda i: compiled(*args), 1)}
    moved = PROGRAMS[op][2] * rows * cols * 2
    return {"op": op, "rows": rows, "cols": cols, "dtype": name, "bytes": moved, "err": err, **times}


def main(argv=None) -> int:
    import torch

    args, dev, date = bench_arguments("python -m rung.bench_rows", "bench_rows.md", "two shapes", argv)
    bandwidth, _ = copy_bandwidth()
    warm_up_clocks()
    rows = []
    for r, c in SHAPES[:2] if args.quick else SHAPES:
        for op in PROGRAMS:
            row = bench(op, r, c, torch.bfloat16 if op == "swiglu" else torch.float16)
            rows.append(row)
            print(f"{op:10} {r:6} x {c:5} {row['dtype']}: rung {row['rung']:8.1f} us, eager {row['eager']:8.1f}, "
                  f"compile {row['compile']:8.1f} (max error {row['err']:.3g})", flush=True)
    lines = ["# Row and elementwise kernels: Rung vs torch eager and torch.compile", "",
             f"{dev}, {date}. GPU time per call (us) from CUDA graphs; % of copy bandwidth = the bytes an op must read "
             f"and write (inputs and output, weights aside) per second against the copy bandwidth measured in the run, "
             f"{bandwidth / 1e12:.2f} TB/s.", "",
             "| op | rows x cols | dtype | Rung us | % of copy bandwidth | torch eager us | torch.compile us | eager / Rung | compile / Rung |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['op']} | {r['rows']} x {r['cols']} | {r['dtype']} | {r['rung']:.1f} | "
                     f"{100 * r['bytes'] / (r['rung'] * 1e-6) / bandwidth:.0f}% | {r['eager']:.1f} | {r['compile']:.1f} | "
                     f"{r['eager'] / r['rung']:.2f} | {r['compile'] / r['rung']:.2f} |")
    write_report(args.out, "bench_rows.md", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
