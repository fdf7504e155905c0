// A linear layer with bias followed by SiLU: y = silu(x @ w^T + b).
func.func @main(%x: tensor<4x64xf32>, %w: tensor<128x64xf32>, %b: tensor<128xf32>) -> tensor<4x128xf32> {
  %y = graph.linear %x, %w, %b : (tensor<4x64xf32>, tensor<128x64xf32>, tensor<128xf32>) -> tensor<4x128xf32>
  %z = graph.silu %y : (tensor<4x128xf32>) -> tensor<4x128xf32>
  func.return %z : tensor<4x128xf32>
}
