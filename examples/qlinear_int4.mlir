// A W4A16 linear + SiLU: int4 weights with a f16 scale per group of 128 along K.
// graph-to-tile packs the weight (tile.pack_weight: codes in mma order in 16-row tiles, scales group-major)
// and schedules tile.matmul on it; tile-to-warp generates a kernel that decodes in registers.
func.func @main(%x: tensor<4x256xf16>, %q: tensor<96x256xsi4>, %s: tensor<96x2xf16>) -> tensor<4x96xf16> {
  %y = graph.qlinear %x, %q, %s {format = #lp.quant<si4, group 128, scale f16>} : (tensor<4x256xf16>, tensor<96x256xsi4>, tensor<96x2xf16>) -> tensor<4x96xf16>
  %z = graph.silu %y : (tensor<4x96xf16>) -> tensor<4x96xf16>
  func.return %z : tensor<4x96xf16>
}
