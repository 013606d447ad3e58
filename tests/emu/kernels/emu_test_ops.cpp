// Torch glue of the emulator's test kernels: torch.ops.q35_emu_tests.*, one implementation for CPU tensors (the
// kernels on the SIMT emulator) and CUDA tensors (the same kernels on the GPU). Module: qwen35_native._emu_tests.
// Registers hold raw 32-bit patterns, carried in int32 tensors.
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <Python.h>
#include <torch/library.h>

#include "emu_test_glue.h"
#include "emu_test_kernels.cuh"

namespace q35::emutest {
namespace {

std::tuple<at::Tensor, at::Tensor> shuffle(const at::Tensor& values, const at::Tensor& operand, int64_t mode,
                                           int64_t width, int64_t mask) {
  check(values, at::kLong, "shuffle", "values");
  check(operand, at::kInt, "shuffle", "operand");
  at::Tensor out32 = at::empty(values.sizes(), values.options().dtype(at::kInt));
  at::Tensor out64 = at::empty(values.sizes(), values.options());
  const ShuffleParams p{static_cast<int>(values.numel()), ptr<uint64_t>(values), ptr<int32_t>(operand),
                        ptr<uint32_t>(out32), ptr<uint64_t>(out64), static_cast<int>(mode), static_cast<int>(width),
                        static_cast<uint32_t>(mask)};
  Q35_RUN("shuffle", values, launch_shuffle, p);
  return {out32, out64};
}

at::Tensor vote(const at::Tensor& predicate, int64_t mask) {
  check(predicate, at::kInt, "vote", "predicate");
  at::Tensor out = at::empty({predicate.numel(), kVoteOutputs}, predicate.options());
  const VoteParams p{static_cast<int>(predicate.numel()), ptr<int32_t>(predicate), ptr<int32_t>(out),
                     static_cast<uint32_t>(mask)};
  Q35_RUN("vote", predicate, launch_vote, p);
  return out;
}

std::tuple<at::Tensor, at::Tensor> block_reduce(const at::Tensor& x, int64_t threads) {
  check(x, at::kFloat, "block_reduce", "x");
  at::Tensor sum = at::empty({x.size(0)}, x.options());
  at::Tensor max = at::empty({x.size(0)}, x.options());
  const BlockReduceParams p{static_cast<int>(x.size(0)), static_cast<int>(x.size(1)), ptr<float>(x), ptr<float>(sum),
                            ptr<float>(max)};
  Q35_RUN("block_reduce", x, launch_block_reduce, p, static_cast<int>(threads));
  return {sum, max};
}

std::tuple<at::Tensor, at::Tensor> histogram(const at::Tensor& keys, int64_t num_bins) {
  check(keys, at::kInt, "histogram", "keys");
  at::Tensor bins = at::zeros({num_bins}, keys.options());
  at::Tensor stats = at::empty({4}, keys.options().device(at::kCPU));
  stats[0] = INT32_MIN;
  stats[1] = INT32_MAX;
  stats[2] = 0;
  stats[3] = 0;
  stats = stats.to(keys.device());
  const HistogramParams p{static_cast<int>(keys.numel()), static_cast<int>(num_bins), ptr<int32_t>(keys),
                          ptr<int32_t>(bins), ptr<int32_t>(stats)};
  Q35_RUN("histogram", keys, launch_histogram, p);
  return {bins, stats};
}

at::Tensor racy(const at::Tensor& x, int64_t variant) {
  check(x, at::kFloat, "racy", "x");
  at::Tensor out = at::empty(x.sizes(), x.options());
  const RacyParams p{static_cast<int>(x.numel()), ptr<float>(x), ptr<float>(out), static_cast<int>(variant)};
  Q35_RUN("racy", x, launch_racy, p);
  return out;
}

at::Tensor ldmatrix_probe(const at::Tensor& rows, const at::Tensor& slot, int64_t num, bool trans) {
  check(rows, at::kShort, "ldmatrix_probe", "rows");
  check(slot, at::kInt, "ldmatrix_probe", "slot");
  TORCH_CHECK(rows.numel() == kProbeSlots * 8 && slot.numel() == 32, "ldmatrix_probe: bad sizes");
  at::Tensor regs = at::zeros({32, 4}, slot.options());
  const LdmatrixParams p{ptr<uint16_t>(rows), ptr<int32_t>(slot), ptr<uint32_t>(regs), static_cast<int>(num), trans};
  Q35_RUN("ldmatrix_probe", rows, launch_ldmatrix_probe, p);
  return regs;
}

at::Tensor stmatrix_probe(const at::Tensor& regs, const at::Tensor& slot, const at::Tensor& rows_init, int64_t num,
                          bool trans) {
  check(regs, at::kInt, "stmatrix_probe", "regs");
  check(slot, at::kInt, "stmatrix_probe", "slot");
  check(rows_init, at::kShort, "stmatrix_probe", "rows_init");
  at::Tensor rows = at::empty_like(rows_init);
  const StmatrixParams p{ptr<uint32_t>(regs), ptr<int32_t>(slot), ptr<uint16_t>(rows), ptr<uint16_t>(rows_init),
                         static_cast<int>(num), trans};
  Q35_RUN("stmatrix_probe", regs, launch_stmatrix_probe, p);
  return rows;
}

at::Tensor mma_probe(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, int64_t k, bool f16, bool f16_acc) {
  check(a, at::kInt, "mma_probe", "a");
  check(b, at::kInt, "mma_probe", "b");
  check(c, at::kInt, "mma_probe", "c");
  at::Tensor d = at::zeros({32, 4}, a.options());
  const MmaProbeParams p{ptr<uint32_t>(a), ptr<uint32_t>(b), ptr<uint32_t>(c), ptr<uint32_t>(d), static_cast<int>(k), f16,
                         f16_acc};
  Q35_RUN("mma_probe", a, launch_mma_probe, p);
  return d;
}

at::Tensor gemm(const at::Tensor& a, const at::Tensor& b, bool trans_b) {
  TORCH_CHECK(a.is_contiguous() && b.is_contiguous() && a.scalar_type() == b.scalar_type() &&
                  (a.scalar_type() == at::kBFloat16 || a.scalar_type() == at::kHalf),
              "gemm: a, b must be contiguous bf16/f16 tensors of one dtype");
  const int64_t m = a.size(0), k = a.size(1), n = trans_b ? b.size(1) : b.size(0);
  TORCH_CHECK(m % 64 == 0 && n % 64 == 0 && k % 64 == 0, "gemm: m, n, k must be multiples of 64");
  at::Tensor c = at::full({m, n}, NAN, a.options().dtype(at::kFloat));
  const GemmParams p{static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), a.data_ptr(), b.data_ptr(),
                     ptr<float>(c), trans_b, a.scalar_type() == at::kHalf};
  Q35_RUN("gemm", a, launch_gemm, p);
  return c;
}

at::Tensor pipeline(const at::Tensor& x, int64_t copy_bytes, bool skip_wait) {
  check(x, at::kFloat, "pipeline", "x");
  TORCH_CHECK(copy_bytes == 4 || copy_bytes == 8 || copy_bytes == 16, "pipeline: copy_bytes must be 4, 8 or 16");
  at::Tensor y = at::full(x.sizes(), NAN, x.options());
  const PipelineParams p{static_cast<int>(x.numel()), ptr<float>(x), ptr<float>(y), static_cast<int>(copy_bytes),
                         skip_wait};
  Q35_RUN("pipeline", x, launch_pipeline, p);
  return y;
}

void fault(const at::Tensor& out, int64_t variant, int64_t arg, c10::IntArrayRef grid, c10::IntArrayRef block,
           int64_t smem) {
  check(out, at::kInt, "fault", "out");
  TORCH_CHECK(grid.size() == 3 && block.size() == 3, "fault: grid and block must have 3 entries");
  auto d3 = [](c10::IntArrayRef v) {
    return dim3(static_cast<unsigned>(v[0]), static_cast<unsigned>(v[1]), static_cast<unsigned>(v[2]));
  };
  const FaultParams p{static_cast<int>(variant), static_cast<int>(arg), ptr<int32_t>(out), nullptr};
  Q35_RUN("fault", out, launch_fault, p, d3(grid), d3(block), static_cast<size_t>(smem));
}

}  // namespace
}  // namespace q35::emutest

TORCH_LIBRARY(q35_emu_tests, m) {
  m.def("shuffle(Tensor values, Tensor operand, int mode, int width, int mask) -> (Tensor, Tensor)");
  m.def("vote(Tensor predicate, int mask) -> Tensor");
  m.def("block_reduce(Tensor x, int threads) -> (Tensor, Tensor)");
  m.def("histogram(Tensor keys, int num_bins) -> (Tensor, Tensor)");
  m.def("racy(Tensor x, int variant) -> Tensor");
  m.def("ldmatrix_probe(Tensor rows, Tensor slot, int num, bool trans) -> Tensor");
  m.def("stmatrix_probe(Tensor regs, Tensor slot, Tensor rows_init, int num, bool trans) -> Tensor");
  m.def("mma_probe(Tensor a, Tensor b, Tensor c, int k, bool f16, bool f16_acc) -> Tensor");
  m.def("gemm(Tensor a, Tensor b, bool trans_b) -> Tensor");
  m.def("pipeline(Tensor x, int copy_bytes, bool skip_wait) -> Tensor");
  m.def("fault(Tensor(a!) out, int variant, int arg, int[] grid, int[] block, int smem) -> ()");
}

#define Q35_IMPL_ALL(m)                                      \
  m.impl("shuffle", &q35::emutest::shuffle);                 \
  m.impl("vote", &q35::emutest::vote);                       \
  m.impl("block_reduce", &q35::emutest::block_reduce);       \
  m.impl("histogram", &q35::emutest::histogram);             \
  m.impl("racy", &q35::emutest::racy);                       \
  m.impl("ldmatrix_probe", &q35::emutest::ldmatrix_probe);   \
  m.impl("stmatrix_probe", &q35::emutest::stmatrix_probe);   \
  m.impl("mma_probe", &q35::emutest::mma_probe);             \
  m.impl("gemm", &q35::emutest::gemm);                       \
  m.impl("pipeline", &q35::emutest::pipeline);               \
  m.impl("fault", &q35::emutest::fault)

TORCH_LIBRARY_IMPL(q35_emu_tests, CPU, m) { Q35_IMPL_ALL(m); }
#if defined(Q35_WITH_CUDA)
TORCH_LIBRARY_IMPL(q35_emu_tests, CUDA, m) { Q35_IMPL_ALL(m); }
#endif

namespace {
PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_emu_tests", "test kernels of the qwen35_native SIMT emulator", -1,
                          nullptr, nullptr, nullptr, nullptr, nullptr};
}  // namespace

PyMODINIT_FUNC PyInit__emu_tests() { return PyModule_Create(&module_def); }
