// Checks and small helpers shared by the GDN op glue (gdn_conv_ops.cpp, gdn_ops.cpp). Messages follow
// "qwen35_native.<op>: <arg> <expectation>, got <actual>".
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>

#include "kernels/gdn/gdn_chunk.cuh"
#include "kernels/gdn/gdn_recurrent.cuh"
#include "torch/checks.h"
#include "torch/device_guard.h"

namespace q35::glue::gdn {

constexpr int64_t kHeadDim = 128;  // K = V of the scan kernels
constexpr int kNominalSms = 132;   // the emulator plans CTAs as for an H100

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Multiprocessors of the tensor's device (cached per device), or the nominal count on the CPU (emulator).
int num_sms(const at::Tensor& t);

inline void check_float(const char* op, const char* name, const at::Tensor& t) {
  check_defined(op, name, t);
  check_dtype(op, name, t, {at::kFloat, at::kHalf, at::kBFloat16});
}

inline void check_same_dtype(const char* op, const char* name, const at::Tensor& t, const at::Tensor& ref,
                             const char* ref_name) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), "qwen35_native.", op, ": ", name, " must have the dtype of ",
              ref_name, " (", c10::toString(ref.scalar_type()), "), got ", c10::toString(t.scalar_type()));
}

// A parameter vector [n] stored in the activation dtype or float32, contiguous.
inline void check_param(const char* op, const char* name, const at::Tensor& t, const at::Tensor& ref, int64_t n) {
  check_defined(op, name, t);
  check_same_device(op, name, t, ref, "the activations");
  TORCH_CHECK(t.scalar_type() == ref.scalar_type() || t.scalar_type() == at::kFloat, "qwen35_native.", op, ": ", name,
              " must have dtype ", c10::toString(ref.scalar_type()), " or float32, got ",
              c10::toString(t.scalar_type()));
  check_shape(op, name, t, {n}, "[n]");
  TORCH_CHECK(t.is_contiguous(), "qwen35_native.", op, ": ", name, " must be contiguous");
}

// Rows [rows, cols] with one row stride and contiguous columns (a column slice of a wider buffer is fine).
inline int64_t check_rows(const char* op, const char* name, const at::Tensor& t, const at::Tensor& ref, int64_t rows,
                          int64_t cols) {
  check_defined(op, name, t);
  check_same_device(op, name, t, ref, "the activations");
  check_same_dtype(op, name, t, ref, "the activations");
  check_shape(op, name, t, {rows, cols}, "[rows, cols]");
  TORCH_CHECK(cols <= 1 || t.stride(1) == 1, "qwen35_native.", op, ": ", name,
              " must be contiguous in its last dimension, got strides ", shape_str(t.strides()));
  return rows > 1 ? t.stride(0) : cols;
}

// An index vector [n] (int32/int64, contiguous) on the device of ref.
inline void check_index(const char* op, const char* name, const at::Tensor& t, const at::Tensor& ref, int64_t n) {
  check_defined(op, name, t);
  check_same_device(op, name, t, ref, "the activations");
  check_dtype(op, name, t, {at::kInt, at::kLong});
  check_shape(op, name, t, {n}, "[n]");
  TORCH_CHECK(t.is_contiguous(), "qwen35_native.", op, ": ", name, " must be contiguous");
}

// A state cache [slots, Hv, K, V] float32, contiguous.
inline void check_state(const char* op, const char* name, const at::Tensor& t, const at::Tensor& ref, int64_t hv) {
  check_defined(op, name, t);
  check_same_device(op, name, t, ref, "the activations");
  check_dtype(op, name, t, {at::kFloat});
  check_dim(op, name, t, 4);
  TORCH_CHECK(t.size(1) == hv && t.size(2) == kHeadDim && t.size(3) == kHeadDim, "qwen35_native.", op, ": ", name,
              " must have shape [slots, Hv=", hv, ", 128, 128], got ", shape_str(t.sizes()));
  TORCH_CHECK(t.is_contiguous() && aligned16(t.data_ptr()), "qwen35_native.", op, ": ", name,
              " must be contiguous and 16-byte aligned");
}

// Token rows of a [T, H, 128] tensor for the 16-byte loads of the scan kernels; returns the token stride.
inline int64_t check_heads(const char* op, const char* name, const at::Tensor& t, const at::Tensor& ref, int64_t tokens,
                           int64_t heads, bool vec16) {
  check_defined(op, name, t);
  check_same_device(op, name, t, ref, "q");
  check_same_dtype(op, name, t, ref, "q");
  check_shape(op, name, t, {tokens, heads, kHeadDim}, "[T, H, 128]");
  TORCH_CHECK(t.stride(2) == 1 && (heads == 1 || t.stride(1) == kHeadDim), "qwen35_native.", op, ": ", name,
              " must have contiguous heads (strides [*, 128, 1]), got ", shape_str(t.strides()));
  const int64_t stride = tokens > 1 ? t.stride(0) : heads * kHeadDim;
  if (vec16) {
    TORCH_CHECK(aligned16(t.data_ptr()) && (stride * t.element_size()) % 16 == 0, "qwen35_native.", op, ": ", name,
                " rows must be 16-byte aligned (data pointer and token stride)");
  }
  return stride;
}

// An output the caller allocated: the given shape and dtype, contiguous, 16-byte aligned, on ref's device.
inline void check_out(const char* op, const char* name, const at::Tensor& t, const at::Tensor& ref,
                      c10::IntArrayRef shape, at::ScalarType dtype) {
  check_defined(op, name, t);
  check_same_device(op, name, t, ref, "the inputs");
  check_dtype(op, name, t, {dtype});
  TORCH_CHECK(t.sizes() == shape, "qwen35_native.", op, ": ", name, " must have shape ", shape_str(shape), ", got ",
              shape_str(t.sizes()));
  TORCH_CHECK(t.is_contiguous() && aligned16(t.data_ptr()), "qwen35_native.", op, ": ", name,
              " must be contiguous and 16-byte aligned");
}

// Gates [T, Hv] with contiguous heads; returns the token stride.
inline int64_t check_gate(const char* op, const char* name, const at::Tensor& t, const at::Tensor& ref, int64_t tokens,
                          int64_t hv) {
  check_defined(op, name, t);
  check_same_device(op, name, t, ref, "q");
  check_shape(op, name, t, {tokens, hv}, "[T, Hv]");
  TORCH_CHECK(hv <= 1 || t.stride(1) == 1, "qwen35_native.", op, ": ", name, " must be contiguous over heads");
  return tokens > 1 ? t.stride(0) : hv;
}

// A launcher expression of the CUDA build, or "not supported" in a build without CUDA kernels.
#if defined(Q35_WITH_CUDA)
#define Q35_GDN_CUDA_LAUNCH(expr) (expr)
#else
#define Q35_GDN_CUDA_LAUNCH(expr) cudaErrorNotSupported
#endif

// Runs launch(stream, on_cuda) on the CUDA stream of ref's device, or under the emulator for CPU tensors.
template <typename F>
void run_on_device(const char* op, const at::Tensor& ref, F&& launch) {
  if (ref.is_cuda()) {
#if defined(Q35_WITH_CUDA)
    const c10::cuda::CUDAGuard guard(ref.device());
    check_launch(launch(static_cast<cudaStream_t>(c10::cuda::getCurrentCUDAStream()), true), op);
#endif
  } else {
    check_launch(launch(static_cast<cudaStream_t>(nullptr), false), op);
  }
}

// Workspaces of the split chunk scan (allocated by run_chunk when it splits; they live until the op returns).
struct ChunkWorkspace {
  at::Tensor plan, entry, local, trans;  // the split scheme
  at::Tensor prep_tu, prep_p, prep_w, prep_q, prep_kt, prep_gates;  // the chunk-local pre-pass (arch 91)
};

// Plans segments (segment_len 0: automatic), allocates the split workspace and launches the chunk scan for the
// dtype of ref (float16 / bfloat16). p: everything but the plan fields.
void run_chunk(const char* op, GdnChunkParams& p, const at::Tensor& ref, int64_t segment_len, ChunkWorkspace& ws);

// The raw op's `arch` (the chunk kernel, kGdnImpl*): checked, and where sm_90a is forced, that it runs here.
int check_chunk_arch(const char* op, int64_t arch, const at::Tensor& ref);

// The recurrent kernel's launch choices for ref's device: SM count, the norm in clusters (sm_90), and whether the
// conv runs inside it (conv_fusable: the gdn_decode layer op with inputs the fused kernel takes; sm_90;
// gdn_decode_fuses_conv). run_recurrent makes them itself unless p.fuse_conv is already set.
void plan_recurrent(GdnRecurrentParams& p, const at::Tensor& ref, bool conv_fusable);

// Launches the recurrent kernel for the dtype of ref; allocates the norm's row counters when needed.
void run_recurrent(const char* op, GdnRecurrentParams& p, const at::Tensor& ref, at::Tensor& counters);

// Causal conv1d (gdn_conv_ops.cpp), shared with the layer-level ops: argument checks, then the prefill kernel
// (update = false; cu_seqlens may be null: one sequence) or the decode update (update = true).
void check_conv_args(const char* op, const at::Tensor& x, const at::Tensor& weight, const at::Tensor* cu_seqlens,
                     const at::Tensor* conv_state, const at::Tensor* slots, const at::Tensor* has_initial,
                     bool update);
void run_conv(const char* op, const at::Tensor& x, const at::Tensor& weight, const at::Tensor* cu_seqlens,
              const at::Tensor* conv_state, const at::Tensor* slots, const at::Tensor* has_initial, bool silu,
              bool update, at::Tensor& y, const at::Tensor* out_slots = nullptr);

}  // namespace q35::glue::gdn
