// CPU kernel templates. Included once per instruction set by kernels_<isa>.cpp, after that file
// has switched the target ISA on, inside namespace stdiff::cpu::STDIFF_ISA_NS. Every inner loop
// is a `#pragma omp simd` loop over contiguous memory with branch-free math from vec_math.h.
//
// Needs, before inclusion: vec_math.h, philox.h, kernels.h, <algorithm>, and the macros
// STDIFF_ISA_NS (namespace), STDIFF_ISA_NAME (string) and STDIFF_ISA_FMA (0 or 1).

namespace stdiff {
namespace cpu {
namespace STDIFF_ISA_NS {

constexpr bool kFma = STDIFF_ISA_FMA;  // fused multiply-add in the float math of vec_math.h

// p + off, or null when p is null (optional inputs/outputs).
template <typename T>
inline const T* at(const void* p, int64_t off) {
  return p != nullptr ? static_cast<const T*>(p) + off : nullptr;
}
template <typename T>
inline T* at(void* p, int64_t off) {
  return p != nullptr ? static_cast<T*>(p) + off : nullptr;
}

template <bool RAW, typename A>
inline A diffusion(A g) {
  if constexpr (RAW) {
    return tanh_f<kFma>(g);
  } else {
    return g;
  }
}

// ------------------------------------------------------------------ convgru_gates
template <typename T>
void gates_fwd_t(const GatesArgs& a, int64_t begin, int64_t end) {
  const int64_t L = a.L;
  for (int64_t j = begin; j < end;) {
    const int64_t b = j / L, k0 = j - b * L, len = std::min(L - k0, end - j);
    const T* gxu = at<T>(a.gx, b * 2 * L + k0);
    const T* ghu = at<T>(a.gh, b * 2 * L + k0);
    const T* gxr = gxu + L;
    const T* ghr = ghu + L;
    const T* h = at<T>(a.h, b * L + k0);
    T* u = at<T>(a.u, b * L + k0);
    T* rh = at<T>(a.rh, b * L + k0);
#pragma omp simd
    for (int64_t k = 0; k < len; ++k) {
      store(u, k, sigmoid_f<kFma>(load(gxu, k) + load(ghu, k)));
      store(rh, k, sigmoid_f<kFma>(load(gxr, k) + load(ghr, k)) * load(h, k));
    }
    j += len;
  }
}

template <typename T, bool HAS_GU, bool HAS_GRH>
void gates_bwd_t(const GatesArgs& a, int64_t begin, int64_t end) {
  using A = acc_t<T>;
  const int64_t L = a.L;
  for (int64_t j = begin; j < end;) {
    const int64_t b = j / L, k0 = j - b * L, len = std::min(L - k0, end - j);
    const T* gxr = at<T>(a.gx, b * 2 * L + k0 + L);
    const T* ghr = at<T>(a.gh, b * 2 * L + k0 + L);
    const T* h = at<T>(a.h, b * L + k0);
    const T* gu = at<T>(a.grad_u, b * L + k0);
    const T* su = at<T>(a.saved_u, b * L + k0);
    const T* grh = at<T>(a.grad_rh, b * L + k0);
    T* dgu = at<T>(a.grad_g, b * 2 * L + k0);  // null when not requested, as dh
    T* dgr = dgu != nullptr ? dgu + L : nullptr;
    T* dh = at<T>(a.grad_h, b * L + k0);
#pragma omp simd
    for (int64_t k = 0; k < len; ++k) {
      A du = A(0), dr = A(0), dhk = A(0);
      if constexpr (HAS_GU) {
        const A zu = load(su, k);
        du = load(gu, k) * (zu * (A(1) - zu));
      }
      if constexpr (HAS_GRH) {
        const A zr = sigmoid_f<kFma>(load(gxr, k) + load(ghr, k));
        const A g = load(grh, k);
        dr = g * load(h, k) * (zr * (A(1) - zr));
        dhk = g * zr;
      }
      if (dgu != nullptr) {
        store(dgu, k, du);
        store(dgr, k, dr);
      }
      if (dh != nullptr) store(dh, k, dhk);
    }
    j += len;
  }
}

// ------------------------------------------------------------------ convgru_update
template <typename T, bool STANDARD>
void update_fwd_t(const UpdateArgs& a, int64_t begin, int64_t end) {
  using A = acc_t<T>;
  const T* cx = at<T>(a.cx, begin);
  const T* ch = at<T>(a.ch, begin);
  const T* u = at<T>(a.u, begin);
  const T* h = at<T>(a.h, begin);
  T* out = at<T>(a.out, begin);
  const int64_t n = end - begin;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const A uk = load(u, i);
    A c = tanh_f<kFma>(load(cx, i) + load(ch, i));
    if constexpr (STANDARD) c = uk * c;
    store(out, i, (A(1) - uk) * load(h, i) + c);
  }
}

template <typename T, bool STANDARD>
void update_bwd_t(const UpdateArgs& a, int64_t begin, int64_t end) {
  using A = acc_t<T>;
  const T* cx = at<T>(a.cx, begin);
  const T* ch = at<T>(a.ch, begin);
  const T* u = at<T>(a.u, begin);
  const T* h = at<T>(a.h, begin);
  const T* grad = at<T>(a.grad, begin);
  T* dc = at<T>(a.grad_c, begin);
  T* du = at<T>(a.grad_u, begin);
  T* dh = at<T>(a.grad_h, begin);
  const int64_t n = end - begin;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const A g = load(grad, i), uk = load(u, i);
    const A c = tanh_f<kFma>(load(cx, i) + load(ch, i));
    const A dtanh = A(1) - c * c;
    if constexpr (STANDARD) {
      if (dc != nullptr) store(dc, i, g * uk * dtanh);
      if (du != nullptr) store(du, i, g * (c - load(h, i)));
    } else {
      if (dc != nullptr) store(dc, i, g * dtanh);
      if (du != nullptr) store(du, i, -(g * load(h, i)));
    }
    if (dh != nullptr) store(dh, i, g * (A(1) - uk));
  }
}

// ------------------------------------------------------------------ spade_norm, NCHW rows
template <typename A, typename T>
inline void row_stats(const T* x, int64_t n, A eps, A* mean_out, A* rstd_out) {
  A sum = A(0);
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += load(x, i);
  const A mean = sum / static_cast<A>(n);
  A sq = A(0);
#pragma omp simd reduction(+ : sq)
  for (int64_t i = 0; i < n; ++i) {
    const A d = load(x, i) - mean;
    sq += d * d;
  }
  *mean_out = mean;
  *rstd_out = A(1) / std::sqrt(sq / static_cast<A>(n) + eps);
}

template <typename T>
void spade_fwd_nchw_t(const SpadeArgs& a, int64_t begin, int64_t end) {
  using A = acc_t<T>;
  const int64_t hw = a.hw;
  for (int64_t r = begin; r < end; ++r) {
    const T* x = at<T>(a.h, r * hw);
    const T* gamma = at<T>(a.gamma, r * hw);
    const T* beta = at<T>(a.beta, r * hw);
    T* out = at<T>(a.out, r * hw);
    A mean, rstd;
    row_stats<A>(x, hw, static_cast<A>(a.eps), &mean, &rstd);
    if (a.bias != nullptr) {
      const A bias = load(static_cast<const T*>(a.bias), r);
#pragma omp simd
      for (int64_t i = 0; i < hw; ++i)
        store(out, i, (load(x, i) - mean) * rstd * (A(1) + load(gamma, i)) + load(beta, i) + bias);
    } else {
#pragma omp simd
      for (int64_t i = 0; i < hw; ++i)
        store(out, i, (load(x, i) - mean) * rstd * (A(1) + load(gamma, i)) + load(beta, i));
    }
  }
}

template <typename T>
void spade_bwd_nchw_t(const SpadeArgs& a, int64_t begin, int64_t end) {
  using A = acc_t<T>;
  const int64_t hw = a.hw;
  const A inv_n = A(1) / static_cast<A>(hw);
  for (int64_t r = begin; r < end; ++r) {
    const T* x = at<T>(a.h, r * hw);
    const T* gamma = at<T>(a.gamma, r * hw);
    const T* grad = at<T>(a.grad, r * hw);
    T* dx = at<T>(a.grad_h, r * hw);
    T* dgamma = at<T>(a.grad_gamma, r * hw);
    A mean, rstd;
    row_stats<A>(x, hw, static_cast<A>(a.eps), &mean, &rstd);
    A s_g = A(0), s_gx = A(0), s_dy = A(0);
#pragma omp simd reduction(+ : s_g, s_gx, s_dy)
    for (int64_t i = 0; i < hw; ++i) {
      const A dy = load(grad, i);
      const A xh = (load(x, i) - mean) * rstd;
      const A g = dy * (A(1) + load(gamma, i));
      s_g += g;
      s_gx += g * xh;
      s_dy += dy;
      if (dgamma != nullptr) store(dgamma, i, dy * xh);
    }
    const A m_g = s_g * inv_n, m_gx = s_gx * inv_n;
    if (dx != nullptr) {
#pragma omp simd
      for (int64_t i = 0; i < hw; ++i) {
        const A xh = (load(x, i) - mean) * rstd;
        const A g = load(grad, i) * (A(1) + load(gamma, i));
        store(dx, i, rstd * (g - m_g - xh * m_gx));
      }
    }
    if (a.grad_bias != nullptr) store(static_cast<T*>(a.grad_bias), r, s_dy);
  }
}

// ------------------------------------------------------------------ spade_norm, NHWC chunks
// Per-channel mean and rstd of an NHWC chunk: x[p * stride + k], p < hw, k < cc. Sums are
// two-level (blocks of kStatBlock pixels) to keep the fp32 rounding error small for long rows.
constexpr int64_t kStatBlock = 64;

template <typename A, typename T>
inline void chunk_stats(const T* x, int64_t hw, int64_t stride, int64_t cc, A eps, A* mean, A* rstd) {
  alignas(64) A part[kSpadeMaxChunk];
  for (int64_t k = 0; k < cc; ++k) mean[k] = A(0), rstd[k] = A(0);
  for (int64_t p0 = 0; p0 < hw; p0 += kStatBlock) {
    for (int64_t k = 0; k < cc; ++k) part[k] = A(0);
    for (int64_t p = p0; p < std::min(hw, p0 + kStatBlock); ++p) {
      const T* row = x + p * stride;
#pragma omp simd
      for (int64_t k = 0; k < cc; ++k) part[k] += load(row, k);
    }
    for (int64_t k = 0; k < cc; ++k) mean[k] += part[k];
  }
  const A inv_n = A(1) / static_cast<A>(hw);
  for (int64_t k = 0; k < cc; ++k) mean[k] = mean[k] / static_cast<A>(hw);
  for (int64_t p0 = 0; p0 < hw; p0 += kStatBlock) {
    for (int64_t k = 0; k < cc; ++k) part[k] = A(0);
    for (int64_t p = p0; p < std::min(hw, p0 + kStatBlock); ++p) {
      const T* row = x + p * stride;
#pragma omp simd
      for (int64_t k = 0; k < cc; ++k) {
        const A d = load(row, k) - mean[k];
        part[k] += d * d;
      }
    }
    for (int64_t k = 0; k < cc; ++k) rstd[k] += part[k];
  }
  for (int64_t k = 0; k < cc; ++k) rstd[k] = A(1) / std::sqrt(rstd[k] * inv_n + eps);
}

struct NhwcItem {
  int64_t offset;  // of (n, pixel 0, first channel of the chunk)
  int64_t row;     // n * C + first channel (index into bias / grad_bias)
  int64_t cc;      // channels in this chunk
};

inline NhwcItem nhwc_item(const SpadeArgs& a, int64_t item) {
  const int64_t chunks = (a.channels + a.cc - 1) / a.cc;
  const int64_t n = item / chunks, c0 = (item - n * chunks) * a.cc;
  return NhwcItem{n * a.hw * a.channels + c0, n * a.channels + c0, std::min(a.cc, a.channels - c0)};
}

template <typename T>
void spade_fwd_nhwc_t(const SpadeArgs& a, int64_t begin, int64_t end) {
  using A = acc_t<T>;
  const int64_t hw = a.hw, C = a.channels;
  alignas(64) A mean[kSpadeMaxChunk], rstd[kSpadeMaxChunk], bias[kSpadeMaxChunk];
  for (int64_t item = begin; item < end; ++item) {
    const NhwcItem it = nhwc_item(a, item);
    const T* x = at<T>(a.h, it.offset);
    const T* gamma = at<T>(a.gamma, it.offset);
    const T* beta = at<T>(a.beta, it.offset);
    T* out = at<T>(a.out, it.offset);
    chunk_stats<A>(x, hw, C, it.cc, static_cast<A>(a.eps), mean, rstd);
    for (int64_t k = 0; k < it.cc; ++k)
      bias[k] = a.bias != nullptr ? load(static_cast<const T*>(a.bias), it.row + k) : A(0);
    for (int64_t p = 0; p < hw; ++p) {
      const int64_t o = p * C;
#pragma omp simd
      for (int64_t k = 0; k < it.cc; ++k)
        store(out + o, k,
              (load(x + o, k) - mean[k]) * rstd[k] * (A(1) + load(gamma + o, k)) + load(beta + o, k) + bias[k]);
    }
  }
}

template <typename T>
void spade_bwd_nhwc_t(const SpadeArgs& a, int64_t begin, int64_t end) {
  using A = acc_t<T>;
  const int64_t hw = a.hw, C = a.channels;
  const A inv_n = A(1) / static_cast<A>(hw);
  alignas(64) A mean[kSpadeMaxChunk], rstd[kSpadeMaxChunk], s_g[kSpadeMaxChunk], s_gx[kSpadeMaxChunk],
      s_dy[kSpadeMaxChunk];
  for (int64_t item = begin; item < end; ++item) {
    const NhwcItem it = nhwc_item(a, item);
    const int64_t cc = it.cc;
    const T* x = at<T>(a.h, it.offset);
    const T* gamma = at<T>(a.gamma, it.offset);
    const T* grad = at<T>(a.grad, it.offset);
    T* dx = at<T>(a.grad_h, it.offset);
    T* dgamma = at<T>(a.grad_gamma, it.offset);
    chunk_stats<A>(x, hw, C, cc, static_cast<A>(a.eps), mean, rstd);
    for (int64_t k = 0; k < cc; ++k) s_g[k] = s_gx[k] = s_dy[k] = A(0);
    for (int64_t p = 0; p < hw; ++p) {
      const int64_t o = p * C;
#pragma omp simd
      for (int64_t k = 0; k < cc; ++k) {
        const A dy = load(grad + o, k);
        const A xh = (load(x + o, k) - mean[k]) * rstd[k];
        const A g = dy * (A(1) + load(gamma + o, k));
        s_g[k] += g;
        s_gx[k] += g * xh;
        s_dy[k] += dy;
        if (dgamma != nullptr) store(dgamma + o, k, dy * xh);
      }
    }
    for (int64_t k = 0; k < cc; ++k) s_g[k] *= inv_n, s_gx[k] *= inv_n;
    for (int64_t p = 0; dx != nullptr && p < hw; ++p) {
      const int64_t o = p * C;
#pragma omp simd
      for (int64_t k = 0; k < cc; ++k) {
        const A xh = (load(x + o, k) - mean[k]) * rstd[k];
        const A g = load(grad + o, k) * (A(1) + load(gamma + o, k));
        store(dx + o, k, rstd[k] * (g - s_g[k] - xh * s_gx[k]));
      }
    }
    for (int64_t k = 0; a.grad_bias != nullptr && k < cc; ++k) store(static_cast<T*>(a.grad_bias), it.row + k, s_dy[k]);
  }
}

// ------------------------------------------------------------------ sde_step / sde_predict
constexpr int64_t kSdeTile = 1024;

// buf[i] = sqrt_dt * N(0,1) of element first + i, i < n (the Philox stream of philox.h).
template <typename A>
inline void fill_noise(A* buf, const SdeArgs& a, int64_t first, int64_t n) {
  const float sdf = static_cast<float>(a.sqrt_dt);
  auto scale = [&](float z) -> A {
    if constexpr (std::is_same_v<A, double>) {
      return a.sqrt_dt * static_cast<double>(z);
    } else {
      return philox::fmul(sdf, z);
    }
  };
  int64_t i = 0;
  for (; i < n && ((first + i) & 3) != 0; ++i)
    buf[i] = scale(philox::normal_at(a.seed, a.offset, static_cast<uint64_t>(first + i)));
  const int64_t groups = (n - i) / 4;
  const uint64_t block0 = static_cast<uint64_t>(first + i) >> 2;
  A* dst = buf + i;
#pragma omp simd
  for (int64_t q = 0; q < groups; ++q) {
    const philox::F32x4 z = philox::normal4(a.seed, a.offset, block0 + static_cast<uint64_t>(q));
    dst[4 * q + 0] = scale(z.v[0]);
    dst[4 * q + 1] = scale(z.v[1]);
    dst[4 * q + 2] = scale(z.v[2]);
    dst[4 * q + 3] = scale(z.v[3]);
  }
  for (i += 4 * groups; i < n; ++i)
    buf[i] = scale(philox::normal_at(a.seed, a.offset, static_cast<uint64_t>(first + i)));
}

template <typename T, typename W, bool HAS_F, bool HAS_GP, bool RAW>
inline void sde_fwd_span(const SdeArgs& a, const W* dw, int64_t first, int64_t n) {
  using A = acc_t<T>;
  const T* y = at<T>(a.y, first);
  const T* f = at<T>(a.f, first);
  const T* g = at<T>(a.g, first);
  const T* gp = at<T>(a.g_pred, first);
  T* out = at<T>(a.out, first);
  const A dt = static_cast<A>(a.dt);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    A G = diffusion<RAW>(load(g, i));
    if constexpr (HAS_GP) G = A(0.5) * (G + diffusion<RAW>(load(gp, i)));
    A v = load(y, i);
    if constexpr (HAS_F) v = v + load(f, i) * dt;
    store(out, i, v + G * static_cast<A>(dw[i]));
  }
}

template <typename T, bool HAS_F, bool HAS_GP, bool RAW>
void sde_fwd_t(const SdeArgs& a, int64_t begin, int64_t end) {
  using A = acc_t<T>;
  if (a.dw != nullptr) {
    sde_fwd_span<T, T, HAS_F, HAS_GP, RAW>(a, at<T>(a.dw, begin), begin, end - begin);
    return;
  }
  alignas(64) A buf[kSdeTile];
  for (int64_t j = begin; j < end; j += kSdeTile) {
    const int64_t n = std::min(kSdeTile, end - j);
    fill_noise<A>(buf, a, j, n);
    sde_fwd_span<T, A, HAS_F, HAS_GP, RAW>(a, buf, j, n);
  }
}

template <typename T, typename W, bool HAS_GP, bool RAW, bool GRAD_DW>
inline void sde_bwd_span(const SdeArgs& a, const W* dw, int64_t first, int64_t n) {
  using A = acc_t<T>;
  const T* grad = at<T>(a.grad, first);
  const T* g = at<T>(a.g, first);
  const T* gp = at<T>(a.g_pred, first);
  T* dg = at<T>(a.grad_g, first);
  T* dgp = at<T>(a.grad_g_pred, first);
  T* ddw = at<T>(a.grad_dw, first);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const A gr = load(grad, i);
    const A w = static_cast<A>(dw[i]);
    const A t = diffusion<RAW>(load(g, i));
    if constexpr (HAS_GP) {
      const A tp = diffusion<RAW>(load(gp, i));
      const A half = A(0.5) * (gr * w);
      if (dg != nullptr) store(dg, i, RAW ? half * (A(1) - t * t) : half);
      if (dgp != nullptr) store(dgp, i, RAW ? half * (A(1) - tp * tp) : half);
      if constexpr (GRAD_DW) store(ddw, i, gr * (A(0.5) * (t + tp)));
    } else {
      const A gw = gr * w;
      if (dg != nullptr) store(dg, i, RAW ? gw * (A(1) - t * t) : gw);
      if constexpr (GRAD_DW) store(ddw, i, gr * t);
    }
  }
}

template <typename T>
inline void sde_grad_f(const SdeArgs& a, int64_t first, int64_t n) {
  using A = acc_t<T>;
  const T* grad = at<T>(a.grad, first);
  T* df = at<T>(a.grad_f, first);
  const A dt = static_cast<A>(a.dt);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) store(df, i, load(grad, i) * dt);
}

template <typename T, bool HAS_GP, bool RAW>
void sde_bwd_t(const SdeArgs& a, int64_t begin, int64_t end) {
  using A = acc_t<T>;
  alignas(64) A buf[kSdeTile];
  for (int64_t j = begin; j < end; j += kSdeTile) {
    const int64_t n = std::min(kSdeTile, end - j);
    if (a.dw != nullptr) {
      if (a.grad_dw != nullptr) {
        sde_bwd_span<T, T, HAS_GP, RAW, true>(a, at<T>(a.dw, j), j, n);
      } else {
        sde_bwd_span<T, T, HAS_GP, RAW, false>(a, at<T>(a.dw, j), j, n);
      }
    } else if (a.grad_g != nullptr || a.grad_g_pred != nullptr) {
      fill_noise<A>(buf, a, j, n);
      sde_bwd_span<T, A, HAS_GP, RAW, false>(a, buf, j, n);
    }
    if (a.grad_f != nullptr) sde_grad_f<T>(a, j, n);
  }
}

// ------------------------------------------------------------------ dtype / flag dispatch
template <template <typename> class Op, typename Args>
void by_dtype(DType dt, const Args& a, int64_t begin, int64_t end) {
  visit_dtype<c10::Half, c10::BFloat16>(dt, [&](auto tag) { Op<typename decltype(tag)::type>::run(a, begin, end); });
}

template <typename T>
struct GatesFwd {
  static void run(const GatesArgs& a, int64_t b, int64_t e) { gates_fwd_t<T>(a, b, e); }
};
template <typename T>
struct GatesBwd {
  static void run(const GatesArgs& a, int64_t b, int64_t e) {
    const bool gu = a.grad_u != nullptr, grh = a.grad_rh != nullptr;
    if (gu && grh) gates_bwd_t<T, true, true>(a, b, e);
    else if (gu) gates_bwd_t<T, true, false>(a, b, e);
    else if (grh) gates_bwd_t<T, false, true>(a, b, e);
    else gates_bwd_t<T, false, false>(a, b, e);
  }
};
template <typename T>
struct UpdateFwd {
  static void run(const UpdateArgs& a, int64_t b, int64_t e) {
    a.standard ? update_fwd_t<T, true>(a, b, e) : update_fwd_t<T, false>(a, b, e);
  }
};
template <typename T>
struct UpdateBwd {
  static void run(const UpdateArgs& a, int64_t b, int64_t e) {
    a.standard ? update_bwd_t<T, true>(a, b, e) : update_bwd_t<T, false>(a, b, e);
  }
};
template <typename T>
struct SpadeFwdNchw {
  static void run(const SpadeArgs& a, int64_t b, int64_t e) { spade_fwd_nchw_t<T>(a, b, e); }
};
template <typename T>
struct SpadeBwdNchw {
  static void run(const SpadeArgs& a, int64_t b, int64_t e) { spade_bwd_nchw_t<T>(a, b, e); }
};
template <typename T>
struct SpadeFwdNhwc {
  static void run(const SpadeArgs& a, int64_t b, int64_t e) { spade_fwd_nhwc_t<T>(a, b, e); }
};
template <typename T>
struct SpadeBwdNhwc {
  static void run(const SpadeArgs& a, int64_t b, int64_t e) { spade_bwd_nhwc_t<T>(a, b, e); }
};
template <typename T>
struct SdeFwd {
  template <bool HAS_F, bool HAS_GP>
  static void with_raw(const SdeArgs& a, int64_t b, int64_t e) {
    a.raw ? sde_fwd_t<T, HAS_F, HAS_GP, true>(a, b, e) : sde_fwd_t<T, HAS_F, HAS_GP, false>(a, b, e);
  }
  static void run(const SdeArgs& a, int64_t b, int64_t e) {
    const bool has_f = a.f != nullptr, has_gp = a.g_pred != nullptr;
    if (has_f && has_gp) with_raw<true, true>(a, b, e);
    else if (has_f) with_raw<true, false>(a, b, e);
    else if (has_gp) with_raw<false, true>(a, b, e);
    else with_raw<false, false>(a, b, e);
  }
};
template <typename T>
struct SdeBwd {
  static void run(const SdeArgs& a, int64_t b, int64_t e) {
    const bool has_gp = a.g_pred != nullptr;
    if (has_gp) {
      a.raw ? sde_bwd_t<T, true, true>(a, b, e) : sde_bwd_t<T, true, false>(a, b, e);
    } else {
      a.raw ? sde_bwd_t<T, false, true>(a, b, e) : sde_bwd_t<T, false, false>(a, b, e);
    }
  }
};

inline const Kernels& table() {
  static const Kernels k{
      STDIFF_ISA_NAME,
      &by_dtype<GatesFwd, GatesArgs>,
      &by_dtype<GatesBwd, GatesArgs>,
      &by_dtype<UpdateFwd, UpdateArgs>,
      &by_dtype<UpdateBwd, UpdateArgs>,
      &by_dtype<SpadeFwdNchw, SpadeArgs>,
      &by_dtype<SpadeBwdNchw, SpadeArgs>,
      &by_dtype<SpadeFwdNhwc, SpadeArgs>,
      &by_dtype<SpadeBwdNhwc, SpadeArgs>,
      &by_dtype<SdeFwd, SdeArgs>,
      &by_dtype<SdeBwd, SdeArgs>,
  };
  return k;
}

}  // namespace STDIFF_ISA_NS
}  // namespace cpu
}  // namespace stdiff
