// CUDA kernels of convgru_gates, convgru_update, sde_step and sde_predict (forward and backward):
// grid-stride loops over packs of kVec<T> elements (128-bit loads/stores when every pointer is
// 16-byte aligned), one pass over memory, fp32 math for fp16/bf16 (fp64 for double).
// Flags that do not change the memory traffic (raw tanh, Heun, noise) are uniform run-time
// branches, which keeps the number of instantiations and the compile time small.
#include "../philox.h"
#include "device_utils.cuh"
#include "kernels.cuh"

namespace stdiff {
namespace cuda {
namespace {

constexpr int kThreads = 256;

// Runs op.apply<V>(i) on every pack start i = 0, V, 2V, ... < n - n % V and op.apply<1> on the tail.
template <int V, typename Op>
__global__ void __launch_bounds__(kThreads) elementwise_kernel(const Op op, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t packs = n / V;
  for (int64_t p = first; p < packs; p += stride) op.template apply<V>(p * V);
  if constexpr (V > 1) {
    for (int64_t i = packs * V + first; i < n; i += stride) op.template apply<1>(i);
  }
}

template <typename T, typename Op>
cudaError_t launch(const Op& op, int64_t n, bool vectorise, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  constexpr int V = kVec<T>;
  if (vectorise) {
    elementwise_kernel<V><<<grid_for(n / V > 0 ? n / V : n, kThreads), kThreads, 0, stream>>>(op, n);
  } else {
    elementwise_kernel<1><<<grid_for(n, kThreads), kThreads, 0, stream>>>(op, n);
  }
  return cudaGetLastError();
}

// ------------------------------------------------------------------ convgru_gates
// Element j of the (B, L) output space: segment b = j / L, k = j % L; gates at b*2L + k (+ L).
template <typename T>
struct GatesFwdOp {
  const T* gx;
  const T* gh;
  const T* h;
  T* u;
  T* rh;
  int64_t L;

  template <int V>
  __device__ __forceinline__ void apply(int64_t j) const {
    using A = acc_t<T>;
    const int64_t b = j / L, i2 = j + b * L;  // b*2L + k
    A xu[V], hu[V], xr[V], hr[V], hv[V], ou[V], orh[V];
    load<V>(gx, i2, xu);
    load<V>(gh, i2, hu);
    load<V>(gx, i2 + L, xr);
    load<V>(gh, i2 + L, hr);
    load<V>(h, j, hv);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      ou[k] = sigmoid(xu[k] + hu[k]);
      orh[k] = sigmoid(xr[k] + hr[k]) * hv[k];
    }
    store<V>(u, j, ou);
    store<V>(rh, j, orh);
  }
};

template <typename T>
struct GatesBwdOp {
  const T* u;  // the forward output (its sigmoid is not recomputed)
  const T* gx;
  const T* gh;
  const T* h;
  const T* grad_u;   // may be null
  const T* grad_rh;  // may be null
  T* grad_g;  // null when not requested
  T* grad_h;  // null when not requested
  int64_t L;

  template <int V>
  __device__ __forceinline__ void apply(int64_t j) const {
    using A = acc_t<T>;
    const int64_t b = j / L, i2 = j + b * L;
    A du[V], dr[V], dh[V];
#pragma unroll
    for (int k = 0; k < V; ++k) du[k] = dr[k] = dh[k] = A(0);
    if (grad_u != nullptr) {
      A uv[V], gu[V];
      load<V>(u, j, uv);
      load<V>(grad_u, j, gu);
#pragma unroll
      for (int k = 0; k < V; ++k) du[k] = gu[k] * (uv[k] * (A(1) - uv[k]));
    }
    if (grad_rh != nullptr) {
      A xr[V], hr[V], gr[V], hv[V];
      load<V>(gx, i2 + L, xr);
      load<V>(gh, i2 + L, hr);
      load<V>(grad_rh, j, gr);
      load<V>(h, j, hv);
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const A z = sigmoid(xr[k] + hr[k]);
        dr[k] = gr[k] * hv[k] * (z * (A(1) - z));
        dh[k] = gr[k] * z;
      }
    }
    if (grad_g != nullptr) {
      store<V>(grad_g, i2, du);
      store<V>(grad_g, i2 + L, dr);
    }
    if (grad_h != nullptr) store<V>(grad_h, j, dh);
  }
};

// ------------------------------------------------------------------ convgru_update
template <typename T>
struct UpdateFwdOp {
  const T* cx;
  const T* ch;
  const T* u;
  const T* h;
  T* out;
  bool standard;

  template <int V>
  __device__ __forceinline__ void apply(int64_t i) const {
    using A = acc_t<T>;
    A a[V], b[V], uv[V], hv[V], o[V];
    load<V>(cx, i, a);
    load<V>(ch, i, b);
    load<V>(u, i, uv);
    load<V>(h, i, hv);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      A c = tanh_(a[k] + b[k]);
      if (standard) c = uv[k] * c;
      o[k] = (A(1) - uv[k]) * hv[k] + c;
    }
    store<V>(out, i, o);
  }
};

template <typename T>
struct UpdateBwdOp {
  const T* cx;
  const T* ch;
  const T* u;
  const T* h;
  const T* grad;
  T* grad_c;  // each grad_* null when not requested
  T* grad_u;
  T* grad_h;
  bool standard;

  template <int V>
  __device__ __forceinline__ void apply(int64_t i) const {
    using A = acc_t<T>;
    A a[V], b[V], uv[V], hv[V], g[V], dc[V], du[V], dh[V];
    load<V>(cx, i, a);
    load<V>(ch, i, b);
    load<V>(u, i, uv);
    load<V>(h, i, hv);
    load<V>(grad, i, g);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const A c = tanh_(a[k] + b[k]);
      const A dtanh = A(1) - c * c;
      dc[k] = standard ? g[k] * uv[k] * dtanh : g[k] * dtanh;
      du[k] = standard ? g[k] * (c - hv[k]) : -(g[k] * hv[k]);
      dh[k] = g[k] * (A(1) - uv[k]);
    }
    if (grad_c != nullptr) store<V>(grad_c, i, dc);
    if (grad_u != nullptr) store<V>(grad_u, i, du);
    if (grad_h != nullptr) store<V>(grad_h, i, dh);
  }
};

// ------------------------------------------------------------------ sde_step / sde_predict
// dW of elements i .. i+V-1, drawn from the Philox stream (bit-identical to the CPU kernels).
template <int V, typename A>
__device__ __forceinline__ void draw_noise(const SdeArgs& s, int64_t i, A (&w)[V]) {
  const float sdf = static_cast<float>(s.sqrt_dt);
  float z[V];
  if constexpr (V >= 4) {
#pragma unroll
    for (int g = 0; g < V / 4; ++g) {
      const philox::F32x4 q = philox::normal4(s.seed, s.offset, static_cast<uint64_t>(i >> 2) + g);
#pragma unroll
      for (int l = 0; l < 4; ++l) z[4 * g + l] = q.v[l];
    }
  } else if constexpr (V == 2) {  // i is even: lanes (0, 1) or (2, 3) of block i / 4
    const philox::F32x4 q = philox::normal4(s.seed, s.offset, static_cast<uint64_t>(i >> 2));
    const bool high = (i & 2) != 0;
    z[0] = high ? q.v[2] : q.v[0];
    z[1] = high ? q.v[3] : q.v[1];
  } else {
    const philox::F32x4 q = philox::normal4(s.seed, s.offset, static_cast<uint64_t>(i >> 2));
    const int lane = static_cast<int>(i & 3);
    z[0] = lane == 0 ? q.v[0] : lane == 1 ? q.v[1] : lane == 2 ? q.v[2] : q.v[3];
  }
#pragma unroll
  for (int k = 0; k < V; ++k) {
    if constexpr (sizeof(A) == sizeof(double)) {
      w[k] = __dmul_rn(s.sqrt_dt, static_cast<double>(z[k]));
    } else {
      w[k] = philox::fmul(sdf, z[k]);
    }
  }
}

// The diffusion g of elements i .. i+V-1 (tanh applied when s.raw) and their dW (loaded from s.dw
// when given, else drawn): the common start of the forward and backward SDE ops.
template <int V, typename T, typename A>
__device__ __forceinline__ void load_diffusion_and_noise(const SdeArgs& s, int64_t i, A (&g)[V], A (&w)[V]) {
  load<V>(static_cast<const T*>(s.g), i, g);
  if (s.dw != nullptr) {
    load<V>(static_cast<const T*>(s.dw), i, w);
  } else {
    draw_noise<V>(s, i, w);
  }
  if (s.raw) {
#pragma unroll
    for (int k = 0; k < V; ++k) g[k] = tanh_(g[k]);
  }
}

template <typename T>
struct SdeFwdOp {
  SdeArgs s;

  template <int V>
  __device__ __forceinline__ void apply(int64_t i) const {
    using A = acc_t<T>;
    A y[V], g[V], w[V], o[V];
    load<V>(static_cast<const T*>(s.y), i, y);
    load_diffusion_and_noise<V, T>(s, i, g, w);
    if (s.g_pred != nullptr) {
      A gp[V];
      load<V>(static_cast<const T*>(s.g_pred), i, gp);
#pragma unroll
      for (int k = 0; k < V; ++k) g[k] = A(0.5) * (g[k] + (s.raw ? tanh_(gp[k]) : gp[k]));
    }
    if (s.f != nullptr) {
      A f[V];
      load<V>(static_cast<const T*>(s.f), i, f);
      const A dt = static_cast<A>(s.dt);
#pragma unroll
      for (int k = 0; k < V; ++k) y[k] = y[k] + f[k] * dt;
    }
#pragma unroll
    for (int k = 0; k < V; ++k) o[k] = y[k] + g[k] * w[k];
    store<V>(static_cast<T*>(s.out), i, o);
  }
};

template <typename T>
struct SdeBwdOp {
  SdeArgs s;

  template <int V>
  __device__ __forceinline__ void apply(int64_t i) const {
    using A = acc_t<T>;
    A gr[V], t[V], w[V], dg[V];
    load<V>(static_cast<const T*>(s.grad), i, gr);
    load_diffusion_and_noise<V, T>(s, i, t, w);
    if (s.grad_f != nullptr) {
      A df[V];
      const A dt = static_cast<A>(s.dt);
#pragma unroll
      for (int k = 0; k < V; ++k) df[k] = gr[k] * dt;
      store<V>(static_cast<T*>(s.grad_f), i, df);
    }
    if (s.g_pred != nullptr) {
      A tp[V], dgp[V], ddw[V];
      load<V>(static_cast<const T*>(s.g_pred), i, tp);
#pragma unroll
      for (int k = 0; k < V; ++k) {
        if (s.raw) tp[k] = tanh_(tp[k]);
        const A half = A(0.5) * (gr[k] * w[k]);
        dg[k] = s.raw ? half * (A(1) - t[k] * t[k]) : half;
        dgp[k] = s.raw ? half * (A(1) - tp[k] * tp[k]) : half;
        ddw[k] = gr[k] * (A(0.5) * (t[k] + tp[k]));
      }
      if (s.grad_g_pred != nullptr) store<V>(static_cast<T*>(s.grad_g_pred), i, dgp);
      if (s.grad_dw != nullptr) store<V>(static_cast<T*>(s.grad_dw), i, ddw);
    } else {
      A ddw[V];
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const A gw = gr[k] * w[k];
        dg[k] = s.raw ? gw * (A(1) - t[k] * t[k]) : gw;
        ddw[k] = gr[k] * t[k];
      }
      if (s.grad_dw != nullptr) store<V>(static_cast<T*>(s.grad_dw), i, ddw);
    }
    if (s.grad_g != nullptr) store<V>(static_cast<T*>(s.grad_g), i, dg);
  }
};

// ------------------------------------------------------------------ dtype dispatch
template <template <typename> class Fn, typename... Args>
cudaError_t by_dtype(DType dtype, const Args&... args) {
  return visit_dtype<__half, __nv_bfloat16>(dtype,
                                            [&](auto tag) { return Fn<typename decltype(tag)::type>::run(args...); });
}

template <typename T>
struct GatesFwd {
  static cudaError_t run(const GatesArgs& a, int64_t segments, cudaStream_t stream) {
    const GatesFwdOp<T> op{static_cast<const T*>(a.gx), static_cast<const T*>(a.gh), static_cast<const T*>(a.h),
                           static_cast<T*>(a.u), static_cast<T*>(a.rh), a.L};
    const bool vec = a.L % kVec<T> == 0 && aligned16({a.gx, a.gh, a.h, a.u, a.rh});
    return launch<T>(op, segments * a.L, vec, stream);
  }
};

template <typename T>
struct GatesBwd {
  static cudaError_t run(const GatesArgs& a, int64_t segments, cudaStream_t stream) {
    const GatesBwdOp<T> op{static_cast<const T*>(a.saved_u), static_cast<const T*>(a.gx),
                           static_cast<const T*>(a.gh),      static_cast<const T*>(a.h),
                           static_cast<const T*>(a.grad_u),  static_cast<const T*>(a.grad_rh),
                           static_cast<T*>(a.grad_g),        static_cast<T*>(a.grad_h),
                           a.L};
    const bool vec = a.L % kVec<T> == 0 &&
                     aligned16({a.saved_u, a.gx, a.gh, a.h, a.grad_u, a.grad_rh, a.grad_g, a.grad_h});
    return launch<T>(op, segments * a.L, vec, stream);
  }
};

template <typename T>
struct UpdateFwd {
  static cudaError_t run(const UpdateArgs& a, int64_t n, cudaStream_t stream) {
    const UpdateFwdOp<T> op{static_cast<const T*>(a.cx), static_cast<const T*>(a.ch), static_cast<const T*>(a.u),
                            static_cast<const T*>(a.h), static_cast<T*>(a.out), a.standard};
    return launch<T>(op, n, aligned16({a.cx, a.ch, a.u, a.h, a.out}), stream);
  }
};

template <typename T>
struct UpdateBwd {
  static cudaError_t run(const UpdateArgs& a, int64_t n, cudaStream_t stream) {
    const UpdateBwdOp<T> op{static_cast<const T*>(a.cx),   static_cast<const T*>(a.ch), static_cast<const T*>(a.u),
                            static_cast<const T*>(a.h),    static_cast<const T*>(a.grad), static_cast<T*>(a.grad_c),
                            static_cast<T*>(a.grad_u),     static_cast<T*>(a.grad_h),   a.standard};
    return launch<T>(op, n, aligned16({a.cx, a.ch, a.u, a.h, a.grad, a.grad_c, a.grad_u, a.grad_h}), stream);
  }
};

template <typename T>
struct SdeFwd {
  static cudaError_t run(const SdeArgs& a, int64_t n, cudaStream_t stream) {
    return launch<T>(SdeFwdOp<T>{a}, n, aligned16({a.y, a.f, a.g, a.g_pred, a.dw, a.out}), stream);
  }
};

template <typename T>
struct SdeBwd {
  static cudaError_t run(const SdeArgs& a, int64_t n, cudaStream_t stream) {
    const bool vec = aligned16({a.grad, a.g, a.g_pred, a.dw, a.grad_f, a.grad_g, a.grad_g_pred, a.grad_dw});
    return launch<T>(SdeBwdOp<T>{a}, n, vec, stream);
  }
};

}  // namespace

cudaError_t gates_forward(DType dtype, const GatesArgs& a, int64_t segments, cudaStream_t stream) {
  return by_dtype<GatesFwd>(dtype, a, segments, stream);
}
cudaError_t gates_backward(DType dtype, const GatesArgs& a, int64_t segments, cudaStream_t stream) {
  return by_dtype<GatesBwd>(dtype, a, segments, stream);
}
cudaError_t update_forward(DType dtype, const UpdateArgs& a, int64_t n, cudaStream_t stream) {
  return by_dtype<UpdateFwd>(dtype, a, n, stream);
}
cudaError_t update_backward(DType dtype, const UpdateArgs& a, int64_t n, cudaStream_t stream) {
  return by_dtype<UpdateBwd>(dtype, a, n, stream);
}
cudaError_t sde_forward(DType dtype, const SdeArgs& a, int64_t n, cudaStream_t stream) {
  return by_dtype<SdeFwd>(dtype, a, n, stream);
}
cudaError_t sde_backward(DType dtype, const SdeArgs& a, int64_t n, cudaStream_t stream) {
  return by_dtype<SdeBwd>(dtype, a, n, stream);
}

}  // namespace cuda
}  // namespace stdiff
