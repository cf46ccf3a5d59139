// Data type codes passed from the .cpp (torch) side to the .cu (torch-free) side.
#pragma once

namespace sgan_fast {

enum class DType : int { f32 = 0, f64 = 1, f16 = 2, bf16 = 3 };

}  // namespace sgan_fast
