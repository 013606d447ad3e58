// Launch helpers of the MoE kernels shared by the stage ops (moe_stage_ops.cpp) and the fused op (moe_ops.cpp):
// params from already-checked tensors, dtype dispatch, the CUDA launcher on the current stream or the emulator's.
// Kernels: csrc/kernels/moe/. Python: python/qwen35_native/ops/moe.py.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <type_traits>

#include "kernels/linear/skinny_linear.cuh"
#include "kernels/moe/moe_align.cuh"
#include "kernels/moe/moe_combine.cuh"
#include "kernels/moe/moe_gemm.cuh"
#include "kernels/moe/moe_permute.cuh"
#include "kernels/moe/moe_route.cuh"
#include "torch/checks.h"
#include "torch/device_guard.h"
#include "torch/dispatch.h"

namespace q35::glue::moe {

// The launchers of one target: Launch<false> runs the kernels on the SIMT emulator, Launch<true> on the GPU.
template <bool kOnCuda>
struct Launch;
template <>
struct Launch<false> {
  static cudaStream_t stream() { return nullptr; }
  template <typename T>
  static cudaError_t route(const MoeRouteParams& p) { return q35::emu::launch_moe_route<T>(p, stream()); }
  template <typename IdT>
  static cudaError_t align(const MoeAlignParams& p) { return q35::emu::launch_moe_align<IdT>(p, stream()); }
  template <typename T>
  static cudaError_t gate_up(const MoeGemmParams& p) { return q35::emu::launch_moe_gate_up<T>(p, stream()); }
  template <typename T>
  static cudaError_t down(const MoeGemmParams& p) { return q35::emu::launch_moe_down<T>(p, stream()); }
  static cudaError_t permute(const MoePermuteParams& p) { return q35::emu::launch_moe_permute(p, stream()); }
  template <typename T, typename IdT>
  static cudaError_t combine(const MoeCombineParams& p) { return q35::emu::launch_moe_combine<T, IdT>(p, stream()); }
  template <typename T>
  static cudaError_t skinny(const SkinnyLinearParams& p) { return q35::emu::launch_skinny_linear<T>(p, stream()); }
  static int num_sms() { return 2; }  // as csrc/torch/linear_ops.cpp: test sizes reach both grids of the kernel
  static bool sm90a() { return q35::emu::moe_sm90a_available(); }  // the emulated arch is sm_90
  // Persistent CTAs of the sm_90a GEMMs: a few, so that every CTA (and 2-CTA cluster) walks several work items in
  // the tests.
  static int num_ctas() { return 4; }
};
#if defined(Q35_WITH_CUDA)
template <>
struct Launch<true> {  // callers hold a CUDAGuard for the tensors' device
  static cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream(); }
  template <typename T>
  static cudaError_t route(const MoeRouteParams& p) { return q35::cuda::launch_moe_route<T>(p, stream()); }
  template <typename IdT>
  static cudaError_t align(const MoeAlignParams& p) { return q35::cuda::launch_moe_align<IdT>(p, stream()); }
  template <typename T>
  static cudaError_t gate_up(const MoeGemmParams& p) { return q35::cuda::launch_moe_gate_up<T>(p, stream()); }
  template <typename T>
  static cudaError_t down(const MoeGemmParams& p) { return q35::cuda::launch_moe_down<T>(p, stream()); }
  static cudaError_t permute(const MoePermuteParams& p) { return q35::cuda::launch_moe_permute(p, stream()); }
  template <typename T, typename IdT>
  static cudaError_t combine(const MoeCombineParams& p) { return q35::cuda::launch_moe_combine<T, IdT>(p, stream()); }
  template <typename T>
  static cudaError_t skinny(const SkinnyLinearParams& p) { return q35::cuda::launch_skinny_linear<T>(p, stream()); }
  static int num_sms() { return num_ctas(); }
  static bool sm90a() { return q35::cuda::moe_sm90a_available(); }  // the current device is sm_90
  static int num_ctas() {  // one persistent CTA per SM
    int device = 0, sms = 0;
    const bool ok = cudaGetDevice(&device) == cudaSuccess &&
                    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) == cudaSuccess;
    return ok && sms > 0 ? sms : 1;
  }
};
#endif

// Holds the device of the op's tensors current while kernels launch on CUDA (nothing on the emulator).
template <bool kOnCuda>
struct Guard {
  explicit Guard(const at::Tensor&) {}
};
#if defined(Q35_WITH_CUDA)
template <>
struct Guard<true> {
  c10::cuda::CUDAGuard guard;
  explicit Guard(const at::Tensor& t) : guard(t.device()) {}
};
#endif

// Calls f(TypeTag<IdT>{}) for an int32 or int64 index tensor.
template <typename F>
void dispatch_index_dtype(c10::ScalarType st, const char* op, F&& f) {
  if (st == c10::ScalarType::Int) return f(TypeTag<int32_t>{});
  TORCH_CHECK(st == c10::ScalarType::Long, "qwen35_native.", op, ": topk_ids must have dtype int32 or int64, got ",
              c10::toString(st));
  f(TypeTag<int64_t>{});
}

inline int64_t row_stride(const at::Tensor& t) {
  int64_t stride = 0;
  rows_have_uniform_stride(t, &stride);
  return stride;
}

template <bool kOnCuda>
void run_route(const char* op, const at::Tensor& logits, int64_t top_k, at::Tensor& weights, at::Tensor& ids) {
  MoeRouteParams p{};
  p.num_tokens = logits.size(0);
  p.num_experts = static_cast<int>(logits.size(1));
  p.top_k = static_cast<int>(top_k);
  p.logits_ptr = logits.data_ptr();
  p.weights_ptr = weights.data_ptr<float>();
  p.ids_ptr = ids.data_ptr<int32_t>();
  p.logits_row_stride = row_stride(logits);
  dispatch_float_dtype(logits.scalar_type(), op, [&](auto tag) {
    check_launch(Launch<kOnCuda>::template route<typename decltype(tag)::type>(p), op);
  });
}

template <bool kOnCuda>
void run_align(const char* op, const at::Tensor& topk_ids, int64_t expert_offset, int64_t num_local_experts,
               int64_t block_m, at::Tensor& sorted_pairs, at::Tensor& tile_experts) {
  MoeAlignParams p{};
  p.num_pairs = topk_ids.numel();
  p.num_local_experts = static_cast<int>(num_local_experts);
  p.expert_offset = static_cast<int>(expert_offset);
  p.block_m = static_cast<int>(block_m);
  p.max_tiles = tile_experts.numel();
  p.ids_ptr = topk_ids.data_ptr();
  p.sorted_pairs_ptr = sorted_pairs.data_ptr<int32_t>();
  p.tile_experts_ptr = tile_experts.data_ptr<int32_t>();
  dispatch_index_dtype(topk_ids.scalar_type(), op, [&](auto tag) {
    check_launch(Launch<kOnCuda>::template align<typename decltype(tag)::type>(p), op);
  });
}

// Whether the sm_90a kernels (block_m = 128) run here for hidden size h and expert size inter (callers hold the
// Guard): an sm_90 device or the emulator at sm_90, and non-empty K loops (they have no k = 0 case).
template <bool kOnCuda>
bool sm90a_runs(int64_t h, int64_t inter) {
  return h > 0 && inter > 0 && Launch<kOnCuda>::sm90a();
}

// block_m = 128 (or 256: in 2-CTA clusters) selects the sm_90a kernels: a clear error where they cannot run.
template <bool kOnCuda>
void check_block_m_runs_here(const char* op, int64_t block_m, int64_t h, int64_t inter) {
  if (!is_sm90a_block_m(block_m)) return;
  TORCH_CHECK(h > 0 && inter > 0, "qwen35_native.", op, ": block_m ", block_m,
              " (the sm_90a kernels) needs H and I >= 1, got H=", h, " I=", inter);
  TORCH_CHECK(Launch<kOnCuda>::sm90a(), "qwen35_native.", op, ": block_m ", block_m,
              " selects the sm_90a kernels, which need ",
              kOnCuda ? "an sm_90 GPU (H100/H200), got another device" : "the emulator at arch sm_90, got sm_80");
}

// rows[r] = hidden[sorted_pairs[r] / top_k] for the rows of used tiles that hold a pair (moe_permute.cu).
template <bool kOnCuda>
void run_permute(const char* op, const at::Tensor& hidden, const at::Tensor& sorted_pairs,
                 const at::Tensor& tile_experts, int64_t top_k, int64_t block_m, at::Tensor& rows) {
  MoePermuteParams p{};
  p.num_rows = sorted_pairs.numel();
  p.block_m = static_cast<int>(block_m);
  p.top_k = static_cast<int>(top_k);
  p.row_bytes = hidden.size(1) * hidden.element_size();
  p.hidden_ptr = hidden.data_ptr();
  p.sorted_pairs_ptr = sorted_pairs.data_ptr<int32_t>();
  p.tile_experts_ptr = tile_experts.data_ptr<int32_t>();
  p.rows_ptr = rows.data_ptr();
  p.hidden_row_stride_bytes = row_stride(hidden) * hidden.element_size();
  check_launch(Launch<kOnCuda>::permute(p), op);
}

// gate_up (w13 [E, 2I, H]: a = hidden, or with sorted_rows its rows in tile order from run_permute) or down
// (w2 [E, H, I]: a = act, weights given).
template <bool kOnCuda, bool kGateUp>
void run_gemm(const char* op, const at::Tensor& a, const at::Tensor& w, const at::Tensor* topk_weights,
              const at::Tensor& sorted_pairs, const at::Tensor& tile_experts, int64_t top_k, int64_t block_m,
              at::Tensor& c, bool sorted_rows = false) {
  MoeGemmParams p{};
  p.a_sorted_rows = sorted_rows ? 1 : 0;
  p.max_tiles = tile_experts.numel();
  p.block_m = static_cast<int>(block_m);
  p.n = static_cast<int>(kGateUp ? w.size(1) / 2 : w.size(1));
  p.k = static_cast<int>(w.size(2));
  p.top_k = static_cast<int>(top_k);
  p.num_experts = static_cast<int>(w.size(0));
  p.num_ctas = Launch<kOnCuda>::num_ctas();
  p.a_ptr = a.data_ptr();
  p.b_ptr = w.data_ptr();
  p.sorted_pairs_ptr = sorted_pairs.data_ptr<int32_t>();
  p.tile_experts_ptr = tile_experts.data_ptr<int32_t>();
  p.topk_weights_ptr = topk_weights ? topk_weights->data_ptr<float>() : nullptr;
  p.c_ptr = c.data_ptr();
  p.a_row_stride = row_stride(a);
  dispatch_float_dtype(a.scalar_type(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    check_launch(kGateUp ? Launch<kOnCuda>::template gate_up<T>(p) : Launch<kOnCuda>::template down<T>(p), op);
  });
}

// Whether the skinny kernel takes fused_moe's operands (block_m 1): 16-bit, H and I multiples of 8 (16-byte rows),
// hidden's rows 16-byte aligned. The weights are contiguous (check_expert_weights); the caching allocator aligns
// their start.
inline bool skinny_fits(const at::Tensor& hidden, const at::Tensor& w13) {
  const int64_t h = hidden.size(1), inter = w13.size(1) / 2;
  const auto aligned = [](const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % kVecBytes == 0; };
  return hidden.scalar_type() != at::kFloat && h % 8 == 0 && inter % 8 == 0 && aligned(hidden) && aligned(w13) &&
         (hidden.size(0) <= 1 || (row_stride(hidden) * hidden.element_size()) % kVecBytes == 0);
}

// block_m 1: each (token, expert) pair on its own grid row of the skinny linear kernel, no align. gate_up (w13
// [E, 2I, H], a = hidden): c[p] = silu(g) * u of hidden[p / top_k] and its expert; down (w2 [E, H, I], a = act
// [P, I], weights given): c[p] = weight[p] * (act[p] . w2[e]). ids32: topk_ids as int32, contiguous.
template <bool kOnCuda, bool kGateUp>
void run_pair_gemm(const char* op, const at::Tensor& a, const at::Tensor& w, const at::Tensor& ids32,
                   const at::Tensor* topk_weights, int64_t expert_offset, int64_t top_k, at::Tensor& c) {
  SkinnyLinearParams p{};
  p.rows = 1;
  p.out_features = kGateUp ? w.size(1) / 2 : w.size(1);
  p.in_features = w.size(2);
  p.x_ptr = a.data_ptr();
  p.x_row_stride = row_stride(a);
  p.w_ptr = w.data_ptr();
  p.y_ptr = c.data_ptr();
  p.swiglu = kGateUp;
  p.num_sms = Launch<kOnCuda>::num_sms();
  p.pair_ids = ids32.data_ptr<int32_t>();
  p.pair_weights = topk_weights ? topk_weights->data_ptr<float>() : nullptr;
  p.num_pairs = ids32.numel();
  p.w_expert_stride = w.size(1) * w.size(2);
  p.expert_offset = expert_offset;
  p.num_experts = w.size(0);
  p.top_k = static_cast<int>(top_k);
  p.x_per_pair = !kGateUp;
  dispatch_float_dtype(a.scalar_type(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (!std::is_same_v<T, float>) check_launch(Launch<kOnCuda>::template skinny<T>(p), op);
  });
}

// shared: {hidden, shared_out, shared_gate_w} or all undefined.
template <bool kOnCuda>
void run_combine(const char* op, const at::Tensor& expert_out, const at::Tensor& topk_ids, int64_t expert_offset,
                 int64_t num_local_experts, const at::Tensor& hidden, const at::Tensor& shared_out,
                 const at::Tensor& shared_gate_w, at::Tensor& out) {
  MoeCombineParams p{};
  p.num_tokens = out.size(0);
  p.hidden_size = static_cast<int>(out.size(1));
  p.top_k = static_cast<int>(topk_ids.size(1));
  p.num_local_experts = static_cast<int>(num_local_experts);
  p.expert_offset = static_cast<int>(expert_offset);
  p.expert_out_ptr = expert_out.data_ptr();
  p.ids_ptr = topk_ids.data_ptr();
  if (shared_out.defined()) {
    p.hidden_ptr = hidden.data_ptr();
    p.hidden_row_stride = row_stride(hidden);
    p.shared_out_ptr = shared_out.data_ptr();
    p.shared_gate_w_ptr = shared_gate_w.data_ptr();
  }
  p.out_ptr = out.data_ptr();
  dispatch_float_dtype(out.scalar_type(), op, [&](auto tag) {
    dispatch_index_dtype(topk_ids.scalar_type(), op, [&](auto id_tag) {
      using T = typename decltype(tag)::type;
      using IdT = typename decltype(id_tag)::type;
      check_launch(Launch<kOnCuda>::template combine<T, IdT>(p), op);
    });
  });
}

}  // namespace q35::glue::moe
