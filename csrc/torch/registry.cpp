// Every op schema of qwen35_native, sorted by kernel family (STYLE habit 13). Implementations register in
// csrc/torch/<family>_ops.cpp; fake (meta) implementations in python/qwen35_native/ops/<family>.py.
#include <torch/library.h>

TORCH_LIBRARY(qwen35_native, m) {
  // ---- norm ----
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");
  m.def("fused_add_rms_norm(Tensor x, Tensor residual, Tensor weight, float eps) -> (Tensor, Tensor)");
}
