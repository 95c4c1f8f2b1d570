// Branch-free float math that GCC/Clang auto-vectorise (no libm calls), plus double versions
// that call libm for full accuracy. Used by the CPU kernels only.
//
// Float accuracy: exp within 2 ulp on [-87, 88]; tanh and sigmoid within a few ulp. The float
// functions take FMA = whether the calling kernel's instruction set has fused multiply-add.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

// Forced inline: the kernels are compiled for several instruction sets (kernels_<isa>.cpp) and
// GCC does not inline plain inline functions of the default target into them otherwise.
#if defined(__GNUC__) || defined(__clang__)
#define STDIFF_INLINE inline __attribute__((always_inline))
#else
#define STDIFF_INLINE inline
#endif

namespace stdiff {
namespace cpu {

STDIFF_INLINE uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
STDIFF_INLINE float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// a * b + c: one fused multiply-add where the instruction set has it (FMA = true: the AVX2 and
// AVX-512 kernels), two rounded operations otherwise (the baseline kernels).
template <bool FMA>
STDIFF_INLINE float madd(float a, float b, float c) {
  if constexpr (FMA) {
    return __builtin_fmaf(a, b, c);
  } else {
    return a * b + c;
  }
}

// e^x; x is clamped to [-87.3, 88.37] (the result stays normal and finite). Cody-Waite reduction
// to r in [-ln2/2, ln2/2], then a degree-5 polynomial fitted to e^r (relative error 7.5e-8).
template <bool FMA>
STDIFF_INLINE float exp_f(float x) {
  x = x < -87.3365f ? -87.3365f : x;
  x = x > 88.3762f ? 88.3762f : x;
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x / ln 2)
  float r = madd<FMA>(n, -0.693359375f, x);
  r = madd<FMA>(n, 2.12194440e-4f, r);
  float p = 8.297653103e-03f;
  p = madd<FMA>(p, r, 4.191538347e-02f);
  p = madd<FMA>(p, r, 1.666757477e-01f);
  p = madd<FMA>(p, r, 4.999889484e-01f);
  p = madd<FMA>(p, r, 9.999996920e-01f);
  p = madd<FMA>(p, r, 1.000000072e+00f);
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  return p * float_of(static_cast<uint32_t>(bits));
}

template <bool FMA>
STDIFF_INLINE float sigmoid_f(float x) {
  return 1.0f / (1.0f + exp_f<FMA>(-x));
}

// tanh: odd polynomial for |x| < 0.625, 1 - 2 / (e^{2|x|} + 1) beyond.
template <bool FMA>
STDIFF_INLINE float tanh_f(float x) {
  const float ax = std::fabs(x);
  const float z = x * x;
  float p = -5.70498872745e-3f;
  p = madd<FMA>(p, z, 2.06390887954e-2f);
  p = madd<FMA>(p, z, -5.37397155531e-2f);
  p = madd<FMA>(p, z, 1.33314422036e-1f);
  p = madd<FMA>(p, z, -3.33332819422e-1f);
  const float small = madd<FMA>(p * z, x, x);
  const float big = 1.0f - 2.0f / (exp_f<FMA>(2.0f * ax) + 1.0f);
  return ax < 0.625f ? small : std::copysign(big, x);
}

template <bool FMA>
STDIFF_INLINE double sigmoid_f(double x) {
  return 1.0 / (1.0 + std::exp(-x));
}
template <bool FMA>
STDIFF_INLINE double tanh_f(double x) {
  return std::tanh(x);
}

// Storage type -> accumulation type.
template <typename T>
struct Acc {
  using type = float;
};
template <>
struct Acc<double> {
  using type = double;
};
template <typename T>
using acc_t = typename Acc<T>::type;

// bfloat16 / IEEE half <-> float, branch-free (round to nearest even, like c10's conversions,
// but force-inlined so the conversion loops vectorise).
STDIFF_INLINE float bf16_to_float(uint16_t b) { return float_of(static_cast<uint32_t>(b) << 16); }
STDIFF_INLINE uint16_t float_to_bf16(float f) {
  const uint32_t u = bits_of(f);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>(f != f ? 0x7fc0u : rounded);
}
STDIFF_INLINE float half_to_float(uint16_t h) {
  const uint32_t w = static_cast<uint32_t>(h) << 16;
  const uint32_t sign = w & 0x80000000u, two_w = w + w;
  const float normal = float_of((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;  // rebias the exponent
  const float subnormal = float_of((two_w >> 17) | (126u << 23)) - 0.5f;      // magic-number trick
  return float_of(sign | (two_w < (1u << 27) ? bits_of(subnormal) : bits_of(normal)));
}
STDIFF_INLINE uint16_t float_to_half(float f) {
  // scale so that float rounding does the half rounding, then take the bits (handles subnormals)
  float base = (std::fabs(f) * 0x1.0p+112f) * 0x1.0p-110f;
  const uint32_t w = bits_of(f), shl1_w = w + w, sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  bias = bias < 0x71000000u ? 0x71000000u : bias;
  base = float_of((bias >> 1) + 0x07800000u) + base;
  const uint32_t b = bits_of(base);
  const uint32_t nonsign = ((b >> 13) & 0x00007C00u) + (b & 0x00000FFFu);
  return static_cast<uint16_t>((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

template <typename T>
STDIFF_INLINE acc_t<T> load(const T* p, int64_t i) {
  return p[i];
}
template <>
STDIFF_INLINE float load(const c10::BFloat16* p, int64_t i) {
  return bf16_to_float(p[i].x);
}
template <>
STDIFF_INLINE float load(const c10::Half* p, int64_t i) {
  return half_to_float(p[i].x);
}

template <typename T>
STDIFF_INLINE void store(T* p, int64_t i, acc_t<T> v) {
  p[i] = v;
}
template <>
STDIFF_INLINE void store(c10::BFloat16* p, int64_t i, float v) {
  p[i].x = float_to_bf16(v);
}
template <>
STDIFF_INLINE void store(c10::Half* p, int64_t i, float v) {
  p[i].x = float_to_half(v);
}

}  // namespace cpu
}  // namespace stdiff
