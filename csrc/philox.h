// Philox4x32-10 counter-based generator and Box-Muller normals, shared by the C++ and CUDA code.
//
// The same (seed, offset, element index) gives bit-identical N(0, 1) samples on the CPU and on
// the GPU: every floating-point step below is one IEEE-754 operation with round-to-nearest
// (CUDA: the __f*_rn intrinsics, which are never fused into FMAs; host: plain operators, and the
// host code is compiled with -ffp-contract=off), and the transcendental functions are our own
// short polynomials built from those operations only.
//
// Stream layout: element i of a tensor uses Philox block i / 4 and lane i % 4, with
//   key     = (seed low 32 bits, seed high 32 bits)
//   counter = (block low, block high, offset low, offset high).
// Each block gives four uint32 words (w0, w1, w2, w3) -> normals
//   (R(w0) cos T(w1), R(w0) sin T(w1), R(w2) cos T(w3), R(w2) sin T(w3)),
//   R(w) = sqrt(-2 ln u), u = (2 (w >> 9) + 1) / 2^24 in (0, 1);  T(w) = 2 pi (w >> 8) / 2^24.
// Tails are therefore cut at |z| <= sqrt(-2 ln 2^-24) = 5.77.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define STDIFF_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__) || defined(__clang__)
#define STDIFF_HD inline __attribute__((always_inline))  // also into the AVX2/AVX-512 kernels
#else
#define STDIFF_HD inline
#endif

namespace stdiff {
namespace philox {

struct U32x4 {
  uint32_t v[4];
};

struct F32x4 {
  float v[4];
};

STDIFF_HD uint32_t mulhi32(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __umulhi(a, b);
#else
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
#endif
}

// Philox4x32 with 10 rounds (Salmon et al., SC'11), counter (c0..c3) and key (k0, k1).
STDIFF_HD U32x4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    const uint32_t hi0 = mulhi32(kM0, c0), lo0 = kM0 * c0;
    const uint32_t hi1 = mulhi32(kM1, c2), lo1 = kM1 * c2;
    const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += kW0;
    k1 += kW1;
  }
  return U32x4{{c0, c1, c2, c3}};
}

// ---- exactly rounded float building blocks (never contracted into FMAs) ----
STDIFF_HD float fmul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
STDIFF_HD float fadd(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
STDIFF_HD float fsub(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
STDIFF_HD float fdiv(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
STDIFF_HD float fsqrt(float a) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(a);
#else
  return __builtin_sqrtf(a);
#endif
}
STDIFF_HD float bits_to_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}
STDIFF_HD uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

// sqrt(-2 ln u) for the uniform built from w: u = (2 (w >> 9) + 1) * 2^-24 in (0, 1).
STDIFF_HD float box_muller_radius(uint32_t w) {
  const float u = fmul(static_cast<float>(((w >> 9) << 1) | 1u), 5.9604644775390625e-8f);  // exact
  // u = m * 2^e with m in [sqrt(1/2), sqrt(2)); exact bit manipulation.
  const uint32_t bits = float_to_bits(u);
  int e = static_cast<int>((bits >> 23) & 0xffu) - 127;
  uint32_t mbits = (bits & 0x007fffffu) | 0x3f800000u;  // m in [1, 2)
  const bool big = mbits > 0x3fb504f3u;                 // m > sqrt(2)
  mbits = big ? mbits - 0x00800000u : mbits;           // m / 2
  e = big ? e + 1 : e;
  const float m = bits_to_float(mbits);
  // ln m = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172: series up to s^9 (rel. error < 1e-9).
  const float s = fdiv(fsub(m, 1.0f), fadd(m, 1.0f));
  const float s2 = fmul(s, s);
  float p = fadd(fmul(s2, 0.11111111f), 0.14285715f);
  p = fadd(fmul(s2, p), 0.2f);
  p = fadd(fmul(s2, p), 0.33333334f);
  p = fadd(fmul(s2, p), 1.0f);
  const float ln_m = fmul(fmul(2.0f, s), p);
  const float fe = static_cast<float>(e);
  // e * ln 2 split in a short high part (exact product) and a low correction.
  const float ln_u = fadd(fmul(fe, 0.693359375f), fadd(fmul(fe, -2.12194440e-4f), ln_m));
  return fsqrt(fmul(-2.0f, ln_u));
}

// (cos, sin) of 2 pi v, v = (w >> 8) * 2^-24 in [0, 1); exact quadrant reduction.
STDIFF_HD void box_muller_angle(uint32_t w, float* c_out, float* s_out) {
  const int32_t k = static_cast<int32_t>(w >> 8);             // 24-bit turn fraction
  const int32_t q = (k + (1 << 21)) >> 22;                     // nearest quarter turn, 0..4
  const int32_t rk = k - (q << 22);                            // in [-2^21, 2^21)
  const float r = fmul(static_cast<float>(rk), 5.9604644775390625e-8f);  // turns, |r| <= 1/8, exact
  const float x = fmul(r, 6.28318548f);                        // radians, |x| <= pi/4
  const float z = fmul(x, x);
  // minimax polynomials on [-pi/4, pi/4] (Cephes sinf/cosf coefficients)
  float ps = fadd(fmul(z, -1.9515295891e-4f), 8.3321608736e-3f);
  ps = fadd(fmul(z, ps), -1.6666654611e-1f);
  const float sn = fadd(fmul(fmul(z, x), ps), x);
  float pc = fadd(fmul(z, 2.443315711809948e-5f), -1.388731625493765e-3f);
  pc = fadd(fmul(z, pc), 4.166664568298827e-2f);
  const float cs = fadd(fmul(fmul(z, z), pc), fsub(1.0f, fmul(0.5f, z)));
  const int quadrant = q & 3;
  const float c = quadrant == 0 ? cs : quadrant == 1 ? -sn : quadrant == 2 ? -cs : sn;
  const float s = quadrant == 0 ? sn : quadrant == 1 ? cs : quadrant == 2 ? -sn : -cs;
  *c_out = c;
  *s_out = s;
}

// Four N(0, 1) samples of Philox block `block` of the stream (seed, offset).
STDIFF_HD F32x4 normal4(uint64_t seed, uint64_t offset, uint64_t block) {
  const U32x4 w = philox4x32_10(static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32),
                                static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32),
                                static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  F32x4 out;
  float c, s;
  const float ra = box_muller_radius(w.v[0]);
  box_muller_angle(w.v[1], &c, &s);
  out.v[0] = fmul(ra, c);
  out.v[1] = fmul(ra, s);
  const float rb = box_muller_radius(w.v[2]);
  box_muller_angle(w.v[3], &c, &s);
  out.v[2] = fmul(rb, c);
  out.v[3] = fmul(rb, s);
  return out;
}

// The N(0, 1) sample of element `index` of the stream (seed, offset).
STDIFF_HD float normal_at(uint64_t seed, uint64_t offset, uint64_t index) {
  const F32x4 z = normal4(seed, offset, index >> 2);
  return z.v[index & 3u];
}

}  // namespace philox
}  // namespace stdiff
