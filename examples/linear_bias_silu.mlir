// y = silu(x @ w^T + b) in f16: one fused tensor-core kernel (bias and SiLU in the epilogue).
//   rung-opt examples/linear_bias_silu.mlir -p graph-to-tile,tile-expand,tile-to-warp,smem-swizzle,warp-to-ptx --print-ir-after-all   (graph, tile, the block program, warp, ptx)
//   rung-opt examples/linear_bias_silu.mlir -p graph-to-tile,tile-expand,tile-to-warp,smem-swizzle,warp-to-ptx --emit ptx --target sm_90a
//   rung-run examples/linear_bias_silu.mlir            (the interpreter)
//   rung-run examples/linear_bias_silu.mlir --gpu      (lowered, JIT-loaded and run on the GPU)
func.func @main(%x: tensor<16x256xf16>, %w: tensor<512x256xf16>, %b: tensor<512xf16>) -> tensor<16x512xf16> {
  %y = graph.linear %x, %w, %b : (tensor<16x256xf16>, tensor<512x256xf16>, tensor<512xf16>) -> tensor<16x512xf16>
  %z = graph.silu %y : (tensor<16x512xf16>) -> tensor<16x512xf16>
  func.return %z : tensor<16x512xf16>
}
