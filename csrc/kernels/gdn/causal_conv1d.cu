// Causal depthwise conv1d (+ SiLU) kernels: prefill over packed sequences and the decode update. See
// causal_conv1d.cuh for the op.
#include "kernels/gdn/causal_conv1d.cuh"
#include "kernels/gdn/gdn_common.cuh"
#include "kernels/gdn/gdn_conv_parts.cuh"
#include "q35/launch.h"

namespace q35::Q35_TARGET {
namespace {

constexpr int kChannelThreads = 64;    // prefill: threads along the channels of a block
constexpr int kTokenGroups = 4;        // prefill: threads along the tokens of a tile
constexpr int kTokensPerThread = 16;   // prefill: consecutive tokens of one thread (sliding window in registers)
constexpr int kTileTokens = kTokenGroups * kTokensPerThread;
constexpr int kFwdThreads = kChannelThreads * kTokenGroups;
constexpr int kUpdateThreads = 256;
constexpr int kLoadAhead = 8;          // prefill: rows a thread loads before it uses the first
static_assert(kTokensPerThread % kLoadAhead == 0);

// Sequence n holding token t: the largest n with cu[n] <= t (empty sequences are skipped).
__device__ __forceinline__ int64_t sequence_of(const CausalConv1dParams& p, int64_t t) {
  int64_t lo = 0, hi = p.num_seqs;  // invariant: cu[lo] <= t < cu[hi]
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    if (gdn::load_index(p.cu_seqlens_ptr, mid, p.cu_seqlens_int64) <= t) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

template <typename T, int kVec>
__device__ __forceinline__ void load_row(const T* ptr, float (&out)[kVec]) {
  load_vec_f32<T, kVec>(ptr, out);
}

// y = act(sum_j w[j] * win[j]) for kVec channels, rounded like the reference (sum -> T, silu -> T).
template <typename T, int kW, int kVec>
__device__ __forceinline__ void conv_store(const CausalConv1dParams& p, const float (&w)[kW][kVec],
                                           const float (&win)[kW][kVec], T* y) {
  float out[kVec];
  gdn::conv_outputs<T, kW, kVec>(w, win, p.silu, out);
  store_vec_f32<T, kVec>(y, out);
}

template <typename T, int kW, int kVec>
__device__ __forceinline__ void load_weights(const CausalConv1dParams& p, int64_t c0, float (&w)[kW][kVec]) {
  gdn::load_conv_weights<T, kW, kVec>(p.weight_ptr, p.weight_fp32, c0, w);
}

// Tokens [t0, t1) of a tile, sliding window in registers; tokens within W-1 of their sequence's start are left
// to the sequence's boundary block (the only block that reads and writes the sequence's conv state).
template <typename T, int kW, int kVec>
__device__ __forceinline__ void conv_tile(const CausalConv1dParams& p, const float (&w)[kW][kVec], int64_t c0, int64_t t0,
                          int64_t t1) {
  const T* x = static_cast<const T*>(p.x_ptr);
  T* y = static_cast<T*>(p.y_ptr);
  float win[kW][kVec];
#pragma unroll
  for (int j = 0; j < kW - 1; ++j) {  // inputs before t0 (used only when they belong to t0's sequence)
    const int64_t t = t0 - (kW - 1) + j;
    if (t >= 0) {
      load_row<T, kVec>(x + t * p.x_row_stride + c0, win[j + 1]);
    } else {
#pragma unroll
      for (int v = 0; v < kVec; ++v) win[j + 1][v] = 0.0f;
    }
  }
  int64_t n = p.cu_seqlens_ptr ? sequence_of(p, t0) : 0;
  int64_t seq_start = p.cu_seqlens_ptr ? gdn::load_index(p.cu_seqlens_ptr, n, p.cu_seqlens_int64) : 0;
  int64_t seq_end = p.cu_seqlens_ptr ? gdn::load_index(p.cu_seqlens_ptr, n + 1, p.cu_seqlens_int64) : p.num_tokens;
  // kLoadAhead rows are loaded before any is used: a thread keeps that many 16-byte loads in flight instead of one
  // (one row per iteration left ~8 KiB in flight per SM, about a third of what HBM needs to stream at full rate:
  // the H200 prefill profile had this kernel at ~1 TB/s)
#pragma unroll 1
  for (int64_t tb = t0; tb < t1; tb += kLoadAhead) {
    Vec<T, kVec> rows[kLoadAhead];
#pragma unroll
    for (int b = 0; b < kLoadAhead; ++b) {
      if (tb + b < t1) rows[b] = *reinterpret_cast<const Vec<T, kVec>*>(x + (tb + b) * p.x_row_stride + c0);
    }
#pragma unroll
    for (int b = 0; b < kLoadAhead; ++b) {
      const int64_t t = tb + b;
      if (t >= t1) break;
      while (t >= seq_end) {  // next non-empty sequence
        ++n;
        seq_start = seq_end;
        seq_end = gdn::load_index(p.cu_seqlens_ptr, n + 1, p.cu_seqlens_int64);
      }
#pragma unroll
      for (int j = 0; j < kW - 1; ++j) {
#pragma unroll
        for (int v = 0; v < kVec; ++v) win[j][v] = win[j + 1][v];
      }
#pragma unroll
      for (int v = 0; v < kVec; ++v) win[kW - 1][v] = to_float(rows[b].v[v]);
      if (t - seq_start >= kW - 1) conv_store<T, kW, kVec>(p, w, win, y + t * p.channels + c0);
    }
  }
}

// The first W-1 tokens of sequence n (their windows reach into the conv state) and its final conv state.
template <typename T, int kW, int kVec>
__device__ __forceinline__ void conv_boundary(const CausalConv1dParams& p, const float (&w)[kW][kVec], int64_t c0, int64_t n) {
  const T* x = static_cast<const T*>(p.x_ptr);
  T* y = static_cast<T*>(p.y_ptr);
  T* state = static_cast<T*>(p.conv_state_ptr);
  const int64_t seq_start = p.cu_seqlens_ptr ? gdn::load_index(p.cu_seqlens_ptr, n, p.cu_seqlens_int64) : 0;
  const int64_t seq_end = p.cu_seqlens_ptr ? gdn::load_index(p.cu_seqlens_ptr, n + 1, p.cu_seqlens_int64)
                                           : p.num_tokens;
  const int64_t len = seq_end - seq_start;
  const int64_t slot = state ? gdn::load_index(p.slots_ptr, n, p.slots_int64) : 0;
  const bool has_init = state && p.has_initial_ptr && p.has_initial_ptr[n];
  T* my_state = state + (slot * p.channels + c0) * (kW - 1);  // [kVec, W-1]
  float init[kW - 1][kVec];
#pragma unroll
  for (int j = 0; j < kW - 1; ++j) {
#pragma unroll
    for (int v = 0; v < kVec; ++v) init[j][v] = has_init ? to_float(my_state[v * (kW - 1) + j]) : 0.0f;
  }
  // input idx of the sequence (negative: from the state); idx is a compile-time constant after unrolling except
  // in the final-state loop, which selects the state column with predicates (no local-memory indexing)
  auto input = [&](int64_t idx, int v) {
    float from_state = 0.0f;
#pragma unroll
    for (int m = 0; m < kW - 1; ++m) from_state = (m == kW - 1 + idx) ? init[m][v] : from_state;
    return idx >= 0 ? to_float(x[(seq_start + idx) * p.x_row_stride + c0 + v]) : from_state;
  };
#pragma unroll
  for (int pos = 0; pos < kW - 1; ++pos) {
    if (pos >= len) break;
    float win[kW][kVec];
#pragma unroll
    for (int j = 0; j < kW; ++j) {
#pragma unroll
      for (int v = 0; v < kVec; ++v) win[j][v] = input(pos - (kW - 1) + j, v);
    }
    conv_store<T, kW, kVec>(p, w, win, y + (seq_start + pos) * p.channels + c0);
  }
  if (!state) return;
  float last[kW - 1][kVec];  // read everything before writing: the state is also an input above
#pragma unroll
  for (int j = 0; j < kW - 1; ++j) {
#pragma unroll
    for (int v = 0; v < kVec; ++v) last[j][v] = input(len - (kW - 1) + j, v);
  }
#pragma unroll
  for (int j = 0; j < kW - 1; ++j) {
#pragma unroll
    for (int v = 0; v < kVec; ++v) my_state[v * (kW - 1) + j] = from_float<T>(last[j][v]);
  }
}

// Computes: y [T, C] = act(causal depthwise conv of x over each packed sequence); final conv states by slot.
// Args:     x [T, C] T (row stride x_row_stride); weight [C, W]; cu_seqlens [N+1]; conv_state [slots, C, W-1] T.
// Grid:     x = token tiles of kTileTokens (ceil(T / kTileTokens)), then one block per sequence (its first W-1
//           tokens and its conv state); y = channel blocks of kChannelThreads * kVec channels.
// Block:    kChannelThreads x kTokenGroups threads; thread (c, g) owns kVec channels and kTokensPerThread tokens.
// Smem:     none.
// Requires: kVec > 1 only when C % kVec == 0 and x rows / y / conv_state are 16-byte aligned (the launcher checks).
template <typename T, int kW, int kVec>
__global__ void __launch_bounds__(kFwdThreads, 1) causal_conv1d_fwd_kernel(CausalConv1dParams p) {
  const int64_t c0 = (static_cast<int64_t>(blockIdx.y) * kChannelThreads + threadIdx.x % kChannelThreads) * kVec;
  const int group = threadIdx.x / kChannelThreads;
  if (c0 >= p.channels) return;
  float w[kW][kVec];
  load_weights<T, kW, kVec>(p, c0, w);
  const int64_t num_tiles = ceil_div(p.num_tokens, kTileTokens);
  if (blockIdx.x < num_tiles) {
    const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kTileTokens + group * kTokensPerThread;
    const int64_t t1 = t0 + kTokensPerThread < p.num_tokens ? t0 + kTokensPerThread : p.num_tokens;
    if (t0 < t1) conv_tile<T, kW, kVec>(p, w, c0, t0, t1);
  } else if (group == 0) {
    conv_boundary<T, kW, kVec>(p, w, c0, blockIdx.x - num_tiles);
  }
}

// Computes: y[n] = act(conv over (conv_state[slots[n]], x[n])); conv_state[slots[n]] shifted by x[n] is written
//           to conv_state[out_slots[n]] (in place without out_slots; speculative verification chains slots).
// Args:     x [N, C] T (row stride x_row_stride); weight [C, W]; slots [N]; conv_state [slots, C, W-1] T.
// Grid:     x = sequence n; y = channel blocks of kUpdateThreads * kVec channels.
// Block:    kUpdateThreads threads, each kVec channels (reads its state before writing it).
// Smem:     none.
// Requires: as causal_conv1d_fwd_kernel.
template <typename T, int kW, int kVec>
__global__ void __launch_bounds__(kUpdateThreads) causal_conv1d_update_kernel(CausalConv1dParams p) {
  const int64_t n = blockIdx.x;
  const int64_t c0 = (static_cast<int64_t>(blockIdx.y) * kUpdateThreads + threadIdx.x) * kVec;
  if (c0 >= p.channels) return;
  float w[kW][kVec];
  load_weights<T, kW, kVec>(p, c0, w);
  const int64_t slot = gdn::load_index(p.slots_ptr, n, p.slots_int64);
  const int64_t out_slot = p.out_slots_ptr ? gdn::load_index(p.out_slots_ptr, n, p.slots_int64) : slot;
  T* my_state = static_cast<T*>(p.conv_state_ptr) + (slot * p.channels + c0) * (kW - 1);  // [kVec, W-1]
  T* new_state = static_cast<T*>(p.conv_state_ptr) + (out_slot * p.channels + c0) * (kW - 1);
  float win[kW][kVec];
  gdn::load_conv_state<T, kW, kVec>(my_state, win);
  load_row<T, kVec>(static_cast<const T*>(p.x_ptr) + n * p.x_row_stride + c0, win[kW - 1]);
  conv_store<T, kW, kVec>(p, w, win, static_cast<T*>(p.y_ptr) + n * p.channels + c0);
  gdn::store_conv_state<T, kW, kVec>(new_state, win);
}

template <typename T>
bool vec_ok(const CausalConv1dParams& p) {
  constexpr int kVec = kVecBytes / sizeof(T);
  const auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % kVecBytes == 0; };
  return p.channels % kVec == 0 && aligned(p.x_ptr) && aligned(p.y_ptr) &&
         (p.conv_state_ptr == nullptr || aligned(p.conv_state_ptr)) &&  // the update's 16-byte state pieces
         (p.x_row_stride * static_cast<int64_t>(sizeof(T))) % kVecBytes == 0;
}

template <typename T, int kW, int kVec>
cudaError_t launch_fwd(const CausalConv1dParams& p, cudaStream_t stream) {
  const int64_t tiles = ceil_div(p.num_tokens, kTileTokens);
  const dim3 grid(static_cast<unsigned>(tiles + p.num_seqs),
                  static_cast<unsigned>(ceil_div(p.channels, int64_t{kChannelThreads} * kVec)));
  return launch(causal_conv1d_fwd_kernel<T, kW, kVec>, grid, dim3(kFwdThreads), 0, stream, p);
}

template <typename T, int kW, int kVec>
cudaError_t launch_update(const CausalConv1dParams& p, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(p.num_seqs),
                  static_cast<unsigned>(ceil_div(p.channels, int64_t{kUpdateThreads} * kVec)));
  return launch(causal_conv1d_update_kernel<T, kW, kVec>, grid, dim3(kUpdateThreads), 0, stream, p);
}

// Calls launcher<kW, kVec> for the runtime width (2..4) and the widest vector the pointers allow.
template <typename T, template <typename, int, int> class Launcher>
cudaError_t dispatch_width(const CausalConv1dParams& p, cudaStream_t stream) {
  constexpr int kVec = kVecBytes / sizeof(T);
  const bool vec = vec_ok<T>(p);
  switch (p.width) {
    case 2: return vec ? Launcher<T, 2, kVec>::run(p, stream) : Launcher<T, 2, 1>::run(p, stream);
    case 3: return vec ? Launcher<T, 3, kVec>::run(p, stream) : Launcher<T, 3, 1>::run(p, stream);
    case 4: return vec ? Launcher<T, 4, kVec>::run(p, stream) : Launcher<T, 4, 1>::run(p, stream);
    default: return cudaErrorInvalidValue;  // the torch glue allows widths 2..4 only
  }
}

template <typename T, int kW, int kVec>
struct FwdLauncher {
  static cudaError_t run(const CausalConv1dParams& p, cudaStream_t s) { return launch_fwd<T, kW, kVec>(p, s); }
};
template <typename T, int kW, int kVec>
struct UpdateLauncher {
  static cudaError_t run(const CausalConv1dParams& p, cudaStream_t s) { return launch_update<T, kW, kVec>(p, s); }
};

}  // namespace

template <typename T>
cudaError_t launch_causal_conv1d_fwd(const CausalConv1dParams& p, cudaStream_t stream) {
  if (p.num_seqs == 0 || p.channels == 0) return cudaSuccess;
  return dispatch_width<T, FwdLauncher>(p, stream);
}

template <typename T>
cudaError_t launch_causal_conv1d_update(const CausalConv1dParams& p, cudaStream_t stream) {
  if (p.num_seqs == 0 || p.channels == 0) return cudaSuccess;
  return dispatch_width<T, UpdateLauncher>(p, stream);
}

#define Q35_INSTANTIATE(T)                                                                         \
  template cudaError_t launch_causal_conv1d_fwd<T>(const CausalConv1dParams&, cudaStream_t);    \
  template cudaError_t launch_causal_conv1d_update<T>(const CausalConv1dParams&, cudaStream_t);
Q35_FOR_EACH_CONV_TYPES(Q35_INSTANTIATE)
#undef Q35_INSTANTIATE

}  // namespace q35::Q35_TARGET
