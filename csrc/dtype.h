// Element types the kernels support; shared by the C++ launchers, CPU kernels and CUDA kernels
// (no ATen here: the CUDA sources include it).
#pragma once

namespace stdiff {

enum class DType : int { f32 = 0, f64 = 1, f16 = 2, bf16 = 3 };

}  // namespace stdiff
