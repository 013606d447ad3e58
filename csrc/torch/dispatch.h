// The one place where torch dtypes become kernel template types (STYLE habit 12).
#pragma once
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

namespace q35::glue {

template <typename T>
struct TypeTag {
  using type = T;
};

// Calls f(TypeTag<T>{}) with T the kernel type of a float dtype (float, __half, __nv_bfloat16).
template <typename F>
decltype(auto) dispatch_float_dtype(c10::ScalarType st, const char* op, F&& f) {
  switch (st) {
    case c10::ScalarType::Float:
      return f(TypeTag<float>{});
    case c10::ScalarType::Half:
      return f(TypeTag<__half>{});
    case c10::ScalarType::BFloat16:
      return f(TypeTag<__nv_bfloat16>{});
    default:
      TORCH_CHECK(false, "qwen35_native.", op, ": unsupported dtype ", c10::toString(st),
                  " (expected float32, float16 or bfloat16)");
  }
}

// Calls f(TypeTag<T>{}, TypeTag<W>{}) where W is either T (same dtype) or float (an fp32 parameter tensor).
template <typename F>
decltype(auto) dispatch_float_dtype_and_param(c10::ScalarType st, c10::ScalarType param_st, const char* op, F&& f) {
  return dispatch_float_dtype(st, op, [&](auto tag) -> decltype(auto) {
    using T = typename decltype(tag)::type;
    if (param_st == c10::ScalarType::Float) return f(tag, TypeTag<float>{});
    return f(tag, TypeTag<T>{});
  });
}

}  // namespace q35::glue
