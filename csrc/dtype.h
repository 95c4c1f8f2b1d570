// Element types the kernels support; shared by the C++ launchers, CPU kernels and CUDA kernels
// (no ATen here: the CUDA sources include it).
#pragma once

namespace stdiff {

enum class DType : int { f32 = 0, f64 = 1, f16 = 2, bf16 = 3 };

// A type as a value: visit_dtype passes TypeTag<T>{} to its function.
template <typename T>
struct TypeTag {
  using type = T;
};

// The one dtype switch: returns fn(TypeTag<T>{}) for the element type T of `dtype`, where the
// 16-bit types are the caller's (c10::Half / c10::BFloat16 on the host, __half / __nv_bfloat16
// in CUDA code). Every branch of fn must return the same type.
template <typename Half, typename BFloat16, typename Fn>
decltype(auto) visit_dtype(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::f64:
      return fn(TypeTag<double>{});
    case DType::f16:
      return fn(TypeTag<Half>{});
    case DType::bf16:
      return fn(TypeTag<BFloat16>{});
    case DType::f32:
      break;
  }
  return fn(TypeTag<float>{});
}

}  // namespace stdiff
