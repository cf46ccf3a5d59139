// Error-message helpers shared by the public ops' C++ entry points, which must raise the
// same messages (and Python exception types) as the Python validation they replace:
// dtypes, shapes, devices and floats spelled as Python spells them.
#pragma once
#include <ATen/ATen.h>

#include <charconv>
#include <cmath>
#include <string>

namespace sgan_fast {

// torch.float32 -> "float32" (str(dtype) without "torch.").
inline std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kLong: return "int64";
    case at::kInt: return "int32";
    case at::kShort: return "int16";
    case at::kChar: return "int8";
    case at::kByte: return "uint8";
    case at::kBool: return "bool";
    default: return c10::toString(t);
  }
}

inline bool is_float_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// A shape as a Python tuple: (4, 5), (3,), ().
inline std::string shape_str(at::IntArrayRef s) {
  std::string r = "(";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) r += ", ";
    r += std::to_string(s[i]);
  }
  if (s.size() == 1) r += ",";
  return r + ")";
}

// A float as Python's repr writes it: 0.0, inf, nan, 1e+20, 0.1.
inline std::string py_float(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), x);
  std::string s(buf, res.ptr);
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

// The position of the first true element of a bool tensor, as "[2, 1]" (one device sync).
inline std::string first_true(const at::Tensor& mask) {
  const at::Tensor pos = mask.nonzero().select(0, 0).cpu();
  std::string r = "[";
  for (int64_t i = 0; i < pos.numel(); ++i) {
    if (i) r += ", ";
    r += std::to_string(pos.data_ptr<int64_t>()[i]);
  }
  return r + "]";
}

}  // namespace sgan_fast
