// MoE routing kernel (softmax + top-k + renormalise) and its launcher. See moe_route.cuh for the op.
#include <climits>

#include "kernels/moe/moe_route.cuh"
#include "q35/launch.h"

namespace q35::Q35_TARGET {
namespace {

constexpr int kRouteWarpsPerBlock = 4;
constexpr int kRouteThreads = kRouteWarpsPerBlock * kWarpSize;

// Warp-wide argmax of (value, id) pairs: the larger value, the lower id among equal values. Every lane gets the
// result (max over a total order, so the butterfly is order-independent).
__device__ __forceinline__ void warp_argmax(float& value, int& id) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    const float other_value = __shfl_xor_sync(warp::kFullMask, value, offset);
    const int other_id = __shfl_xor_sync(warp::kFullMask, id, offset);
    if (other_value > value || (other_value == value && other_id < id)) {
      value = other_value;
      id = other_id;
    }
  }
}

// Computes: p = softmax(logits[n, :]) in fp32; the top_k largest p (ties: lower expert id), in descending order;
//           weights[n, j] = p_j / sum_j p_j, ids[n, j] = their expert ids. Selection compares the fp32 logits
//           (softmax is monotone; NaN logits select as -inf, their weights come out NaN as in torch).
// Args:     logits [N, E] T (row stride given, last dim contiguous); weights [N, k] fp32, ids [N, k] int32.
// Grid:     blockIdx.x = group of kRouteWarpsPerBlock tokens.
// Block:    one warp per token; lane l holds experts l, l + 32, ... (kPerLane registers); lane j < k ends up with
//           the j-th choice and stores it.
// Smem:     none.
// Requires: E <= 32 * kPerLane, 1 <= k <= min(E, 32).
template <typename T, int kPerLane>
__global__ void __launch_bounds__(kRouteThreads, 1) moe_route_kernel(MoeRouteParams p) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t token = static_cast<int64_t>(blockIdx.x) * kRouteWarpsPerBlock + threadIdx.x / kWarpSize;
  if (token >= p.num_tokens) return;  // the whole warp leaves together; no block barriers below
  const T* __restrict__ row = static_cast<const T*>(p.logits_ptr) + token * p.logits_row_stride;  // [E]

  // ---- load ----
  float logit[kPerLane];
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int e = i * kWarpSize + lane;
    logit[i] = e < p.num_experts ? to_float(row[e]) : -INFINITY;
  }

  // ---- softmax statistics (fp32) ----
  float row_max = -INFINITY;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) row_max = fmaxf(row_max, logit[i]);
  row_max = warp::reduce_max(row_max);
  float denom = 0.0f;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    if (i * kWarpSize + lane < p.num_experts) denom += expf(logit[i] - row_max);
  }
  denom = warp::reduce_sum(denom);

  // ---- top-k: k rounds of warp argmax over the experts not taken yet ----
  uint32_t taken = 0;  // bit i: expert i * 32 + lane is taken
  float my_logit = -INFINITY;
  int my_id = 0;
  for (int j = 0; j < p.top_k; ++j) {
    float best = -INFINITY;
    int best_id = INT_MAX;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int e = i * kWarpSize + lane;
      const float key = isnan(logit[i]) ? -INFINITY : logit[i];
      if (e < p.num_experts && !((taken >> i) & 1u) && (key > best || (key == best && e < best_id))) {
        best = key;
        best_id = e;
      }
    }
    warp_argmax(best, best_id);
    if (best_id % kWarpSize == lane) taken |= 1u << (best_id / kWarpSize);
    if (lane == j) {
      my_logit = best;
      my_id = best_id;
    }
  }

  // ---- renormalise and store ----
  const float prob = lane < p.top_k ? expf(my_logit - row_max) / denom : 0.0f;
  const float total = warp::reduce_sum(prob);
  if (lane < p.top_k) {
    p.weights_ptr[token * p.top_k + lane] = prob / total;
    p.ids_ptr[token * p.top_k + lane] = my_id;
  }
}

template <typename T, int kPerLane>
cudaError_t launch_route(const MoeRouteParams& p, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(ceil_div(p.num_tokens, kRouteWarpsPerBlock)));
  return launch(moe_route_kernel<T, kPerLane>, grid, dim3(kRouteThreads), 0, stream, p);
}

}  // namespace

template <typename T>
cudaError_t launch_moe_route(const MoeRouteParams& p, cudaStream_t stream) {
  constexpr int kSmallPerLane = 4;   // E <= 128
  constexpr int kMidPerLane = 8;      // E <= 256 (35b-a3b): half the registers each top-k round scans at 16
  constexpr int kMediumPerLane = 16;  // E <= 512
  constexpr int kLargePerLane = kMoeRouteMaxExperts / kWarpSize;
  if (p.num_experts < 1 || p.num_experts > kMoeRouteMaxExperts || p.top_k < 1 || p.top_k > p.num_experts ||
      p.top_k > kMoeRouteMaxTopK)
    return cudaErrorInvalidValue;
  if (p.num_tokens == 0) return cudaSuccess;
  if (p.num_experts <= kSmallPerLane * kWarpSize) return launch_route<T, kSmallPerLane>(p, stream);
  if (p.num_experts <= kMidPerLane * kWarpSize) return launch_route<T, kMidPerLane>(p, stream);
  if (p.num_experts <= kMediumPerLane * kWarpSize) return launch_route<T, kMediumPerLane>(p, stream);
  return launch_route<T, kLargePerLane>(p, stream);
}

#define Q35_INSTANTIATE(T) template cudaError_t launch_moe_route<T>(const MoeRouteParams&, cudaStream_t);
Q35_FOR_EACH_MOE_ROUTE_TYPE(Q35_INSTANTIATE)
#undef Q35_INSTANTIATE

}  // namespace q35::Q35_TARGET
