// Torch glue of the sm_90a test kernels (hopper_test_kernels.cuh): more torch.ops.q35_emu_tests.* ops, CPU tensors
// on the emulator, CUDA tensors on an sm_90 GPU (elsewhere: "unsupported arch"). Raw registers and shared-memory
// bytes travel in int32 / int16 / uint8 tensors. TMA boxes and coordinates are given innermost dimension first.
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <torch/library.h>

#include "emu_test_glue.h"
#include "hopper_test_kernels.cuh"

namespace q35::emutest {
namespace {

at::Tensor wgmma_probe(const at::Tensor& a, const at::Tensor& a_frag, const at::Tensor& bt, const at::Tensor& c,
                       int64_t n, int64_t k, bool f16, bool a_regs, bool scale_d, int64_t swizzle, int64_t variant,
                       bool b_mn_major) {
  check(a, at::kShort, "wgmma_probe", "a");
  check(a_frag, at::kInt, "wgmma_probe", "a_frag");
  check(bt, at::kShort, "wgmma_probe", "bt");
  check(c, at::kFloat, "wgmma_probe", "c");
  TORCH_CHECK(a.numel() == 64 * k && bt.numel() == n * k && c.numel() == 128 * (n / 2) &&
                  a_frag.numel() == (k / 16) * 128 * 4,
              "q35_emu_tests.wgmma_probe: a [64, k], a_frag [k / 16, 128, 4], bt [n, k], c [128, n / 2]");
  at::Tensor d = at::full({128, n / 2}, NAN, c.options());
  const WgmmaProbeParams p{static_cast<int>(n),       static_cast<int>(k), f16, a_regs, scale_d,
                           static_cast<int>(swizzle), static_cast<int>(variant), ptr<uint16_t>(a),
                           ptr<uint32_t>(a_frag),     ptr<uint16_t>(bt), ptr<float>(c), ptr<float>(d),
                           b_mn_major};
  Q35_RUN("wgmma_probe", a, launch_wgmma_probe, p);
  return d;
}

// The tensor's TMA view: dims and byte strides innermost first (dimension 0 must be contiguous).
TmaProbeParams tma_params(const at::Tensor& t, c10::IntArrayRef box, c10::IntArrayRef coords, int64_t swizzle,
                          int64_t variant, const char* op) {
  const int rank = static_cast<int>(t.dim());
  TORCH_CHECK((rank == 2 || rank == 3) && t.stride(rank - 1) == 1 && box.size() == static_cast<size_t>(rank) &&
                  coords.size() == static_cast<size_t>(rank),
              "q35_emu_tests.", op, ": a 2D/3D tensor with contiguous rows, and box / coords of its rank");
  TmaProbeParams p{};
  p.tensor = t.data_ptr();
  p.elem_bytes = static_cast<int>(t.element_size());
  p.rank = rank;
  for (int d = 0; d < rank; ++d) {
    p.dims[d] = static_cast<uint64_t>(t.size(rank - 1 - d));
    if (d > 0) p.strides[d - 1] = static_cast<uint64_t>(t.stride(rank - 1 - d) * t.element_size());
    p.box[d] = static_cast<uint32_t>(box[d]);
    p.coords[d] = static_cast<int32_t>(coords[d]);
  }
  p.swizzle = static_cast<int>(swizzle);
  p.variant = static_cast<int>(variant);
  return p;
}

int64_t box_bytes(const at::Tensor& t, c10::IntArrayRef box) {
  int64_t n = t.element_size();
  for (int64_t b : box) n *= b;
  return n;
}

at::Tensor tma_load_probe(const at::Tensor& x, c10::IntArrayRef box, c10::IntArrayRef coords, int64_t swizzle,
                          int64_t variant) {
  TmaProbeParams p = tma_params(x, box, coords, swizzle, variant, "tma_load_probe");
  at::Tensor smem = at::full({box_bytes(x, box)}, 0xAB, x.options().dtype(at::kByte));
  p.smem_out = ptr<uint8_t>(smem);
  p.load = 1;
  Q35_RUN("tma_load_probe", x, launch_tma_probe, p);
  return smem;
}

void tma_store_probe(const at::Tensor& out, const at::Tensor& smem_in, c10::IntArrayRef box, c10::IntArrayRef coords,
                     int64_t swizzle, int64_t variant) {
  check(smem_in, at::kByte, "tma_store_probe", "smem_in");
  TORCH_CHECK(smem_in.numel() == box_bytes(out, box), "q35_emu_tests.tma_store_probe: smem_in must hold one box");
  TmaProbeParams p = tma_params(out, box, coords, swizzle, variant, "tma_store_probe");
  p.smem_in = ptr<uint8_t>(smem_in);
  p.load = 0;
  Q35_RUN("tma_store_probe", out, launch_tma_probe, p);
}

at::Tensor tma_tile_probe(const at::Tensor& x, int64_t swizzle) {
  check(x, at::kShort, "tma_tile_probe", "x");
  TORCH_CHECK(x.dim() == 2, "q35_emu_tests.tma_tile_probe: x [rows, cols]");
  at::Tensor out = at::full(x.sizes(), -1, x.options());
  const TmaTileParams p{ptr<uint16_t>(x), ptr<uint16_t>(out), static_cast<int>(x.size(0)),
                        static_cast<int>(x.size(1)), static_cast<int>(swizzle)};
  Q35_RUN("tma_tile_probe", x, launch_tma_tile_probe, p);
  return out;
}

void mbarrier_probe(const at::Tensor& out, bool wrong_parity) {
  check(out, at::kInt, "mbarrier_probe", "out");
  TORCH_CHECK(out.dim() == 2 && out.size(0) >= 1, "q35_emu_tests.mbarrier_probe: out [rounds + 1, threads]");
  const MbarrierProbeParams p{static_cast<int>(out.size(0) - 1), ptr<int32_t>(out), wrong_parity};
  Q35_RUN("mbarrier_probe", out, launch_mbarrier_probe, p, static_cast<int>(out.size(1)));
}

at::Tensor hopper_gemm(const at::Tensor& a, const at::Tensor& bt, int64_t swizzle, bool tma_epilogue,
                       int64_t variant) {
  TORCH_CHECK(a.is_contiguous() && bt.is_contiguous() && a.scalar_type() == bt.scalar_type() &&
                  (a.scalar_type() == at::kBFloat16 || a.scalar_type() == at::kHalf) && a.size(1) == bt.size(1),
              "q35_emu_tests.hopper_gemm: a [m, k], bt [n, k] contiguous bf16/f16 tensors of one dtype");
  const int64_t m = a.size(0), n = bt.size(0), k = a.size(1);
  at::Tensor c = at::full({m, n}, NAN, a.options().dtype(at::kFloat));
  const HopperGemmParams p{a.data_ptr(),       bt.data_ptr(),  ptr<float>(c),
                           static_cast<int>(m), static_cast<int>(n), static_cast<int>(k),
                           a.scalar_type() == at::kHalf, static_cast<int>(swizzle), tma_epilogue,
                           static_cast<int>(variant)};
  Q35_RUN("hopper_gemm", a, launch_hopper_gemm, p);
  return c;
}

void hopper_fault(const at::Tensor& out, int64_t variant, int64_t threads) {
  check(out, at::kFloat, "hopper_fault", "out");
  TORCH_CHECK(out.numel() >= threads, "q35_emu_tests.hopper_fault: out needs one element per thread");
  const HopperFaultParams p{static_cast<int>(variant), ptr<float>(out)};
  Q35_RUN("hopper_fault", out, launch_hopper_fault, p, static_cast<int>(threads));
}

}  // namespace
}  // namespace q35::emutest

TORCH_LIBRARY_FRAGMENT(q35_emu_tests, m) {
  m.def("wgmma_probe(Tensor a, Tensor a_frag, Tensor bt, Tensor c, int n, int k, bool f16, bool a_regs, "
        "bool scale_d, int swizzle, int variant, bool b_mn_major=False) -> Tensor");
  m.def("tma_load_probe(Tensor x, int[] box, int[] coords, int swizzle, int variant) -> Tensor");
  m.def("tma_store_probe(Tensor(a!) out, Tensor smem_in, int[] box, int[] coords, int swizzle, int variant) -> ()");
  m.def("tma_tile_probe(Tensor x, int swizzle) -> Tensor");
  m.def("mbarrier_probe(Tensor(a!) out, bool wrong_parity) -> ()");
  m.def("hopper_gemm(Tensor a, Tensor bt, int swizzle, bool tma_epilogue, int variant) -> Tensor");
  m.def("hopper_fault(Tensor(a!) out, int variant, int threads) -> ()");
}

#define Q35_IMPL_HOPPER(m)                                   \
  m.impl("wgmma_probe", &q35::emutest::wgmma_probe);         \
  m.impl("tma_load_probe", &q35::emutest::tma_load_probe);   \
  m.impl("tma_store_probe", &q35::emutest::tma_store_probe); \
  m.impl("tma_tile_probe", &q35::emutest::tma_tile_probe);   \
  m.impl("mbarrier_probe", &q35::emutest::mbarrier_probe);   \
  m.impl("hopper_gemm", &q35::emutest::hopper_gemm);         \
  m.impl("hopper_fault", &q35::emutest::hopper_fault)

TORCH_LIBRARY_IMPL(q35_emu_tests, CPU, m) { Q35_IMPL_HOPPER(m); }
#if defined(Q35_WITH_CUDA)
TORCH_LIBRARY_IMPL(q35_emu_tests, CUDA, m) { Q35_IMPL_HOPPER(m); }
#endif
