// CUDA kernels of spade_norm (forward and backward).
//
// NCHW rows of up to 16384 elements (128 x 128; 8192 for fp64 or rows that are not 16-byte
// aligned): one block per (n, c) row holds the row in registers (at most 16 elements per thread,
// 128-bit loads when the row is 16-byte aligned),
// computes mean and biased variance exactly in two block reductions over the registers, then
// applies the affine map: h, gamma, beta are each read once. Longer rows use a block-stride loop
// (shifted sums for the statistics, then a second read of h). NHWC (channels_last): one block per
// (n, 32-channel tile) with shifted sums per channel, then a second read of h.
// Statistics are accumulated in fp32 (fp64 for double inputs).
#include "device_utils.cuh"
#include "kernels.cuh"

namespace stdiff {
namespace cuda {
namespace {

constexpr int kMaxThreads = 1024;

// Packs of V elements each thread keeps in registers in the row kernels: at most 16 fp32 values
// (8 fp64), fewer for scalar loads; chosen so that ptxas does not spill under 1024 threads.
template <typename T, int V>
constexpr int kItems = V > 1 ? (sizeof(acc_t<T>) == 8 ? 8 : 16) / V : (sizeof(acc_t<T>) == 8 ? 4 : 8);

// Longest row the register-cached kernels take.
template <typename T, int V>
constexpr int64_t kMaxRow = static_cast<int64_t>(kMaxThreads) * V * kItems<T, V>;

// ------------------------------------------------------------------ NCHW, row in registers
// Loads the row x[0 .. hw) into registers (element (it * blockDim.x + threadIdx.x) * V + k in
// xv[it][k]) and computes its mean and 1 / sqrt(biased variance + eps): two block reductions over
// the registers, no cancellation. Shared by the forward and backward row kernels.
template <typename T, int V, int ITEMS>
__device__ __forceinline__ void load_row_stats(const T* __restrict__ x, int hw, double eps, acc_t<T> (&xv)[ITEMS][V],
                                               Vals<acc_t<T>, 1>* scratch, acc_t<T>* mean, acc_t<T>* rstd) {
  using A = acc_t<T>;
  Vals<A, 1> acc{{A(0)}};
#pragma unroll
  for (int it = 0; it < ITEMS; ++it) {
    const int e = (it * blockDim.x + threadIdx.x) * V;
    if (e < hw) {
      load<V>(x, e, xv[it]);
#pragma unroll
      for (int k = 0; k < V; ++k) acc.v[0] += xv[it][k];
    }
  }
  const A m = block_sum(acc, scratch).v[0] / static_cast<A>(hw);
  acc.v[0] = A(0);
#pragma unroll
  for (int it = 0; it < ITEMS; ++it) {
    const int e = (it * blockDim.x + threadIdx.x) * V;
    if (e < hw) {
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const A d = xv[it][k] - m;
        acc.v[0] += d * d;
      }
    }
  }
  *mean = m;
  *rstd = A(1) / sqrt(block_sum(acc, scratch).v[0] / static_cast<A>(hw) + static_cast<A>(eps));
}

template <typename T, int V, int ITEMS>
__global__ void __launch_bounds__(kMaxThreads) spade_fwd_rows(const SpadeArgs a) {
  using A = acc_t<T>;
  __shared__ Vals<A, 1> scratch[32];
  const int hw = static_cast<int>(a.hw);
  const int64_t base = static_cast<int64_t>(blockIdx.x) * hw;
  const T* __restrict__ x = static_cast<const T*>(a.h) + base;
  A xv[ITEMS][V];
  A mean, rstd;
  load_row_stats<T, V, ITEMS>(x, hw, a.eps, xv, scratch, &mean, &rstd);
  const A bias = a.bias != nullptr ? Conv<T>::to(static_cast<const T*>(a.bias)[blockIdx.x]) : A(0);
  const T* __restrict__ gamma = static_cast<const T*>(a.gamma) + base;
  const T* __restrict__ beta = static_cast<const T*>(a.beta) + base;
  T* __restrict__ out = static_cast<T*>(a.out) + base;
#pragma unroll
  for (int it = 0; it < ITEMS; ++it) {
    const int e = (it * blockDim.x + threadIdx.x) * V;
    if (e < hw) {
      A gv[V], bv[V], o[V];
      load<V>(gamma, e, gv);
      load<V>(beta, e, bv);
#pragma unroll
      for (int k = 0; k < V; ++k) o[k] = (xv[it][k] - mean) * rstd * (A(1) + gv[k]) + bv[k] + bias;
      store<V>(out, e, o);
    }
  }
}

template <typename T, int V, int ITEMS>
__global__ void __launch_bounds__(kMaxThreads) spade_bwd_rows(const SpadeArgs a) {
  using A = acc_t<T>;
  __shared__ Vals<A, 1> stats_scratch[32];
  __shared__ Vals<A, 3> scratch[32];
  const int hw = static_cast<int>(a.hw);
  const A inv_n = A(1) / static_cast<A>(hw);
  const int64_t base = static_cast<int64_t>(blockIdx.x) * hw;
  const T* __restrict__ x = static_cast<const T*>(a.h) + base;
  A xh[ITEMS][V];  // h, then the normalised h
  A gg[ITEMS][V];  // grad * (1 + gamma)
  A mean, rstd;
  load_row_stats<T, V, ITEMS>(x, hw, a.eps, xh, stats_scratch, &mean, &rstd);
  const T* __restrict__ gamma = static_cast<const T*>(a.gamma) + base;
  const T* __restrict__ grad = static_cast<const T*>(a.grad) + base;
  T* __restrict__ dgamma = static_cast<T*>(a.grad_gamma) + base;
  Vals<A, 3> acc{{A(0), A(0), A(0)}};
#pragma unroll
  for (int it = 0; it < ITEMS; ++it) {
    const int e = (it * blockDim.x + threadIdx.x) * V;
    if (e < hw) {
      A gv[V], dy[V], dgm[V];
      load<V>(gamma, e, gv);
      load<V>(grad, e, dy);
#pragma unroll
      for (int k = 0; k < V; ++k) {
        xh[it][k] = (xh[it][k] - mean) * rstd;
        gg[it][k] = dy[k] * (A(1) + gv[k]);
        dgm[k] = dy[k] * xh[it][k];
        acc.v[0] += gg[it][k];
        acc.v[1] += gg[it][k] * xh[it][k];
        acc.v[2] += dy[k];
      }
      if (a.grad_gamma != nullptr) store<V>(dgamma, e, dgm);
    }
  }
  const Vals<A, 3> sums = block_sum(acc, scratch);
  const A m_g = sums.v[0] * inv_n, m_gx = sums.v[1] * inv_n;
  T* __restrict__ dx = static_cast<T*>(a.grad_h) + base;
#pragma unroll
  for (int it = 0; it < ITEMS; ++it) {
    const int e = (it * blockDim.x + threadIdx.x) * V;
    if (e < hw) {
      A o[V];
#pragma unroll
      for (int k = 0; k < V; ++k) o[k] = rstd * (gg[it][k] - m_g - xh[it][k] * m_gx);
      if (a.grad_h != nullptr) store<V>(dx, e, o);
    }
  }
  if (threadIdx.x == 0 && a.grad_bias != nullptr) static_cast<T*>(a.grad_bias)[blockIdx.x] = Conv<T>::from(sums.v[2]);
}

// ------------------------------------------------------------------ NCHW, long rows
// One element's share of the backward sums of a row (d(xhat) = dy (1 + gamma), d(xhat) * xhat, dy),
// added to acc, and its d(gamma) written to *dgamma unless it is null. Shared by the loop and NHWC
// backward kernels.
template <typename T>
__device__ __forceinline__ void add_grad_terms(T dy_t, T x_t, T gamma_t, acc_t<T> mean, acc_t<T> rstd,
                                               Vals<acc_t<T>, 3>& acc, T* __restrict__ dgamma) {
  using A = acc_t<T>;
  const A dy = Conv<T>::to(dy_t);
  const A xh = (Conv<T>::to(x_t) - mean) * rstd;
  const A g = dy * (A(1) + Conv<T>::to(gamma_t));
  acc.v[0] += g;
  acc.v[1] += g * xh;
  acc.v[2] += dy;
  if (dgamma != nullptr) *dgamma = Conv<T>::from(dy * xh);
}

// Mean and rstd of x[0 .. n) with `stride` between elements (shifted sums, shift = x[0]),
// accumulated by the threads `t0, t0 + tstep, ...` and combined by the caller.
template <typename T>
__device__ __forceinline__ Vals<acc_t<T>, 2> shifted_sums(const T* __restrict__ x, int64_t n, int64_t stride,
                                                          int64_t t0, int64_t tstep) {
  using A = acc_t<T>;
  const A shift = Conv<T>::to(x[0]);
  Vals<A, 2> s{{A(0), A(0)}};
  for (int64_t e = t0; e < n; e += tstep) {
    const A d = Conv<T>::to(x[e * stride]) - shift;
    s.v[0] += d;
    s.v[1] += d * d;
  }
  return s;
}

// (mean, rstd) from the shifted sums of n elements.
template <typename T>
__device__ __forceinline__ void finish_stats(const T* __restrict__ x, Vals<acc_t<T>, 2> s, int64_t n, double eps,
                                             acc_t<T>* mean, acc_t<T>* rstd) {
  using A = acc_t<T>;
  const A m = s.v[0] / static_cast<A>(n);
  const A var = s.v[1] / static_cast<A>(n) - m * m;
  *mean = Conv<T>::to(x[0]) + m;
  *rstd = A(1) / sqrt((var > A(0) ? var : A(0)) + static_cast<A>(eps));
}

template <typename T>
__global__ void __launch_bounds__(kMaxThreads) spade_fwd_loop(const SpadeArgs a) {
  using A = acc_t<T>;
  __shared__ Vals<A, 2> scratch[32];
  const int64_t hw = a.hw, base = static_cast<int64_t>(blockIdx.x) * hw;
  const T* __restrict__ x = static_cast<const T*>(a.h) + base;
  A mean, rstd;
  finish_stats(x, block_sum(shifted_sums(x, hw, 1, threadIdx.x, blockDim.x), scratch), hw, a.eps, &mean, &rstd);
  const A bias = a.bias != nullptr ? Conv<T>::to(static_cast<const T*>(a.bias)[blockIdx.x]) : A(0);
  const T* __restrict__ gamma = static_cast<const T*>(a.gamma) + base;
  const T* __restrict__ beta = static_cast<const T*>(a.beta) + base;
  T* __restrict__ out = static_cast<T*>(a.out) + base;
  for (int64_t e = threadIdx.x; e < hw; e += blockDim.x)
    out[e] = Conv<T>::from((Conv<T>::to(x[e]) - mean) * rstd * (A(1) + Conv<T>::to(gamma[e])) +
                           Conv<T>::to(beta[e]) + bias);
}

template <typename T>
__global__ void __launch_bounds__(kMaxThreads) spade_bwd_loop(const SpadeArgs a) {
  using A = acc_t<T>;
  __shared__ Vals<A, 3> scratch[32];
  const int64_t hw = a.hw, base = static_cast<int64_t>(blockIdx.x) * hw;
  const A inv_n = A(1) / static_cast<A>(hw);
  const T* __restrict__ x = static_cast<const T*>(a.h) + base;
  const T* __restrict__ gamma = static_cast<const T*>(a.gamma) + base;
  const T* __restrict__ grad = static_cast<const T*>(a.grad) + base;
  T* __restrict__ dgamma = static_cast<T*>(a.grad_gamma) + base;
  T* __restrict__ dx = static_cast<T*>(a.grad_h) + base;
  A mean, rstd;
  {
    const Vals<A, 2> s = shifted_sums(x, hw, 1, threadIdx.x, blockDim.x);
    const Vals<A, 3> s3 = block_sum(Vals<A, 3>{{s.v[0], s.v[1], A(0)}}, scratch);
    finish_stats(x, Vals<A, 2>{{s3.v[0], s3.v[1]}}, hw, a.eps, &mean, &rstd);
  }
  Vals<A, 3> acc{{A(0), A(0), A(0)}};
  for (int64_t e = threadIdx.x; e < hw; e += blockDim.x)
    add_grad_terms(grad[e], x[e], gamma[e], mean, rstd, acc, a.grad_gamma != nullptr ? dgamma + e : nullptr);
  const Vals<A, 3> sums = block_sum(acc, scratch);
  const A m_g = sums.v[0] * inv_n, m_gx = sums.v[1] * inv_n;
  for (int64_t e = threadIdx.x; a.grad_h != nullptr && e < hw; e += blockDim.x) {
    const A xh = (Conv<T>::to(x[e]) - mean) * rstd;
    const A g = Conv<T>::to(grad[e]) * (A(1) + Conv<T>::to(gamma[e]));
    dx[e] = Conv<T>::from(rstd * (g - m_g - xh * m_gx));
  }
  if (threadIdx.x == 0 && a.grad_bias != nullptr) static_cast<T*>(a.grad_bias)[blockIdx.x] = Conv<T>::from(sums.v[2]);
}

// ------------------------------------------------------------------ NHWC
// Block (32, kTileRows): threadIdx.x = channel within the tile, threadIdx.y = pixel lane.
constexpr int kTileRows = 16;

// Sums of K values over threadIdx.y for each threadIdx.x; every thread gets its column's sum.
template <typename A, int K>
__device__ __forceinline__ Vals<A, K> column_sum(Vals<A, K> x, Vals<A, K> (*scratch)[32]) {
  scratch[threadIdx.y][threadIdx.x] = x;
  __syncthreads();
  Vals<A, K> total;
#pragma unroll
  for (int k = 0; k < K; ++k) total.v[k] = A(0);
  for (int r = 0; r < kTileRows; ++r)
#pragma unroll
    for (int k = 0; k < K; ++k) total.v[k] += scratch[r][threadIdx.x].v[k];
  __syncthreads();
  return total;
}

template <typename T>
__global__ void __launch_bounds__(32 * kTileRows) spade_fwd_nhwc(const SpadeArgs a) {
  using A = acc_t<T>;
  __shared__ Vals<A, 2> scratch[kTileRows][32];
  const int64_t C = a.channels, hw = a.hw;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  const int64_t n = blockIdx.y;
  const bool active = c < C;
  const int64_t base = n * hw * C + (active ? c : 0);
  const T* __restrict__ x = static_cast<const T*>(a.h) + base;
  Vals<A, 2> s{{A(0), A(0)}};
  if (active) s = shifted_sums(x, hw, C, threadIdx.y, kTileRows);
  s = column_sum(s, scratch);
  if (!active) return;  // no barrier follows
  A mean, rstd;
  finish_stats(x, s, hw, a.eps, &mean, &rstd);
  const A bias = a.bias != nullptr ? Conv<T>::to(static_cast<const T*>(a.bias)[n * C + c]) : A(0);
  const T* __restrict__ gamma = static_cast<const T*>(a.gamma) + base;
  const T* __restrict__ beta = static_cast<const T*>(a.beta) + base;
  T* __restrict__ out = static_cast<T*>(a.out) + base;
  for (int64_t p = threadIdx.y; p < hw; p += kTileRows) {
    const int64_t e = p * C;
    out[e] = Conv<T>::from((Conv<T>::to(x[e]) - mean) * rstd * (A(1) + Conv<T>::to(gamma[e])) +
                           Conv<T>::to(beta[e]) + bias);
  }
}

template <typename T>
__global__ void __launch_bounds__(32 * kTileRows) spade_bwd_nhwc(const SpadeArgs a) {
  using A = acc_t<T>;
  __shared__ Vals<A, 3> scratch[kTileRows][32];
  const int64_t C = a.channels, hw = a.hw;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  const int64_t n = blockIdx.y;
  const bool active = c < C;
  const int64_t base = n * hw * C + (active ? c : 0);
  const A inv_n = A(1) / static_cast<A>(hw);
  const T* __restrict__ x = static_cast<const T*>(a.h) + base;
  const T* __restrict__ gamma = static_cast<const T*>(a.gamma) + base;
  const T* __restrict__ grad = static_cast<const T*>(a.grad) + base;
  T* __restrict__ dgamma = static_cast<T*>(a.grad_gamma) + base;
  T* __restrict__ dx = static_cast<T*>(a.grad_h) + base;
  Vals<A, 3> s{{A(0), A(0), A(0)}};
  if (active) {
    const Vals<A, 2> s2 = shifted_sums(x, hw, C, threadIdx.y, kTileRows);
    s = Vals<A, 3>{{s2.v[0], s2.v[1], A(0)}};
  }
  s = column_sum(s, scratch);
  A mean = A(0), rstd = A(0);
  if (active) finish_stats(x, Vals<A, 2>{{s.v[0], s.v[1]}}, hw, a.eps, &mean, &rstd);
  Vals<A, 3> acc{{A(0), A(0), A(0)}};
  if (active) {
    for (int64_t p = threadIdx.y; p < hw; p += kTileRows) {
      const int64_t e = p * C;
      add_grad_terms(grad[e], x[e], gamma[e], mean, rstd, acc, a.grad_gamma != nullptr ? dgamma + e : nullptr);
    }
  }
  const Vals<A, 3> sums = column_sum(acc, scratch);
  if (!active) return;  // no barrier follows
  const A m_g = sums.v[0] * inv_n, m_gx = sums.v[1] * inv_n;
  for (int64_t p = threadIdx.y; a.grad_h != nullptr && p < hw; p += kTileRows) {
    const int64_t e = p * C;
    const A xh = (Conv<T>::to(x[e]) - mean) * rstd;
    const A g = Conv<T>::to(grad[e]) * (A(1) + Conv<T>::to(gamma[e]));
    dx[e] = Conv<T>::from(rstd * (g - m_g - xh * m_gx));
  }
  if (threadIdx.y == 0 && a.grad_bias != nullptr) static_cast<T*>(a.grad_bias)[n * C + c] = Conv<T>::from(sums.v[2]);
}

// ------------------------------------------------------------------ launch
inline int round_up32(int64_t x) { return static_cast<int>((x + 31) / 32 * 32); }

template <typename T, int V, bool BACKWARD>
cudaError_t launch_rows(const SpadeArgs& a, int64_t rows, cudaStream_t stream) {
  constexpr int items = kItems<T, V>;
  const int64_t packs = a.hw / V;
  if (packs <= 256) {
    const int threads = round_up32(packs);
    if (BACKWARD) spade_bwd_rows<T, V, 1><<<static_cast<unsigned>(rows), threads, 0, stream>>>(a);
    else spade_fwd_rows<T, V, 1><<<static_cast<unsigned>(rows), threads, 0, stream>>>(a);
  } else {
    const int threads = round_up32((packs + items - 1) / items);
    if (BACKWARD) spade_bwd_rows<T, V, items><<<static_cast<unsigned>(rows), threads, 0, stream>>>(a);
    else spade_fwd_rows<T, V, items><<<static_cast<unsigned>(rows), threads, 0, stream>>>(a);
  }
  return cudaGetLastError();
}

template <typename T, bool BACKWARD>
cudaError_t launch_spade(const SpadeArgs& a, int64_t rows, bool channels_last, cudaStream_t stream) {
  if (rows <= 0 || a.hw <= 0) return cudaSuccess;
  if (channels_last) {
    const dim3 grid(static_cast<unsigned>((a.channels + 31) / 32), static_cast<unsigned>(rows / a.channels));
    const dim3 block(32, kTileRows);
    if (BACKWARD) spade_bwd_nhwc<T><<<grid, block, 0, stream>>>(a);
    else spade_fwd_nhwc<T><<<grid, block, 0, stream>>>(a);
    return cudaGetLastError();
  }
  constexpr int V = kVec<T>;
  const bool vec = a.hw % V == 0 && aligned16({a.h, a.gamma, a.beta, a.out, a.grad, a.grad_h, a.grad_gamma});
  if (vec && a.hw <= kMaxRow<T, V>) return launch_rows<T, V, BACKWARD>(a, rows, stream);
  if (a.hw <= kMaxRow<T, 1>) return launch_rows<T, 1, BACKWARD>(a, rows, stream);
  if (BACKWARD) spade_bwd_loop<T><<<static_cast<unsigned>(rows), kMaxThreads, 0, stream>>>(a);
  else spade_fwd_loop<T><<<static_cast<unsigned>(rows), kMaxThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

template <bool BACKWARD>
cudaError_t spade(DType dtype, const SpadeArgs& a, int64_t rows, bool channels_last, cudaStream_t stream) {
  return visit_dtype<__half, __nv_bfloat16>(dtype, [&](auto tag) {
    return launch_spade<typename decltype(tag)::type, BACKWARD>(a, rows, channels_last, stream);
  });
}

}  // namespace

cudaError_t spade_forward(DType dtype, const SpadeArgs& a, int64_t rows, bool channels_last, cudaStream_t stream) {
  return spade<false>(dtype, a, rows, channels_last, stream);
}

cudaError_t spade_backward(DType dtype, const SpadeArgs& a, int64_t rows, bool channels_last, cudaStream_t stream) {
  return spade<true>(dtype, a, rows, channels_last, stream);
}

}  // namespace cuda
}  // namespace stdiff
