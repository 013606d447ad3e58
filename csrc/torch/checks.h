// Input validation shared by every op's check_<op>_args(). Messages follow one format:
//   "qwen35_native.<op>: <arg> <expectation>, got <actual>"
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <initializer_list>
#include <sstream>
#include <string>

namespace q35::glue {

inline std::string shape_str(c10::IntArrayRef sizes) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < sizes.size(); ++i) os << (i ? ", " : "") << sizes[i];
  os << "]";
  return os.str();
}

inline std::string dtype_list(std::initializer_list<c10::ScalarType> dtypes) {
  std::ostringstream os;
  bool first = true;
  for (auto d : dtypes) {
    os << (first ? "" : " or ") << c10::toString(d);
    first = false;
  }
  return os.str();
}

inline void check_defined(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.defined(), "qwen35_native.", op, ": ", name, " must be a tensor, got None");
}

inline void check_dtype(const char* op, const char* name, const at::Tensor& t,
                        std::initializer_list<c10::ScalarType> allowed) {
  for (auto d : allowed)
    if (t.scalar_type() == d) return;
  TORCH_CHECK(false, "qwen35_native.", op, ": ", name, " must have dtype ", dtype_list(allowed), ", got ",
              c10::toString(t.scalar_type()));
}

inline void check_same_device(const char* op, const char* name, const at::Tensor& t, const at::Tensor& ref,
                              const char* ref_name) {
  TORCH_CHECK(t.device() == ref.device(), "qwen35_native.", op, ": ", name, " must be on the device of ", ref_name,
              " (", ref.device().str(), "), got ", t.device().str());
}

inline void check_dim(const char* op, const char* name, const at::Tensor& t, int64_t dim) {
  TORCH_CHECK(t.dim() == dim, "qwen35_native.", op, ": ", name, " must have ", dim, " dimensions, got shape ",
              shape_str(t.sizes()));
}

inline void check_shape(const char* op, const char* name, const at::Tensor& t, c10::IntArrayRef expected,
                        const char* what) {
  TORCH_CHECK(t.sizes() == expected, "qwen35_native.", op, ": ", name, " must have shape ", what, "=",
              shape_str(expected), ", got ", shape_str(t.sizes()));
}

inline void check_last_dim_contiguous(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.dim() == 0 || t.size(-1) <= 1 || t.stride(-1) == 1, "qwen35_native.", op, ": ", name,
              " must be contiguous in its last dimension, got strides ", shape_str(t.strides()));
}

// Rows of a [..., H] tensor addressed as row_index * row_stride: true when all leading dimensions collapse
// into one with a single stride (any contiguous tensor, or a column slice of a wider buffer).
inline bool rows_have_uniform_stride(const at::Tensor& t, int64_t* row_stride) {
  *row_stride = t.dim() > 0 ? t.size(-1) : 1;  // a single row: any stride works
  int64_t inner_size = 0;                       // size of the last leading dim seen with size > 1
  for (int64_t i = t.dim() - 2; i >= 0; --i) {
    if (t.size(i) == 1) continue;
    if (inner_size == 0) {
      *row_stride = t.stride(i);
    } else if (t.stride(i) != *row_stride * inner_size) {
      return false;
    }
    inner_size = inner_size == 0 ? t.size(i) : inner_size * t.size(i);
  }
  return true;
}

}  // namespace q35::glue
