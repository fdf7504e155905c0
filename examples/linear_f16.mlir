// y = x @ w^T + b in f16: the program every level of Rung can show.
//   rung-opt examples/linear_f16.mlir -p graph-to-tile,tile-to-ptx --print-ir-after-all   (graph, tile, ptx)
//   rung-opt examples/linear_f16.mlir -p graph-to-tile,tile-to-ptx --emit ptx --target sm_90a
//   rung-run examples/linear_f16.mlir                  (interpreter)
//   rung-run examples/linear_f16.mlir --gpu            (lowered, JIT-loaded and run on the GPU)
func.func @main(%x: tensor<16x256xf16>, %w: tensor<512x256xf16>, %b: tensor<512xf16>) -> tensor<16x512xf16> {
  %y = graph.linear %x, %w, %b : (tensor<16x256xf16>, tensor<512x256xf16>, tensor<512xf16>) -> tensor<16x512xf16>
  func.return %y : tensor<16x512xf16>
}
