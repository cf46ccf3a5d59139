// The Python module sgan_fast._C: importing it registers the ops (TORCH_LIBRARY in the
// op files); these functions say how it was built.
#include <torch/extension.h>

#include <string>

#ifdef SGAN_FAST_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace {

bool cuda_compiled() {
#ifdef SGAN_FAST_WITH_CUDA
  return true;
#else
  return false;
#endif
}

std::string cuda_version() {
#ifdef SGAN_FAST_WITH_CUDA
  return std::to_string(CUDART_VERSION / 1000) + "." + std::to_string((CUDART_VERSION % 1000) / 10);
#else
  return "";
#endif
}

std::string torch_version() {
#if defined(TORCH_VERSION_MAJOR) && defined(TORCH_VERSION_MINOR) && defined(TORCH_VERSION_PATCH)
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
         std::to_string(TORCH_VERSION_PATCH);
#else
  return "";
#endif
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "sgan_fast compiled kernels (C++ CPU, and CUDA when built with a toolkit)";
  m.def("cuda_compiled", &cuda_compiled, "True when the CUDA kernels were built");
  m.def("cuda_version", &cuda_version, "CUDA runtime version the kernels were built with, or ''");
  m.def("torch_version", &torch_version, "torch version the extension was built against");
}
