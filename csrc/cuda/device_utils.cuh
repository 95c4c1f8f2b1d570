// Device helpers for the CUDA kernels: storage <-> accumulation type conversions, 128-bit packed
// loads/stores, block reductions and grid sizing. CUDA runtime headers only (no ATen).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>

#include "../dtype.h"

namespace stdiff {
namespace cuda {

// Storage type T, accumulation type Conv<T>::acc (fp32, or fp64 for double).
template <typename T>
struct Conv;
template <>
struct Conv<float> {
  using acc = float;
  static __device__ __forceinline__ float to(float x) { return x; }
  static __device__ __forceinline__ float from(float x) { return x; }
};
template <>
struct Conv<double> {
  using acc = double;
  static __device__ __forceinline__ double to(double x) { return x; }
  static __device__ __forceinline__ double from(double x) { return x; }
};
template <>
struct Conv<__half> {
  using acc = float;
  static __device__ __forceinline__ float to(__half x) { return __half2float(x); }
  static __device__ __forceinline__ __half from(float x) { return __float2half_rn(x); }
};
template <>
struct Conv<__nv_bfloat16> {
  using acc = float;
  static __device__ __forceinline__ float to(__nv_bfloat16 x) { return __bfloat162float(x); }
  static __device__ __forceinline__ __nv_bfloat16 from(float x) { return __float2bfloat16_rn(x); }
};
template <typename T>
using acc_t = typename Conv<T>::acc;

// Elements of T per 128-bit access.
template <typename T>
constexpr int kVec = static_cast<int>(16 / sizeof(T));

template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T x[V];
};

// out[k] = p[i + k], k < V (one 128-bit load when V == kVec<T>; p + i then 16-byte aligned).
template <int V, typename T>
__device__ __forceinline__ void load(const T* __restrict__ p, int64_t i, acc_t<T> (&out)[V]) {
  const Pack<T, V> v = *reinterpret_cast<const Pack<T, V>*>(p + i);
#pragma unroll
  for (int k = 0; k < V; ++k) out[k] = Conv<T>::to(v.x[k]);
}

template <int V, typename T>
__device__ __forceinline__ void store(T* __restrict__ p, int64_t i, const acc_t<T> (&in)[V]) {
  Pack<T, V> v;
#pragma unroll
  for (int k = 0; k < V; ++k) v.x[k] = Conv<T>::from(in[k]);
  *reinterpret_cast<Pack<T, V>*>(p + i) = v;
}

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
__device__ __forceinline__ float tanh_(float x) { return tanhf(x); }
__device__ __forceinline__ double tanh_(double x) { return tanh(x); }

template <typename A, int K>
struct Vals {
  A v[K];
};

// Sum of `x` over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
// `scratch` holds 32 Vals; the call ends with a barrier, so scratch may be reused right after.
template <typename A, int K>
__device__ __forceinline__ Vals<A, K> block_sum(Vals<A, K> x, Vals<A, K>* scratch) {
#pragma unroll
  for (int k = 0; k < K; ++k)
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x.v[k] += __shfl_xor_sync(0xffffffffu, x.v[k], o);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  Vals<A, K> total;
#pragma unroll
  for (int k = 0; k < K; ++k) total.v[k] = A(0);
  for (int w = 0; w < warps; ++w)
#pragma unroll
    for (int k = 0; k < K; ++k) total.v[k] += scratch[w].v[k];
  __syncthreads();
  return total;
}

// True when every non-null pointer is 16-byte aligned.
inline bool aligned16(std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs)
    if (p != nullptr && (reinterpret_cast<uintptr_t>(p) & 15u) != 0) return false;
  return true;
}

// Blocks for a grid-stride loop over `work` items with `threads` threads per block: enough to
// fill every SM, never more than the work needs.
inline int grid_for(int64_t work, int threads) {
  static int sms[64] = {0};
  int dev = 0;
  cudaGetDevice(&dev);
  int& count = sms[dev & 63];
  if (count == 0) cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, dev);
  const int64_t cap = static_cast<int64_t>(count > 0 ? count : 1) * (2048 / threads);
  const int64_t need = (work + threads - 1) / threads;
  return static_cast<int>(need < 1 ? 1 : (need < cap ? need : cap));
}

}  // namespace cuda
}  // namespace stdiff
