// RMS norm over the last dimension of an f16 tensor: a row program (#tile.rows), one thread block
// per row, the row's sum of squares reduced by warp shuffles.
//   rung-opt examples/rms_norm.mlir -p graph-to-tile          (the row program)
//   rung-opt examples/rms_norm.mlir -p lower-to-ptx --emit ptx
//   rung-run examples/rms_norm.mlir --sim                     (its kernel on the CPU lane simulator)
func.func @main(%x: tensor<4x16x1024xf16>, %w: tensor<1024xf16>) -> tensor<4x16x1024xf16> {
  %y = graph.rms_norm %x, %w {eps = 1.0e-05 : f64} : (tensor<4x16x1024xf16>, tensor<1024xf16>) -> tensor<4x16x1024xf16>
  func.return %y : tensor<4x16x1024xf16>
}
