// Torch glue of the thread block cluster test kernels (cluster_test_kernels.cuh): torch.ops.q35_emu_tests.*,
// CPU tensors on the emulator, CUDA tensors on an sm_90 GPU.
#include <ATen/ops/full.h>
#include <torch/library.h>

#include "cluster_test_kernels.cuh"
#include "emu_test_glue.h"

namespace q35::emutest {
namespace {

// -> (ids [blocks, 4], peer [blocks, threads]) int32
std::tuple<at::Tensor, at::Tensor> cluster_probe(const at::Tensor& like, int64_t blocks, int64_t cluster,
                                                 int64_t threads, int64_t variant) {
  TORCH_CHECK(blocks >= 1 && cluster >= 1 && threads >= 1 && threads <= 1024,
              "q35_emu_tests.cluster_probe: blocks, cluster >= 1, 1 <= threads <= 1024 (the launch checks the rest)");
  const auto opts = like.options().dtype(at::kInt);
  at::Tensor ids = at::full({blocks, 4}, -7, opts);
  at::Tensor peer = at::full({blocks, threads}, -7, opts);
  const ClusterProbeParams p{static_cast<int>(cluster), static_cast<int>(variant), ptr<int32_t>(ids),
                             ptr<int32_t>(peer)};
  Q35_RUN("cluster_probe", like, launch_cluster_probe, p, static_cast<int>(blocks), static_cast<int>(threads));
  return {ids, peer};
}

at::Tensor cluster_tma_probe(const at::Tensor& x, int64_t cluster, int64_t rows, int64_t variant) {
  check(x, at::kShort, "cluster_tma_probe", "x");
  TORCH_CHECK(x.dim() == 2 && x.size(1) == 64 && x.size(0) % (cluster * rows) == 0,
              "q35_emu_tests.cluster_tma_probe: x [clusters * cluster * rows, 64] int16");
  const int64_t clusters = x.size(0) / (cluster * rows);
  at::Tensor out = at::full({clusters * cluster, cluster * rows, 64}, -1, x.options());
  const ClusterTmaParams p{ptr<uint16_t>(x),    ptr<uint16_t>(out), static_cast<int>(cluster),
                           static_cast<int>(clusters), static_cast<int>(rows), 64, static_cast<int>(variant)};
  Q35_RUN("cluster_tma_probe", x, launch_cluster_tma_probe, p);
  return out;
}

}  // namespace
}  // namespace q35::emutest

TORCH_LIBRARY_FRAGMENT(q35_emu_tests, m) {
  m.def("cluster_probe(Tensor like, int blocks, int cluster, int threads, int variant) -> (Tensor, Tensor)");
  m.def("cluster_tma_probe(Tensor x, int cluster, int rows, int variant) -> Tensor");
}

#define Q35_IMPL_CLUSTER(m)                                      \
  m.impl("cluster_probe", &q35::emutest::cluster_probe);         \
  m.impl("cluster_tma_probe", &q35::emutest::cluster_tma_probe)

TORCH_LIBRARY_IMPL(q35_emu_tests, CPU, m) { Q35_IMPL_CLUSTER(m); }
#if defined(Q35_WITH_CUDA)
TORCH_LIBRARY_IMPL(q35_emu_tests, CUDA, m) { Q35_IMPL_CLUSTER(m); }
#endif
